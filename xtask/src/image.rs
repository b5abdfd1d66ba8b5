//! `cargo xtask image`: the agent as a container image built from local files only (no
//! registry): one binary with its eBPF object embedded, static when the toolchain allows,
//! on `scratch`. Writes target/image/ (rootfs, rootfs.tar, Dockerfile), then imports it into
//! Docker, checks the binary runs in it, saves it for `ctr`/`docker load`, and reports sizes.
//! Also writes the policy ConfigMap of deploy/ from a policy directory.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::command::{self, human};
use crate::workspace::{Profile, Workspace};
use crate::{build::EBPF_OBJ_VAR, build_ebpf, setup};

/// How the binary is linked, in the order `auto` tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Libc {
    /// Try musl, then static glibc, then dynamic glibc; the first that builds wins.
    Auto,
    /// x86_64-unknown-linux-musl: fully static (musl's malloc is slower than glibc's).
    Musl,
    /// glibc with `+crt-static`: static, glibc's allocator.
    GlibcStatic,
    /// Dynamic glibc: the image carries the libraries `ldd` lists.
    Glibc,
}

#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[arg(long, value_enum, default_value = "auto")]
    libc: Libc,
    /// Image name and tag (what deploy/daemonset.yaml refers to).
    #[arg(long, default_value = concat!("rasp-agent:", env!("CARGO_PKG_VERSION")))]
    tag: String,
    /// Only assemble target/image/; do not install, start or use Docker.
    #[arg(long)]
    no_docker: bool,
    /// Instead of an image: write deploy/policies-v<N>.yaml, the ConfigMap of the policy
    /// directory (`--policies`), for a policy rollout (deploy/README.md).
    #[arg(long, value_name = "N")]
    policy_configmap: Option<u32>,
    /// Policy directory for `--policy-configmap`.
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
}

const MUSL: &str = "x86_64-unknown-linux-musl";
const GNU: &str = "x86_64-unknown-linux-gnu";
/// Where the binary sits in the image (the Dockerfile's ENTRYPOINT).
const BINARY_IN_IMAGE: &str = "rasp-agent";
/// Mount points the DaemonSet and the unit use; present (empty) so a read-only root works.
const IMAGE_DIRS: &[&str] = &[
    "etc/rasp/policies",
    "run/rasp",
    "var/lib/rasp",
    "sys",
    "proc",
    "dev",
    "tmp",
];

pub fn run(ws: &Workspace, args: &ImageArgs) -> Result<()> {
    if let Some(version) = args.policy_configmap {
        let dir = ws.root().join(&args.policies);
        let out = ws.root().join(format!("deploy/policies-v{version}.yaml"));
        fs::write(&out, policy_configmap(&dir, version)?)
            .with_context(|| format!("writing {}", out.display()))?;
        println!("{}", out.display());
        return Ok(());
    }
    let started = Instant::now();
    setup::run()?;
    let object = build_ebpf::run(ws, Profile::Release)?;
    let (binary, linkage) = build_agent(ws, args.libc, &object)?;
    let out = ws.host_target_dir().join("image");
    let rootfs = assemble_rootfs(&out, &binary)?;
    let tar = out.join("rootfs.tar");
    command::run(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"])
            .arg(&tar)
            .arg("."),
    )?;
    fs::write(out.join("Dockerfile"), dockerfile(linkage))?;
    let mut report = format!(
        "image: {linkage}; binary {} ({}), rootfs.tar {}",
        mib(size(&rootfs.join(BINARY_IN_IMAGE))?),
        binary.display(),
        mib(size(&tar)?)
    );
    if args.no_docker {
        let _ = write!(report, "; Docker skipped (--no-docker)");
    } else {
        let image_bytes = docker_image(ws, &out, &tar, &args.tag)?;
        let _ = write!(
            report,
            "; docker image {} {} (saved: {})",
            args.tag,
            mib(image_bytes),
            out.join("rasp-agent-image.tar").display()
        );
    }
    eprintln!("{report} — {}", human(started.elapsed()));
    println!("{}", out.display());
    Ok(())
}

