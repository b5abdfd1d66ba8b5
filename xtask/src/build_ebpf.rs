//! `cargo xtask build-ebpf`: compile rasp-ebpf for `bpfel-unknown-none` with the nightly
//! toolchain (`-Z build-std=core`) and bpf-linker. The agent embeds the resulting objects:
//! `rasp-ebpf` (its programs) and `rasp-floor` (empty programs on the same hooks, the
//! benchmark floor), both bins of the one crate, built by the one cargo call.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::command::{self, human};
use crate::workspace::{Profile, Workspace, EBPF_TARGET};

/// The floor object's name, next to the agent's object; `rasp-agent/build.rs` looks for it
/// there too.
pub const FLOOR_OBJECT: &str = "rasp-floor";

/// Build the eBPF objects and return the agent's object path (the floor object sits next
/// to it, named `FLOOR_OBJECT`).
pub fn run(ws: &Workspace, profile: Profile) -> Result<PathBuf> {
    let started = Instant::now();
    // Run from the crate's own directory so only rasp-ebpf is selected; the workspace's
    // host crates are never compiled for the BPF target.
    let mut build = command::toolchain_cargo(ws, command::NIGHTLY);
    build
        .current_dir(ws.ebpf_crate())
        .arg("build")
        .args(profile.cargo_args())
        .args(["-Z", "build-std=core", "--target", EBPF_TARGET])
        .arg("--target-dir")
        .arg(ws.ebpf_target_dir());
    command::run(&mut build)?;

    let object = ws.ebpf_object(profile);
    let floor = object.with_file_name(FLOOR_OBJECT);
    for built in [&object, &floor] {
        if !built.is_file() {
            bail!(
                "the eBPF build succeeded but {} is missing",
                built.display()
            );
        }
    }
    eprintln!(
        "build-ebpf: {} and {} ({})",
        object.display(),
        floor.display(),
        human(started.elapsed())
    );
    Ok(object)
}
