//! Container and pod identity, keyed by cgroup id. The container id, its runtime and the pod
//! uid come from the cgroup path, which the runtimes and kubelet name in both cgroup drivers,
//! the same in cgroup v1 hierarchies, v2 and the hybrid layout's unified tree:
//!   /docker/<id>                                      docker, cgroupfs driver
//!   /system.slice/docker-<id>.scope                   docker, systemd driver
//!   /kubepods/burstable/pod<uid>/<id>                 kubelet, cgroupfs (runtime not named)
//!   /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/
//!       cri-containerd-<id>.scope | crio-<id>.scope | docker-<id>.scope   kubelet, systemd
//!   /machine.slice/libpod-<id>.scope, /libpod_parent/libpod-<id>   podman
//!   /k8s.io/<id>, /default/<id>                       containerd, cgroupfs
//! Keyed by cgroup id (not by a path read from /proc), it holds when the agent runs in a
//! cgroup namespace of its own. Names (container name, image, the pod name and namespace
//! kubelet puts in labels) come from the runtime's socket, asked by `Enricher` on a task of
//! its own: the event path only reads the registry, parses a path it has not seen, and
//! queues a lookup without waiting.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::runtime::{RuntimeInfo, RuntimeSockets};
use crate::events::{ContainerIdentity, Runtime, Text};

/// Cgroups remembered (containers or not); past it the registry starts over (what is still
/// running is parsed again on its next event; the lookups are cached per container id by the
/// runtimes' answers being quick, and bounded by the queue).
const MAX_ENTRIES: usize = 16_384;
/// Lookups waiting for the enricher; past it a lookup is dropped and retried later.
const LOOKUP_QUEUE: usize = 256;
/// A failed lookup (socket missing, container unknown, timeout) is not repeated sooner.
const RETRY_FAILED: Duration = Duration::from_secs(60);

/// What the path says, before any name is known.
pub fn identify(cgroup: &str) -> Option<ContainerIdentity> {
    let mut pod_uid = None;
    let mut found: Option<(String, Runtime)> = None;
    let mut parent = "";
    for component in cgroup.split('/').filter(|c| !c.is_empty()) {
        if let Some(uid) = pod_uid_of(component) {
            pod_uid = Some(uid);
        }
        if let Some(hit) = container_of(component, parent) {
            found = Some(hit);
        }
        parent = component;
    }
    let (id, runtime) = found?;
    Some(ContainerIdentity {
        id: id.into(),
        runtime,
        name: None,
        image: None,
        pod_uid: pod_uid.map(Text::from),
        pod_name: None,
        namespace: None,
    })
}

/// "pod0f1e…" (cgroupfs), "kubepods-besteffort-pod0f1e_…_x.slice" (systemd) → the uid with
/// dashes.
fn pod_uid_of(component: &str) -> Option<String> {
    let start = component.rfind("pod")? + 3;
    let rest = component[start..]
        .strip_suffix(".slice")
        .unwrap_or(&component[start..]);
    let uid = rest.replace('_', "-");
    let is_uid = uid.len() == 36
        && uid.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_digit() || ('a'..='f').contains(&c)
            }
        });
    is_uid.then_some(uid)
}

/// A container's own cgroup: a 64-hex id, bare or as `<runtime>-<id>[.scope]`. Monitor
/// processes (`crio-conmon-…`, `libpod-conmon-…`) are not the container.
fn container_of(component: &str, parent: &str) -> Option<(String, Runtime)> {
    let base = component.strip_suffix(".scope").unwrap_or(component);
    let (prefix, id) = match base.rsplit_once('-') {
        Some((p, id)) => (p, id),
        None => ("", base),
    };
    let is_id = id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_id {
        return None;
    }
    // By the end of the prefix: slices and scopes may carry more in front of it.
    let named = |runtime: &str| prefix == runtime || prefix.ends_with(&format!("-{runtime}"));
    let runtime = if prefix.is_empty() {
        match parent {
            "docker" => Runtime::Docker,
            "libpod_parent" => Runtime::Podman,
            // containerd's cgroupfs default: /<namespace>/<id>.
            "k8s.io" | "default" => Runtime::Containerd,
            _ => Runtime::Unknown,
        }
    } else if named("docker") {
        Runtime::Docker
    } else if named("cri-containerd") {
        Runtime::Containerd
    } else if named("crio") {
        Runtime::CriO
    } else if named("libpod") {
        Runtime::Podman
    } else {
        // `crio-conmon-…`, `libpod-conmon-…`, or a runtime we do not know.
        return None;
    };
    Some((id.to_string(), runtime))
}

