//! Who is on the other end of a connection, as the kernel recorded it when the peer
//! connected: SO_PEERCRED (pid, uid, gid) and SO_PEERGROUPS (every supplementary group).
//! Both are snapshots taken at connect time, so nothing here reads /proc afterwards (a pid
//! can be reused; the socket's credentials cannot change).

use std::os::fd::{AsRawFd, BorrowedFd};

/// A connected peer's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (SO_PEERGROUPS).
    pub groups: Vec<u32>,
}

/// What a peer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// Root, or the agent's own uid: every request, including ones that change state.
    Admin,
    /// A member of `--socket-group`: read-only requests.
    Reader,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot read peer credentials: {0}")]
    Credentials(std::io::Error),
    #[error("cannot read peer groups: {0}")]
    Groups(std::io::Error),
    #[error("permission denied: uid {uid} is not root")]
    NotRoot { uid: u32 },
    #[error("permission denied: uid {uid} is neither root nor in group {group}")]
    NotInGroup { uid: u32, group: u32 },
}

impl Peer {
    pub fn of(fd: BorrowedFd<'_>) -> Result<Peer, PeerError> {
        let cred = peer_cred(fd).map_err(PeerError::Credentials)?;
        let groups = peer_groups(fd).map_err(PeerError::Groups)?;
        Ok(Peer {
            pid: (cred.pid > 0).then_some(cred.pid),
            uid: cred.uid,
            gid: cred.gid,
            groups,
        })
    }

    /// Root and the agent's own uid are admins; members of `group` (primary or
    /// supplementary) are readers; everyone else is refused.
    pub fn privilege(&self, agent_uid: u32, group: Option<u32>) -> Result<Privilege, PeerError> {
        if self.uid == 0 || self.uid == agent_uid {
            return Ok(Privilege::Admin);
        }
        match group {
            Some(g) if self.gid == g || self.groups.contains(&g) => Ok(Privilege::Reader),
            Some(group) => Err(PeerError::NotInGroup {
                uid: self.uid,
                group,
            }),
            None => Err(PeerError::NotRoot { uid: self.uid }),
        }
    }
}

fn peer_cred(fd: BorrowedFd<'_>) -> std::io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred)
}

/// Linux caps supplementary groups at NGROUPS_MAX (65536); start small and grow on ERANGE.
fn peer_groups(fd: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    const NGROUPS_MAX: usize = 65536;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the vector's buffer.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        // The kernel says how much it needs; anything else (or a size past the kernel's own
        // cap) is an error.
        if err.raw_os_error() == Some(libc::ERANGE)
            && needed > groups.len()
            && needed <= NGROUPS_MAX
        {
            groups.resize(needed, 0);
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::{fd::AsFd, unix::net::UnixStream};

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            pid: Some(1),
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn supplementary_groups_count_and_only_admins_are_admins() {
        let agent = 0;
        assert_eq!(
            peer(0, 0, &[]).privilege(agent, None).unwrap(),
            Privilege::Admin
        );
        assert_eq!(
            peer(1000, 1000, &[27, 998])
                .privilege(agent, Some(998))
                .unwrap(),
            Privilege::Reader,
            "a supplementary group is membership"
        );
        assert_eq!(
            peer(1000, 998, &[]).privilege(agent, Some(998)).unwrap(),
            Privilege::Reader
        );
        let e = peer(1000, 1000, &[27])
            .privilege(agent, Some(998))
            .unwrap_err();
        assert!(
            e.to_string().contains("neither root nor in group 998"),
            "{e}"
        );
        let e = peer(1000, 1000, &[998]).privilege(agent, None).unwrap_err();
        assert!(e.to_string().contains("not root"), "{e}");
        // An agent running as a service user administers itself.
        assert_eq!(
            peer(4242, 4242, &[]).privilege(4242, Some(998)).unwrap(),
            Privilege::Admin
        );
    }

    #[test]
    fn credentials_of_a_real_socket_pair() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let p = Peer::of(a.as_fd()).expect("credentials");
        // SAFETY: these cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!((p.uid, p.gid), (uid, gid));
        assert_eq!(p.pid, Some(std::process::id() as i32));
        // SAFETY: getgroups(0, NULL) returns the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        assert_eq!(p.groups.len(), n as usize, "{p:?}");
    }
}
