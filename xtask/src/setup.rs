//! `cargo xtask setup`: bring a Debian bookworm machine with only rustup to one that builds
//! rasp (LLVM 22 from apt, a pinned nightly with `rust-src`, bpf-linker). Every step checks first and
//! says what it found, so a warm run is a few quick queries.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::command::{self, human, NIGHTLY};

/// Build needs (LLVM 22 for bpf-linker, zstd/zlib it links) and what the integration tests
/// run for real: `pkill`/`ps` (procps), `unshare`/`runuser` (util-linux), a PostgreSQL
/// server, compilers and interpreters, and the tools attackers use for reverse shells
/// (netcat, socat, busybox) so the default rules are triggered by the real thing. nodejs and
/// npm come with the machine image (nodesource); Debian's npm would conflict with it, so only
/// nodejs is checked here.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "clang-22",
    "libzstd-dev",
    "zlib1g-dev",
    "procps",
    "util-linux",
    "postgresql",
    "gcc",
    "make",
    "perl",
    "python3",
    "python3-pip",
    "python3-venv",
    "curl",
    "netcat-traditional",
    "socat",
    "busybox-static",
    "nodejs",
    // The attack-technique scenarios run the real tools: module loaders, setcap, a debugger
    // attach, an editor saving a start-up file, systemctl.
    "kmod",
    "libcap2-bin",
    "strace",
    "vim",
    "systemd",
    // `cargo xtask vm-test` (part of `test`): BPF-LSM only loads in a QEMU guest here.
    "qemu-system-x86",
    "cpio",
    // The SQL scenarios attack a real web app with the real tool.
    "sqlmap",
    // Real containers: the container-identity scenarios and `cargo xtask image` run
    // Debian's Docker (20.10, overlay2, cgroupfs driver); images come from local files.
    "docker.io",
    // The benign workload does what admins do (crontab edits, sudo, pytest in /tmp); the
    // mount scenario formats a scratch image for a loop device.
    "cron",
    "sudo",
    "python3-pytest",
    "e2fsprogs",
    // Firewall tampering scenarios flush the rules of a network namespace of their own.
    "iptables",
    "nftables",
    // The TLS scenario: `openssl s_server`/`s_client` and its certificate (libssl3 itself
    // comes with python3 and curl).
    "openssl",
    // The attack suite (scenarios/attack_suite.rs): its reverse shells' interpreters, and
    // log rotation among the admin routines that must stay quiet.
    "ruby",
    "php-cli",
    "lua5.4",
    "gawk",
    "logrotate",
    // The sniffing scenarios (a real packet capture) and the benign ping beside them.
    "tcpdump",
    "iputils-ping",
];

/// The PostgreSQL drivers the SQL scenarios run, pinned to what resolved from PyPI here:
/// psycopg2-binary carries its own libpq (`psycopg2_binary.libs/libpq-<hash>.so.5.<n>`),
/// psycopg 3 without its binary or C extra is pure Python and dlopens the system libpq.
const DRIVER_VENV: &str = "target/sql-drivers-venv";
const DRIVER_PACKAGES: &[&str] = &["psycopg2-binary==2.9.13", "psycopg==3.3.9"];

/// bpf-linker is built against this LLVM (apt's `llvm-22-dev`), which must also be the
/// LLVM of the nightly that compiles the eBPF object (`NIGHTLY`).
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_MAJOR: &str = "22";

/// What a step did: nothing (already there) or an install.
enum Outcome {
    Present(String),
    Installed(String),
    /// A daemon that was not running was started.
    Started(String),
}

pub fn run() -> Result<()> {
    let started = Instant::now();
    step(apt_packages)?;
    step(nightly_rust_src)?;
    step(bpf_linker)?;
    step(cargo_fuzz)?;
    step(sql_driver_venv)?;
    eprintln!("setup: done in {}", human(started.elapsed()));
    Ok(())
}

fn step(check_and_install: impl FnOnce() -> Result<Outcome>) -> Result<()> {
    let started = Instant::now();
    let outcome = check_and_install()?;
    let elapsed = human(started.elapsed());
    match outcome {
        Outcome::Present(what) => eprintln!("ok: {what} already present ({elapsed})"),
        Outcome::Installed(what) => eprintln!("installed: {what} ({elapsed})"),
        Outcome::Started(what) => eprintln!("started: {what} ({elapsed})"),
    }
    Ok(())
}

fn apt_packages() -> Result<Outcome> {
    apt_install(APT_PACKAGES)
}

