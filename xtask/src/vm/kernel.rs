//! The guest kernel: Debian's newest `linux-image-6.12.*-cloud-amd64` (BPF-LSM, BTF and
//! kprobes built in, no modules needed to boot from an initramfs). Versions rotate out of
//! the archive, so the newest one apt lists is picked at run time and its `vmlinuz` kept
//! under `target/vm/kernels/<package>/`; without apt lists, the newest kernel cached.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::command;

/// `apt-cache search --names-only` pattern: the versioned, signed image packages, not the
/// meta-package, `-dbg` or `-unsigned` ones.
const PACKAGE_PATTERN: &str = r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64$";

pub struct GuestKernel {
    /// The package the kernel came from, `linux-image-6.12.117+deb12-cloud-amd64`.
    pub package: String,
    /// `uname -r` of the guest, `6.12.117+deb12-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
}

/// Names another Debian kernel package for the guest (e.g.
/// `linux-image-6.1.0-57-cloud-amd64`, bookworm's own kernel line): to see what an older
/// kernel accepts (`cargo xtask vm-verify`). Any `-cloud-amd64` image package.
pub const KERNEL_PACKAGE_VAR: &str = "RASP_VM_KERNEL";

/// The newest listed kernel (or the one `RASP_VM_KERNEL` names), downloaded and unpacked
/// once into `cache`.
pub fn fetch(cache: &Path) -> Result<GuestKernel> {
    let kernels = cache.join("kernels");
    let listed = match std::env::var(KERNEL_PACKAGE_VAR) {
        Ok(package) if !package.is_empty() => {
            if !package.starts_with("linux-image-")
                || !package.ends_with("-cloud-amd64")
                || !package
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b))
            {
                bail!("{KERNEL_PACKAGE_VAR}={package:?} is not a linux-image-…-cloud-amd64 package name");
            }
            Ok(package)
        }
        _ => newest_listed(),
    };
    let package = match listed {
        Ok(package) => package,
        Err(err) => {
            if let Some(cached) = newest_cached(&kernels) {
                eprintln!(
                    "vm: {err:#}; using the kernel already cached: {}",
                    cached.package
                );
                return Ok(cached);
            }
            return Err(err);
        }
    };
    let dir = kernels.join(&package);
    if let Some(kernel) = cached(&dir, &package) {
        return Ok(kernel);
    }
    download(&kernels, &package)?;
    cached(&dir, &package).with_context(|| {
        format!(
            "{package} was unpacked into {} but no boot/vmlinuz-* is there",
            dir.display()
        )
    })
}

fn newest_listed() -> Result<String> {
    let output = command::capture(Command::new("apt-cache").args([
        "search",
        "--names-only",
        PACKAGE_PATTERN,
    ]))
    .context("apt-cache is needed to find the guest kernel (Debian only)")?;
    if !output.status.success() {
        bail!(
            "`apt-cache search {PACKAGE_PATTERN}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    newest(&String::from_utf8_lossy(&output.stdout)).with_context(|| {
        "apt lists no linux-image-6.12.*-cloud-amd64: run `apt-get update` (the kernels are in \
         Debian bookworm-updates/security and trixie)"
            .to_string()
    })
}

/// The package with the highest 6.12 patch level among `apt-cache search` lines
/// (`name - description`).
fn newest(listing: &str) -> Option<String> {
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| patch_level(name).map(|patch| (patch, name)))
        .max()
        .map(|(_, name)| name.to_string())
}

/// 117 for `linux-image-6.12.117+deb12-cloud-amd64`.
fn patch_level(package: &str) -> Option<u32> {
    let rest = package.strip_prefix("linux-image-6.12.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if !rest[digits.len()..].starts_with('+') || !package.ends_with("-cloud-amd64") {
        return None;
    }
    digits.parse().ok()
}

fn cached(dir: &Path, package: &str) -> Option<GuestKernel> {
    let entries = fs::read_dir(dir.join("boot")).ok()?;
    entries.filter_map(|entry| entry.ok()).find_map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let release = name.strip_prefix("vmlinuz-")?.to_string();
        Some(GuestKernel {
            package: package.to_string(),
            release,
            vmlinuz: entry.path(),
        })
    })
}

fn newest_cached(kernels: &Path) -> Option<GuestKernel> {
    fs::read_dir(kernels)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let package = entry.file_name().to_string_lossy().into_owned();
            let patch = patch_level(&package)?;
            Some((patch, cached(&entry.path(), &package)?))
        })
        .max_by_key(|(patch, _)| *patch)
        .map(|(_, kernel)| kernel)
}

/// `apt-get download` + `dpkg-deb -x` into a scratch dir, then only `boot/` is kept (the
/// modules are not needed to boot from an initramfs). The rename makes a half-done
/// download invisible to the next run.
fn download(kernels: &Path, package: &str) -> Result<()> {
    let scratch = kernels.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = (|| -> Result<()> {
        eprintln!("vm: downloading the guest kernel {package}");
        let output = command::capture(
            Command::new("apt-get")
                .args(["download", package])
                .current_dir(&scratch),
        )?;
        if !output.status.success() {
            bail!(
                "`apt-get download {package}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let deb = fs::read_dir(&scratch)?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .with_context(|| {
                format!(
                    "`apt-get download {package}` left no .deb in {}",
                    scratch.display()
                )
            })?;
        let unpacked = scratch.join("root");
        command::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        let dir = kernels.join(package);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = fs::remove_dir_all(dir.join("boot"));
        fs::rename(unpacked.join("boot"), dir.join("boot"))
            .with_context(|| format!("moving {}/boot to {}", unpacked.display(), dir.display()))?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_compares_patch_levels_as_numbers() {
        let listing = "linux-image-6.12.99+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud\n\
             linux-image-6.12.117+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)\n\
             linux-image-6.12.101+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud\n\
             linux-image-6.12-cloud-amd64 - Linux for x86-64 cloud (meta-package)\n\
             linux-image-6.12.200+deb12-cloud-amd64-dbg - Debug symbols\n";
        assert_eq!(
            newest(listing).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
    }
}
