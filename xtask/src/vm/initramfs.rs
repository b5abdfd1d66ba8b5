//! The guest's whole root filesystem: busybox for the shell and its applets, the host
//! binaries under test with every library `ldd` names for them (at the same paths, so the
//! host's dynamic loader finds them in the guest), and the files a script needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cpio::CpioWriter;
use crate::command;

/// Guest path (relative, `bin/sh`) → what goes there. Sorted, so a parent always precedes
/// its children in the archive.
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

enum Entry {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink(String),
    CharDevice(u32, u32),
}

impl Initramfs {
    /// The mount points `/init` uses, `/dev/console` (the kernel opens it for init's stdio
    /// before devtmpfs is mounted) and busybox with a link per applet.
    pub fn with_busybox() -> Result<Initramfs> {
        let mut image = Initramfs {
            entries: BTreeMap::new(),
        };
        for dir in [
            "bin", "sbin", "dev", "etc", "proc", "sys", "tmp", "run", "var",
        ] {
            image.entries.insert(dir.to_string(), Entry::Dir);
        }
        image
            .entries
            .insert("dev/console".to_string(), Entry::CharDevice(5, 1));

        let path = command::tool_path(&[]);
        let busybox = command::find_program("busybox", &path)
            .context("busybox not found on PATH: apt-get install -y busybox-static")?;
        image.add_binary(&busybox, "bin/busybox")?;
        let list = command::capture(Command::new(&busybox).arg("--list"))?;
        if !list.status.success() {
            bail!(
                "`{} --list` failed ({}): {}",
                busybox.display(),
                list.status,
                String::from_utf8_lossy(&list.stderr).trim()
            );
        }
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" && !applet.contains('/') {
                image
                    .entries
                    .entry(format!("bin/{applet}"))
                    .or_insert_with(|| Entry::Symlink("busybox".to_string()));
            }
        }
        Ok(image)
    }

    /// `host` at `guest` (e.g. `bin/rasp-agent`), executable, with the libraries `ldd`
    /// lists for it at their host paths (symlinks resolved into plain files).
    pub fn add_binary(&mut self, host: &Path, guest: &str) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.add_file(guest, 0o755, data);
        for library in libraries(host)? {
            let guest_path = relative(&library);
            if self.entries.contains_key(&guest_path) {
                continue;
            }
            let data = fs::read(&library).with_context(|| {
                format!(
                    "reading {} (a library of {})",
                    library.display(),
                    host.display()
                )
            })?;
            self.add_file(&guest_path, 0o755, data);
        }
        Ok(())
    }

    /// A file at `guest`; an entry already there is replaced.
    pub fn add_file(&mut self, guest: &str, mode: u32, data: Vec<u8>) {
        self.entries
            .insert(relative(Path::new(guest)), Entry::File { mode, data });
    }

    /// The archive, uncompressed `newc`; parents missing from the entries are created.
    pub fn write(&self, path: &Path) -> Result<()> {
        let file =
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut cpio = CpioWriter::new(BufWriter::new(file));
        let mut dirs = BTreeSet::new();
        let written = (|| -> std::io::Result<()> {
            for (name, entry) in &self.entries {
                for (slash, _) in name.match_indices('/') {
                    let parent = &name[..slash];
                    if dirs.insert(parent.to_string()) {
                        cpio.dir(parent)?;
                    }
                }
                match entry {
                    Entry::Dir => {
                        if dirs.insert(name.clone()) {
                            cpio.dir(name)?;
                        }
                    }
                    Entry::File { mode, data } => cpio.file(name, *mode, data)?,
                    Entry::Symlink(target) => cpio.symlink(name, target)?,
                    Entry::CharDevice(major, minor) => cpio.char_device(name, *major, *minor)?,
                }
            }
            cpio.finish().map(drop)
        })();
        written.with_context(|| format!("writing the initramfs {}", path.display()))
    }
}

/// Absolute library paths from `ldd host`; none for a static binary.
fn libraries(host: &Path) -> Result<Vec<PathBuf>> {
    let output = command::capture(Command::new("ldd").arg(host))
        .context("ldd (libc-bin) is needed to find the libraries of guest binaries")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic") {
            return Ok(Vec::new());
        }
        bail!(
            "`ldd {}` failed ({}): {}",
            host.display(),
            output.status,
            stderr.trim()
        );
    }
    Ok(parse_ldd(&stdout))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and `/lib64/ld-linux-x86-64.so.2
/// (0x…)` give a path; `linux-vdso.so.1 (0x…)` is the kernel's and has none.
pub(crate) fn parse_ldd(listing: &str) -> Vec<PathBuf> {
    listing
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, resolved)) => resolved.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn relative(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_include_the_loader_and_skip_the_vdso() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\
             \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f6f)\n\
             \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f6e)\n\
             \t/lib64/ld-linux-x86-64.so.2 (0x00007f6f)\n";
        assert_eq!(
            parse_ldd(listing),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