fn size(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// What the image's binary turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Linkage {
    StaticMusl,
    StaticGlibc,
    DynamicGlibc,
}

impl std::fmt::Display for Linkage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Linkage::StaticMusl => "static (musl)",
            Linkage::StaticGlibc => "static (glibc, crt-static)",
            Linkage::DynamicGlibc => "dynamic (glibc + the libraries ldd lists)",
        })
    }
}

fn build_agent(ws: &Workspace, libc: Libc, object: &Path) -> Result<(PathBuf, Linkage)> {
    let tries: &[Libc] = match libc {
        Libc::Auto => &[Libc::Musl, Libc::GlibcStatic, Libc::Glibc],
        one => std::slice::from_ref(match one {
            Libc::Musl => &Libc::Musl,
            Libc::GlibcStatic => &Libc::GlibcStatic,
            _ => &Libc::Glibc,
        }),
    };
    let mut failures = Vec::new();
    for &attempt in tries {
        match build_one(ws, attempt, object) {
            Ok(built) => return Ok(built),
            Err(e) if libc == Libc::Auto => {
                eprintln!("image: the {attempt:?} build failed, trying the next: {e:#}");
                failures.push(format!("{attempt:?}: {e:#}"));
            }
            Err(e) => return Err(e),
        }
    }
    bail!("no build of the agent succeeded:\n{}", failures.join("\n"))
}

fn build_one(ws: &Workspace, libc: Libc, object: &Path) -> Result<(PathBuf, Linkage)> {
    let target_dir = ws.host_target_dir();
    let mut cargo = command::host_cargo();
    cargo
        .current_dir(ws.root())
        .args(["build", "--release", "-p", "rasp-agent", "--target-dir"])
        .arg(&target_dir)
        .env(EBPF_OBJ_VAR, object);
    let (binary, expected) = match libc {
        Libc::Musl => {
            command::run(
                Command::new(command::rustup_proxy("rustup")).args(["target", "add", MUSL]),
            )?;
            cargo.args(["--target", MUSL]);
            (
                target_dir.join(MUSL).join("release/rasp-agent"),
                Linkage::StaticMusl,
            )
        }
        Libc::GlibcStatic => {
            // With an explicit --target these flags reach the agent only, not the build
            // scripts and proc macros, which must stay dynamic host programs.
            cargo.args(["--target", GNU]).env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            );
            (
                target_dir.join(GNU).join("release/rasp-agent"),
                Linkage::StaticGlibc,
            )
        }
        Libc::Glibc | Libc::Auto => (ws.agent_bin(Profile::Release), Linkage::DynamicGlibc),
    };
    command::run(&mut cargo)?;
    let is_static = !has_interpreter(&binary)?;
    match (expected, is_static) {
        (Linkage::DynamicGlibc, _) => Ok((binary, Linkage::DynamicGlibc)),
        (linkage, true) => Ok((binary, linkage)),
        (linkage, false) => bail!(
            "{} was built for {linkage} but asks for a dynamic loader",
            binary.display()
        ),
    }
}

/// Whether an ELF64 executable names a dynamic loader (a `PT_INTERP` program header).
fn has_interpreter(binary: &Path) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let elf = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        bail!("{} is not an ELF64 file", binary.display());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("{}: truncated ELF header", binary.display());
    };
    Ok((0..usize::from(phnum)).any(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        elf.get(at..at + 4)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PT_INTERP)
    }))
}

/// target/image/rootfs: the stripped binary, the mount points, and for a dynamic binary
/// the loader and libraries `ldd` names, at the same paths.
fn assemble_rootfs(out: &Path, binary: &Path) -> Result<PathBuf> {
    let rootfs = out.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).with_context(|| format!("clearing {}", rootfs.display()))?;
    }
    for dir in IMAGE_DIRS {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    let inside = rootfs.join(BINARY_IN_IMAGE);
    fs::copy(binary, &inside).with_context(|| format!("copying {}", binary.display()))?;
    // Symbols are most of a release binary; the embedded eBPF object is data and stays.
    command::run(Command::new("strip").arg("--strip-all").arg(&inside))?;
    if has_interpreter(binary)? {
        let ldd = command::capture(Command::new("ldd").arg(binary))?;
        if !ldd.status.success() {
            bail!("ldd {} failed", binary.display());
        }
        for lib in crate::vm::initramfs::parse_ldd(&String::from_utf8_lossy(&ldd.stdout)) {
            let dest = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            // Follow symlinks: the image needs the file under the name the loader asks for.
            fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
        }
    }
    Ok(rootfs)
}

