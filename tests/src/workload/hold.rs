//! `hold`: N idle child processes held alive for as long as the caller wants, to measure
//! what a large process table costs the agent (memory, and the fork/exit events it tracks).
//!
//! Children are plain forks of this process that block in pause(); they hold no fds and
//! die with SIGKILL when this process dies (PR_SET_PDEATHSIG), so no run can leak them.

use std::fs;
use std::io::{self, Write};
use std::mem;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::Report;

/// Processes the rest of the system may still need while we hold ours.
const HEADROOM: u64 = 256;

pub fn run(count: u32) -> Result<Option<Report>> {
    check_limits(u64::from(count))?;
    let stop_signals = stop_signal_set();
    // Blocked before the first fork so a SIGTERM/SIGINT at any point is read from the
    // signalfd (and every child reaped) instead of killing us halfway.
    // SAFETY: valid sigset; the old mask is not wanted.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &stop_signals, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error()).context("blocking SIGTERM/SIGINT");
    }
    let started = Instant::now();
    let children = Children::fork(count)?;
    let fork_seconds = started.elapsed().as_secs_f64();

    let ready = Report::untimed()
        .with("ready", count)
        .with("fork_seconds", (fork_seconds * 1e4).round() / 1e4)
        .named("hold");
    let mut out = io::stdout().lock();
    writeln!(out, "{ready}")
        .and_then(|()| out.flush())
        .context("writing the ready line to stdout")?;
    drop(out);

    wait_for_stop(&stop_signals)?;
    children.kill_and_reap()?;
    Ok(None)
}

/// SIGTERM and SIGINT: the two ways the caller asks us to stop (besides closing stdin).
fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { mem::zeroed() };
    // SAFETY: set is a valid sigset_t; SIGTERM/SIGINT are valid signal numbers.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    set
}

/// The forked children, by pid.
struct Children {
    pids: Vec<libc::pid_t>,
}

impl Children {
    /// Forks `count` children; on a failed fork, kills and reaps those already forked.
    fn fork(count: u32) -> Result<Self> {
        let mut children = Children {
            pids: Vec::with_capacity(count as usize),
        };
        // Everything the child touches is prepared here: after fork it only makes
        // async-signal-safe calls and never allocates.
        // SAFETY: plain syscall.
        let parent = unsafe { libc::getpid() };
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut no_signals: libc::sigset_t = unsafe { mem::zeroed() };
        unsafe { libc::sigemptyset(&mut no_signals) };
        for index in 0..count {
            // SAFETY: this process has one thread; the child runs only `idle_child`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: in the child, right after fork.
                unsafe { idle_child(parent, &no_signals) }
            }
            if pid < 0 {
                let err = io::Error::last_os_error();
                children.kill_and_reap()?;
                return Err(err).with_context(|| {
                    format!(
                        "fork {} of {count} failed (pid_max, threads-max, RLIMIT_NPROC or the \
                         cgroup's pids.max is too low for this count)",
                        index + 1
                    )
                });
            }
            children.pids.push(pid);
        }
        Ok(children)
    }

    /// SIGKILLs every child, then waits for each so none is left a zombie.
    fn kill_and_reap(mut self) -> Result<()> {
        for &pid in &self.pids {
            // SAFETY: plain syscall on a child of ours that is not yet reaped, so the pid
            // cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for pid in mem::take(&mut self.pids) {
            loop {
                let mut status = 0;
                // SAFETY: status is a valid out-pointer.
                if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
                    break;
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err).with_context(|| format!("reaping child {pid}"));
                }
            }
        }
        Ok(())
    }
}

/// The whole life of a child: die with the parent, drop every fd (so it keeps no pipe of
/// the caller's open), take signals normally again, and sleep until killed.
///
/// # Safety
/// Must be called in a freshly forked child; it never returns.
unsafe fn idle_child(parent: libc::pid_t, no_signals: &libc::sigset_t) -> ! {
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The parent may have died before prctl took effect.
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        libc::sigprocmask(libc::SIG_SETMASK, no_signals, std::ptr::null_mut());
        loop {
            libc::pause();
        }
    }
}

/// Blocks until stdin reaches EOF (or fails) or SIGTERM/SIGINT arrives.
fn wait_for_stop(stop_signals: &libc::sigset_t) -> Result<()> {
    // SAFETY: valid sigset; the new fd is owned and closed below.
    let sfd = unsafe { libc::signalfd(-1, stop_signals, libc::SFD_CLOEXEC) };
    if sfd < 0 {
        return Err(io::Error::last_os_error()).context("creating a signalfd");
    }
    let result = wait_on(sfd);
    // SAFETY: sfd is ours and closed once.
    unsafe { libc::close(sfd) };
    result
}

