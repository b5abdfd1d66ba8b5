//! Typed values events carry, so the event path keeps integers and shared strings and
//! formats only at the edge (CLI, journal, exports): a wall-clock time is a number of
//! nanoseconds until it is serialized, a task name lives inline, argv is one shared string,
//! an address is an `IpAddr`, access modes are bits. Each serializes exactly as the strings
//! and lists it replaced, so the JSON the CLI, the journal and replays see is unchanged.

use std::{
    fmt,
    net::IpAddr,
    ops::{BitOr, Deref},
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::{de, ser::SerializeSeq, Deserialize, Deserializer, Serialize, Serializer};

/// A shared, immutable string: cloned by reference count (paths and cgroups that the
/// process table, events and detections all hold).
pub type Text = Arc<str>;

/// Wall-clock time in nanoseconds since the Unix epoch; RFC 3339 in JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(pub u64);

impl WallTime {
    pub fn from_system(t: SystemTime) -> Self {
        WallTime(
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
                .unwrap_or(0),
        )
    }

    pub fn to_system(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.0)
    }
}

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_rfc3339_nanos(self.to_system()), f)
    }
}

impl Serialize for WallTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WallTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s)
            .map(WallTime::from_system)
            .map_err(|e| de::Error::custom(format!("time {s:?}: {e}")))
    }
}

/// Bytes a `Comm` keeps inline: the kernel's 15-byte task name, even when every byte of it
/// had to become a 3-byte U+FFFD replacement.
const COMM_BYTES: usize = 47;

/// The kernel's task name (`comm`), inline: copying it allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comm {
    len: u8,
    bytes: [u8; COMM_BYTES],
}

impl Comm {
    /// From the kernel's NUL-padded bytes, lossily as UTF-8.
    pub fn from_kernel(raw: &[u8]) -> Self {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Comm::new(&String::from_utf8_lossy(&raw[..end]))
    }

