//! `rasp-workload`: the syscall-heavy loops `cargo xtask bench` times under no agent, a
//! floor of empty hooks, a bpftrace peer and the real agent. Each subcommand runs one
//! workload and prints exactly one JSON line on stdout; failures go to stderr, exit 1.

#[path = "../workload/mod.rs"]
mod workload;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match workload::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version are not errors; every other parse failure is, with exit 1
            // like any other failure so the orchestrator has one code to check.
            let code = if err.use_stderr() { 1 } else { 0 };
            // Nothing sensible is left to do if stderr itself is gone.
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let name = cli.workload.name();
    match workload::run(cli.workload) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(report)) => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{report}").and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("rasp-workload {name}: writing the result to stdout: {err}");
                    ExitCode::from(1)
                }
            }
        }
        Err(err) => {
            eprintln!("rasp-workload {name}: {err:#}");
            ExitCode::from(1)
        }
    }
}