fn dockerfile(linkage: Linkage) -> String {
    format!(
        "# Generated by `cargo xtask image` ({linkage}). Build context: this directory.\n\
         # Equivalent to what the task imports: `docker import` of rootfs.tar with the same\n\
         # ENTRYPOINT and CMD.\n\
         FROM scratch\n\
         COPY rootfs/ /\n\
         ENTRYPOINT [\"/{BINARY_IN_IMAGE}\"]\n\
         CMD [\"run\"]\n"
    )
}

/// Imports rootfs.tar as `tag`, checks the agent starts inside it, saves the image, and
/// returns its size as Docker reports it.
fn docker_image(ws: &Workspace, out: &Path, tar: &Path, tag: &str) -> Result<u64> {
    setup::docker_daemon(&ws.host_target_dir().join("dockerd.log"))?;
    command::run(
        Command::new("docker")
            .arg("import")
            .args(["--change", &format!("ENTRYPOINT [\"/{BINARY_IN_IMAGE}\"]")])
            .args(["--change", "CMD [\"run\"]"])
            .args([
                "--change",
                &format!("LABEL org.opencontainers.image.title=rasp-agent org.opencontainers.image.version={}", env!("CARGO_PKG_VERSION")),
            ])
            .arg(tar)
            .arg(tag),
    )?;
    // The binary must run on scratch: no loader, no library missing.
    let help = command::capture(Command::new("docker").args(["run", "--rm", tag, "--help"]))?;
    if !help.status.success() {
        bail!(
            "the image does not start: `docker run --rm {tag} --help` failed: {}",
            String::from_utf8_lossy(&help.stderr)
        );
    }
    let saved = out.join("rasp-agent-image.tar");
    command::run(
        Command::new("docker")
            .args(["save", "-o"])
            .arg(&saved)
            .arg(tag),
    )?;
    let inspect = command::capture(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        tag,
    ]))?;
    String::from_utf8_lossy(&inspect.stdout)
        .trim()
        .parse()
        .with_context(|| format!("`docker image inspect {tag}` gave no size"))
}

/// deploy/policies-v<N>.yaml: a ConfigMap `rasp-policies-v<N>` with every `*.yaml` of `dir`
/// as a key, verbatim (block scalars), so the DaemonSet's `--policies` sees the same files.
fn policy_configmap(dir: &Path, version: u32) -> Result<String> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.yaml policies in {}", dir.display());
    }
    let mut out = format!(
        "# Generated by `cargo xtask image --policy-configmap {version} --policies {}`.\n\
         # A rollout is a new version beside this one (never an edit of it): see README.md.\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: rasp-policies-v{version}\n  namespace: rasp-system\n  \
         labels:\n    app.kubernetes.io/part-of: rasp\n    rasp.dev/policy-version: \"{version}\"\n\
         immutable: true\n\
         data:\n",
        dir.file_name().unwrap_or_default().to_string_lossy()
    );
    for file in &files {
        let text =
            fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        // A block scalar takes its indentation from its first line.
        if text.starts_with([' ', '\t']) {
            bail!("{}: the first line starts with whitespace", file.display());
        }
        let chomp = if text.ends_with('\n') { "" } else { "-" };
        let _ = writeln!(out, "  {name}: |{chomp}");
        for line in text.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_has_an_interpreter() {
        // The test binary itself is dynamically linked on the gnu target.
        let me = std::env::current_exe().unwrap();
        assert_eq!(has_interpreter(&me).unwrap(), cfg!(target_env = "gnu"));
    }
}
