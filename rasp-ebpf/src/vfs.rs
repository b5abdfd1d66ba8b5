//! Path reconstruction from dentries, the way the kernel's `prepend_path` walks them:
//! up `d_parent` to the mount root, across to the parent mount's mountpoint, until the
//! task's root (so paths are what the process itself sees, container roots included).
//! `bpf_d_path` is not allowed in tracepoint programs, hence the walk.

use crate::kernel::{read_kernel_str, read_ptr, Kptr};
use rasp_common::{
    limits::{NAME_SLOT, PATH_CAP, PATH_DEPTH},
    KernelOffsets,
};

pub struct PathWalk {
    /// Bytes written: components leaf first, each NUL-terminated.
    pub len: u32,
    /// The walk stopped before reaching the root (too deep or too long).
    pub truncated: bool,
}

/// Rebuild `path` (a `struct path *`) relative to `root` (the task's `fs->root`) into `buf`,
/// which has `PATH_CAP` bytes followed by at least `NAME_SLOT` bytes of record (see
/// `ExecRecord::_slack`).
#[inline(always)]
pub fn walk_path(o: &KernelOffsets, path: Kptr, root: Kptr, buf: *mut u8) -> Result<PathWalk, i32> {
    let mut mnt = read_ptr(path, o.path_mnt)?;
    let mut dentry = read_ptr(path, o.path_dentry)?;
    let root_mnt = read_ptr(root, o.path_mnt)?;
    let root_dentry = read_ptr(root, o.path_dentry)?;
    let mut off: u32 = 0;

    for _ in 0..PATH_DEPTH {
        if dentry == root_dentry && mnt == root_mnt {
            return Ok(PathWalk {
                len: off,
                truncated: false,
            });
        }
        let mnt_root = read_ptr(mnt, o.vfsmount_root)?;
        if dentry == mnt_root {
            // `struct vfsmount` is embedded in `struct mount` at `mount_mnt`.
            let mount = mnt.wrapping_sub(o.mount_mnt as usize);
            let parent_mount = read_ptr(mount, o.mount_parent)?;
            if parent_mount == mount {
                // The root of this mount namespace (or an internal mount: memfd, pipes).
                return Ok(PathWalk {
                    len: off,
                    truncated: false,
                });
            }
            dentry = read_ptr(mount, o.mount_mountpoint)?;
            mnt = parent_mount.wrapping_add(o.mount_mnt as usize);
            continue;
        }
        let parent = read_ptr(dentry, o.dentry_parent)?;
        if parent == dentry {
            return Ok(PathWalk {
                len: off,
                truncated: false,
            });
        }
        let remaining = PATH_CAP as u32 - off;
        if remaining < 2 {
            return Ok(PathWalk {
                len: off,
                truncated: true,
            });
        }
        let slot = if remaining < NAME_SLOT as u32 {
            remaining
        } else {
            NAME_SLOT as u32
        };
        // Masks for the verifier: offset < PATH_CAP, size in 1..=NAME_SLOT; the record's
        // slack after the buffer covers the sum. `remaining` above keeps us logically inside.
        let at = off & (PATH_CAP as u32 - 1);
        let size = ((slot - 1) & (NAME_SLOT as u32 - 1)) + 1;
        let name = read_ptr(dentry, o.dentry_name_ptr)?;
        // SAFETY: `at + size` < PATH_CAP + NAME_SLOT, inside the record (see above).
        let n = read_kernel_str(unsafe { buf.add(at as usize) }, size, name)?;
        if n == 0 {
            return Err(-1);
        }
        if n == size && size < NAME_SLOT as u32 {
            // The component may have been cut by the end of the buffer.
            return Ok(PathWalk {
                len: off + n,
                truncated: true,
            });
        }
        off += n;
        dentry = parent;
    }
    Ok(PathWalk {
        len: off,
        truncated: true,
    })
}
