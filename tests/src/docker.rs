//! Real containers for scenarios: images assembled from this host's own binaries and the
//! libraries `ldd` lists for them, imported with `docker import` (there is no registry), and
//! containers started with the real Docker daemon and removed when dropped. `cargo xtask
//! test` starts `dockerd` when it is not running (`cargo xtask setup --docker` does it for a
//! single scenario).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{output_within, unique_name};

/// How long a docker CLI call may take (an import of a few MB, a container start).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// Fails the scenario unless a Docker daemon answers.
pub fn require_docker() {
    let answered = output_within(Command::new("docker").arg("info"), DOCKER_TIMEOUT)
        .is_some_and(|o| o.status.success());
    if !answered {
        panic!(
            "this test needs a running Docker daemon (docker.io): run `cargo xtask setup \
             --docker` as root (or `cargo xtask test`, which starts dockerd)"
        );
    }
}

/// Runs `docker ARGS`, which must succeed; its trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out =
        output_within(Command::new("docker").args(args), DOCKER_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "`docker {}` took longer than {DOCKER_TIMEOUT:?}",
                args.join(" ")
            )
        });
    if !out.status.success() {
        panic!(
            "`docker {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An image imported from a root filesystem the test assembles; removed when dropped.
pub struct Image {
    tag: String,
    rootfs: PathBuf,
}

impl Image {
    /// Starts a root filesystem under /tmp: `files` are (path on this host, path in the
    /// image) pairs; each brings the libraries `ldd` lists for it, at their own paths.
    pub fn build(name: &str, files: &[(&Path, &str)], dirs: &[&str]) -> Image {
        let rootfs = std::env::temp_dir().join(unique_name(&format!("rasp-image-{name}")));
        fs::create_dir_all(&rootfs).expect("create rootfs");
        for dir in dirs {
            fs::create_dir_all(rootfs.join(dir.trim_start_matches('/')))
                .unwrap_or_else(|err| panic!("mkdir {dir} in the rootfs: {err}"));
        }
        for (from, to) in files {
            copy_into(&rootfs, from, to);
            for lib in libraries_of(from) {
                let inside = lib.to_string_lossy().into_owned();
                copy_into(&rootfs, &lib, &inside);
            }
        }
        let tar = rootfs.with_extension("tar");
        let status = Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(status.success(), "tar of {}: {status}", rootfs.display());
        // Lowercase, unique per test process: concurrent runs never share a tag.
        let tag = format!("{}:test", unique_name(&format!("rasp-test-{name}")));
        docker(&["import", tar.to_str().expect("utf-8 path"), &tag]);
        let _ = fs::remove_file(&tar);
        Image { tag, rootfs }
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = output_within(
            Command::new("docker").args(["image", "rm", "-f", &self.tag]),
            DOCKER_TIMEOUT,
        );
        let _ = fs::remove_dir_all(&self.rootfs);
    }
}

/// The absolute paths `ldd` names for `binary` (the loader included; none for a static one).
pub fn libraries_of(binary: &Path) -> Vec<PathBuf> {
    let out = output_within(Command::new("ldd").arg(binary), DOCKER_TIMEOUT)
        .unwrap_or_else(|| panic!("ldd {} hung", binary.display()));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect()
}

fn copy_into(rootfs: &Path, from: &Path, to: &str) {
    let dest = rootfs.join(to.trim_start_matches('/'));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).expect("mkdir in the rootfs");
    }
    // Following symlinks: the image gets the file under the name the loader asks for.
    fs::copy(from, &dest)
        .unwrap_or_else(|err| panic!("copy {} into the rootfs: {err}", from.display()));
}

/// A running container, removed (`docker rm -f`) when dropped.
pub struct Container {
    pub id: String,
    pub name: String,
}

impl Container {
    /// `docker run -d --name NAME OPTIONS IMAGE COMMAND...` (make NAME unique, e.g. with
    /// `unique_name`).
    pub fn run(name: &str, options: &[&str], image: &str, command: &[&str]) -> Container {
        let name = name.to_string();
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend_from_slice(options);
        args.push(image);
        args.extend_from_slice(command);
        let out = output_within(Command::new("docker").args(&args), DOCKER_TIMEOUT);
        let id = match out {
            Some(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
            failed => {
                // A failed start can leave the container created: do not leak it.
                let _ = output_within(
                    Command::new("docker").args(["rm", "-f", &name]),
                    DOCKER_TIMEOUT,
                );
                panic!(
                    "`docker {}` failed: {}",
                    args.join(" "),
                    failed.map_or("timed out".into(), |o| String::from_utf8_lossy(&o.stderr)
                        .trim()
                        .to_string())
                );
            }
        };
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "docker run printed {id:?}, not a container id"
        );
        Container { id, name }
    }

    /// `docker exec` a command in it; its output (it must succeed).
    pub fn exec(&self, command: &[&str]) -> String {
        let mut args = vec!["exec", self.id.as_str()];
        args.extend_from_slice(command);
        docker(&args)
    }

    /// Everything the container wrote to stdout and stderr.
    pub fn logs(&self) -> String {
        match output_within(
            Command::new("docker").args(["logs", &self.id]),
            DOCKER_TIMEOUT,
        ) {
            Some(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            None => "(docker logs hung)".to_string(),
        }
    }

    /// Whether the container is still running.
    pub fn running(&self) -> bool {
        output_within(
            Command::new("docker").args(["inspect", "-f", "{{.State.Running}}", &self.id]),
            DOCKER_TIMEOUT,
        )
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output_within(
            Command::new("docker").args(["rm", "-f", &self.id]),
            DOCKER_TIMEOUT,
        );
    }
}
