//! Container runtimes' local sockets, asked for a container's name, image and labels (where
//! kubelet records the pod name and namespace) — what the node can tell without the API
//! server. HTTP/1.1 over a unix socket (hyper), one short request per container:
//!   Docker Engine API   GET /v1.24/containers/<id>/json   (docker; podman's compatible API)
//!   CRI-O inspect API   GET /containers/<id>              (crio.sock)
//! containerd speaks only gRPC (CRI and its own API): asking it would need an HTTP/2 + protobuf
//! stack this agent does not carry, so containerd containers keep what their cgroup path says.
//! What a runtime answers is bounded in size and cleaned (control characters, length) before
//! it reaches events: a container's name and labels are chosen by whoever started it.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{client::conn::http1, header::HOST, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

use crate::events::{ContainerIdentity, Runtime};

/// Longest a lookup may take (connect, request, answer).
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read; an inspect is a few KiB.
const MAX_BODY: usize = 1 << 20;
/// Longest name, image or label value kept.
const MAX_VALUE: usize = 256;
/// The labels kept from an answer.
const LABELS: [&str; 4] = [
    "io.kubernetes.container.name",
    "io.kubernetes.pod.name",
    "io.kubernetes.pod.namespace",
    "io.kubernetes.pod.uid",
];

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no socket configured for {0}")]
    NoSocket(&'static str),
    #[error("{}: {what}", socket.display())]
    Socket { socket: PathBuf, what: String },
    #[error("{}: answered {status}", socket.display())]
    Status { socket: PathBuf, status: StatusCode },
}

/// Where each runtime's socket is (`rasp-agent run --docker-socket …`); a missing file is
/// simply a runtime this node does not run (lookups fail fast and are cached as failed).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RuntimeSockets {
    /// Docker Engine API socket, asked for container names, images and kubelet's pod labels
    /// ("" to never ask).
    #[arg(
        long = "docker-socket",
        default_value = "/var/run/docker.sock",
        value_name = "PATH"
    )]
    pub docker: PathBuf,
    /// Podman's Docker-compatible API socket ("" to never ask).
    #[arg(
        long = "podman-socket",
        default_value = "/run/podman/podman.sock",
        value_name = "PATH"
    )]
    pub podman: PathBuf,
    /// CRI-O's socket (its inspect API) ("" to never ask).
    #[arg(
        long = "crio-socket",
        default_value = "/var/run/crio/crio.sock",
        value_name = "PATH"
    )]
    pub crio: PathBuf,
}

/// What a runtime said about a container.
#[derive(Debug, Default)]
pub struct RuntimeInfo {
    /// The runtime that answered, when the cgroup path did not say.
    pub runtime: Option<Runtime>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub labels: HashMap<String, String>,
}

impl RuntimeSockets {
    /// No sockets at all (tests, replays).
    pub fn none() -> Self {
        RuntimeSockets::default()
    }

    fn path(p: &PathBuf) -> Option<&PathBuf> {
        (!p.as_os_str().is_empty()).then_some(p)
    }

    /// Runtimes a lookup can be sent for: those with a socket configured, and `Unknown` (a
    /// kubepods path that does not name its runtime) when docker or CRI-O may know it.
    pub fn askable(&self) -> Vec<Runtime> {
        let mut out = Vec::new();
        if Self::path(&self.docker).is_some() {
            out.push(Runtime::Docker);
        }
        if Self::path(&self.podman).is_some() {
            out.push(Runtime::Podman);
        }
        if Self::path(&self.crio).is_some() {
            out.push(Runtime::CriO);
        }
        if Self::path(&self.docker).is_some() || Self::path(&self.crio).is_some() {
            out.push(Runtime::Unknown);
        }
        out
    }

    /// Ask the container's runtime about it.
    pub async fn inspect(&self, c: &ContainerIdentity) -> Result<RuntimeInfo, RuntimeError> {
        match c.runtime {
            Runtime::Docker => self.docker_api(&self.docker, "docker", &c.id).await,
            Runtime::Podman => self.docker_api(&self.podman, "podman", &c.id).await,
            Runtime::CriO => self.crio(&c.id).await,
            Runtime::Containerd => Err(RuntimeError::NoSocket("containerd (gRPC only)")),
            // A kubelet cgroupfs path: whichever runtime knows the id.
            Runtime::Unknown => {
                let docker = self.docker_api(&self.docker, "docker", &c.id).await;
                match docker {
                    Ok(mut info) => {
                        info.runtime = Some(Runtime::Docker);
                        Ok(info)
                    }
                    Err(_) => {
                        let mut info = self.crio(&c.id).await?;
                        info.runtime = Some(Runtime::CriO);
                        Ok(info)
                    }
                }
            }
        }
    }

    async fn docker_api(
        &self,
        socket: &PathBuf,
        name: &'static str,
        id: &str,
    ) -> Result<RuntimeInfo, RuntimeError> {
        let socket = Self::path(socket).ok_or(RuntimeError::NoSocket(name))?;
        // v1.24 is the oldest version current engines accept, and all of them serve it.
        let body = get(socket, &format!("/v1.24/containers/{id}/json")).await?;
        parse_docker(&body).map_err(|what| RuntimeError::Socket {
            socket: socket.clone(),
            what,
        })
    }

    async fn crio(&self, id: &str) -> Result<RuntimeInfo, RuntimeError> {
        let socket = Self::path(&self.crio).ok_or(RuntimeError::NoSocket("cri-o"))?;
        let body = get(socket, &format!("/containers/{id}")).await?;
        parse_crio(&body).map_err(|what| RuntimeError::Socket {
            socket: socket.clone(),
            what,
        })
    }
}

