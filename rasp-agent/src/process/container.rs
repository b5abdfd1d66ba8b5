//! Container and pod identity from a cgroup v2 path. Runtimes name the leaf cgroup after the
//! container id (64 hex chars) and kubelet names a parent after the pod uid, in both the
//! cgroupfs and the systemd drivers:
//!   /kubepods/burstable/pod<uid>/<id>
//!   /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
//!   /system.slice/docker-<id>.scope, /docker/<id>, /machine.slice/libpod-<id>.scope

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerIdentity {
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

pub fn identify(cgroup: &str) -> ContainerIdentity {
    let mut id = ContainerIdentity::default();
    for component in cgroup.split('/') {
        if let Some(uid) = pod_uid(component) {
            id.pod_uid = Some(uid);
        }
        if let Some(cid) = container_id(component) {
            id.container_id = Some(cid);
        }
    }
    id
}

/// "pod0f1e...", "kubepods-besteffort-pod0f1e_..._x.slice" → the uid with dashes.
fn pod_uid(component: &str) -> Option<String> {
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
                c.is_ascii_hexdigit()
            }
        });
    is_uid.then_some(uid)
}

/// A 64-hex id, bare or inside "<runtime>-<id>.scope".
fn container_id(component: &str) -> Option<String> {
    let base = component.strip_suffix(".scope").unwrap_or(component);
    let candidate = base.rsplit(['-', ':']).next().unwrap_or(base);
    (candidate.len() == 64 && candidate.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| candidate.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "4f1c3b0a5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3";

    #[test]
    fn cgroupfs_and_systemd_kubepods() {
        let a = identify(&format!(
            "/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{CID}"
        ));
        assert_eq!(
            a.pod_uid.as_deref(),
            Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
        assert_eq!(a.container_id.as_deref(), Some(CID));
        let b = identify(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-{CID}.scope"
        ));
        assert_eq!(b, a);
    }

    #[test]
    fn docker_podman_and_plain_hosts() {
        for path in [
            format!("/system.slice/docker-{CID}.scope"),
            format!("/docker/{CID}"),
            format!("/machine.slice/libpod-{CID}.scope"),
        ] {
            let id = identify(&path);
            assert_eq!(id.container_id.as_deref(), Some(CID), "{path}");
            assert_eq!(id.pod_uid, None);
        }
        assert_eq!(
            identify("/user.slice/user-0.slice/session-1.scope"),
            ContainerIdentity::default()
        );
        assert_eq!(identify("/"), ContainerIdentity::default());
    }
}
