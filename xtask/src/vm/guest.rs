//! One guest boot: the kernel, an initramfs whose generated `/init` mounts what the agent
//! expects (proc, sysfs, devtmpfs, securityfs, bpffs, cgroup2, tracefs, debugfs), runs a
//! script, and powers off. Results come back as serial-console lines carrying a marker
//! unique to the boot, so kernel messages or a program's own output never pass for one.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::initramfs::Initramfs;
use super::kernel::{self, GuestKernel};
use crate::command::{self, human};
use crate::workspace::Workspace;

/// The LSMs the guest runs: the host's, plus yama, with `bpf` so LSM programs attach.
const LSMS: &str = "lockdown,capability,landlock,yama,bpf";

/// Serial lines kept for an error message.
const TAIL_LINES: usize = 20;

/// What the guest's clock counts. Under plain TCG guest time is host time, so a busy host
/// (other builds, other guests) slows whatever the guest is timing, by up to ±20% between
/// two runs of the same loop. With QEMU's instruction counting, a guest second is a fixed
/// number of emulated instructions: rates become deterministic instruction budgets,
/// whatever else the host does, at the price of cycle realism TCG never had anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestClock {
    Host,
    /// `-icount shift=N,sleep=off`: each instruction advances the clock by 2^N ns.
    Instructions {
        shift: u8,
    },
}

/// A guest ready to boot: kernel fetched, root filesystem being assembled.
pub struct Guest {
    name: String,
    clock: GuestClock,
    /// Virtual CPUs; more than one runs TCG multi-threaded (one host thread per vCPU).
    cpus: u16,
    cache: PathBuf,
    kernel: GuestKernel,
    image: Initramfs,
    marker: String,
}

/// What one boot printed.
pub struct GuestRun {
    /// `uname -r` in the guest.
    pub kernel_release: String,
    /// Active LSMs as the guest's securityfs lists them.
    pub lsms: String,
    /// Host wall time from starting QEMU to `/init` running (firmware + kernel boot under
    /// software emulation).
    pub boot: Duration,
    /// Host wall time of the whole boot, poweroff included.
    pub elapsed: Duration,
    /// What the script passed to `result`, one entry per call, in order.
    pub results: Vec<String>,
    /// The script's exit status.
    pub script_status: i32,
    /// Everything the serial console printed.
    pub serial_log: PathBuf,
}

