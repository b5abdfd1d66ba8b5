//! `cargo xtask build-ebpf`: compile rasp-ebpf for `bpfel-unknown-none` with the nightly
//! toolchain (`-Z build-std=core`) and bpf-linker. The agent embeds the resulting object.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::command::{self, human};
use crate::workspace::{Profile, Workspace, EBPF_TARGET};

/// Build the eBPF object and return its path.
pub fn run(ws: &Workspace, profile: Profile) -> Result<PathBuf> {
    let started = Instant::now();
    // Run from the crate's own directory so only rasp-ebpf is selected; the workspace's
    // host crates are never compiled for the BPF target.
    let mut build = command::toolchain_cargo(ws, "nightly");
    build
        .current_dir(ws.ebpf_crate())
        .arg("build")
        .args(profile.cargo_args())
        .args(["-Z", "build-std=core", "--target", EBPF_TARGET])
        .arg("--target-dir")
        .arg(ws.ebpf_target_dir());
    command::run(&mut build)?;

    let object = ws.ebpf_object(profile);
    if !object.is_file() {
        bail!(
            "the eBPF build succeeded but {} is missing",
            object.display()
        );
    }
    eprintln!(
        "build-ebpf: {} ({})",
        object.display(),
        human(started.elapsed())
    );
    Ok(object)
}
