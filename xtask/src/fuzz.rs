//! `cargo xtask fuzz`: the cargo-fuzz targets in fuzz/ (nightly, libFuzzer), each for a
//! bounded time with bounded memory and time per input. `cargo xtask test` runs every
//! target briefly beside its other stages; a longer campaign is `cargo xtask fuzz --seconds N`
//! (fuzz/README.md). A crash fails the run and leaves its input in fuzz/artifacts/TARGET/.

use std::path::Path;

use anyhow::{bail, Result};

use crate::build::EBPF_OBJ_VAR;
use crate::command;
use crate::workspace::Workspace;

/// Every target in fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &[
    "policy",
    "glob_diff",
    "api_request",
    "kernel_record",
    "sql",
    "http",
    "mask",
];

/// Per input: a slower input is a hang (libFuzzer's `-timeout`, seconds).
const INPUT_TIMEOUT_SECS: u32 = 10;
/// Resident memory a target may reach (libFuzzer's `-rss_limit_mb`; also its malloc limit).
const RSS_LIMIT_MB: u32 = 1024;
/// Largest input tried (the socket's and the ring's records are smaller; policies and SQL
/// may be larger, which the unit tests cover).
const MAX_INPUT_BYTES: u32 = 64 * 1024;
/// The `cargo xtask test` stage: each target this long.
pub const SHORT_SECS: u32 = 10;

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 600)]
    pub seconds: u32,
    /// Only these targets (comma-separated), e.g. `--only sql,http`.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Use the eBPF object already built (no build of the agent first): how `test` runs
    /// the targets beside its other stages.
    #[arg(long)]
    pub built: bool,
}

pub fn run(ws: &Workspace, ebpf_object: &Path, args: &FuzzArgs) -> Result<()> {
    let targets: Vec<&str> = if args.only.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in &args.only {
            if !TARGETS.contains(&t.as_str()) {
                bail!("unknown fuzz target `{t}`; targets: {}", TARGETS.join(", "));
            }
        }
        args.only.iter().map(String::as_str).collect()
    };
    build(ws, ebpf_object)?;
    for target in targets {
        run_target(ws, ebpf_object, target, args.seconds)?;
    }
    Ok(())
}

fn cargo_fuzz(ws: &Workspace, ebpf_object: &Path) -> std::process::Command {
    let mut cmd = command::toolchain_cargo(ws, command::NIGHTLY);
    cmd.current_dir(ws.root())
        .env(EBPF_OBJ_VAR, ebpf_object)
        .env("PATH", command::tool_path(&[]));
    cmd
}

fn build(ws: &Workspace, ebpf_object: &Path) -> Result<()> {
    let mut cmd = cargo_fuzz(ws, ebpf_object);
    cmd.args(["fuzz", "build", "--fuzz-dir", "fuzz"]);
    command::run(&mut cmd)
}

fn run_target(ws: &Workspace, ebpf_object: &Path, target: &str, seconds: u32) -> Result<()> {
    eprintln!("fuzz: {target} for {seconds} s");
    // The corpus libFuzzer grows (ignored by git), then the small seeds we wrote by hand
    // (read only): the first directory is where new inputs go.
    let corpus = ws.root().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", corpus.display()))?;
    let seeds = ws.root().join("fuzz/seeds").join(target);
    let mut cmd = cargo_fuzz(ws, ebpf_object);
    cmd.args(["fuzz", "run", "--fuzz-dir", "fuzz", target])
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-max_len={MAX_INPUT_BYTES}"))
        .arg("-print_final_stats=1");
    command::run(&mut cmd).map_err(|e| {
        e.context(format!(
            "fuzz target `{target}` failed: the crashing input is in fuzz/artifacts/{target}/ \
             (reproduce: cargo +{} fuzz run --fuzz-dir fuzz {target} FILE)",
            command::NIGHTLY
        ))
    })
}
