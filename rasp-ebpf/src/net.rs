//! Network hooks: connect(2) attempts to AF_INET/AF_INET6 addresses. Where the cgroup
//! socket hooks attach (cgroup2 root: every process), `connect4`/`connect6` see the
//! kernel's own copy of the address (no race with a thread rewriting it), report the
//! connects the interest maps select, and refuse the ones a deny rule or a quarantine
//! names (EPERM); `sendmsg4`/`sendmsg6` refuse datagrams the same way. Otherwise the
//! `sys_enter_connect` tracepoint reports attempts (it cannot refuse). Either way the
//! outcome of an allowed connect is not known here: the record is an attempt.

use aya_ebpf::{
    helpers::generated::bpf_skb_ancestor_cgroup_id,
    macros::{cgroup_skb, cgroup_sock_addr, tracepoint},
    programs::{SkBuffContext, SockAddrContext, TracePointContext},
};
use rasp_common::{
    deny::{FILTER_QUARANTINE, QUARANTINE_DEPTH, VERDICT_CGROUP_DENIED, VERDICT_QUARANTINED},
    interest::{CONNECT_ALL, CONNECT_ENABLED},
    record::{ConnectRecord, AF_INET, AF_INET6},
    EventKind, LossSite,
};

use crate::{
    deny::{quarantined, v4_denied, v6_denied, DENY_FILTER, QUARANTINE},
    event::current_header,
    kernel::{is_agent, offsets, read_user, tp_field},
    maps::{
        filter_flags, filter_word, loss, wake_flags, wake_flags_now, watched_v4, watched_v6,
        CONNECT_FILTER, CONNECT_PORTS, EVENTS,
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

/// Attached to `syscalls/sys_enter_connect`.
#[tracepoint]
pub fn rasp_connect(ctx: TracePointContext) -> u32 {
    let filter = filter_flags(&CONNECT_FILTER);
    if filter & CONNECT_ENABLED == 0 {
        return 0;
    }
    let fd = tp_field::<u64>(&ctx, TP_FD) as i32;
    let uaddr: u64 = tp_field(&ctx, TP_UADDR);
    let addrlen = tp_field::<u64>(&ctx, TP_ADDRLEN) as i32;

    // Read no more than the caller handed the kernel: the v6 layout only when it fits.
    // Not zeroed first: the read fills what is used (a zeroed stack array costs a
    // `memset` call per connect).
    let mut sa = core::mem::MaybeUninit::<[u8; SOCKADDR_IN6_LEN as usize]>::uninit();
    let sa_ptr = sa.as_mut_ptr() as *mut u8;
    let read = if addrlen >= SOCKADDR_IN6_LEN {
        read_user(sa_ptr, SOCKADDR_IN6_LEN as u32, uaddr)
    } else if addrlen >= SOCKADDR_IN_LEN {
        read_user(sa_ptr, SOCKADDR_IN_LEN as u32, uaddr)
    } else {
        return 0; // too short for either family: EINVAL, or AF_UNIX/AF_UNSPEC
    };
    if read.is_err() {
        loss(LossSite::ConnectRead, line!());
        return 0;
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
        return 0;
    };
    if !watched || is_agent() {
        return 0;
    }
    let Some(o) = offsets() else {
        loss(LossSite::OffsetsUnset, line!());
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<ConnectRecord>(0) else {
        loss(LossSite::ConnectReserve, line!());
        return 0;
    };
    entry.write(ConnectRecord {
        header: current_header(EventKind::Connect, o, core::mem::size_of::<ConnectRecord>()),
        family,
        port,
        fd,
        addr,
    });
    entry.submit(wake_flags());
    0
}

#[inline(always)]
fn port_watched(port: u16) -> bool {
    // SAFETY: presence only; the value is not read.
    unsafe { CONNECT_PORTS.get(&port) }.is_some()
}
