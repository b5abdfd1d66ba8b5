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
    // fd → struct file: task->files->fdt->fd[fd], bounded by fdt->max_fds.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_f_flags: u32,
    pub file_f_mode: u32,
    /// `struct pt_regs` offsets of the second and third syscall arguments (x86_64: si, dx),
    /// read at syscall exit to recover the open flags the kernel cleared from `f_flags`.
    pub regs_arg2: u32,
    pub regs_arg3: u32,
    /// `dentry.d_name.len`, and the name stored inline in the dentry (`d_shortname`, called
    /// `d_iname` before 6.14) for names shorter than it.
    pub dentry_name_len: u32,
    pub dentry_inline_name: u32,
    /// Kernel BTF type ids of `struct file` and `struct mount`: the pre-filters cast a file
    /// read from the fd table, and a mount found from its embedded vfsmount, to BTF pointers
    /// (`bpf_rdonly_cast`) and read them with plain loads instead of helper calls.
    pub btf_file: u32,
    pub btf_mount: u32,
    /// `task->cred` and the fields of `struct cred` the header carries.
    pub task_cred: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    pub cred_cap_effective: u32,
    /// `task->group_leader` and `task->start_boottime`: the process's start, half its exec id.
    pub task_group_leader: u32,
    pub task_start_time: u32,
    /// A file's identity for the deny maps: `dentry->d_inode`, `inode->i_ino`,
    /// `inode->i_sb`, `super_block->s_dev`; and `vm_area_struct->vm_file` (mprotect).
    pub dentry_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub vma_file: u32,
    /// A mapped file's identity for `SEEN_EXEC_FILES`: `file->f_inode` (then `inode_ino`,
    /// `inode_sb`, `sb_dev` above).
    pub file_f_inode: u32,
    // ---- Issue-19 hooks -------------------------------------------------------------------
    /// `file->private_data` (a socket file's `struct socket`) and the inode fields a
    /// descriptor's kind comes from (with `file_f_inode` and `inode_ino` above).
    pub file_private_data: u32,
    pub inode_i_mode: u32,
    pub inode_i_rdev: u32,
    /// `socket->sk`, `sock.__sk_common.skc_family`, and the BTF id of `struct socket` (to
    /// cast `private_data`).
    pub socket_sk: u32,
    pub sock_family: u32,
    pub btf_socket: u32,
    /// `task->nsproxy->mnt_ns->ns.inum`.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    /// The task's active PID namespace: `task->thread_pid->numbers[level].ns->ns.inum`.
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_ns: u32,
    pub pid_ns_inum: u32,
    /// `task->flags` (PF_IO_WORKER marks io_uring's worker threads).
    pub task_flags: u32,
    /// `io_kiocb.opcode` and `io_kiocb.cqe.user_data`; `OFFSET_UNKNOWN` on a kernel
    /// without io_uring (the io_uring program then sends nothing).
    pub io_kiocb_opcode: u32,
    pub io_kiocb_user_data: u32,
    /// `struct pt_regs` offsets of all six syscall arguments, read at syscall exit by the
    /// issue-19 programs (`regs_arg2`/`regs_arg3` above are the open family's). Eight slots
    /// (the last two repeat the sixth): a table a masked index stays inside.
    pub regs_args: [u32; 8],
}

/// An offset the running kernel's BTF does not have (an optional feature is compiled out).
pub const OFFSET_UNKNOWN: u32 = u32::MAX;

/// A call to this helper id in the object is a call to the kfunc `bpf_rdonly_cast`: aya has
/// no kfunc relocations, so the programs call this placeholder and the agent rewrites each
/// such instruction into a kfunc call (`src_reg = BPF_PSEUDO_KFUNC_CALL`, `imm` = the
/// function's id in the kernel's BTF) before loading. The kernel rejects the placeholder
/// if the rewrite did not happen ("invalid func").
pub const KFUNC_RDONLY_CAST_PLACEHOLDER: u32 = 0x7261_6b00; // "rak\0"
/// The numeric open-coded iterator (`bpf_iter_num_new/next/destroy`, Linux 6.4+), which the
/// SQL hold pre-check loops with: the verifier checks its body until the loop state
/// converges instead of once per iteration (a plain 512-byte loop ran out of its
/// 1M-instruction budget; `bpf_loop` would need BTF func_info this object lacks).
pub const KFUNC_ITER_NUM_NEW_PLACEHOLDER: u32 = 0x7261_6b01;
pub const KFUNC_ITER_NUM_NEXT_PLACEHOLDER: u32 = 0x7261_6b02;
pub const KFUNC_ITER_NUM_DESTROY_PLACEHOLDER: u32 = 0x7261_6b03;

