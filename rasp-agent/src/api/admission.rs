//! How many connections the socket serves, and for whom. Admins (root, the agent's uid) and
//! readers (`--socket-group` members) have separate pools, so readers can never take the
//! room root's CLI needs; each reader uid has its own cap, so one user cannot take the
//! readers' pool either. A connection that is idle (waiting for its next request, nothing
//! half-read) is reclaimable: when a pool is full, the oldest idle connection of the same
//! kind makes room, so silent clients never lock anyone out. Connections that are busy
//! (a request in flight, a live stream) are bounded by the timeouts in `api`, not here.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::Notify;

use super::peer::Privilege;

/// The pools' sizes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub admins: usize,
    pub readers: usize,
    pub per_reader_uid: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        admins: 256,
        readers: 128,
        per_reader_uid: 16,
    };
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error(
        "too many connections from uid {uid} (limit {limit}, none idle); close some and try again"
    )]
    PerUid { uid: u32, limit: usize },
    #[error("too many {kind} connections (limit {limit}, none idle); try again later")]
    Pool { kind: &'static str, limit: usize },
}

struct Entry {
    uid: u32,
    privilege: Privilege,
    idle: Arc<AtomicBool>,
    evict: Arc<Notify>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// By id: ids grow, so iteration order is oldest first.
    open: BTreeMap<u64, Entry>,
    admins: usize,
    readers: usize,
    per_uid: HashMap<u32, usize>,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.open.remove(&id)?;
        match e.privilege {
            Privilege::Admin => self.admins -= 1,
            Privilege::Reader => {
                self.readers -= 1;
                if let Some(n) = self.per_uid.get_mut(&e.uid) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_uid.remove(&e.uid);
                    }
                }
            }
        }
        Some(e)
    }

    /// Close the oldest idle connection that `pick` accepts; false if there is none.
    fn evict_oldest_idle(&mut self, pick: impl Fn(&Entry) -> bool) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, e)| pick(e) && e.idle.load(Ordering::Acquire))
            .map(|(&id, _)| id);
        match victim.and_then(|id| self.remove(id)) {
            Some(e) => {
                e.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The connection table.
pub struct Admission {
    limits: Limits,
    state: Mutex<State>,
}

/// A connection's place in the table; dropping it frees the place.
pub struct Slot {
    id: u64,
    table: Arc<Admission>,
    idle: Arc<AtomicBool>,
    evict: Arc<Notify>,
}

impl Slot {
    /// While true, the connection may be closed to make room for another.
    pub fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::Release);
    }

    /// Completes when the table reclaimed this (idle) connection.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::lock(&self.table.state).remove(self.id);
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    /// A place for a new connection from `uid`, making room by closing an idle connection
    /// of the same kind if needed.
    pub fn admit(self: &Arc<Self>, uid: u32, privilege: Privilege) -> Result<Slot, Refused> {
        let l = self.limits;
        let mut s = crate::lock(&self.state);
        match privilege {
            Privilege::Admin => {
                if s.admins >= l.admins && !s.evict_oldest_idle(|e| e.privilege == Privilege::Admin)
                {
                    return Err(Refused::Pool {
                        kind: "root",
                        limit: l.admins,
                    });
                }
                s.admins += 1;
            }
            Privilege::Reader => {
                let mine = |e: &Entry| e.privilege == Privilege::Reader && e.uid == uid;
                if s.per_uid.get(&uid).copied().unwrap_or(0) >= l.per_reader_uid
                    && !s.evict_oldest_idle(mine)
                {
                    return Err(Refused::PerUid {
                        uid,
                        limit: l.per_reader_uid,
                    });
                }
                if s.readers >= l.readers
                    && !s.evict_oldest_idle(|e| e.privilege == Privilege::Reader)
                {
                    return Err(Refused::Pool {
                        kind: "--socket-group",
                        limit: l.readers,
                    });
                }
                s.readers += 1;
                *s.per_uid.entry(uid).or_default() += 1;
            }
        }
        let id = s.next_id;
        s.next_id += 1;
        let idle = Arc::new(AtomicBool::new(false));
        let evict = Arc::new(Notify::new());
        s.open.insert(
            id,
            Entry {
                uid,
                privilege,
                idle: idle.clone(),
                evict: evict.clone(),
            },
        );
        Ok(Slot {
            id,
            table: self.clone(),
            idle,
            evict,
        })
    }

    /// (admins, readers) connected now.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let s = crate::lock(&self.state);
        (s.admins, s.readers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        admins: 2,
        readers: 3,
        per_reader_uid: 2,
    };

    #[test]
    fn readers_never_take_the_admins_room() {
        let t = Admission::new(SMALL);
        let a = t.admit(1000, Privilege::Reader).unwrap();
        let b = t.admit(1001, Privilege::Reader).unwrap();
        let c = t.admit(1002, Privilege::Reader).unwrap();
        let e = t.admit(1003, Privilege::Reader).err().unwrap();
        assert_eq!(
            e,
            Refused::Pool {
                kind: "--socket-group",
                limit: 3
            }
        );
        let _r1 = t.admit(0, Privilege::Admin).expect("root has its own pool");
        let _r2 = t.admit(0, Privilege::Admin).expect("root has its own pool");
        assert!(t.admit(0, Privilege::Admin).is_err(), "busy admins: full");
        drop((a, b, c));
        assert_eq!(t.counts(), (2, 0));
    }

    #[test]
    fn one_uid_cannot_fill_the_readers_pool() {
        let t = Admission::new(SMALL);
        let _a = t.admit(1000, Privilege::Reader).unwrap();
        let _b = t.admit(1000, Privilege::Reader).unwrap();
        assert_eq!(
            t.admit(1000, Privilege::Reader).err().unwrap(),
            Refused::PerUid {
                uid: 1000,
                limit: 2
            }
        );
        let _c = t
            .admit(1001, Privilege::Reader)
            .expect("another uid still gets in");
    }

    #[test]
    fn idle_connections_make_room_oldest_first() {
        let t = Admission::new(SMALL);
        let old = t.admit(0, Privilege::Admin).unwrap();
        let newer = t.admit(0, Privilege::Admin).unwrap();
        old.set_idle(true);
        newer.set_idle(true);
        let _third = t
            .admit(0, Privilege::Admin)
            .expect("an idle connection makes room");
        // The oldest was told to go; its slot is already free, so dropping it later must
        // not free a second one.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), old.evicted())
                .await
                .expect("the oldest idle connection is evicted");
        });
        drop(old);
        assert_eq!(t.counts(), (2, 0));
        // A reader's idle connection never makes room for an admin, nor the reverse.
        let r = t.admit(1000, Privilege::Reader).unwrap();
        r.set_idle(true);
        newer.set_idle(false);
        assert!(t.admit(0, Privilege::Admin).is_err());
    }

    #[test]
    fn a_reader_at_its_cap_reclaims_only_its_own_idle_connection() {
        let t = Admission::new(SMALL);
        let other = t.admit(1001, Privilege::Reader).unwrap();
        other.set_idle(true);
        let a = t.admit(1000, Privilege::Reader).unwrap();
        let _b = t.admit(1000, Privilege::Reader).unwrap();
        assert!(
            t.admit(1000, Privilege::Reader).is_err(),
            "nothing of its own idle"
        );
        a.set_idle(true);
        let _c = t
            .admit(1000, Privilege::Reader)
            .expect("its own idle one makes room");
        assert_eq!(t.counts(), (0, 3));
    }
}
