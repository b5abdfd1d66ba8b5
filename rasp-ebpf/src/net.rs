//! Network hooks: connect(2) attempts to AF_INET/AF_INET6 addresses, at syscall entry (the
//! outcome is not known there; the record is an attempt). Pre-filtered by the interest
//! maps: a watched destination port or address prefix, or everything with `CONNECT_ALL`.
//! AF_UNIX connects to a socket path (a container runtime's API socket) are their own
//! records, filtered by the path's hashed components (`location`) like file changes.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use core::{mem::size_of, ptr::addr_of_mut};
use rasp_common::{
    interest::{
        CONNECT_ALL, CONNECT_ENABLED, HINT_UNIX_ANY, HINT_UNIX_LEAF, HOOK_ALL, HOOK_ENABLED,
        HOOK_UNIX, HOOK_UNIX_DIRS,
    },
    limits::{PATH_CAP, SUN_PATH_CAP},
    record::{
        ConnectRecord, UnixConnectRecord, AF_INET, AF_INET6, AF_UNIX, UNIX_DIR_FAILED,
        UNIX_PATH_FAILED,
    },
    EventKind, LossSite,
};

use crate::{
    event::current_header,
    kernel::{is_agent, offsets, read_user, tp_field},
    location::{base_of, hints, name_watched, read_user_string, walk_base, ScanState, AT_FDCWD},
    maps::{
        filter_flags, hook_word, loss, wake_flags, watched_v4, watched_v6, Draft, CONNECT_FILTER,
        CONNECT_PORTS, EVENTS,
    },
};

// `sys_enter_connect` record offsets (tracefs `format`).
const TP_FD: usize = 16;
const TP_UADDR: usize = 24;
const TP_ADDRLEN: usize = 32;

/// `sizeof(struct sockaddr_in)`: family, port, address, zero padding.
const SOCKADDR_IN_LEN: i32 = 16;
/// `SIN6_LEN_RFC2133`: the shortest sockaddr_in6 the kernel accepts (no scope id).
const SOCKADDR_IN6_LEN: i32 = 24;

/// Attached to `syscalls/sys_enter_connect`.
#[tracepoint]
pub fn rasp_connect(ctx: TracePointContext) -> u32 {
    let filter = filter_flags(&CONNECT_FILTER);
    let unix = hook_word(HOOK_UNIX) & HOOK_ENABLED != 0;
    if filter & CONNECT_ENABLED == 0 && !unix {
        return 0;
    }
    let fd = tp_field::<u64>(&ctx, TP_FD) as i32;
    let uaddr: u64 = tp_field(&ctx, TP_UADDR);
    let addrlen = tp_field::<u64>(&ctx, TP_ADDRLEN) as i32;
    if addrlen <= 2 {
        return 0; // EINVAL, or AF_UNSPEC
    }
    let mut family = 0u16;
    if read_user(&mut family as *mut u16 as *mut u8, 2, uaddr).is_err() {
        loss(LossSite::ConnectRead, line!());
        return 0;
    }
    // Each family in a function of its own: their stack frames are not stacked on this
    // one's (the verifier caps the sum along a call chain at 512 bytes).
    if family == AF_UNIX {
        if unix {
            unix_connect(fd, uaddr, addrlen);
        }
    } else if filter & CONNECT_ENABLED != 0 && addrlen >= SOCKADDR_IN_LEN {
        inet_connect(filter, fd, uaddr, addrlen);
    }
    0
}

