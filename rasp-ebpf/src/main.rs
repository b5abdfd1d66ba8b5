//! rasp's kernel side: one module per hook family, all feeding the one `EVENTS` ring buffer
//! declared in `maps`. Built for `bpfel-unknown-none` by `cargo xtask build-ebpf`; the agent
//! embeds the object and fills `OFFSETS` from the running kernel's BTF before loading it.
#![no_std]
#![no_main]
// `atomic_xadd` for per-CPU counters a preempted program must not lose (maps.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod deny;
mod event;
mod file;
mod fsmeta;
mod iouring;
mod kernel;
mod location;
mod lsm;
mod maps;
mod net;
mod ns;
mod proc;
mod process;
mod sql;
mod vfs;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Never reached: the verifier rejects programs whose panic paths are live, so a panic
    // compiled in shows up as a load error, not at run time.
    loop {}
}