/// Each kfunc placeholder and the kernel function it stands for.
pub const KFUNC_PLACEHOLDERS: [(u32, &str); 4] = [
    (KFUNC_RDONLY_CAST_PLACEHOLDER, "bpf_rdonly_cast"),
    (KFUNC_ITER_NUM_NEW_PLACEHOLDER, "bpf_iter_num_new"),
    (KFUNC_ITER_NUM_NEXT_PLACEHOLDER, "bpf_iter_num_next"),
    (KFUNC_ITER_NUM_DESTROY_PLACEHOLDER, "bpf_iter_num_destroy"),
];

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
            task_files: 0,
            files_fdt: 0,
            fdtable_fd: 0,
            fdtable_max_fds: 0,
            file_f_flags: 0,
            file_f_mode: 0,
            regs_arg2: 0,
            regs_arg3: 0,
            dentry_name_len: 0,
            dentry_inline_name: 0,
            btf_file: 0,
            btf_mount: 0,
            task_cred: 0,
            cred_euid: 0,
            cred_egid: 0,
            cred_cap_effective: 0,
            task_group_leader: 0,
            task_start_time: 0,
            dentry_inode: 0,
            inode_ino: 0,
            inode_sb: 0,
            sb_dev: 0,
            vma_file: 0,
            file_f_inode: 0,
            file_private_data: 0,
            inode_i_mode: 0,
            inode_i_rdev: 0,
            socket_sk: 0,
            sock_family: 0,
            btf_socket: 0,
            task_nsproxy: 0,
            nsproxy_mnt_ns: 0,
            mnt_ns_inum: 0,
            task_thread_pid: 0,
            pid_level: 0,
            pid_numbers: 0,
            upid_size: 0,
            upid_ns: 0,
            pid_ns_inum: 0,
            task_flags: 0,
            io_kiocb_opcode: OFFSET_UNKNOWN,
            io_kiocb_user_data: OFFSET_UNKNOWN,
            regs_args: [0; 8],
        }
    }
}

/// Syscall numbers of the host architecture for the open family, written by the agent into
/// the `SYSCALLS` global: one program serves all four `sys_exit_*` tracepoints and tells
/// them apart by the tracepoint's `__syscall_nr`. `NO_SYSCALL` where the architecture lacks
/// one (arm64 has no open/creat).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallNumbers {
    pub open: u32,
    pub openat: u32,
    pub creat: u32,
    pub openat2: u32,
}

pub const NO_SYSCALL: u32 = u32::MAX;

impl SyscallNumbers {
    pub const fn unset() -> Self {
        Self {
            open: NO_SYSCALL,
            openat: NO_SYSCALL,
            creat: NO_SYSCALL,
            openat2: NO_SYSCALL,
        }
    }
}

/// How the issue-19 syscall programs read one syscall's arguments: the agent fills
/// `SYSCALL_SHAPES[nr]` for every syscall it attaches them to, so one program serves a
/// family (chmod, fchmod, fchmodat, fchmodat2 ...) whose members pass the same things in
/// different argument slots. Argument indices are 0-based; `ARG_NONE` where the syscall
/// has no such argument. `op` 0: not a syscall of ours (the program returns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallShape {
    /// The operation (`record::CHANGE_OP_*`, `MODULE_OP_*`, `NS_OP_*`, `MOUNT_OP_*`, or a
    /// `PTRACE_VM_*` request for process_vm_readv/writev).
    pub op: u32,
    /// The first location: the descriptor it is relative to (`ARG_CWD`: the working
    /// directory), and its name (`ARG_NONE`: the descriptor's file itself).
    pub dirfd: u8,
    pub name: u8,
    /// The second location (rename's and link's new name, symlink's link path).
    pub dirfd2: u8,
    pub name2: u8,
    /// chmod's mode, rename's/unlinkat's flags, truncate's length.
    pub value: u8,
    /// setxattr's name, symlink's target, utimes' times pointer.
    pub extra: u8,
    /// `TIMES_*`: how `extra` is laid out for the utimes family.
    pub times: u8,
    pub _pad: u8,
}

/// No such argument (reads as 0).
pub const ARG_NONE: u8 = 0xff;
/// A descriptor argument the syscall does not have: the working directory (AT_FDCWD).
pub const ARG_CWD: u8 = 6;
/// utimensat: `struct timespec[2]` (UTIME_NOW/UTIME_OMIT in tv_nsec).
pub const TIMES_TIMESPEC: u8 = 1;
/// utimes, futimesat: `struct timeval[2]`.
pub const TIMES_TIMEVAL: u8 = 2;
/// utime: `struct utimbuf` (two time_t).
pub const TIMES_UTIMBUF: u8 = 3;

impl SyscallShape {
    pub const fn none() -> Self {
        SyscallShape {
            op: 0,
            dirfd: ARG_CWD,
            name: ARG_NONE,
            dirfd2: ARG_CWD,
            name2: ARG_NONE,
            value: ARG_NONE,
            extra: ARG_NONE,
            times: 0,
            _pad: 0,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), only integer fields, no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::SyscallNumbers {}
    unsafe impl aya::Pod for super::SyscallShape {}
}

const _: () = assert!(core::mem::size_of::<SyscallShape>() == 12);