/// What `cargo xtask bench` needs beyond the build and the tests: the bpftrace and
/// libbpf-tools (execsnoop, opensnoop) peers, perf for profiles, `openssl` for the TLS
/// server, and QEMU with cpio for the BPF-LSM guest.
/// Kept out of `setup` so CI's test run does not download an emulator it never starts.
const BENCH_APT_PACKAGES: &[&str] = &[
    "bpftrace",
    "libbpf-tools",
    "linux-perf",
    "openssl",
    "qemu-system-x86",
    "cpio",
    "busybox-static",
    "valgrind",
];

/// `setup` plus the benchmark's own packages.
pub fn run_for_bench() -> Result<()> {
    run()?;
    step(|| apt_install(BENCH_APT_PACKAGES))
}

/// A running Docker daemon for the container scenarios and `cargo xtask image`: `dockerd`
/// (from `docker.io`, installed by `run`) is started when nothing answers on its socket, and
/// left running for later runs; its log goes to `log`. There is no registry on the machines
/// this runs on, and none is needed: images are imported from local files.
pub fn docker_daemon(log: &Path) -> Result<()> {
    step(|| {
        if docker_answers() {
            return Ok(Outcome::Present("dockerd (answering)".into()));
        }
        let path = command::tool_path(&[]);
        let Some(dockerd) = command::find_program("dockerd", &path) else {
            bail!("dockerd not found: install docker.io (`cargo xtask setup` as root)");
        };
        if !command::is_root() {
            bail!("dockerd is not running and starting it needs root: run as root");
        }
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        eprintln!(
            "setup: dockerd is not running; starting {} (log: {})",
            dockerd.display(),
            log.display()
        );
        Command::new(&dockerd)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting dockerd")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if docker_answers() {
                return Ok(Outcome::Started(format!(
                    "dockerd (log: {})",
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bail!("dockerd did not answer within 60 s; see {}", log.display())
    })
}

fn docker_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs whichever of `packages` dpkg does not list as installed (needs root then).
fn apt_install(packages: &[&str]) -> Result<Outcome> {
    let missing = missing_packages(packages)?;
    if missing.is_empty() {
        return Ok(Outcome::Present(format!(
            "apt packages ({})",
            packages.join(" ")
        )));
    }
    let list = missing.join(" ");
    if !command::is_root() {
        bail!(
            "apt packages missing: {list}; installing them needs root: run as root \
             (or `apt-get install -y {list}` as root, then run this again)"
        );
    }
    eprintln!("setup: installing apt packages: {list}");
    command::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    command::run(
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still_missing = missing_packages(&missing)?;
    if !still_missing.is_empty() {
        bail!(
            "apt-get install finished but these are still not installed: {}",
            still_missing.join(" ")
        );
    }
    Ok(Outcome::Installed(format!("apt packages ({list})")))
}

/// Packages dpkg does not report as "install ok installed". One `dpkg-query` for all of
/// them: it lists those it knows and complains (ignored) about the others.
fn missing_packages<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    let output = command::capture(
        Command::new("dpkg-query")
            .arg("-W")
            .arg("-f=${Package}\t${Status}\n")
            .args(packages),
    )
    .context("setup supports Debian (bookworm): dpkg-query is needed")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| *status == "install ok installed")
        .map(|(name, _)| name)
        .collect();
    Ok(packages
        .iter()
        .copied()
        .filter(|package| !installed.contains(package))
        .collect())
}

/// A venv under target/ with the PostgreSQL drivers (Debian's python3, so the tests do not
/// depend on whichever python3 comes first on PATH).
fn sql_driver_venv() -> Result<Outcome> {
    let venv = crate::workspace::Workspace::locate()
        .root()
        .join(DRIVER_VENV);
    let python = venv.join("bin/python");
    let what = format!(
        "SQL driver venv {} ({})",
        venv.display(),
        DRIVER_PACKAGES.join(" ")
    );
    let check = "import psycopg2, psycopg; print(psycopg2.__version__, psycopg.__version__)";
    if python.is_file() {
        let out = command::capture(Command::new(&python).args(["-c", check]))?;
        let versions = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && versions.contains("2.9.13") && versions.contains("3.3.9") {
            return Ok(Outcome::Present(what));
        }
    }
    eprintln!("setup: creating {what}");
    command::run(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )
    .context("creating the SQL driver venv (Debian package python3-venv)")?;
    command::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(DRIVER_PACKAGES),
    )
    .context("installing the SQL drivers from PyPI")?;
    Ok(Outcome::Installed(what))
}

fn nightly_rust_src() -> Result<Outcome> {
    let rustup = command::rustup_proxy("rustup");
    let toolchains = command::capture(Command::new(&rustup).args(["toolchain", "list"]))?;
    if !toolchains.status.success() {
        bail!(
            "`rustup toolchain list` failed: {}",
            String::from_utf8_lossy(&toolchains.stderr).trim()
        );
    }
    let has_nightly = String::from_utf8_lossy(&toolchains.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| name.starts_with(&format!("{NIGHTLY}-")) || name == NIGHTLY);
    let outcome = if has_nightly {
        let components = command::capture(Command::new(&rustup).args([
            "component",
            "list",
            "--toolchain",
            NIGHTLY,
            "--installed",
        ]))?;
        if !components.status.success() {
            bail!(
                "`rustup component list --toolchain {NIGHTLY} --installed` failed: {}",
                String::from_utf8_lossy(&components.stderr).trim()
            );
        }
        let has_rust_src = String::from_utf8_lossy(&components.stdout)
            .lines()
            .any(|line| line.trim() == "rust-src" || line.starts_with("rust-src-"));
        if has_rust_src {
            Outcome::Present(format!("{NIGHTLY} with rust-src"))
        } else {
            eprintln!("setup: installing rust-src for {NIGHTLY} (needed by -Z build-std=core)");
            command::run(Command::new(&rustup).args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                NIGHTLY,
            ]))?;
            Outcome::Installed(format!("rust-src for {NIGHTLY}"))
        }
    } else {
        eprintln!("setup: installing the {NIGHTLY} toolchain with rust-src");
        command::run(Command::new(&rustup).args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
        Outcome::Installed(format!("{NIGHTLY} toolchain with rust-src"))
    };
    check_nightly_llvm()?;
    Ok(outcome)
}