    /// `s`, cut at a character boundary if it is longer than a comm can be.
    pub fn new(s: &str) -> Self {
        let mut end = s.len().min(COMM_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; COMM_BYTES];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        Comm {
            len: end as u8,
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ever filled from a `&str` cut at a character boundary.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

impl Default for Comm {
    fn default() -> Self {
        Comm::new("")
    }
}

impl Deref for Comm {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Comm {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Comm {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl From<&str> for Comm {
    fn from(s: &str) -> Self {
        Comm::new(s)
    }
}

impl Serialize for Comm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Comm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Comm::new(&s))
    }
}

/// A process's arguments: one shared string, the arguments joined by single spaces (what
/// `cmdline` conditions match, so it is never rebuilt), with each argument's end. Cloning
/// is a reference count; an empty argv allocates nothing. JSON: a list of strings.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Argv(Option<Arc<ArgvText>>);

#[derive(PartialEq, Eq, Hash)]
struct ArgvText {
    joined: Box<str>,
    /// Byte offset in `joined` where each argument ends.
    ends: Box<[u32]>,
}

impl Argv {
    /// No arguments (a process whose argv is unknown or empty).
    pub const EMPTY: Argv = Argv(None);

    pub fn new<S: AsRef<str>>(args: impl IntoIterator<Item = S>) -> Argv {
        let mut joined = String::new();
        let mut ends = Vec::new();
        for a in args {
            if !ends.is_empty() {
                joined.push(' ');
            }
            joined.push_str(a.as_ref());
            ends.push(joined.len() as u32);
        }
        if ends.is_empty() {
            return Argv(None);
        }
        Argv(Some(Arc::new(ArgvText {
            joined: joined.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        })))
    }

    /// NUL-separated arguments (as the kernel and /proc/<pid>/cmdline give them), lossily
    /// as UTF-8. A trailing NUL ends the last argument; a block cut short keeps its partial
    /// last argument.
    pub fn from_nul_separated(bytes: &[u8]) -> Argv {
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        if bytes.is_empty() {
            return Argv(None);
        }
        // One pass, one string: NULs become the joining spaces.
        let text = String::from_utf8_lossy(bytes);
        let mut joined = String::with_capacity(text.len());
        let mut ends = Vec::new();
        for (i, part) in text.split('\0').enumerate() {
            if i > 0 {
                joined.push(' ');
            }
            joined.push_str(part);
            ends.push(joined.len() as u32);
        }
        Argv(Some(Arc::new(ArgvText {
            joined: joined.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        })))
    }

    /// The arguments joined by single spaces.
    pub fn joined(&self) -> &str {
        self.0.as_ref().map_or("", |t| &t.joined)
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |t| t.ends.len())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let t = self.0.as_ref()?;
        let end = *t.ends.get(i)? as usize;
        let start = if i == 0 {
            0
        } else {
            t.ends[i - 1] as usize + 1
        };
        t.joined.get(start..end)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(String::from).collect()
    }
}

impl fmt::Debug for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> From<Vec<S>> for Argv {
    fn from(v: Vec<S>) -> Self {
        Argv::new(v)
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for Argv {
    fn from(v: [S; N]) -> Self {
        Argv::new(v)
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for Argv {
    fn eq(&self, other: &[S]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for Argv {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}

impl<S: AsRef<str>> PartialEq<Vec<S>> for Argv {
    fn eq(&self, other: &Vec<S>) -> bool {
        *self == other[..]
    }
}

impl Serialize for Argv {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for a in self.iter() {
            seq.serialize_element(a)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Argv::new(Vec::<String>::deserialize(d)?))
    }
}

/// How a file was opened: any combination of read, write, create, truncate. JSON: the list
/// of names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Access(u8);

impl Access {
    pub const READ: Access = Access(1);
    pub const WRITE: Access = Access(2);
    pub const CREATE: Access = Access(4);
    pub const TRUNCATE: Access = Access(8);
    /// Names as written in policies and JSON, in bit order.
    pub const NAMES: [(&'static str, Access); 4] = [
        ("read", Access::READ),
        ("write", Access::WRITE),
        ("create", Access::CREATE),
        ("truncate", Access::TRUNCATE),
    ];

    pub const fn empty() -> Access {
        Access(0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: Access) -> bool {
        self.0 & other.0 != 0
    }

    pub fn from_name(name: &str) -> Option<Access> {
        Access::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Access::NAMES
            .into_iter()
            .filter(move |(_, a)| self.contains(*a))
            .map(|(n, _)| n)
    }
}

impl BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

impl fmt::Display for Access {
    /// "read,write"; "-" for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, n) in self.names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(n)?;
        }
        Ok(())
    }
}

impl Serialize for Access {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        names.iter().try_fold(Access::empty(), |acc, n| {
            Access::from_name(n)
                .map(|a| acc | a)
                .ok_or_else(|| de::Error::custom(format!("unknown access {n:?}")))
        })
    }
}

/// A socket's address family, as connect events name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }
}

/// The container runtime that runs a container, from its cgroup path (or, where the path
/// does not say, from the runtime socket that knew the container).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    Docker,
    Containerd,
    #[serde(rename = "cri-o")]
    CriO,
    Podman,
    /// A container id in a cgroupfs-driver kubepods path, which does not name the runtime.
    Unknown,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

/// Which container (and Kubernetes pod) a process runs in. `id`, `runtime` and `pod_uid`
/// come from the cgroup path; the names come later, asynchronously, from the runtime's socket
/// (`process::container`), and are absent until then or when the node cannot tell them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContainerIdentity {
    /// The container id (64 lowercase hex characters).
    pub id: Text,
    pub runtime: Runtime,
    /// The container's name: Kubernetes' `io.kubernetes.container.name` label when kubelet
    /// set one, else the runtime's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text>,
    /// The image as the container was started from (`nginx:1.25`, `registry/app@sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<Text>,
    /// `io.kubernetes.pod.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<Text>,
    /// `io.kubernetes.pod.namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Text>,
}

/// The libpq function a query was handed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SqlFunction {
    #[serde(rename = "PQsendQuery")]
    SendQuery,
    #[serde(rename = "PQsendQueryParams")]
    SendQueryParams,
    #[serde(rename = "PQsendPrepare")]
    SendPrepare,
}

impl SqlFunction {
    pub fn name(self) -> &'static str {
        match self {
            SqlFunction::SendQuery => "PQsendQuery",
            SqlFunction::SendQueryParams => "PQsendQueryParams",
            SqlFunction::SendPrepare => "PQsendPrepare",
        }
    }
}

/// An IP address that serializes as its text form (`IpAddr`'s own serde does too; this
/// keeps the field's JSON independent of serde's human-readable switch).
pub mod ip_text {
    use super::*;

    pub fn serialize<S: Serializer>(ip: &IpAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(ip)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|e| de::Error::custom(format!("address {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_keeps_arguments_and_their_spaces_apart() {
        let a = Argv::new(["sh", "-c", "echo a b", ""]);
        assert_eq!(a.len(), 4);
        assert_eq!(a.joined(), "sh -c echo a b ");
        assert_eq!(a.to_vec(), ["sh", "-c", "echo a b", ""]);
        assert_eq!(a.get(4), None);
        let b = Argv::from_nul_separated(b"sh\0-c\0echo a b\0\0");
        assert_eq!(b, a);
        assert!(Argv::from_nul_separated(b"\0").is_empty());
        assert_eq!(Argv::from_nul_separated(b"a\0\0").to_vec(), ["a", ""]);
        assert!(Argv::new(Vec::<String>::new()).is_empty());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"["sh","-c","echo a b",""]"#);
        assert_eq!(serde_json::from_str::<Argv>(&json).unwrap(), a);
    }

    #[test]
    fn argv_from_kernel_bytes_handles_invalid_utf8_and_cut_blocks() {
        let a = Argv::from_nul_separated(b"a\xff\0bc");
        assert_eq!(a.to_vec(), ["a\u{fffd}", "bc"]);
        assert_eq!(Argv::from_nul_separated(b"x").to_vec(), ["x"]);
    }

    #[test]
    fn comm_is_inline_and_survives_replacement_characters() {
        let c =
            Comm::from_kernel(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\0");
        assert_eq!(c.chars().count(), 15);
        assert_eq!(Comm::from_kernel(b"bash\0\0\0").as_str(), "bash");
        let long = "é".repeat(40);
        let cut = Comm::new(&long);
        assert!(cut.len() <= COMM_BYTES && long.starts_with(cut.as_str()));
        assert_eq!(serde_json::to_string(&Comm::new("sh")).unwrap(), "\"sh\"");
    }

    #[test]
    fn wall_time_round_trips_as_rfc3339() {
        let t = WallTime(1_767_225_600_123_456_789);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-01-01T00:00:00.123456789Z\"");
        assert_eq!(serde_json::from_str::<WallTime>(&json).unwrap(), t);
        assert!(serde_json::from_str::<WallTime>("\"yesterday\"").is_err());
    }

    #[test]
    fn access_serializes_as_names() {
        let a = Access::WRITE | Access::CREATE;
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"["write","create"]"#);
        assert_eq!(
            serde_json::from_str::<Access>(r#"["create","write"]"#).unwrap(),
            a
        );
        assert!(serde_json::from_str::<Access>(r#"["exec"]"#).is_err());
        assert_eq!(a.to_string(), "write,create");
        assert_eq!(Access::empty().to_string(), "-");
    }
}
