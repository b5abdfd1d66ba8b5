//! Reading kernel structures through the offsets the agent resolved from BTF. Every read is
//! a checked `bpf_probe_read_kernel`; a failed read is an `Err`, never a guessed value.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated},
    programs::TracePointContext,
    EbpfContext,
};
use rasp_common::{
    offsets::{KFUNC_RDONLY_CAST_PLACEHOLDER, OFFSETS_MAGIC},
    KernelOffsets, SyscallNumbers,
};

/// Filled by the agent before load (`EbpfLoader::override_global`); read-only to programs.
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets::unset();

/// An offset read where it is used rather than kept: loop-invariant offsets hoisted by the
/// compiler stay live across every helper call of a walk and are spilled, a slot each,
/// which overflowed the 512-byte stack. A load from the (frozen) table is a constant to
/// the verifier all the same.
#[inline(always)]
pub fn fresh(field: &u32) -> u32 {
    // SAFETY: a reference to a field of our own global.
    unsafe { core::ptr::read_volatile(field) }
}

/// The agent's own process id, set before load: its opens, mmaps and connects are not
/// reported (reading /proc for every event would otherwise feed back into itself).
#[no_mangle]
static AGENT_TGID: u32 = 0;

/// The host's syscall numbers for the open family, set before load.
#[no_mangle]
static SYSCALLS: SyscallNumbers = SyscallNumbers::unset();

/// Is the current task a thread of the agent? Read-only data is frozen before the verifier
/// runs, so this compares against a constant.
#[inline(always)]
pub fn is_agent() -> bool {
    // SAFETY: volatile read of our own global (see `offsets`).
    let agent = unsafe { core::ptr::read_volatile(&AGENT_TGID) };
    agent != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == agent
}

#[inline(always)]
pub fn syscalls() -> SyscallNumbers {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&SYSCALLS) }
}

/// A field of a tracepoint's record, by its offset in the tracefs `format` file. A direct
/// context load (the verifier allows reads of tracepoint context) rather than
/// `TracePointContext::read_at`, which pays for a `bpf_probe_read_kernel` call: these
/// loads run on every syscall of the hooked kind, before any filtering.
#[inline(always)]
pub fn tp_field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: `offset` comes from the tracepoint's stable format; the verifier checks the
    // access against the context size.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

/// The offset table, or `None` when the agent did not fill it (then nothing is read).
/// A reference into the global itself, not a copy: the table is ~170 bytes and stack is
/// scarce. The pointer goes through a volatile stack round-trip so the optimizer cannot
/// fold field loads into the all-zero initializer; the verifier still sees loads from a
/// frozen read-only map, i.e. constants (which BTF pointer loads need as offsets).
#[inline(always)]
pub fn offsets() -> Option<&'static KernelOffsets> {
    let slot: *const KernelOffsets = &OFFSETS;
    // SAFETY: a volatile read of a local holding a valid pointer to our own global.
    let o = unsafe { &*core::ptr::read_volatile(&slot) };
    if o.magic == OFFSETS_MAGIC {
        Some(o)
    } else {
        None
    }
}

pub type Kptr = *const u8;

#[inline(always)]
pub fn read_ptr(base: Kptr, off: u32) -> Result<Kptr, i32> {
    // SAFETY: bpf_probe_read_kernel faults safely on any address.
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const u64) }.map(|v| v as Kptr)
}

#[inline(always)]
pub fn read_u32(base: Kptr, off: u32) -> Result<u32, i32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const u32) }
}

#[inline(always)]
pub fn read_u16(base: Kptr, off: u32) -> Result<u16, i32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const u16) }
}

#[inline(always)]
pub fn read_u64(base: Kptr, off: u32) -> Result<u64, i32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const u64) }
}

/// Copy `len` bytes of kernel memory at `src` into `dst`.
#[inline(always)]
pub fn read_kernel(dst: *mut u8, len: u32, src: Kptr) -> Result<(), i32> {
    // SAFETY: the caller guarantees `dst..dst+len` is memory it owns (stack or record).
    let r = unsafe { generated::bpf_probe_read_kernel(dst as *mut _, len, src as *const _) };
    if r < 0 {
        Err(r as i32)
    } else {
        Ok(())
    }
}

/// A plain load through a BTF-typed pointer: `base` comes from `bpf_get_current_task_btf`,
/// `rdonly_cast`, or a load like this one, and `off` is a constant to the verifier (from
/// the frozen `OFFSETS`). The verifier checks the access against the kernel's BTF and the
/// JIT turns a fault into a zero: no helper call, ~1 ns instead of ~40 for a
/// `bpf_probe_read_kernel` here.
#[inline(always)]
pub fn btf_load<T: Copy>(base: Kptr, off: u32) -> T {
    // SAFETY: a BPF load the verifier checks (see above), not a Rust memory access.
    unsafe { core::ptr::read_volatile(base.add(off as usize) as *const T) }
}

