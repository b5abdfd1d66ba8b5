//! Network hooks: connect(2) attempts to AF_INET/AF_INET6 addresses. Where the cgroup
//! socket hooks attach (cgroup2 root: every process), `connect4`/`connect6` see the
//! kernel's own copy of the address (no race with a thread rewriting it), report the
//! connects the interest maps select, and refuse the ones a deny rule or a quarantine
//! names (EPERM); `sendmsg4`/`sendmsg6` refuse datagrams the same way. Otherwise the
//! `sys_enter_connect` tracepoint reports attempts (it cannot refuse). Either way the
//! outcome of an allowed connect is not known here: the record is an attempt.
//!
//! AF_UNIX connects to a socket path (a container runtime's API socket) are their own
//! records, filtered by the path's hashed components (`location`) like file changes, from
//! `sys_enter_connect`: `rasp_connect` where it serves both families, `rasp_unix_connect`
//! (AF_UNIX only) where the cgroup hooks observe IPv4/6.

use aya_ebpf::{
    helpers::generated::bpf_skb_ancestor_cgroup_id,
    macros::{cgroup_skb, cgroup_sock_addr, tracepoint},
    programs::{SkBuffContext, SockAddrContext, TracePointContext},
};
use core::{mem::size_of, ptr::addr_of_mut};
use rasp_common::{
    deny::{FILTER_QUARANTINE, QUARANTINE_DEPTH, VERDICT_CGROUP_DENIED, VERDICT_QUARANTINED},
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
    deny::{quarantined, v4_denied, v6_denied, DENY_FILTER, QUARANTINE},
    event::current_header,
    kernel::{is_agent, offsets, read_user, tp_field},
    location::{base_of, hints, name_watched, read_user_string, walk_base, ScanState, AT_FDCWD},
    maps::{
        filter_flags, filter_word, hook_word, loss, wake_flags, wake_flags_now, watched_v4,
        watched_v6, Draft, CONNECT_FILTER, CONNECT_PORTS, EVENTS,
    },
};

/// cgroup socket hooks: let the call through / refuse it with EPERM.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

/// Which call a cgroup socket hook sits on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Connect,
    Sendmsg,
}

/// Packets leaving sockets of a quarantined cgroup (connections opened before the
/// quarantine) are dropped at cgroup egress. With no quarantine in effect: one array lookup.
#[cgroup_skb]
pub fn rasp_quarantine_egress(ctx: SkBuffContext) -> i32 {
    if filter_word(&DENY_FILTER, FILTER_QUARANTINE) == 0 {
        return ALLOW;
    }
    let skb = ctx.skb.skb;
    for level in 1..QUARANTINE_DEPTH {
        // SAFETY: a helper on the program's own skb; 0 past the socket's cgroup depth.
        let id = unsafe { bpf_skb_ancestor_cgroup_id(skb, level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: presence only.
        if unsafe { QUARANTINE.get(&id) }.is_some() {
            return REFUSE;
        }
    }
    ALLOW
}

#[cgroup_sock_addr(connect4)]
pub fn rasp_connect4(ctx: SockAddrContext) -> i32 {
    on_v4(&ctx, Call::Connect)
}

#[cgroup_sock_addr(connect6)]
pub fn rasp_connect6(ctx: SockAddrContext) -> i32 {
    on_v6(&ctx, Call::Connect)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn rasp_sendmsg4(ctx: SockAddrContext) -> i32 {
    on_v4(&ctx, Call::Sendmsg)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn rasp_sendmsg6(ctx: SockAddrContext) -> i32 {
    on_v6(&ctx, Call::Sendmsg)
}

#[inline(always)]
fn on_v4(ctx: &SockAddrContext, call: Call) -> i32 {
    // SAFETY: context fields the verifier lets sock_addr programs read.
    let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port) };
    let v4 = ip.to_ne_bytes();
    let port = u16::from_be(port as u16);
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&v4);
    let verdict = quarantined()
        .map(|rule| (VERDICT_QUARANTINED, rule))
        .or_else(|| v4_denied(v4, port).map(|rule| (VERDICT_CGROUP_DENIED, rule)));
    decide(call, AF_INET, port, addr, verdict, || {
        port_watched(port) || watched_v4(v4)
    })
}

#[inline(always)]
fn on_v6(ctx: &SockAddrContext, call: Call) -> i32 {
    // SAFETY: as above.
    let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip6, (*ctx.sock_addr).user_port) };
    let port = u16::from_be(port as u16);
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let w = ip[i].to_ne_bytes();
        addr[4 * i..4 * i + 4].copy_from_slice(&w);
        i += 1;
    }
    let verdict = quarantined()
        .map(|rule| (VERDICT_QUARANTINED, rule))
        .or_else(|| v6_denied(addr, port).map(|rule| (VERDICT_CGROUP_DENIED, rule)));
    decide(call, AF_INET6, port, addr, verdict, || {
        let mapped = addr[..10].iter().all(|&b| b == 0) && addr[10] == 0xff && addr[11] == 0xff;
        port_watched(port)
            || watched_v6(addr)
            || (mapped && watched_v4([addr[12], addr[13], addr[14], addr[15]]))
    })
}

