//! One request through a fresh io_uring, the way a program that wants to stay off the
//! syscall hooks does it: io_uring_setup, the rings mapped, one submission queue entry,
//! io_uring_enter, the completion read. No liburing: the raw ABI (include/uapi/linux/
//! io_uring.h), so nothing but the kernel is between this program and the ring.

use std::ffi::CString;
use std::net::SocketAddrV4;

use anyhow::{bail, Context, Result};

const IORING_OP_CONNECT: u8 = 16;
const IORING_OP_OPENAT: u8 = 18;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;

#[repr(C)]
#[derive(Default)]
struct SqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    file_index: i32,
    addr3: u64,
    pad: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

const _: () = assert!(std::mem::size_of::<Params>() == 120);
const _: () = assert!(std::mem::size_of::<Sqe>() == 64);

/// A mapping of the ring fd, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(fd: i32, len: usize, offset: i64) -> Result<Map> {
        // SAFETY: a fresh shared mapping of the ring; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!(
                "mmap of the ring at {offset:#x}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Map {
            ptr: ptr as *mut u8,
            len,
        })
    }

    fn at<T>(&self, off: u32) -> *mut T {
        // SAFETY: offsets come from the kernel's io_uring_params for this mapping.
        unsafe { self.ptr.add(off as usize) as *mut T }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.ptr as *mut _, self.len) };
    }
}

/// Submit `sqe` on a new ring and wait for its completion; its result.
fn submit_one(mut sqe: Sqe) -> Result<i32> {
    let mut p = Params::default();
    // SAFETY: io_uring_setup(entries, params) with a valid out-pointer.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &mut p as *mut Params) } as i32;
    if fd < 0 {
        bail!(
            "io_uring_setup: {} (is io_uring disabled? /proc/sys/kernel/io_uring_disabled)",
            std::io::Error::last_os_error()
        );
    }
    let ring = Ring { fd };
    let sq = Map::new(
        ring.fd,
        (p.sq_off.array + p.sq_entries * 4) as usize,
        IORING_OFF_SQ_RING,
    )?;
    let cq = Map::new(
        ring.fd,
        (p.cq_off.cqes + p.cq_entries * std::mem::size_of::<Cqe>() as u32) as usize,
        IORING_OFF_CQ_RING,
    )?;
    let sqes = Map::new(
        ring.fd,
        p.sq_entries as usize * std::mem::size_of::<Sqe>(),
        IORING_OFF_SQES,
    )?;
    sqe.user_data = 0x7261_7370; // "rasp"
                                 // SAFETY: slot 0 of the SQE array, the ring's index array and tail, as the kernel laid
                                 // them out; the release fence orders the entry before the tail the kernel reads.
    unsafe {
        std::ptr::write_volatile(sqes.at::<Sqe>(0), sqe);
        let mask = std::ptr::read_volatile(sq.at::<u32>(p.sq_off.ring_mask));
        let tail_ptr = sq.at::<u32>(p.sq_off.tail);
        let tail = std::ptr::read_volatile(tail_ptr);
        std::ptr::write_volatile(sq.at::<u32>(p.sq_off.array).add((tail & mask) as usize), 0);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        std::ptr::write_volatile(tail_ptr, tail.wrapping_add(1));
    }
    // SAFETY: io_uring_enter(fd, to_submit, min_complete, flags, sig, sigsz).
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            ring.fd,
            1u32,
            1u32,
            IORING_ENTER_GETEVENTS,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    if r < 0 {
        bail!("io_uring_enter: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the completion ring's head, tail and first entries, as laid out by the kernel.
    unsafe {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let head = std::ptr::read_volatile(cq.at::<u32>(p.cq_off.head));
        let tail = std::ptr::read_volatile(cq.at::<u32>(p.cq_off.tail));
        if head == tail {
            bail!("no completion after io_uring_enter");
        }
        let mask = std::ptr::read_volatile(cq.at::<u32>(p.cq_off.ring_mask));
        let cqe = std::ptr::read_volatile(cq.at::<Cqe>(p.cq_off.cqes).add((head & mask) as usize));
        std::ptr::write_volatile(cq.at::<u32>(p.cq_off.head), head.wrapping_add(1));
        if cqe.user_data != 0x7261_7370 {
            bail!("completion for another request ({:#x})", cqe.user_data);
        }
        let _ = cqe.flags;
        Ok(cqe.res)
    }
}

/// The ring's descriptor, closed on drop (after the mappings, declared later).
struct Ring {
    fd: i32,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.fd) };
    }
}

pub fn open(path: &str) -> Result<String> {
    let c = CString::new(path).context("path contains a NUL")?;
    let sqe = Sqe {
        opcode: IORING_OP_OPENAT,
        fd: libc::AT_FDCWD,
        addr: c.as_ptr() as u64,
        len: 0,
        op_flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u32,
        ..Sqe::default()
    };
    let res = submit_one(sqe)?;
    if res < 0 {
        bail!(
            "IORING_OP_OPENAT {path}: {}",
            std::io::Error::from_raw_os_error(-res)
        );
    }
    // SAFETY: the descriptor the ring opened for us.
    unsafe { libc::close(res) };
    Ok(format!("opened {path} through io_uring (fd {res})"))
}

pub fn connect(addr: SocketAddrV4) -> Result<String> {
    // SAFETY: socket(2) with constant arguments.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let sqe = Sqe {
        opcode: IORING_OP_CONNECT,
        fd: s,
        addr: &sa as *const libc::sockaddr_in as u64,
        off: std::mem::size_of::<libc::sockaddr_in>() as u64,
        ..Sqe::default()
    };
    let res = submit_one(sqe);
    // SAFETY: our own socket.
    unsafe { libc::close(s) };
    let res = res?;
    let outcome = if res < 0 {
        format!("{}", std::io::Error::from_raw_os_error(-res))
    } else {
        "connected".to_string()
    };
    Ok(format!("connect to {addr} through io_uring: {outcome}"))
}
