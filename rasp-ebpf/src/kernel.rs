//! Reading kernel structures through the offsets the agent resolved from BTF. Every read is
//! a checked `bpf_probe_read_kernel`; a failed read is an `Err`, never a guessed value.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use rasp_common::{offsets::OFFSETS_MAGIC, KernelOffsets};

/// Filled by the agent before load (`EbpfLoader::override_global`); read-only to programs.
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets::unset();

/// The offset table, or `None` when the agent did not fill it (then nothing is read).
#[inline(always)]
pub fn offsets() -> Option<KernelOffsets> {
    // SAFETY: a plain read of our own global; volatile so the compiler cannot fold the
    // all-zero initializer into the code.
    let o = unsafe { core::ptr::read_volatile(&OFFSETS) };
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
pub fn read_u64(base: Kptr, off: u32) -> Result<u64, i32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const u64) }
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