/// Report and refuse what a rule denies; report connects the interest maps select.
#[inline(always)]
fn decide(
    call: Call,
    family: u16,
    port: u16,
    addr: [u8; 16],
    verdict: Option<(u32, u32)>,
    watched: impl FnOnce() -> bool,
) -> i32 {
    if let Some((verdict, rule)) = verdict {
        if is_agent() {
            return ALLOW; // never cut the agent off (its exporters, its API server)
        }
        send_connect(family, port, -1, addr, verdict, rule);
        return REFUSE;
    }
    if call == Call::Connect {
        let filter = filter_flags(&CONNECT_FILTER);
        if filter & CONNECT_ENABLED != 0 && (filter & CONNECT_ALL != 0 || watched()) && !is_agent()
        {
            send_connect(family, port, -1, addr, 0, 0);
        }
    }
    ALLOW
}

#[inline(always)]
fn send_connect(family: u16, port: u16, fd: i32, addr: [u8; 16], verdict: u32, rule: u32) {
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<ConnectRecord>(0) else {
        loss(LossSite::ConnectReserve, line!());
        return;
    };
    let mut header = current_header(EventKind::Connect, o, core::mem::size_of::<ConnectRecord>());
    header.verdict = verdict;
    header.verdict_rule = rule;
    entry.write(ConnectRecord {
        header,
        family,
        port,
        fd,
        addr,
    });
    entry.submit(if verdict != 0 {
        wake_flags_now()
    } else {
        wake_flags()
    });
}

// `sys_enter_connect` record offsets (tracefs `format`).
const TP_FD: usize = 16;
const TP_UADDR: usize = 24;
const TP_ADDRLEN: usize = 32;

/// `sizeof(struct sockaddr_in)`: family, port, address, zero padding.
const SOCKADDR_IN_LEN: i32 = 16;
/// `SIN6_LEN_RFC2133`: the shortest sockaddr_in6 the kernel accepts (no scope id).
const SOCKADDR_IN6_LEN: i32 = 24;

/// Attached to `syscalls/sys_enter_connect` where the cgroup connect hooks did not attach:
/// IPv4/6 and AF_UNIX connects.
#[tracepoint]
pub fn rasp_connect(ctx: TracePointContext) -> u32 {
    on_connect(&ctx, filter_flags(&CONNECT_FILTER))
}

/// Attached to `syscalls/sys_enter_connect` instead of `rasp_connect` where the cgroup
/// connect hooks observe IPv4/6 connects: AF_UNIX connects only.
#[tracepoint]
pub fn rasp_unix_connect(ctx: TracePointContext) -> u32 {
    on_connect(&ctx, 0)
}

/// A connect: `filter` is the IPv4/6 interest (0: AF_UNIX only).
#[inline(always)]
fn on_connect(ctx: &TracePointContext, filter: u32) -> u32 {
    let unix = hook_word(HOOK_UNIX) & HOOK_ENABLED != 0;
    if filter & CONNECT_ENABLED == 0 && !unix {
        return 0;
    }
    let fd = tp_field::<u64>(ctx, TP_FD) as i32;
    let uaddr: u64 = tp_field(ctx, TP_UADDR);
    let addrlen = tp_field::<u64>(ctx, TP_ADDRLEN) as i32;
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