/// An AF_INET/AF_INET6 connect: sent when its port or address is watched.
#[inline(never)]
fn inet_connect(filter: u32, fd: i32, uaddr: u64, addrlen: i32) {
    // Read no more than the caller handed the kernel: the v6 layout only when it fits.
    // Not zeroed first: the read fills what is used (a zeroed stack array costs a
    // `memset` call per connect).
    let mut sa = core::mem::MaybeUninit::<[u8; SOCKADDR_IN6_LEN as usize]>::uninit();
    let sa_ptr = sa.as_mut_ptr() as *mut u8;
    let read = if addrlen >= SOCKADDR_IN6_LEN {
        read_user(sa_ptr, SOCKADDR_IN6_LEN as u32, uaddr)
    } else {
        read_user(sa_ptr, SOCKADDR_IN_LEN as u32, uaddr)
    };
    if read.is_err() {
        loss(LossSite::ConnectRead, line!());
        return;
    }
    // SAFETY: the first 16 bytes were read; the last 8 only matter (and were read) for
    // AF_INET6 with addrlen ≥ 24, checked below before they are used.
    let sa = unsafe { sa.assume_init() };
    let family = u16::from_ne_bytes([sa[0], sa[1]]);
    let port = u16::from_be_bytes([sa[2], sa[3]]);
    let mut addr = [0u8; 16];
    let watched = if family == AF_INET {
        let v4 = [sa[4], sa[5], sa[6], sa[7]];
        addr = [
            v4[0], v4[1], v4[2], v4[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        filter & CONNECT_ALL != 0 || port_watched(port) || watched_v4(v4)
    } else if family == AF_INET6 && addrlen >= SOCKADDR_IN6_LEN {
        addr.copy_from_slice(&sa[8..24]);
        // A v4-mapped destination (::ffff:a.b.c.d) is an IPv4 connect from a v6 socket.
        let mapped = addr[..10].iter().all(|&b| b == 0) && addr[10] == 0xff && addr[11] == 0xff;
        filter & CONNECT_ALL != 0
            || port_watched(port)
            || watched_v6(addr)
            || (mapped && watched_v4([addr[12], addr[13], addr[14], addr[15]]))
    } else {
        return;
    };
    if !watched || is_agent() {
        return;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<ConnectRecord>(0) else {
        loss(LossSite::ConnectReserve, line!());
        return;
    };
    entry.write(ConnectRecord {
        header: current_header(EventKind::Connect, o, core::mem::size_of::<ConnectRecord>()),
        family,
        port,
        fd,
        addr,
    });
    entry.submit(wake_flags());
}

#[inline(always)]
fn port_watched(port: u16) -> bool {
    // SAFETY: presence only; the value is not read.
    unsafe { CONNECT_PORTS.get(&port) }.is_some()
}

const UNIX_FIXED: u32 = size_of::<UnixConnectRecord>() as u32;
/// `offsetof(struct sockaddr_un, sun_path)`.
const SUN_PATH_AT: u64 = 2;

/// An AF_UNIX connect to a path: sent when some rule's socket path could be this one.
/// Abstract addresses (a NUL first byte) have no path and are not reported.
#[inline(never)]
fn unix_connect(fd: i32, uaddr: u64, addrlen: i32) {
    let watched = hook_word(HOOK_UNIX);
    if is_agent() {
        return;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return;
    };
    let Some(draft) = Draft::begin() else { return };
    let base = draft.base();
    // SAFETY: `UNIX_FIXED + SUN_PATH_CAP` lies inside the draft.
    let path = unsafe { base.add(UNIX_FIXED as usize) };
    let Ok(mut n) = read_user_string(path, SUN_PATH_CAP as u32, uaddr + SUN_PATH_AT) else {
        loss(LossSite::UnixRead, line!());
        return;
    };
    // The kernel takes at most `addrlen - 2` bytes of path, NUL or not.
    let max = (addrlen as u32).wrapping_sub(2) & (SUN_PATH_CAP as u32 - 1);
    if n > max + 1 {
        // SAFETY: `max` < SUN_PATH_CAP, inside what was read.
        unsafe { *path.add(max as usize) = 0 };
        n = max + 1;
    }
    n &= 2 * SUN_PATH_CAP as u32 - 1;
    if n <= 1 {
        return; // abstract, or empty
    }
    // SAFETY: n > 1, so the first byte was read.
    let relative = unsafe { *path } != b'/';
    let mut send = watched & HOOK_ALL != 0;
    if !send {
        if let (Some(leaf), Some(any)) = (hints(HINT_UNIX_LEAF), hints(HINT_UNIX_ANY)) {
            send = name_watched(path, n - 1, leaf, any, &ScanState::of(base));
        }
    }
    // A relative socket path is rare: with a rule anchored on a directory (`HOOK_UNIX_DIRS`)
    // it is sent whatever its directory, rather than walking the directory here as well
    // (the connect program must stay within the verifier's budget).
    send |= relative && watched & HOOK_UNIX_DIRS != 0;
    if !send {
        return;
    }
    let cwd = if relative { base_of(o, AT_FDCWD) } else { None };
    let mut flags = 0u32;
    let dir_at = UNIX_FIXED + n;
    let dir = match (relative, cwd) {
        (false, _) => 0,
        // SAFETY: a walk's bound after `dir_at` lies inside the draft.
        (true, Some(cwd)) => {
            match walk_base::<false>(o, &cwd, unsafe { base.add(dir_at as usize) }) {
                Ok(w) => w.len & (2 * PATH_CAP as u32 - 1),
                Err(_) => {
                    flags |= UNIX_DIR_FAILED;
                    loss(LossSite::UnixRead, line!());
                    0
                }
            }
        }
        (true, None) => {
            flags |= UNIX_DIR_FAILED;
            0
        }
    };
    if n == 0 {
        flags |= UNIX_PATH_FAILED;
    }
    let total = dir_at + dir;
    let rec = base as *mut UnixConnectRecord;
    // SAFETY: the fixed part lies at the start of the draft.
    unsafe {
        addr_of_mut!((*rec).header).write(current_header(
            EventKind::UnixConnect,
            o,
            total as usize,
        ));
        addr_of_mut!((*rec).fd).write(fd);
        addr_of_mut!((*rec).flags).write(flags);
        addr_of_mut!((*rec).dir_len).write(dir);
        addr_of_mut!((*rec).path_len).write(n);
    }
    draft.send(total, wake_flags(), LossSite::UnixSend, line!());
}