impl Guest {
    /// Fetch the kernel (cached under `target/vm/`) and start a root filesystem with
    /// busybox. `name` names the files this guest leaves in `target/vm/`.
    pub fn new(ws: &Workspace, name: &str) -> Result<Guest> {
        let cache = ws.host_target_dir().join("vm");
        let kernel = kernel::fetch(&cache)?;
        let image = Initramfs::with_busybox()?;
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.subsec_nanos() ^ since.as_secs() as u32)
            .unwrap_or(0)
            ^ std::process::id();
        Ok(Guest {
            name: name.to_string(),
            clock: GuestClock::Host,
            cpus: 1,
            cache,
            kernel,
            image,
            marker: format!("RASPVM{nonce:08x}"),
        })
    }

    /// A host binary at `guest` (e.g. `bin/rasp-agent`) with its libraries.
    pub fn add_binary(&mut self, host: &Path, guest: &str) -> Result<()> {
        self.image.add_binary(host, guest)
    }

    pub fn set_clock(&mut self, clock: GuestClock) {
        self.clock = clock;
    }

    /// Give the guest one vCPU per host CPU (up to `max`), emulated in parallel by
    /// multi-threaded TCG, for work that runs on several CPUs at once (the agent verifies
    /// its programs in parallel). Instruction counting needs one emulation thread, so a
    /// guest with `GuestClock::Instructions` keeps one vCPU.
    pub fn use_host_cpus(&mut self, max: u16) {
        let host = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.cpus = u16::try_from(host).unwrap_or(u16::MAX).clamp(1, max.max(1));
    }

    pub fn add_file(&mut self, guest: &str, contents: &str) {
        self.image
            .add_file(guest, 0o644, contents.as_bytes().to_vec());
    }

    /// Boot, run `script` (busybox `sh`, sourced by `/init`, with a `result WORDS…` function
    /// that reports a line) and return what it reported. Killed after `timeout`.
    pub fn boot(&mut self, script: &str, timeout: Duration) -> Result<GuestRun> {
        let qemu = command::find_program("qemu-system-x86_64", &command::tool_path(&[]))
            .context("qemu-system-x86_64 not found: apt-get install -y qemu-system-x86")?;
        fs::create_dir_all(&self.cache)
            .with_context(|| format!("creating {}", self.cache.display()))?;
        self.image
            .add_file("init", 0o755, init(&self.marker).into_bytes());
        self.image
            .add_file("script.sh", 0o644, script.as_bytes().to_vec());
        let initrd = self.cache.join(format!("{}.cpio", self.name));
        self.image.write(&initrd)?;
        let serial_log = self.cache.join(format!("{}.serial.log", self.name));

        // cryptomgr.notests: the crypto self-tests otherwise run in a kernel thread for the
        // guest's first ~10 s and take half the only CPU from whatever the script times.
        let append =
            format!("console=ttyS0 lsm={LSMS} panic=-1 loglevel=3 rdinit=/init cryptomgr.notests");
        let mut cmd = Command::new(qemu);
        // TCG: KVM is not available (or fails in the decompressor) in this nested VM.
        let (accel, cpus) = match self.clock {
            GuestClock::Instructions { .. } => ("tcg", 1),
            GuestClock::Host if self.cpus > 1 => ("tcg,thread=multi", self.cpus),
            GuestClock::Host => ("tcg", 1),
        };
        cmd.args(["-nodefaults", "-accel", accel, "-cpu", "max", "-m", "1024"])
            .args(["-smp", &cpus.to_string()])
            .arg("-kernel")
            .arg(&self.kernel.vmlinuz)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .arg("-no-reboot")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let GuestClock::Instructions { shift } = self.clock {
            cmd.args(["-icount", &format!("shift={shift},sleep=off")]);
        }
        eprintln!(
            "+ {}  (guest {}, timeout {})",
            command::display(&cmd),
            self.kernel.release,
            human(timeout)
        );
        let started = Instant::now();
        let mut child = cmd.spawn().context("could not start qemu-system-x86_64")?;
        let session = Session::watch(&mut child, &serial_log)?;
        let ending = self.collect(&session, started, timeout);
        if matches!(ending, Ending::TimedOut) {
            let _ = child.kill();
        }
        let status = wait_briefly(&mut child)?;
        let tail = session.tail();
        let stderr = session.stderr();
        let stderr = stderr_note(&stderr);
        let log = serial_log.display();
        match ending {
            Ending::Finished(mut run) => {
                run.elapsed = started.elapsed();
                run.serial_log = serial_log;
                Ok(run)
            }
            Ending::Closed => bail!(
                "the guest stopped before its script finished (qemu {status}); last serial \
                 lines ({log}):\n{tail}{stderr}"
            ),
            Ending::TimedOut => bail!(
                "the guest timed out after {}; last serial lines ({log}):\n{tail}{stderr}",
                human(timeout)
            ),
        }
    }

    /// Marker lines until the end line, QEMU closing the console, or the deadline.
    fn collect(&self, session: &Session, started: Instant, timeout: Duration) -> Ending {
        let mut run = GuestRun {
            kernel_release: String::new(),
            lsms: String::new(),
            boot: Duration::ZERO,
            elapsed: Duration::ZERO,
            results: Vec::new(),
            script_status: -1,
            serial_log: PathBuf::new(),
        };
        let boot_tag = format!("{}-boot ", self.marker);
        let end_tag = format!("{}-end ", self.marker);
        let result_tag = format!("{} ", self.marker);
        let deadline = started + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match session.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Disconnected) => return Ending::Closed,
                Err(RecvTimeoutError::Timeout) => return Ending::TimedOut,
            };
            if let Some(rest) = after(&line, &boot_tag) {
                run.boot = started.elapsed();
                for field in rest.split_whitespace() {
                    if let Some(release) = field.strip_prefix("release=") {
                        run.kernel_release = release.to_string();
                    } else if let Some(lsms) = field.strip_prefix("lsm=") {
                        run.lsms = lsms.to_string();
                    }
                }
                eprintln!(
                    "vm: {} booted in {} (lsm={})",
                    run.kernel_release,
                    human(run.boot),
                    run.lsms
                );
            } else if let Some(rest) = after(&line, &end_tag) {
                run.script_status = rest.trim().parse().unwrap_or(-1);
                return Ending::Finished(run);
            } else if let Some(rest) = after(&line, &result_tag) {
                eprintln!("vm: {}", shorten(rest, 160));
                run.results.push(rest.to_string());
            }
        }
    }
}

