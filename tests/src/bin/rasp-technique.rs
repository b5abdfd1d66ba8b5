//! `rasp-technique`: attack techniques no packaged tool performs the way an intruder's own
//! program would, done for real and harmlessly, for the policy scenarios: a file opened and
//! a connection made through io_uring (what the "curing" rootkit does), a BPF program
//! loaded, another process's memory read and written back unchanged through ptrace and
//! process_vm_readv/writev. Prints one line saying what it did; failures go to stderr,
//! exit 1.

#[path = "../technique/mod.rs"]
mod technique;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match technique::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { 1 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    match technique::run(cli.technique) {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("rasp-technique: {err:#}");
            ExitCode::from(1)
        }
    }
}
