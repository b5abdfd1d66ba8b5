//! Kernel structure offsets, resolved by the agent from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) and written into the eBPF object's read-only `OFFSETS` global
//! before load. aya-ebpf has no CO-RE relocations for Rust programs; this is how one object
//! reads `task_struct` and friends correctly on the 6.18 host and the 6.12 LSM guest alike.

/// Byte offsets of the fields the probes read. `magic` is `OFFSETS_MAGIC` once userspace has
/// filled the struct; programs refuse to read kernel memory with an unset table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub magic: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_mm: u32,
    pub task_fs: u32,
    pub task_exit_code: u32,
    pub task_signal: u32,
    pub signal_live: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub binprm_file: u32,
    pub binprm_filename: u32,
    pub file_f_path: u32,
    pub fs_root: u32,
    pub fs_pwd: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_name_ptr: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
}

pub const OFFSETS_MAGIC: u32 = 0x7261_7370; // "rasp"

impl KernelOffsets {
    pub const fn unset() -> Self {
        Self {
            magic: 0,
            task_pid: 0,
            task_tgid: 0,
            task_real_parent: 0,
            task_mm: 0,
            task_fs: 0,
            task_exit_code: 0,
            task_signal: 0,
            signal_live: 0,
            mm_arg_start: 0,
            mm_arg_end: 0,
            binprm_file: 0,
            binprm_filename: 0,
            file_f_path: 0,
            fs_root: 0,
            fs_pwd: 0,
            path_mnt: 0,
            path_dentry: 0,
            dentry_parent: 0,
            dentry_name_ptr: 0,
            mount_mnt: 0,
            mount_parent: 0,
            mount_mountpoint: 0,
            vfsmount_root: 0,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only u32 fields, no padding, every bit pattern valid.
unsafe impl aya::Pod for KernelOffsets {}
