//! The techniques of `rasp-technique`, one module each.

mod bpf;
mod io_uring;
mod memory;
mod module;

use anyhow::Result;

#[derive(clap::Parser, Debug)]
#[command(name = "rasp-technique")]
pub struct Cli {
    #[command(subcommand)]
    pub technique: Technique,
}

#[derive(clap::Subcommand, Debug)]
pub enum Technique {
    /// Open PATH read-only through io_uring (IORING_OP_OPENAT), then close it.
    IoUringOpen { path: String },
    /// Connect a TCP socket to ADDR (`127.0.0.1:9`) through io_uring (IORING_OP_CONNECT);
    /// a refused connection is fine, the request was submitted.
    IoUringConnect { addr: std::net::SocketAddrV4 },
    /// Load a two-instruction socket-filter BPF program (returns 0), then close it.
    BpfLoad,
    /// Attach to PID with PTRACE_ATTACH, read a word of its stack and write it back
    /// unchanged (PTRACE_POKEDATA), detach.
    PtracePoke { pid: u32 },
    /// Read 8 bytes of PID's stack with process_vm_readv and write them back unchanged
    /// with process_vm_writev.
    VmReadWrite { pid: u32 },
    /// Load the kernel module file PATH with finit_module(2) (compressed files are handed
    /// to the kernel to decompress), as a rootkit's own loader would.
    FinitModule { path: String },
}

pub fn run(t: Technique) -> Result<String> {
    match t {
        Technique::IoUringOpen { path } => io_uring::open(&path),
        Technique::IoUringConnect { addr } => io_uring::connect(addr),
        Technique::BpfLoad => bpf::load(),
        Technique::PtracePoke { pid } => memory::ptrace_poke(pid),
        Technique::VmReadWrite { pid } => memory::vm_read_write(pid),
        Technique::FinitModule { path } => module::finit(&path),
    }
}
