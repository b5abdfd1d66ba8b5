//! Linux guests under QEMU for what the host kernel refuses: BPF-LSM programs load here
//! only inside a guest whose kernel runs `lsm=...,bpf`. A guest is a Debian cloud kernel
//! plus an initramfs built from host binaries; it runs one script and reports result lines
//! over its serial console. `hook_bench` uses one: the instructions each of the agent's hooks
//! adds to an operation, under tracepoints, LSM hooks and the agent itself; `enforce_test`
//! another: the agent's BPF-LSM enforcement checked on what the guest kernel refuses;
//! `verify_test` whether the guest's kernel accepts each program.

mod cpio;
pub mod enforce_test;
pub mod guest;
pub mod hook_bench;
pub(crate) mod initramfs;
pub mod kernel;
pub mod verify_test;

pub use enforce_test::enforce_test;
pub use hook_bench::hook_bench;
pub use verify_test::verify_test;
