//! Linux guests under QEMU for what the host kernel refuses: BPF-LSM programs load here
//! only inside a guest whose kernel runs `lsm=...,bpf`. A guest is a Debian cloud kernel
//! plus an initramfs built from host binaries; it runs one script and reports result lines
//! over its serial console. `open_bench` is the first user: the cost of an `open()` under
//! a tracepoint versus an LSM hook.

mod cpio;
pub mod enforce_test;
pub mod guest;
pub(crate) mod initramfs;
pub mod kernel;
pub mod open_bench;

pub use enforce_test::enforce_test;
pub use open_bench::open_bench;