/// Where a cgroup's names stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Names {
    /// Not a container, or a runtime no socket here can name: nothing to ask.
    NotAsked,
    /// A lookup is queued or running.
    Pending,
    Known,
    /// The last lookup failed at this time (negative cache): asked again after
    /// `RETRY_FAILED`, on the cgroup's next event.
    Failed(Instant),
}

struct Entry {
    identity: Option<Arc<ContainerIdentity>>,
    names: Names,
}

/// Numbers for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Containers currently known (by cgroup).
    pub known: usize,
    /// Of those, how many have names from their runtime.
    pub named: usize,
    pub lookups: u64,
    pub lookup_failures: u64,
    /// Lookups not queued because the enricher was a queue behind (retried later).
    pub lookups_dropped: u64,
    /// Cgroups forgotten because they are gone.
    pub forgotten: u64,
}

/// One container as `rasp-agent containers` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerEntry {
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub identity: ContainerIdentity,
}

/// A lookup for the enricher.
#[derive(Debug)]
struct Lookup {
    cgroup_id: u64,
    identity: Arc<ContainerIdentity>,
}

/// The registry: cgroup id → container identity (or "not a container"), shared by the event
/// path (read, and a parse per new cgroup), the enricher (writes names) and the API.
pub struct Containers {
    entries: Mutex<HashMap<u64, Entry>>,
    lookups: mpsc::Sender<Lookup>,
    /// Runtimes some socket here can name (others are never queued).
    askable: Vec<Runtime>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    lookups: AtomicU64,
    failures: AtomicU64,
    dropped: AtomicU64,
    forgotten: AtomicU64,
}

impl Containers {
    /// The registry and its enricher (run it: `Enricher::run`).
    pub fn new(sockets: RuntimeSockets) -> (Arc<Containers>, Enricher) {
        let (tx, rx) = mpsc::channel(LOOKUP_QUEUE);
        let containers = Arc::new(Containers {
            entries: Mutex::new(HashMap::new()),
            lookups: tx,
            askable: sockets.askable(),
            counters: Counters::default(),
        });
        let enricher = Enricher {
            containers: containers.clone(),
            rx,
            sockets,
        };
        (containers, enricher)
    }

    /// The identity of the container cgroup `cgroup_id` (at `cgroup`) belongs to, or `None`
    /// for a process outside containers (or a cgroup whose path is not resolved yet). Runs on
    /// the event path: a map lookup; for a cgroup not seen before, a parse of its path and a
    /// lookup queued for the enricher, never waited for.
    pub fn of(&self, cgroup_id: u64, cgroup: Option<&str>) -> Option<Arc<ContainerIdentity>> {
        if cgroup_id == 0 {
            // Replayed events carry no id to key on.
            return cgroup.and_then(identify).map(Arc::new);
        }
        let mut entries = crate::lock(&self.entries);
        if let Some(e) = entries.get_mut(&cgroup_id) {
            if let (Names::Failed(at), Some(identity)) = (e.names, &e.identity) {
                if at.elapsed() >= RETRY_FAILED {
                    e.names = self.ask(cgroup_id, identity.clone());
                }
            }
            return e.identity.clone();
        }
        // Unresolved: not remembered, so the next event (with the path) decides.
        let path = cgroup?;
        let identity = identify(path).map(Arc::new);
        let names = match &identity {
            Some(i) if self.askable.contains(&i.runtime) => self.ask(cgroup_id, i.clone()),
            _ => Names::NotAsked,
        };
        if entries.len() >= MAX_ENTRIES {
            // Bounded: start over rather than grow (the housekeeping pass normally forgets
            // gone cgroups long before this).
            entries.clear();
        }
        entries.insert(
            cgroup_id,
            Entry {
                identity: identity.clone(),
                names,
            },
        );
        identity
    }

