//! A process's TCP socket by descriptor: `/proc/<pid>/fd/<fd>` names the socket's inode,
//! and `/proc/<pid>/net/tcp{,6}` (the process's own network namespace, so a container's
//! view) lists each socket's two ends by inode. Blocking reads of /proc: analyzer threads
//! only, never the event path. `SocketTables` keeps each process's last reading so a new
//! connection of a busy server costs one table read at most per `REREAD`.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::events::Endpoints;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SocketError {
    #[error("/proc/{pid}/fd/{fd} is gone (the process or the descriptor closed)")]
    Gone { pid: u32, fd: i32 },
    #[error("/proc/{pid}/fd/{fd} is {target:?}, not a socket")]
    NotASocket { pid: u32, fd: i32, target: String },
    #[error("socket inode {inode} of process {pid} is in neither /proc/{pid}/net/tcp nor tcp6 (not TCP, or closed)")]
    NotTcp { pid: u32, inode: u64 },
}

/// The socket inode behind `fd` of `pid`.
pub fn socket_inode(proc: &std::path::Path, pid: u32, fd: i32) -> Result<u64, SocketError> {
    let link: PathBuf = proc.join(format!("{pid}/fd/{fd}"));
    let target = std::fs::read_link(&link).map_err(|_| SocketError::Gone { pid, fd })?;
    let target = target.to_string_lossy();
    target
        .strip_prefix("socket:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| SocketError::NotASocket {
            pid,
            fd,
            target: target.into_owned(),
        })
}

/// Every socket of a `/proc/net/tcp` or `tcp6` text: inode → (local, remote). Lines that do
/// not parse are skipped (the header, a truncated last line).
pub fn parse_tcp_table(text: &str, v6: bool) -> HashMap<u64, Endpoints> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        let (Some(local), Some(remote), Some(inode)) =
            (fields.get(1), fields.get(2), fields.get(9))
        else {
            continue;
        };
        let (Some(local), Some(remote), Ok(inode)) = (
            parse_hex_addr(local, v6),
            parse_hex_addr(remote, v6),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        if inode != 0 {
            out.insert(
                inode,
                Endpoints {
                    peer: Some(remote),
                    local: Some(local),
                },
            );
        }
    }
    out
}

/// `0100007F:1F90` (v4) or 32 hex digits `:port` (v6): the kernel prints each 32-bit word of
/// the address as it lies in memory (network order) with `%08X`, and the port in host order.
fn parse_hex_addr(text: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_le_bytes())
    };
    let ip = if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for i in 0..4 {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        let v6 = Ipv6Addr::from(bytes);
        // A dual-stack socket's IPv4 peer shows as ::ffff:a.b.c.d.
        v6.to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6))
    } else {
        if addr.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(0)?))
    };
    Some(SocketAddr::new(ip, port))
}

/// How often one process's tables may be read again for a socket they did not list.
const REREAD: Duration = Duration::from_millis(100);
/// Processes whose last reading is kept.
const MAX_PROCESSES: usize = 1024;

/// The last TCP tables read per process.
#[derive(Default)]
pub struct SocketTables {
    proc: PathBuf,
    tables: HashMap<u32, (Instant, HashMap<u64, Endpoints>)>,
}

impl SocketTables {
    pub fn new(proc: impl Into<PathBuf>) -> Self {
        SocketTables {
            proc: proc.into(),
            tables: HashMap::new(),
        }
    }

    /// The two ends of `pid`'s socket `fd`.
    pub fn endpoints(&mut self, pid: u32, fd: i32) -> Result<Endpoints, SocketError> {
        let inode = socket_inode(&self.proc, pid, fd)?;
        if let Some((_, table)) = self.tables.get(&pid) {
            if let Some(e) = table.get(&inode) {
                return Ok(*e);
            }
        }
        let fresh = self
            .tables
            .get(&pid)
            .is_some_and(|(at, _)| at.elapsed() < REREAD);
        if !fresh {
            if self.tables.len() >= MAX_PROCESSES {
                self.tables.clear();
            }
            let mut table = HashMap::new();
            for (name, v6) in [("tcp", false), ("tcp6", true)] {
                let path = self.proc.join(format!("{pid}/net/{name}"));
                if let Ok(text) = std::fs::read_to_string(path) {
                    table.extend(parse_tcp_table(&text, v6));
                }
            }
            let found = table.get(&inode).copied();
            self.tables.insert(pid, (Instant::now(), table));
            if let Some(e) = found {
                return Ok(e);
            }
        }
        Err(SocketError::NotTcp { pid, inode })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn parses_the_kernels_tcp_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4A3B 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4525711 1 0000000000000000 20 4 30 10 -1
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
garbage";
        let t = parse_tcp_table(v4, false);
        let e = t[&4525711];
        assert_eq!(e.local, Some("127.0.0.1:19003".parse().unwrap()));
        assert_eq!(e.peer, Some("127.0.0.1:54321".parse().unwrap()));
        assert_eq!(t[&1234].local, Some("0.0.0.0:22".parse().unwrap()));
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1";
        let t = parse_tcp_table(v6, true);
        assert_eq!(t[&777].local, Some("[::1]:8080".parse().unwrap()));
        assert_eq!(t[&777].peer, Some("10.0.0.1:50000".parse().unwrap()));
    }

    #[test]
    fn a_real_connection_resolves_from_proc() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = TcpStream::connect(server).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let mut tables = SocketTables::new("/proc");
        let pid = std::process::id();
        let e = tables.endpoints(pid, client.as_raw_fd()).unwrap();
        assert_eq!(e.peer, Some(server));
        assert_eq!(e.local, Some(client.local_addr().unwrap()));
        let e = tables.endpoints(pid, accepted.as_raw_fd()).unwrap();
        assert_eq!(e.peer, Some(client.local_addr().unwrap()));
        // Not a socket, and no descriptor at all.
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(matches!(
            tables.endpoints(pid, file.as_raw_fd()),
            Err(SocketError::NotASocket { .. })
        ));
        assert!(matches!(
            tables.endpoints(pid, 1_000_000),
            Err(SocketError::Gone { .. })
        ));
    }
}
