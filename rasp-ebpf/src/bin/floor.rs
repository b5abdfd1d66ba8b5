//! The benchmark floor: a program for every hook the agent attaches, each doing nothing.
//! Run under `rasp-agent floor`, it measures what the hooks themselves cost (the kernel's
//! dispatch to an attached program, and for syscall tracepoints the syscall slow path), so
//! the bench can tell that apart from what our program bodies and the daemon add.
//!
//! Names mirror the agent's (`rasp_exec` → `floor_exec`); the agent's loader tables say
//! which hook each one goes on. The `floor_lsm_*` programs are the BPF-LSM counterparts of
//! the syscall tracepoints, for `rasp-agent floor --lsm` in a guest where LSM loads work.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{btf_tracepoint, lsm, tracepoint},
    programs::{BtfTracePointContext, LsmContext, TracePointContext},
};

#[btf_tracepoint(function = "sched_process_exec")]
pub fn floor_exec(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn floor_fork(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn floor_exit(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[tracepoint]
pub fn floor_file_open(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_library_load(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_connect(_ctx: TracePointContext) -> u32 {
    0
}

/// Attached only where the cgroup connect hooks replace `floor_connect` (never by the floor).
#[tracepoint]
pub fn floor_unix_connect(_ctx: TracePointContext) -> u32 {
    0
}

// The issue-19 hooks.

#[tracepoint]
pub fn floor_file_change(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_ptrace(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_namespace(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_mount(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_kernel_module(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_bpf(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_socket(_ctx: TracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn floor_io_uring(_ctx: BtfTracePointContext) -> i32 {
    0
}

// LSM programs return the hook's verdict: 0 allows, as the hook would without us.

#[lsm(hook = "file_open")]
pub fn floor_lsm_file_open(_ctx: LsmContext) -> i32 {
    0
}

#[lsm(hook = "mmap_file")]
pub fn floor_lsm_mmap_file(_ctx: LsmContext) -> i32 {
    0
}

#[lsm(hook = "socket_connect")]
pub fn floor_lsm_socket_connect(_ctx: LsmContext) -> i32 {
    0
}

#[lsm(hook = "bprm_check_security")]
pub fn floor_lsm_bprm_check_security(_ctx: LsmContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Never reached: nothing here can panic, and the verifier would refuse a live panic path.
    loop {}
}
