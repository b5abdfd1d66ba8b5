//! `cargo xtask run [-- ARGS]`: build, then become `rasp-agent run ARGS` as root. xtask
//! execs the agent (or sudo) instead of waiting for it: Ctrl-C and the exit status then
//! belong to the agent alone, with nothing in between to forward or swallow them.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build;
use crate::command;
use crate::workspace::{Profile, Workspace};

pub fn run(ws: &Workspace, profile: Profile, args: &[OsString]) -> Result<()> {
    let artifacts = build::run(ws, profile)?;

    let mut agent = if command::is_root() {
        Command::new(&artifacts.agent_bin)
    } else if let Some(sudo) = command::find_program("sudo", &command::tool_path(&[])) {
        eprintln!("run: not root; the agent loads eBPF programs, starting it through sudo");
        let mut sudo = Command::new(sudo);
        sudo.arg("--").arg(&artifacts.agent_bin);
        sudo
    } else {
        bail!(
            "the agent loads eBPF programs and needs root, and sudo is not installed: \
             run as root"
        );
    };
    agent.arg("run").args(args);
    command::strip_cargo_run_env(&mut agent);

    eprintln!("+ {}", command::display(&agent));
    // Only returns on failure to start.
    let err = agent.exec();
    Err(err).with_context(|| format!("could not start {}", artifacts.agent_bin.display()))
}