    fn ask(&self, cgroup_id: u64, identity: Arc<ContainerIdentity>) -> Names {
        match self.lookups.try_send(Lookup {
            cgroup_id,
            identity,
        }) {
            Ok(()) => Names::Pending,
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                Names::Failed(Instant::now())
            }
        }
    }

    /// Containers known now, with what is known of them.
    pub fn list(&self) -> Vec<ContainerEntry> {
        let entries = crate::lock(&self.entries);
        let mut out: Vec<ContainerEntry> = entries
            .iter()
            .filter_map(|(&cgroup_id, e)| {
                Some(ContainerEntry {
                    cgroup_id,
                    identity: (**e.identity.as_ref()?).clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.identity.id.cmp(&b.identity.id));
        out
    }

    pub fn stats(&self) -> ContainerStats {
        let entries = crate::lock(&self.entries);
        let c = &self.counters;
        ContainerStats {
            known: entries.values().filter(|e| e.identity.is_some()).count(),
            named: entries.values().filter(|e| e.names == Names::Known).count(),
            lookups: c.lookups.load(Ordering::Relaxed),
            lookup_failures: c.failures.load(Ordering::Relaxed),
            lookups_dropped: c.dropped.load(Ordering::Relaxed),
            forgotten: c.forgotten.load(Ordering::Relaxed),
        }
    }

    /// Forget every cgroup `alive` says is gone (the cgroup housekeeping pass calls this).
    pub fn retain(&self, mut alive: impl FnMut(u64) -> bool) {
        let mut entries = crate::lock(&self.entries);
        let before = entries.len();
        entries.retain(|&id, _| alive(id));
        let gone = (before - entries.len()) as u64;
        self.counters.forgotten.fetch_add(gone, Ordering::Relaxed);
    }

    /// Cgroup ids remembered (for the housekeeping pass to check).
    pub fn cgroup_ids(&self) -> Vec<u64> {
        crate::lock(&self.entries).keys().copied().collect()
    }

    /// The enricher's answer for `cgroup_id`: a new identity with the names (events from now
    /// on carry it), or a failure to remember.
    fn answered(&self, cgroup_id: u64, named: Option<ContainerIdentity>) {
        let mut entries = crate::lock(&self.entries);
        let Some(e) = entries.get_mut(&cgroup_id) else {
            return;
        };
        match named {
            Some(identity) => {
                e.identity = Some(Arc::new(identity));
                e.names = Names::Known;
            }
            None => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                e.names = Names::Failed(Instant::now());
            }
        }
    }
}

/// Asks the runtimes' sockets for names, one lookup at a time, off the event path.
pub struct Enricher {
    containers: Arc<Containers>,
    rx: mpsc::Receiver<Lookup>,
    sockets: RuntimeSockets,
}

impl Enricher {
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // The first failure per runtime is worth an operator's eye (a socket not mounted, or
        // refused); the rest are counted in status.
        let mut told: Vec<Runtime> = Vec::new();
        loop {
            let lookup = tokio::select! {
                l = self.rx.recv() => match l {
                    Some(l) => l,
                    None => return,
                },
                _ = stop.changed() => return,
            };
            self.containers
                .counters
                .lookups
                .fetch_add(1, Ordering::Relaxed);
            let named = match self.sockets.inspect(&lookup.identity).await {
                Ok(info) => Some(named(&lookup.identity, info)),
                Err(e) => {
                    let runtime = lookup.identity.runtime;
                    if told.contains(&runtime) {
                        tracing::debug!(container = %lookup.identity.id, runtime = runtime.name(), error = %e, "container lookup failed");
                    } else {
                        told.push(runtime);
                        tracing::info!(container = %lookup.identity.id, runtime = runtime.name(), error = %e, "cannot ask the container runtime for names; its containers keep the id, runtime and pod uid of their cgroup path (further failures are counted in status)");
                    }
                    None
                }
            };
            if let Some(n) = &named {
                tracing::debug!(container = %n.id, name = ?n.name, image = ?n.image, "container named");
            }
            self.containers.answered(lookup.cgroup_id, named);
        }
    }
}

