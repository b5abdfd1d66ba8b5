//! rasp's task runner, `cargo xtask <task>`: setting up a machine, building the eBPF object
//! and the agent, running it, and every check, written in Rust rather than shell so one
//! entry point works the same on a laptop and in CI.

mod bench;
mod build;
mod build_ebpf;
mod command;
mod fuzz;
mod image;
mod run;
mod setup;
mod test;
mod vm;
mod workspace;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use workspace::{Profile, Workspace};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, run and test rasp"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing on Debian bookworm: apt LLVM 22 and the tools the tests
    /// drive, nightly rust-src, bpf-linker. Each step is skipped when already done.
    Setup {
        /// Also start dockerd when it is not running (what the container scenarios need;
        /// `cargo xtask test` does this itself).
        #[arg(long)]
        docker: bool,
    },
    /// Build the eBPF object (nightly, bpfel-unknown-none) into target/ebpf.
    BuildEbpf {
        /// Debug profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Setup, build the eBPF object, then the agent embedding it; prints the agent's path.
    Build {
        /// Debug profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Build, then run `rasp-agent run ARGS` as root (through sudo when not root).
    Run {
        /// Debug profile instead of release.
        #[arg(long)]
        debug: bool,
        /// Arguments for `rasp-agent run`, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Setup, build, fmt, clippy, unit tests, then integration tests (need root).
    Test {
        /// Stop after the unit tests: no root needed, for quick local runs.
        #[arg(long)]
        unit: bool,
    },
    /// BPF-LSM enforcement in a QEMU guest (the host kernel refuses LSM programs): the
    /// agent with an enforce policy, denied and allowed exec/open/io_uring open/mmap/
    /// mprotect/connect, detections `prevented`. Part of `test`.
    VmTest {
        /// Use the agent and probe already built (no setup, no build): how `test` runs it
        /// beside the integration tests.
        #[arg(long)]
        built: bool,
    },
    /// Whether the guest's kernel (Debian's newest cloud kernel) verifies each program,
    /// and what its verifier walked: `rasp-agent verify` in the QEMU guest. Another Debian
    /// kernel with `RASP_VM_KERNEL=linux-image-6.1.0-57-cloud-amd64` (bookworm's own).
    VmVerify {
        /// Only this program (repeatable); default every program the agent loads.
        #[arg(long = "program", value_name = "NAME")]
        programs: Vec<String>,
        /// Use the agent already built (no setup, no build).
        #[arg(long)]
        built: bool,
    },
    /// Fuzz every target in fuzz/ (cargo-fuzz, nightly) for `--seconds` each (default 600):
    /// the longer campaign; `test` runs each for 10 s.
    Fuzz(fuzz::FuzzArgs),
    /// Benchmarks (root): every workload under no agent, the floor, the bpftrace peer and
    /// the agent, side by side; the event storm; writes BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// The agent as a container image from local files (static binary on scratch when
    /// possible) into target/image/ and Docker; `--policy-configmap N` writes deploy's
    /// policy ConfigMap instead.
    Image(image::ImageArgs),
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(task: Task) -> Result<()> {
    let ws = Workspace::locate();
    match task {
        Task::Setup { docker } => {
            setup::run()?;
            if docker {
                setup::docker_daemon(&ws.host_target_dir().join("dockerd.log"))?;
            }
            Ok(())
        }
        Task::BuildEbpf { debug } => {
            let object = build_ebpf::run(&ws, Profile::from_debug_flag(debug))?;
            println!("{}", object.display());
            Ok(())
        }
        Task::Build { debug } => {
            let artifacts = build::run(&ws, Profile::from_debug_flag(debug))?;
            println!("{}", artifacts.agent_bin.display());
            Ok(())
        }
        Task::Run { debug, args } => run::run(&ws, Profile::from_debug_flag(debug), &args),
        Task::Test { unit } => test::run(&ws, unit),
        Task::VmTest { built } => test::vm_test(&ws, built),
        Task::VmVerify { programs, built } => {
            if !built {
                setup::run()?;
                build::build_all(&ws, Profile::Release)?;
            }
            vm::verify_test(&ws, &ws.agent_bin(Profile::Release), &programs)
        }
        Task::Fuzz(args) => {
            if !args.built {
                build::run(&ws, Profile::Release)?;
            }
            fuzz::run(&ws, &ws.ebpf_object(Profile::Release), &args)
        }
        Task::Bench(args) => bench::run(&ws, &args),
        Task::Image(args) => image::run(&ws, &args),
    }
}