/// `bpf_rdonly_cast(ptr, btf_id)`: `ptr` as a read-only BTF pointer to the kernel type
/// `btf_id` (a constant to the verifier), for `btf_load`. The verifier inlines it: free.
/// Emitted as a call to a placeholder helper the agent rewrites into the kfunc call
/// (`rasp_common::offsets::KFUNC_RDONLY_CAST_PLACEHOLDER`).
#[inline(always)]
pub fn rdonly_cast(ptr: Kptr, btf_id: u32) -> Kptr {
    // SAFETY: a BPF call instruction to a (rewritten) kernel function; it only retypes the
    // pointer, nothing is dereferenced here.
    unsafe {
        let f: unsafe extern "C" fn(Kptr, u32) -> Kptr =
            core::mem::transmute(KFUNC_RDONLY_CAST_PLACEHOLDER as usize);
        f(ptr, btf_id)
    }
}

/// A placeholder kfunc call (rewritten by the agent, see `rdonly_cast`) with up to three
/// arguments.
#[inline(always)]
fn kfunc3(placeholder: u32, a: u64, b: u64, c: u64) -> u64 {
    // SAFETY: a BPF call instruction to a (rewritten) kernel function; the caller passes
    // what that function takes.
    unsafe {
        let f: unsafe extern "C" fn(u64, u64, u64) -> u64 =
            core::mem::transmute(placeholder as usize);
        f(a, b, c)
    }
}

/// `struct bpf_iter_num`: the numeric open-coded iterator's state, on the stack.
#[repr(C, align(8))]
pub struct IterNum(pub u64);

impl IterNum {
    /// `bpf_iter_num_new(it, start, end)`: yields `start..end` (at most 8M values).
    #[inline(always)]
    pub fn new(&mut self, start: i32, end: i32) {
        kfunc3(
            rasp_common::offsets::KFUNC_ITER_NUM_NEW_PLACEHOLDER,
            self as *mut IterNum as u64,
            start as u64,
            end as u64,
        );
    }

    /// `bpf_iter_num_next(it)`: the next value, `None` at the end.
    #[inline(always)]
    pub fn next(&mut self) -> Option<i32> {
        let p = kfunc3(
            rasp_common::offsets::KFUNC_ITER_NUM_NEXT_PLACEHOLDER,
            self as *mut IterNum as u64,
            0,
            0,
        ) as *const i32;
        if p.is_null() {
            None
        } else {
            // SAFETY: a non-null result points at the iterator's current value.
            Some(unsafe { *p })
        }
    }

    /// `bpf_iter_num_destroy(it)`: required before the state goes out of scope.
    #[inline(always)]
    pub fn destroy(&mut self) {
        kfunc3(
            rasp_common::offsets::KFUNC_ITER_NUM_DESTROY_PLACEHOLDER,
            self as *mut IterNum as u64,
            0,
            0,
        );
    }
}

/// `bpf_get_current_task_btf()`: the running task as a BTF pointer, for `btf_load`.
#[inline(always)]
pub fn current_task_btf() -> Kptr {
    // SAFETY: helper without arguments.
    unsafe { generated::bpf_get_current_task_btf() as Kptr }
}

/// `bpf_get_current_task()`: the running task_struct.
#[inline(always)]
pub fn current_task() -> Kptr {
    // SAFETY: helper with no arguments.
    unsafe { generated::bpf_get_current_task() as Kptr }
}

/// Copy a NUL-terminated kernel string into `dst` (`len` bytes, `len` ≤ the space the
/// verifier knows is behind `dst`). Returns bytes written including the NUL.
#[inline(always)]
pub fn read_kernel_str(dst: *mut u8, len: u32, src: Kptr) -> Result<u32, i32> {
    // SAFETY: the caller guarantees `dst..dst+len` lies inside the reserved record.
    let n = unsafe { generated::bpf_probe_read_kernel_str(dst as *mut _, len, src as *const _) };
    if n < 0 {
        Err(n as i32)
    } else {
        Ok(n as u32)
    }
}

/// Copy `len` bytes of the current task's user memory into `dst`.
#[inline(always)]
pub fn read_user(dst: *mut u8, len: u32, src: u64) -> Result<(), i32> {
    // SAFETY: the caller guarantees `dst..dst+len` lies inside the reserved record.
    let r = unsafe { generated::bpf_probe_read_user(dst as *mut _, len, src as *const _) };
    if r < 0 {
        Err(r as i32)
    } else {
        Ok(())
    }
}