/// One GET over the unix socket at `socket`: the body of a 200 answer.
async fn get(socket: &PathBuf, path: &str) -> Result<Bytes, RuntimeError> {
    let err = |what: String| RuntimeError::Socket {
        socket: socket.clone(),
        what,
    };
    let exchange = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| err(format!("connect: {e}")))?;
        let (mut send, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| err(format!("handshake: {e}")))?;
        // Drives the connection until the answer is read (dropped with this future).
        let driver = tokio::spawn(conn);
        let req = Request::get(path)
            .header(HOST, "localhost")
            .body(Empty::new())
            .map_err(|e| err(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| err(format!("request: {e}")))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| err(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        if status != StatusCode::OK {
            return Err(RuntimeError::Status {
                socket: socket.clone(),
                status,
            });
        }
        Ok(body)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| err(format!("no answer within {TIMEOUT:?}")))?
}

#[derive(Deserialize)]
struct DockerInspect {
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Config", default)]
    config: Option<DockerConfig>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(rename = "Image", default)]
    image: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
}

fn parse_docker(body: &[u8]) -> Result<RuntimeInfo, String> {
    let d: DockerInspect =
        serde_json::from_slice(body).map_err(|e| format!("unexpected answer: {e}"))?;
    let config = d.config.unwrap_or(DockerConfig {
        image: None,
        labels: None,
    });
    Ok(RuntimeInfo {
        runtime: None,
        // Docker names start with the `/` of its old link namespace.
        name: d
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/'))
            .and_then(clean),
        image: config.image.as_deref().and_then(clean),
        labels: kept_labels(config.labels.unwrap_or_default()),
    })
}

#[derive(Deserialize)]
struct CrioInspect {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

fn parse_crio(body: &[u8]) -> Result<RuntimeInfo, String> {
    let c: CrioInspect =
        serde_json::from_slice(body).map_err(|e| format!("unexpected answer: {e}"))?;
    Ok(RuntimeInfo {
        runtime: None,
        name: c.name.as_deref().and_then(clean),
        image: c.image.as_deref().and_then(clean),
        labels: kept_labels(c.labels.unwrap_or_default()),
    })
}

fn kept_labels(all: HashMap<String, String>) -> HashMap<String, String> {
    all.into_iter()
        .filter(|(k, _)| LABELS.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k, clean(&v)?)))
        .collect()
}

/// A value fit for events and terminals: no control characters, at most `MAX_VALUE` bytes,
/// not empty.
fn clean(v: &str) -> Option<String> {
    let mut out = String::with_capacity(v.len().min(MAX_VALUE));
    for c in v.trim().chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_VALUE {
            break;
        }
        out.push(c);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_answers_give_name_image_and_kubelet_labels() {
        let body = br#"{"Id":"4f1c","Name":"/k8s_app_web-0_shop_1234_0","Config":{"Image":"registry.local/shop/web:1.4","Labels":{"io.kubernetes.container.name":"app","io.kubernetes.pod.name":"web-0","io.kubernetes.pod.namespace":"shop","maintainer":"someone"}},"State":{"Pid":42}}"#;
        let info = parse_docker(body).expect("parses");
        assert_eq!(info.name.as_deref(), Some("k8s_app_web-0_shop_1234_0"));
        assert_eq!(info.image.as_deref(), Some("registry.local/shop/web:1.4"));
        assert_eq!(info.labels.len(), 3, "{:?}", info.labels);
        assert_eq!(info.labels["io.kubernetes.pod.namespace"], "shop");
        // A plain container: no labels at all.
        let info = parse_docker(br#"{"Name":"/web","Config":{"Image":"nginx"}}"#).expect("parses");
        assert_eq!((info.name.as_deref(), info.labels.len()), (Some("web"), 0));
        assert!(parse_docker(b"<html>")
            .unwrap_err()
            .contains("unexpected answer"));
    }

    #[test]
    fn crio_answers_parse() {
        let body = br#"{"name":"k8s_app_web-0_shop_1234_0","pid":42,"image":"registry.local/shop/web:1.4","image_ref":"sha256:ab","labels":{"io.kubernetes.pod.name":"web-0","io.kubernetes.pod.namespace":"shop","io.kubernetes.container.name":"app"},"annotations":{}}"#;
        let info = parse_crio(body).expect("parses");
        assert_eq!(info.image.as_deref(), Some("registry.local/shop/web:1.4"));
        assert_eq!(info.labels["io.kubernetes.container.name"], "app");
    }

    #[test]
    fn values_are_cleaned_and_bounded() {
        assert_eq!(clean("web\n\x1b[31mred").as_deref(), Some("web??[31mred"));
        assert_eq!(clean("  ").as_deref(), None);
        let long = "é".repeat(200);
        let c = clean(&long).expect("kept");
        assert!(c.len() <= MAX_VALUE && c.chars().all(|ch| ch == 'é'));
    }

    #[tokio::test]
    async fn a_missing_socket_fails_fast_and_names_it() {
        let sockets = RuntimeSockets {
            docker: "/nonexistent/docker.sock".into(),
            ..RuntimeSockets::none()
        };
        let c = crate::process::container::identify(&format!("/docker/{}", "a".repeat(64)))
            .expect("container");
        let e = sockets
            .inspect(&c)
            .await
            .expect_err("no socket")
            .to_string();
        assert!(e.contains("/nonexistent/docker.sock"), "{e}");
        let c = crate::process::container::identify(&format!("/k8s.io/{}", "a".repeat(64)))
            .expect("container");
        let e = sockets
            .inspect(&c)
            .await
            .expect_err("containerd")
            .to_string();
        assert!(e.contains("containerd"), "{e}");
    }
}
