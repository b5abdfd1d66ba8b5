//! `rasp-replay`: the agent's userspace event path without a kernel — synthesised kernel
//! records of one kind through decode → process table → rules → store, one JSON line of
//! results on stdout. `cargo xtask bench` runs it under callgrind (instructions per event)
//! and natively (events a second one core drains).

#[path = "../replay/mod.rs"]
mod replay;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "rasp-replay",
    about = "Synthesised kernel records through the agent's pipeline: one JSON line per run"
)]
struct Cli {
    /// What the measured events are.
    #[arg(long, value_enum)]
    kind: replay::ReplayKind,
    /// Measured events.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    count: u32,
    /// Live processes in the table before them.
    #[arg(long, default_value_t = replay::DEFAULT_POPULATION, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    population: u32,
    /// Policy directory (the built-in defaults without it).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Where the detection store journals (created; a fresh temporary directory without it).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let state_dir = cli.state_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("rasp-replay-{}", std::process::id()))
    });
    let result = replay::run(
        cli.kind,
        cli.count,
        cli.population,
        cli.policies,
        state_dir.clone(),
    );
    let _ = std::fs::remove_dir_all(&state_dir);
    match result.and_then(|report| Ok(serde_json::to_string(&report)?)) {
        Ok(line) => {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rasp-replay: {e:#}");
            ExitCode::from(1)
        }
    }
}