/// How a boot ended.
enum Ending {
    /// The script's end line arrived.
    Finished(GuestRun),
    /// QEMU closed the console first (kernel panic, init died).
    Closed,
    TimedOut,
}

/// `/init`: mounts, a boot line, the script in a subshell (so `exit` in it still reaches
/// poweroff), an end line with its status, poweroff. A mount that fails is reported, not
/// fatal: the script's own checks say whether it mattered.
fn init(marker: &str) -> String {
    let mut init = String::from("#!/bin/busybox sh\nexport PATH=/bin:/sbin\n");
    let mounts = [
        ("proc", "proc", "/proc"),
        ("sysfs", "sysfs", "/sys"),
        ("devtmpfs", "devtmpfs", "/dev"),
        ("securityfs", "securityfs", "/sys/kernel/security"),
        ("bpf", "bpf", "/sys/fs/bpf"),
        ("cgroup2", "cgroup2", "/sys/fs/cgroup"),
        ("tracefs", "tracefs", "/sys/kernel/tracing"),
        ("debugfs", "debugfs", "/sys/kernel/debug"),
    ];
    for (kind, source, target) in mounts {
        let _ = writeln!(
            init,
            "mkdir -p {target}; mount -t {kind} {source} {target} || echo \"{marker} \
             note mount {kind} on {target} failed\""
        );
    }
    let _ = writeln!(
        init,
        "hostname guest\n\
         echo \"{marker}-boot release=$(uname -r) lsm=$(cat /sys/kernel/security/lsm) \
         uptime=$(cut -d' ' -f1 /proc/uptime)\"\n\
         result() {{ echo \"{marker} $*\"; }}\n\
         cd /tmp\n\
         ( . /script.sh )\n\
         echo \"{marker}-end $?\"\n\
         poweroff -f"
    );
    init
}

/// QEMU's console and stderr read on threads, so a chatty guest never blocks on a full
/// pipe while we wait with a timeout.
struct Session {
    lines: mpsc::Receiver<String>,
    tail: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Session {
    fn watch(child: &mut Child, log: &Path) -> Result<Session> {
        let stdout = child.stdout.take().context("qemu's stdout was not piped")?;
        let mut stderr = child.stderr.take().context("qemu's stderr was not piped")?;
        let mut log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let (sender, lines) = mpsc::channel();
        let tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = tail.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut raw = Vec::new();
            while reader
                .read_until(b'\n', &mut raw)
                .is_ok_and(|read| read > 0)
            {
                let _ = log_file.write_all(&raw);
                let line = clean(&String::from_utf8_lossy(&raw));
                raw.clear();
                if let Ok(mut tail) = kept.lock() {
                    if tail.len() == TAIL_LINES {
                        tail.remove(0);
                    }
                    tail.push(line.clone());
                }
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ok(Session {
            lines,
            tail,
            stderr: Some(stderr),
        })
    }

    fn tail(&self) -> String {
        self.tail
            .lock()
            .map(|tail| tail.join("\n"))
            .unwrap_or_default()
    }

    /// Only after QEMU is gone: its stderr closes then.
    fn stderr(mut self) -> String {
        self.stderr
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    }
}

/// A console line without its line ending and the terminal escapes the firmware sends.
fn clean(raw: &str) -> String {
    let mut line = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI `ESC [ params final` or a two-character escape such as `ESC c`.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' | '\n' => {}
            c => line.push(c),
        }
    }
    line
}

/// QEMU exits right after the guest's poweroff; one that lingers is killed.
fn wait_briefly(child: &mut Child) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait().context("waiting for qemu after killing it");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn after<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    line.find(tag).map(|at| &line[at + tag.len()..])
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn stderr_note(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!("\nqemu said: {stderr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_drops_escapes_and_line_endings() {
        assert_eq!(
            clean("\x1bc\x1b[?7l\x1b[2JRASPVM1-boot release=6.12\r\n"),
            "RASPVM1-boot release=6.12"
        );
    }

    #[test]
    fn init_reports_boot_and_end_with_the_marker() {
        let init = init("RASPVMx");
        assert!(init.contains("echo \"RASPVMx-boot release="));
        assert!(init.contains("echo \"RASPVMx-end $?\""));
        assert!(init.contains("mount -t securityfs securityfs /sys/kernel/security"));
        assert!(init.ends_with("poweroff -f\n"));
    }
}
