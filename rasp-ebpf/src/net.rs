//! Network hooks: connect(2) attempts to AF_INET/AF_INET6 addresses, at syscall entry (the
//! outcome is not known there; the record is an attempt). Pre-filtered by the interest
//! maps: a watched destination port or address prefix, or everything with `CONNECT_ALL`.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use rasp_common::{
    interest::{CONNECT_ALL, CONNECT_ENABLED},
    record::{ConnectRecord, AF_INET, AF_INET6},
    EventKind, LossSite,
};

use crate::{
    event::current_header,
    kernel::{is_agent, offsets, read_user, tp_field},
    maps::{
        filter_flags, loss, wake_flags, watched_v4, watched_v6, CONNECT_FILTER, CONNECT_PORTS,
        EVENTS,
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
