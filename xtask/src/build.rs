//! `cargo xtask build`: setup, the eBPF object, then the agent that embeds it (the agent's
//! build script reads the object's path from `RASP_EBPF_OBJ`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use crate::command::{self, human};
use crate::workspace::{Profile, Workspace};
use crate::{build_ebpf, setup};

/// The variable through which the agent's build script finds the eBPF object.
pub const EBPF_OBJ_VAR: &str = "RASP_EBPF_OBJ";

/// What a build leaves behind for `run` and `test`.
pub struct Artifacts {
    pub agent_bin: PathBuf,
}

/// Setup (quick when everything is there), then [`build_all`].
pub fn run(ws: &Workspace, profile: Profile) -> Result<Artifacts> {
    setup::run()?;
    build_all(ws, profile)
}

/// The eBPF object, then the agent with the object embedded.
pub fn build_all(ws: &Workspace, profile: Profile) -> Result<Artifacts> {
    let object = build_ebpf::run(ws, profile)?;
    let agent_bin = build_agent(ws, profile, &object)?;
    Ok(Artifacts { agent_bin })
}

fn build_agent(ws: &Workspace, profile: Profile, ebpf_object: &Path) -> Result<PathBuf> {
    let started = Instant::now();
    let mut build = command::host_cargo();
    build
        .current_dir(ws.root())
        .arg("build")
        .args(profile.cargo_args())
        .args(["-p", "rasp-agent", "--target-dir"])
        .arg(ws.host_target_dir())
        .env(EBPF_OBJ_VAR, ebpf_object);
    command::run(&mut build)?;
    let agent_bin = ws.agent_bin(profile);
    eprintln!(
        "build: {} ({})",
        agent_bin.display(),
        human(started.elapsed())
    );
    Ok(agent_bin)
}
