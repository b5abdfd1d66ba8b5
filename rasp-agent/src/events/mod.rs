//! Events: the owned, typed form of what the kernel reported. `decode` is the only place
//! that reads raw record bytes; `reader` drains the ring buffer; `hub` keeps the recent
//! events, counts them per kind and fans them out to live followers.

pub mod decode;
pub mod hub;
pub mod reader;

use serde::{Deserialize, Serialize};

pub use decode::{decode, BootClock, DecodeError};
pub use hub::EventHub;

/// One thing a process did, as the kernel saw it, enriched with its cgroup path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time (RFC 3339), from the boot-time timestamp.
    pub time: String,
    /// CLOCK_BOOTTIME nanoseconds from the kernel.
    pub ts_boot_ns: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// Path inside the cgroup2 hierarchy ("/system.slice/x.service"), when resolvable.
    pub cgroup: Option<String>,
    #[serde(flatten)]
    pub detail: EventDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventDetail {
    Exec(ExecDetail),
    Fork(ForkDetail),
    Exit(ExitDetail),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecDetail {
    /// The executable actually mapped (the interpreter for `#!` scripts), as the process
    /// sees it from its own root.
    pub exe: Option<String>,
    /// The name passed to execve, possibly relative or a symlink.
    pub filename: String,
    pub argv: Vec<String>,
    /// argv was longer than the capture bound (`rasp_common::limits::ARGV_CAP`).
    pub argv_truncated: bool,
    pub cwd: Option<String>,
    /// Fields the kernel could not read completely ("exe", "cwd", "argv", "filename").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForkDetail {
    /// Thread of the parent that called fork/clone.
    pub parent_tid: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitDetail {
    /// exit(2) status, when the process exited normally.
    pub exit_code: Option<i32>,
    /// Terminating signal, when it was killed.
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

impl ExitDetail {
    /// From the kernel's `task->exit_code` (the wait(2) status word).
    pub fn from_wait_status(status: u32) -> Self {
        let signal = status & 0x7f;
        if signal == 0 {
            ExitDetail {
                exit_code: Some(((status >> 8) & 0xff) as i32),
                signal: None,
                core_dumped: false,
            }
        } else {
            ExitDetail {
                exit_code: None,
                signal: Some(signal as i32),
                core_dumped: status & 0x80 != 0,
            }
        }
    }
}

/// Event kinds as named on the command line and in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Exec,
    Fork,
    Exit,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Exec, Kind::Fork, Kind::Exit];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Fork => "fork",
            Kind::Exit => "exit",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Kind::Exec => 0,
            Kind::Fork => 1,
            Kind::Exit => 2,
        }
    }

    /// Slot of this kind in the kernel's per-CPU counters.
    pub fn kernel_slot(self) -> u32 {
        let k = match self {
            Kind::Exec => rasp_common::EventKind::Exec,
            Kind::Fork => rasp_common::EventKind::Fork,
            Kind::Exit => rasp_common::EventKind::Exit,
        };
        k as u32
    }
}

impl Event {
    pub fn kind(&self) -> Kind {
        match self.detail {
            EventDetail::Exec(_) => Kind::Exec,
            EventDetail::Fork(_) => Kind::Fork,
            EventDetail::Exit(_) => Kind::Exit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decodes_exit_and_signal() {
        assert_eq!(
            ExitDetail::from_wait_status(7 << 8),
            ExitDetail {
                exit_code: Some(7),
                signal: None,
                core_dumped: false
            }
        );
        assert_eq!(
            ExitDetail::from_wait_status(9),
            ExitDetail {
                exit_code: None,
                signal: Some(9),
                core_dumped: false
            }
        );
        assert_eq!(
            ExitDetail::from_wait_status(0x80 | 11),
            ExitDetail {
                exit_code: None,
                signal: Some(11),
                core_dumped: true
            }
        );
    }

    #[test]
    fn event_json_round_trips_with_kind_tag() {
        let ev = Event {
            time: "2026-01-01T00:00:00Z".into(),
            ts_boot_ns: 1,
            pid: 10,
            tid: 10,
            ppid: 1,
            uid: 0,
            gid: 0,
            comm: "sh".into(),
            cgroup_id: 1,
            cgroup: Some("/".into()),
            detail: EventDetail::Exit(ExitDetail {
                exit_code: Some(3),
                signal: None,
                core_dumped: false,
            }),
        };
        let json = serde_json::to_value(&ev).expect("serializes");
        assert_eq!(json["kind"], "exit");
        assert_eq!(json["exit_code"], 3);
        let back: Event = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, ev);
    }
}