/// The path's identity with what the runtime said.
fn named(from_path: &ContainerIdentity, info: RuntimeInfo) -> ContainerIdentity {
    let label = |k: &str| info.labels.get(k).map(|v| Text::from(v.as_str()));
    ContainerIdentity {
        id: from_path.id.clone(),
        runtime: info.runtime.unwrap_or(from_path.runtime),
        name: label("io.kubernetes.container.name").or_else(|| info.name.map(Text::from)),
        image: info.image.map(Text::from),
        pod_uid: from_path
            .pod_uid
            .clone()
            .or_else(|| label("io.kubernetes.pod.uid")),
        pod_name: label("io.kubernetes.pod.name"),
        namespace: label("io.kubernetes.pod.namespace"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "4f1c3b0a5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3";
    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    fn id_of(path: &str) -> Option<(String, Runtime, Option<String>)> {
        identify(path).map(|i| {
            (
                i.id.to_string(),
                i.runtime,
                i.pod_uid.map(|p| p.to_string()),
            )
        })
    }

    #[test]
    fn kubepods_in_both_drivers_and_every_runtime() {
        let uid = Some(UID.to_string());
        assert_eq!(
            id_of(&format!("/kubepods/burstable/pod{UID}/{CID}")),
            Some((CID.into(), Runtime::Unknown, uid.clone()))
        );
        assert_eq!(
            id_of(&format!("/kubepods/pod{UID}/{CID}")),
            Some((CID.into(), Runtime::Unknown, uid.clone()))
        );
        let slice = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            UID.replace('-', "_")
        );
        for (leaf, runtime) in [
            (format!("cri-containerd-{CID}.scope"), Runtime::Containerd),
            (format!("crio-{CID}.scope"), Runtime::CriO),
            (format!("docker-{CID}.scope"), Runtime::Docker),
        ] {
            assert_eq!(
                id_of(&format!("{slice}/{leaf}")),
                Some((CID.into(), runtime, uid.clone())),
                "{leaf}"
            );
        }
        // Guaranteed QoS pods sit right below kubepods.slice.
        assert_eq!(
            id_of(&format!(
                "/kubepods.slice/kubepods-pod{}.slice/crio-{CID}.scope",
                UID.replace('-', "_")
            )),
            Some((CID.into(), Runtime::CriO, uid))
        );
        // The pod's monitor is not the container.
        assert_eq!(id_of(&format!("{slice}/crio-conmon-{CID}.scope")), None);
    }

    #[test]
    fn docker_podman_containerd_and_plain_hosts() {
        for (path, runtime) in [
            (format!("/docker/{CID}"), Runtime::Docker),
            (format!("/system.slice/docker-{CID}.scope"), Runtime::Docker),
            (
                format!("/machine.slice/libpod-{CID}.scope"),
                Runtime::Podman,
            ),
            (format!("/libpod_parent/libpod-{CID}"), Runtime::Podman),
            (format!("/k8s.io/{CID}"), Runtime::Containerd),
            (format!("/default/{CID}"), Runtime::Containerd),
            // A unit name with more in front.
            (
                format!("/system.slice/rasp-test-1-docker-{CID}.scope"),
                Runtime::Docker,
            ),
            // Docker in docker: the innermost container is the process's.
            (
                format!("/docker/{}/docker/{CID}", "ab".repeat(32)),
                Runtime::Docker,
            ),
        ] {
            assert_eq!(id_of(&path), Some((CID.into(), runtime, None)), "{path}");
        }
        for path in [
            "/user.slice/user-0.slice/session-1.scope".to_string(),
            "/".to_string(),
            String::new(),
            format!("/machine.slice/libpod-conmon-{CID}.scope"),
            // Upper case is not an id any runtime writes; 63 or 65 characters neither.
            format!("/docker/{}", CID.to_uppercase()),
            format!("/docker/{}", &CID[1..]),
            format!("/docker/{CID}0"),
        ] {
            assert_eq!(id_of(&path), None, "{path}");
        }
    }

    #[test]
    fn cgroup_v1_lines_name_the_same_paths() {
        // /proc/<pid>/cgroup of a docker container on a v1 or hybrid host: every hierarchy,
        // the unified one included, has the same path.
        let text = format!(
            "12:pids:/docker/{CID}\n4:memory:/docker/{CID}\n1:name=systemd:/docker/{CID}\n0::/docker/{CID}\n"
        );
        for line in text.lines() {
            let path = line.splitn(3, ':').nth(2).expect("path");
            assert_eq!(id_of(path).map(|i| i.0), Some(CID.to_string()), "{line}");
        }
    }

    fn sockets_none() -> RuntimeSockets {
        RuntimeSockets::none()
    }

    #[test]
    fn the_registry_parses_once_per_cgroup_and_forgets_gone_ones() {
        let (containers, _enricher) = Containers::new(sockets_none());
        let path = format!("/docker/{CID}");
        let a = containers.of(42, Some(&path)).expect("a container");
        // Cached by id: the path is not needed again, and the same Arc comes back.
        let b = containers.of(42, None).expect("cached");
        assert!(Arc::ptr_eq(&a, &b));
        // A host cgroup is remembered as "not a container".
        assert_eq!(containers.of(7, Some("/system.slice/ssh.service")), None);
        assert_eq!(containers.of(7, None), None);
        // Unresolved paths are not remembered.
        assert_eq!(containers.of(9, None), None);
        assert_eq!(
            containers.of(9, Some(&path)).map(|i| i.id.clone()),
            Some(CID.into())
        );
        assert_eq!(containers.list().len(), 2);
        containers.retain(|id| id != 42);
        assert_eq!(containers.cgroup_ids().len(), 2);
        let s = containers.stats();
        assert_eq!((s.known, s.forgotten), (1, 1));
    }

    #[test]
    fn names_replace_the_identity_and_failures_are_cached() {
        let (containers, enricher) = Containers::new(sockets_none());
        let path = format!("/kubepods/besteffort/pod{UID}/{CID}");
        let plain = containers.of(5, Some(&path)).expect("container");
        assert_eq!(plain.name, None);
        let info = RuntimeInfo {
            runtime: Some(Runtime::Containerd),
            name: Some("k8s_app_web-0_shop_uid_0".into()),
            image: Some("registry.local/shop/web:1.4".into()),
            labels: [
                ("io.kubernetes.container.name", "app"),
                ("io.kubernetes.pod.name", "web-0"),
                ("io.kubernetes.pod.namespace", "shop"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        };
        containers.answered(5, Some(named(&plain, info)));
        let n = containers.of(5, None).expect("named");
        assert_eq!(n.name.as_deref(), Some("app"));
        assert_eq!(n.image.as_deref(), Some("registry.local/shop/web:1.4"));
        assert_eq!(n.pod_name.as_deref(), Some("web-0"));
        assert_eq!(n.namespace.as_deref(), Some("shop"));
        assert_eq!(n.pod_uid.as_deref(), Some(UID));
        assert_eq!(n.runtime, Runtime::Containerd);
        assert_eq!(containers.stats().named, 1);

        containers.of(6, Some(&format!("/docker/{CID}")));
        containers.answered(6, None);
        let s = containers.stats();
        assert_eq!(s.lookup_failures, 1);
        // Failed recently: the next events do not ask again.
        assert!(matches!(
            crate::lock(&containers.entries).get(&6).map(|e| e.names),
            Some(Names::Failed(_))
        ));
        drop(enricher);
    }
}
