//! BPF-LSM: where the kernel accepts LSM programs, the acts a deny rule names are refused
//! before they happen (-EPERM, the process lives), and the refusal is reported with the
//! rule that made it. The hooks see what the syscall tracepoints miss: io_uring and compat
//! syscalls open files and connect through the same security hooks.
//!
//! `rasp_lsm_probe` is loaded (never attached) at start to learn whether this kernel accepts
//! LSM programs at all. The enforcing programs are attached only when it does and some
//! rule needs them.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use rasp_common::{
    deny::{ACT_EXEC, ACT_MMAP_EXEC, VERDICT_LSM_DENIED, VERDICT_QUARANTINED},
    record::{ConnectRecord, AF_INET, AF_INET6},
    EventKind, LossSite,
};

use crate::{
    deny::{file_denied, quarantined, v4_denied, v6_denied},
    event::current_header,
    file::{open_acts, send_file_open, send_library_load, verdict_word},
    kernel::{is_agent, offsets, rdonly_cast, read_kernel, read_ptr, Kptr},
    maps::{loss, wake_flags_now, EVENTS},
    process::send_refused_exec,
    vfs::FileView,
};

const EPERM: i32 = 1;
const PROT_EXEC: u64 = 0x4;

#[lsm(hook = "bprm_check_security")]
pub fn rasp_lsm_probe(_ctx: LsmContext) -> i32 {
    0
}

/// `bprm_check_security(struct linux_binprm *bprm)`.
#[lsm(hook = "bprm_check_security")]
pub fn rasp_lsm_exec(ctx: LsmContext) -> i32 {
    let bprm: Kptr = ctx.arg(0);
    let earlier: i32 = ctx.arg(1);
    if earlier != 0 {
        return earlier; // another BPF LSM program refused already
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let Ok(file) = read_ptr(bprm, o.binprm_file) else {
        return 0;
    };
    match file_denied(o, file, ACT_EXEC) {
        Some(rule) if !is_agent() => {
            send_refused_exec(o, bprm, VERDICT_LSM_DENIED, rule);
            -EPERM
        }
        _ => 0,
    }
}

/// `file_open(struct file *file)`: every open, whatever the syscall (io_uring included).
#[lsm(hook = "file_open")]
pub fn rasp_lsm_file_open(ctx: LsmContext) -> i32 {
    let file: Kptr = ctx.arg(0);
    let earlier: i32 = ctx.arg(1);
    if earlier != 0 {
        return earlier;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let file = rdonly_cast(file, o.btf_file);
    let view = FileView::of(o, file);
    match file_denied(o, file, open_acts(view.mode(o))) {
        Some(rule) if !is_agent() => {
            // No descriptor exists: the open never completed.
            send_file_open(
                o,
                &view,
                u32::MAX,
                i32::MIN,
                Some((VERDICT_LSM_DENIED, rule)),
            );
            -EPERM
        }
        _ => 0,
    }
}

/// `mmap_file(struct file *file, unsigned long reqprot, unsigned long prot, unsigned long
/// flags)`: an executable mapping of a file.
#[lsm(hook = "mmap_file")]
pub fn rasp_lsm_mmap_file(ctx: LsmContext) -> i32 {
    let file: Kptr = ctx.arg(0);
    let prot: u64 = ctx.arg(2);
    let earlier: i32 = ctx.arg(4);
    if earlier != 0 {
        return earlier;
    }
    if file.is_null() || prot & PROT_EXEC == 0 {
        return 0;
    }
    exec_mapping_denied(file, prot)
}

/// `file_mprotect(struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot)`:
/// making a file mapping executable afterwards must not get round the mmap check.
#[lsm(hook = "file_mprotect")]
pub fn rasp_lsm_file_mprotect(ctx: LsmContext) -> i32 {
    let vma: Kptr = ctx.arg(0);
    let prot: u64 = ctx.arg(2);
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return earlier;
    }
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    match read_ptr(vma, o.vma_file) {
        Ok(file) if !file.is_null() => exec_mapping_denied(file, prot),
        _ => 0,
    }
}

#[inline(always)]
fn exec_mapping_denied(file: Kptr, prot: u64) -> i32 {
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    match file_denied(o, file, ACT_MMAP_EXEC) {
        Some(rule) if !is_agent() => {
            let view = FileView::of(o, rdonly_cast(file, o.btf_file));
            let verdict = verdict_word(VERDICT_LSM_DENIED, rule);
            send_library_load(o, &view, -1, prot & 0xffff_ffff, verdict);
            -EPERM
        }
        _ => 0,
    }
}

/// `socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`: the
/// kernel's copy of the address, before any protocol code runs.
#[lsm(hook = "socket_connect")]
pub fn rasp_lsm_connect(ctx: LsmContext) -> i32 {
    let address: Kptr = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return earlier;
    }
    let mut sa = [0u8; 24];
    let len = if addrlen >= 24 {
        24
    } else if addrlen >= 16 {
        16
    } else {
        return 0;
    };
    if read_kernel(sa.as_mut_ptr(), len, address).is_err() {
        return 0;
    }
    let family = u16::from_ne_bytes([sa[0], sa[1]]);
    let port = u16::from_be_bytes([sa[2], sa[3]]);
    let mut addr = [0u8; 16];
    let denied = if family == AF_INET {
        let v4 = [sa[4], sa[5], sa[6], sa[7]];
        addr[..4].copy_from_slice(&v4);
        quarantined()
            .map(|r| (VERDICT_QUARANTINED, r))
            .or_else(|| v4_denied(v4, port).map(|r| (VERDICT_LSM_DENIED, r)))
    } else if family == AF_INET6 && len == 24 {
        addr.copy_from_slice(&sa[8..24]);
        quarantined()
            .map(|r| (VERDICT_QUARANTINED, r))
            .or_else(|| v6_denied(addr, port).map(|r| (VERDICT_LSM_DENIED, r)))
    } else {
        return 0;
    };
    let Some((verdict, rule)) = denied else {
        return 0;
    };
    if is_agent() {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return -EPERM;
    };
    match EVENTS.reserve::<ConnectRecord>(0) {
        Some(mut entry) => {
            let mut header =
                current_header(EventKind::Connect, o, core::mem::size_of::<ConnectRecord>());
            header.verdict = verdict;
            header.verdict_rule = rule;
            entry.write(ConnectRecord {
                header,
                family,
                port,
                fd: -1,
                addr,
            });
            entry.submit(wake_flags_now());
        }
        None => loss(LossSite::ConnectReserve, line!()),
    }
    -EPERM
}
