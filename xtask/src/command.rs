//! Running the programs each task is made of: echo the command line before it runs, inherit
//! the terminal, and fail with the command and its status. Also the environment a child
//! cargo should see, which is not quite the one `cargo xtask` handed to us.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::workspace::Workspace;

/// Variables `cargo run` sets for the program it runs (xtask itself). A child cargo would
/// take some of them as its own configuration, and none of them describe the child.
const CARGO_RUN_VARS: &[&str] = &[
    "CARGO",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "OUT_DIR",
];

/// Variables that pin the toolchain or the flags of the outer (stable, host) build. The
/// eBPF build must not inherit them: `cargo +nightly` loses to `RUSTUP_TOOLCHAIN`, and host
/// `RUSTFLAGS` make no sense for `bpfel-unknown-none`.
const OUTER_TOOLCHAIN_VARS: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_TOOLCHAIN_SOURCE",
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_DIR",
];

/// Run `cmd` with the terminal inherited; an unsuccessful exit is an error.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("+ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Run `cmd` quietly and capture what it prints; the caller judges the exit status.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("could not start `{}`", display(cmd)))
}

/// `cmd` as a shell would show it, with the variables we set in front and the directory
/// it runs in after.
pub fn display(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            if key != "PATH" {
                let _ = write!(line, "{}={} ", key.to_string_lossy(), quote(value));
            }
        }
    }
    line.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    if let Some(dir) = cmd.get_current_dir() {
        let _ = write!(line, "  (in {})", dir.display());
    }
    line
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `$CARGO_HOME/bin` (rustup sets `CARGO_HOME` for us), else `~/.cargo/bin`: where rustup's
/// proxies and `cargo install`ed tools such as bpf-linker live.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    Some(home.join("bin"))
}

/// `PATH` with `extra` dirs in front (the cargo bin dir is always among them, so tools
/// installed by `cargo install` are found even from a shell that lacks it, e.g. `sudo`).
pub fn tool_path(extra: &[&Path]) -> OsString {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = extra.iter().map(|dir| dir.to_path_buf()).collect();
    if let Some(cargo_bin) = cargo_bin_dir() {
        if !std::env::split_paths(&current).any(|dir| dir == cargo_bin) {
            dirs.push(cargo_bin);
        }
    }
    dirs.extend(std::env::split_paths(&current));
    std::env::join_paths(dirs).unwrap_or(current)
}

/// First executable called `name` on `path`.
pub fn find_program(name: &str, path: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A rustup-managed tool (`cargo`, `rustup`) by its proxy in the cargo bin dir, so
/// `+toolchain` works even when a toolchain's own bin dir comes first on `PATH`.
pub fn rustup_proxy(name: &str) -> PathBuf {
    cargo_bin_dir()
        .map(|dir| dir.join(name))
        .filter(|proxy| proxy.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// `cargo` for host builds: the toolchain that runs xtask (rustup's `RUSTUP_TOOLCHAIN` is
/// kept), without the variables `cargo run` set for xtask itself.
pub fn host_cargo() -> Command {
    let mut cmd = Command::new(rustup_proxy("cargo"));
    strip_cargo_run_env(&mut cmd);
    cmd.env("PATH", tool_path(&[]));
    cmd
}

/// The nightly that builds the eBPF object and the fuzz targets, pinned: its LLVM must be
/// the one bpf-linker links (Debian's llvm-22), and `nightly` moved to LLVM 23 in late 2026
/// (bitcode bpf-linker then refuses). 1.97.0-nightly (2026-05-19), LLVM 22.1.4.
pub const NIGHTLY: &str = "nightly-2026-05-20";

/// `cargo +<toolchain>` with nothing of the outer build's toolchain, flags or target dir
/// left in its environment.
pub fn toolchain_cargo(ws: &Workspace, toolchain: &str) -> Command {
    let mut cmd = Command::new(rustup_proxy("cargo"));
    cmd.arg(format!("+{toolchain}"));
    strip_cargo_run_env(&mut cmd);
    for var in OUTER_TOOLCHAIN_VARS {
        cmd.env_remove(var);
    }
    // `cargo run` put the outer toolchain's libraries and our target dir on the loader
    // path; keep whatever the user had there and drop those.
    let rustup_home = std::env::var_os("RUSTUP_HOME").map(PathBuf::from);
    let target = ws.host_target_dir();
    if let Some(current) = std::env::var_os("LD_LIBRARY_PATH") {
        let kept: Vec<PathBuf> = std::env::split_paths(&current)
            .filter(|dir| {
                !dir.starts_with(&target)
                    && !rustup_home
                        .as_ref()
                        .is_some_and(|home| dir.starts_with(home.join("toolchains")))
            })
            .collect();
        if kept.is_empty() {
            cmd.env_remove("LD_LIBRARY_PATH");
        } else if let Ok(joined) = std::env::join_paths(kept) {
            cmd.env("LD_LIBRARY_PATH", joined);
        }
    }
    cmd.env("PATH", tool_path(&[]));
    cmd
}

/// Drop what `cargo run` set for xtask from a child's environment.
pub fn strip_cargo_run_env(cmd: &mut Command) {
    for var in CARGO_RUN_VARS {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CARGO_PKG_") {
            cmd.env_remove(key);
        }
    }
}

/// Effective uid 0, read from `/proc/self/status` (std has no `geteuid`).
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// Durations for people: `85 ms`, `4.2 s`, `2 min 03 s`.
pub fn human(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", elapsed.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = elapsed.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}