/// The nightly's LLVM must be the one bpf-linker links: rustc's bitcode from a newer LLVM is
/// refused at link time ("Not an int attribute (Producer: 'LLVM23…' Reader: 'LLVM 22…')").
fn check_nightly_llvm() -> Result<()> {
    let rustc = command::rustup_proxy("rustc");
    let version = command::capture(Command::new(&rustc).args([&format!("+{NIGHTLY}"), "-vV"]))?;
    let text = String::from_utf8_lossy(&version.stdout);
    let llvm = text
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .map(str::trim)
        .unwrap_or("unknown");
    if llvm.split('.').next() != Some(LLVM_MAJOR) {
        bail!(
            "{NIGHTLY} uses LLVM {llvm}, but bpf-linker links LLVM {LLVM_MAJOR} ({LLVM_PREFIX}): \
             pick a nightly built with LLVM {LLVM_MAJOR} (xtask/src/command.rs `NIGHTLY`)"
        );
    }
    Ok(())
}

fn bpf_linker() -> Result<Outcome> {
    let path = command::tool_path(&[]);
    let found = command::find_program("bpf-linker", &path);
    if let Some(linker) = &found {
        let version = command::capture(Command::new(linker).arg("--version"))?;
        if version.status.success() {
            let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
            return Ok(Outcome::Present(format!(
                "{version} ({})",
                linker.display()
            )));
        }
        // Typically its libLLVM went away; `cargo install` would call it up to date.
        eprintln!(
            "setup: {} is there but `--version` fails ({}); reinstalling",
            linker.display(),
            String::from_utf8_lossy(&version.stderr).trim()
        );
    } else {
        eprintln!("setup: installing bpf-linker (links LLVM 22 from {LLVM_PREFIX})");
    }

    let mut install = command::host_cargo();
    install
        .args([
            "install",
            "bpf-linker",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env(
            "PATH",
            command::tool_path(&[&Path::new(LLVM_PREFIX).join("bin")]),
        );
    if found.is_some() {
        install.arg("--force");
    }
    command::run(&mut install)?;
    Ok(Outcome::Installed("bpf-linker".into()))
}

/// cargo-fuzz, for the fuzz stage of `cargo xtask test` (the targets build with nightly).
fn cargo_fuzz() -> Result<Outcome> {
    let path = command::tool_path(&[]);
    if let Some(found) = command::find_program("cargo-fuzz", &path) {
        let version = command::capture(Command::new(&found).arg("--version"))?;
        if version.status.success() {
            let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
            return Ok(Outcome::Present(format!("{version} ({})", found.display())));
        }
    }
    eprintln!("setup: installing cargo-fuzz from crates.io");
    let mut install = command::host_cargo();
    install.args(["install", "cargo-fuzz", "--locked"]);
    command::run(&mut install)?;
    Ok(Outcome::Installed("cargo-fuzz".into()))
}
