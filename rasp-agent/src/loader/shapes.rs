//! The issue-19 syscall programs serve whole families (one program on chmod, fchmod,
//! fchmodat and fchmodat2): `SYSCALL_SHAPES[nr]` tells them, per syscall number of this
//! architecture, which operation it is and in which argument each location and attribute
//! sits. Written once at load, before the programs are attached.

use rasp_common::{
    offsets::{SyscallShape, TIMES_TIMESPEC, TIMES_TIMEVAL, TIMES_UTIMBUF},
    record::*,
};

/// The shape op of ptrace(2) (`rasp-ebpf` proc.rs: the request is its first argument).
const OP_PTRACE: u32 = 1;

fn shape(op: u32) -> SyscallShape {
    SyscallShape {
        op,
        ..SyscallShape::none()
    }
}

fn change(op: u16) -> SyscallShape {
    shape(u32::from(op))
}

/// `(syscall number, shape)` for every syscall the issue-19 programs are attached to on
/// this architecture.
pub fn syscall_shapes() -> Vec<(libc::c_long, SyscallShape)> {
    let mut out: Vec<(libc::c_long, SyscallShape)> = vec![
        // fchmod(fd, mode): the descriptor's file.
        (
            libc::SYS_fchmod,
            SyscallShape {
                dirfd: 0,
                value: 1,
                ..change(CHANGE_OP_CHMOD)
            },
        ),
        (
            libc::SYS_fchmodat,
            SyscallShape {
                dirfd: 0,
                name: 1,
                value: 2,
                ..change(CHANGE_OP_CHMOD)
            },
        ),
        (
            libc::SYS_setxattr,
            SyscallShape {
                name: 0,
                extra: 1,
                value: 4,
                ..change(CHANGE_OP_SETXATTR)
            },
        ),
        (
            libc::SYS_lsetxattr,
            SyscallShape {
                name: 0,
                extra: 1,
                value: 4,
                ..change(CHANGE_OP_SETXATTR)
            },
        ),
        (
            libc::SYS_fsetxattr,
            SyscallShape {
                dirfd: 0,
                extra: 1,
                value: 4,
                ..change(CHANGE_OP_SETXATTR)
            },
        ),
        (
            libc::SYS_unlinkat,
            SyscallShape {
                dirfd: 0,
                name: 1,
                value: 2,
                ..change(CHANGE_OP_UNLINK)
            },
        ),
        (
            libc::SYS_renameat,
            SyscallShape {
                dirfd: 0,
                name: 1,
                dirfd2: 2,
                name2: 3,
                ..change(CHANGE_OP_RENAME)
            },
        ),
        (
            libc::SYS_renameat2,
            SyscallShape {
                dirfd: 0,
                name: 1,
                dirfd2: 2,
                name2: 3,
                value: 4,
                ..change(CHANGE_OP_RENAME)
            },
        ),
        (
            libc::SYS_truncate,
            SyscallShape {
                name: 0,
                value: 1,
                ..change(CHANGE_OP_TRUNCATE)
            },
        ),
        (
            libc::SYS_ftruncate,
            SyscallShape {
                dirfd: 0,
                value: 1,
                ..change(CHANGE_OP_TRUNCATE)
            },
        ),
        (
            libc::SYS_utimensat,
            SyscallShape {
                dirfd: 0,
                name: 1,
                extra: 2,
                value: 3,
                times: TIMES_TIMESPEC,
                ..change(CHANGE_OP_UTIMES)
            },
        ),
        // symlinkat(target, newdirfd, linkpath): the link is the location, the target
        // what it points to.
        (
            libc::SYS_symlinkat,
            SyscallShape {
                extra: 0,
                dirfd: 1,
                name: 2,
                ..change(CHANGE_OP_SYMLINK)
            },
        ),
        (
            libc::SYS_linkat,
            SyscallShape {
                dirfd: 0,
                name: 1,
                dirfd2: 2,
                name2: 3,
                value: 4,
                ..change(CHANGE_OP_LINK)
            },
        ),
        (libc::SYS_ptrace, shape(OP_PTRACE)),
        (libc::SYS_process_vm_readv, shape(PTRACE_VM_READ)),
        (libc::SYS_process_vm_writev, shape(PTRACE_VM_WRITE)),
        (libc::SYS_setns, shape(NS_OP_SETNS)),
        (libc::SYS_unshare, shape(NS_OP_UNSHARE)),
        (libc::SYS_mount, shape(MOUNT_OP_MOUNT)),
        (libc::SYS_fsopen, shape(MOUNT_OP_FSOPEN)),
        (libc::SYS_init_module, shape(MODULE_OP_INIT)),
        (libc::SYS_finit_module, shape(MODULE_OP_FINIT)),
        (libc::SYS_delete_module, shape(MODULE_OP_DELETE)),
        (libc::SYS_bpf, shape(1)),
    ];
    // fchmodat2 (Linux 6.6) has no libc constant yet: the same number on every
    // architecture (the unified syscall table).
    out.push((
        452,
        SyscallShape {
            dirfd: 0,
            name: 1,
            value: 2,
            ..change(CHANGE_OP_CHMOD)
        },
    ));
    // The legacy path-only calls exist on x86_64, not on arm64's generic table.
    #[cfg(target_arch = "x86_64")]
    out.extend([
        (
            libc::SYS_chmod,
            SyscallShape {
                name: 0,
                value: 1,
                ..change(CHANGE_OP_CHMOD)
            },
        ),
        (
            libc::SYS_unlink,
            SyscallShape {
                name: 0,
                ..change(CHANGE_OP_UNLINK)
            },
        ),
        (
            libc::SYS_rmdir,
            SyscallShape {
                name: 0,
                ..change(CHANGE_OP_RMDIR)
            },
        ),
        (
            libc::SYS_rename,
            SyscallShape {
                name: 0,
                name2: 1,
                ..change(CHANGE_OP_RENAME)
            },
        ),
        (
            libc::SYS_utime,
            SyscallShape {
                name: 0,
                extra: 1,
                times: TIMES_UTIMBUF,
                ..change(CHANGE_OP_UTIMES)
            },
        ),
        (
            libc::SYS_utimes,
            SyscallShape {
                name: 0,
                extra: 1,
                times: TIMES_TIMEVAL,
                ..change(CHANGE_OP_UTIMES)
            },
        ),
        (
            libc::SYS_futimesat,
            SyscallShape {
                dirfd: 0,
                name: 1,
                extra: 2,
                times: TIMES_TIMEVAL,
                ..change(CHANGE_OP_UTIMES)
            },
        ),
        (
            libc::SYS_symlink,
            SyscallShape {
                extra: 0,
                name: 1,
                ..change(CHANGE_OP_SYMLINK)
            },
        ),
        (
            libc::SYS_link,
            SyscallShape {
                name: 0,
                name2: 1,
                ..change(CHANGE_OP_LINK)
            },
        ),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rasp_common::{
        limits::SYSCALL_SLOTS,
        offsets::{ARG_CWD, ARG_NONE},
    };

    #[test]
    fn every_shape_fits_the_table_and_names_real_arguments() {
        let shapes = syscall_shapes();
        let mut seen = std::collections::BTreeSet::new();
        for (nr, s) in &shapes {
            assert!(
                (*nr as u32) < SYSCALL_SLOTS,
                "syscall {nr} beyond the table"
            );
            assert!(seen.insert(*nr), "syscall {nr} shaped twice");
            assert_ne!(s.op, 0, "syscall {nr} has no operation");
            for arg in [s.name, s.name2, s.value, s.extra] {
                assert!(arg == ARG_NONE || arg < 6, "syscall {nr}: argument {arg}");
            }
            for arg in [s.dirfd, s.dirfd2] {
                assert!(arg == ARG_CWD || arg < 6, "syscall {nr}: descriptor {arg}");
            }
        }
        // Every file-change family is present on this architecture.
        let ops: Vec<u32> = shapes.iter().map(|(_, s)| s.op).collect();
        for op in 1..CHANGE_OPS {
            if op == CHANGE_OP_RMDIR || op == CHANGE_OP_TOUCH {
                continue; // decided in the kernel from unlinkat's flags and the times
            }
            assert!(
                ops.contains(&u32::from(op)),
                "no syscall for change op {op}"
            );
        }
    }
}
