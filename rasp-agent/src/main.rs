//! rasp-agent: the per-node daemon (`run`) and the CLI that talks to it over its unix socket
//! (`status`, `events`, `processes`), in one binary.

use clap::{Parser, Subcommand};
use rasp_agent::{cli, daemon, loader};

#[derive(Parser, Debug)]
#[command(
    name = "rasp-agent",
    version,
    about = "Runtime application self-protection from the kernel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (as root): load the eBPF programs, track processes, serve the socket.
    Run(Box<daemon::RunArgs>),
    /// What the agent runs: kernel, BPF-LSM, programs, ring buffer, events and drops.
    Status(cli::ClientOpts),
    /// Recent events from the agent's buffer, or a live stream with --follow.
    Events(cli::EventsArgs),
    /// The process table: list, one process with its ancestry, or a tree.
    Processes(cli::ProcessesArgs),
    /// The containers the agent has seen: id, runtime, name, image, pod.
    Containers(cli::ClientOpts),
    /// What the policies caught (recent, filtered, or live with --follow).
    Detections(cli::detections::DetectionsArgs),
    /// Policies: list, validate, apply, rollback, simulate.
    #[command(subcommand)]
    Policy(cli::policy::PolicyCommand),
    /// Quarantined cgroups: list, release.
    #[command(subcommand)]
    Quarantine(cli::quarantine::QuarantineCommand),
    /// Benchmark floor (as root): empty eBPF programs on the agent's hooks until SIGTERM.
    /// Hidden: a reference point for `cargo xtask bench`, not something to run in production.
    #[command(hide = true)]
    Floor(loader::floor::FloorArgs),
    /// The bound on held queries, started by `run`: continues threads held too long, and
    /// all of them when the agent is gone. Hidden: the agent starts it itself.
    #[command(hide = true)]
    HoldWatchdog(rasp_agent::enforce::hold::WatchdogArgs),
    /// Verify the eBPF programs (as root) without attaching them: one line each, the
    /// instructions the kernel's verifier walked or why it refused. Exit 1 if one is refused.
    #[command(hide = true)]
    Verify(loader::verify::VerifyArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            init_logging();
            run_daemon(*args)
        }
        Command::Status(opts) => cli::status(&opts),
        Command::Events(args) => cli::events(&args),
        Command::Processes(args) => cli::processes(&args),
        Command::Containers(opts) => cli::containers::containers(&opts),
        Command::Detections(args) => cli::detections::detections(&args),
        Command::Policy(cmd) => cli::policy::run(&cmd),
        Command::Quarantine(cmd) => cli::quarantine::run(&cmd),
        Command::HoldWatchdog(args) => rasp_agent::enforce::hold::run_watchdog(&args),
        Command::Verify(args) => {
            init_logging();
            match loader::verify::run(&args) {
                Ok(true) => Ok(()),
                Ok(false) => Err(anyhow::anyhow!(
                    "a program was refused or is not in the object"
                )),
                Err(e) => Err(e.into()),
            }
        }
        Command::Floor(args) => {
            init_logging();
            loader::floor::run(&args).map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rasp-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_daemon(args: daemon::RunArgs) -> anyhow::Result<()> {
    // Before any thread exists: threads inherit their creator's capabilities. A failure
    // leaves root's set and is logged; it does not stop the agent from protecting the node.
    if loader::env::require_root().is_ok() {
        match loader::privileges::drop_unneeded() {
            Ok(d) => tracing::info!(dropped = %d.dropped.join(","), "capabilities: {d}"),
            Err(e) => {
                tracing::error!(error = %e, "capabilities not dropped: the agent keeps root's")
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rasp-agent")
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(args))
}

fn init_logging() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_env("RASP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
