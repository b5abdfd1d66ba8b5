//! Shared between the eBPF programs (`rasp-ebpf`) and the agent: every record the kernel
//! sends, every map key/value, and the limits both sides agree on. `no_std` and dependency
//! free for the kernel side; the `user` feature adds `aya::Pod` impls for userspace.
#![no_std]

pub mod deny;
pub mod discovery;
pub mod hold;
pub mod interest;
pub mod limits;
pub mod loss;
pub mod offsets;
pub mod record;
pub mod tls;

pub use loss::LossSite;
pub use offsets::{KernelOffsets, SyscallNumbers};
pub use record::{
    ConnectRecord, EventKind, ExecRecord, ExitRecord, FileOpenRecord, ForkRecord,
    LibraryLoadRecord, RecordHeader,
};