fn wait_on(sfd: libc::c_int) -> Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: libc::STDIN_FILENO,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).context("waiting on stdin and signals");
        }
        if fds[1].revents != 0 {
            return Ok(());
        }
        if fds[0].revents & libc::POLLNVAL != 0 {
            // No stdin at all: nothing will ever arrive, treat it as closed.
            return Ok(());
        }
        if fds[0].revents != 0 {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    // An unreadable stdin can never reach EOF: stop as if it had.
                    return Ok(());
                }
            }
            // Anything written to stdin is ignored; only its end matters.
        }
    }
}

/// Fails before forking anything if the system cannot hold `count` more processes.
fn check_limits(count: u64) -> Result<()> {
    let pid_max = read_number(Path::new("/proc/sys/kernel/pid_max"))?;
    let threads_max = read_number(Path::new("/proc/sys/kernel/threads-max"))?;
    let tasks = running_tasks()?;
    let room = pid_max.min(threads_max).saturating_sub(tasks + HEADROOM);
    if count > room {
        bail!(
            "cannot hold {count} processes: {tasks} tasks exist, pid_max is {pid_max}, \
             threads-max is {threads_max} (room for {room}); raise \
             /proc/sys/kernel/pid_max or use a smaller --count"
        );
    }
    // Root is exempt from RLIMIT_NPROC (the kernel skips it for uid 0).
    // SAFETY: plain syscalls; rlimit is a valid out-pointer.
    if unsafe { libc::geteuid() } != 0 {
        let mut limit: libc::rlimit = unsafe { mem::zeroed() };
        if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) } != 0 {
            return Err(io::Error::last_os_error()).context("reading RLIMIT_NPROC");
        }
        if limit.rlim_cur != libc::RLIM_INFINITY && count + HEADROOM > limit.rlim_cur {
            bail!(
                "cannot hold {count} processes: RLIMIT_NPROC is {} (ulimit -u); raise it or \
                 run as root",
                limit.rlim_cur
            );
        }
    }
    if let Some((dir, max, current)) = tightest_pids_limit()? {
        if current + count > max {
            bail!(
                "cannot hold {count} processes: cgroup {} allows {max} tasks and has \
                 {current}; raise its pids.max or run outside it",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Tasks (threads) on the system now: the denominator of /proc/loadavg's 4th field.
fn running_tasks() -> Result<u64> {
    let text = fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    parse_loadavg_tasks(&text).context("parsing /proc/loadavg")
}

fn parse_loadavg_tasks(text: &str) -> Option<u64> {
    text.split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

/// Of our cgroup and its ancestors, the one with the least room under `pids.max`:
/// (directory, max, current). None on cgroup v1 or without any pids limit.
fn tightest_pids_limit() -> Result<Option<(PathBuf, u64, u64)>> {
    let Ok(text) = fs::read_to_string("/proc/self/cgroup") else {
        return Ok(None);
    };
    // cgroup v2 only: the unified hierarchy's line is "0::/path".
    let Some(own) = text.lines().find_map(|line| line.strip_prefix("0::")) else {
        return Ok(None);
    };
    let root = Path::new("/sys/fs/cgroup");
    let mut dir = root.join(own.trim_start_matches('/'));
    let mut tightest: Option<(PathBuf, u64, u64)> = None;
    while dir.starts_with(root) {
        let max = fs::read_to_string(dir.join("pids.max")).ok();
        let current = fs::read_to_string(dir.join("pids.current")).ok();
        if let (Some(max), Some(current)) = (max, current) {
            if let (Ok(max), Ok(current)) = (max.trim().parse(), current.trim().parse()) {
                let room = u64::saturating_sub(max, current);
                if tightest
                    .as_ref()
                    .is_none_or(|(_, m, c)| room < m.saturating_sub(*c))
                {
                    tightest = Some((dir.clone(), max, current));
                }
            }
            // "max" (no limit) does not parse and is skipped.
        }
        if !dir.pop() {
            break;
        }
    }
    Ok(tightest)
}

fn read_number(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} is not a number: {text:?}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_task_count_is_the_total_after_the_slash() {
        assert_eq!(
            parse_loadavg_tasks("0.66 0.69 0.91 7/110 26136\n"),
            Some(110)
        );
        assert_eq!(parse_loadavg_tasks("0.66 0.69 0.91"), None);
        assert_eq!(parse_loadavg_tasks("0.66 0.69 0.91 7-110 1"), None);
    }
}
