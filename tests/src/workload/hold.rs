//! `hold`: N idle child processes held alive for as long as the caller wants, to measure
//! what a large process table costs the agent (memory, and the fork/exit events it tracks).
//!
//! Children are plain forks of this process that block in pause(); they hold no fds and
//! die with SIGKILL when this process dies (PR_SET_PDEATHSIG), so no run can leak them.
//! With `--exec`, each child instead execs busybox's `sh -c 'read -r _'` with a command
//! line of its own shaped like a real service's (a JVM, a gunicorn, a node server, a short
//! daemon; ~200 bytes on average, each distinct), blocked reading a pipe nobody writes: the
//! agent then tracks processes with realistic argv, not clones of one short one.

use std::fs;
use std::io::{self, Write};
use std::mem;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::Report;

/// Processes the rest of the system may still need while we hold ours.
const HEADROOM: u64 = 256;

/// What `--exec` children run: a static busybox (no shared-library pages to dirty, so
/// tens of thousands stay affordable).
const BUSYBOX: &std::ffi::CStr = c"/bin/busybox";

pub fn run(count: u32, exec: bool) -> Result<Option<Report>> {
    check_limits(u64::from(count))?;
    let command_lines = if exec {
        // SAFETY: BUSYBOX is NUL-terminated; access only reads it.
        if unsafe { libc::access(BUSYBOX.as_ptr(), libc::X_OK) } != 0 {
            bail!(
                "--exec needs {}: apt-get install -y busybox-static",
                BUSYBOX.to_string_lossy()
            );
        }
        Some(CommandLines::new(count)?)
    } else {
        None
    };
    let stop_signals = stop_signal_set();
    // Blocked before the first fork so a SIGTERM/SIGINT at any point is read from the
    // signalfd (and every child reaped) instead of killing us halfway.
    // SAFETY: valid sigset; the old mask is not wanted.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &stop_signals, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error()).context("blocking SIGTERM/SIGINT");
    }
    let started = Instant::now();
    let children = Children::fork(count, command_lines.as_ref())?;
    let fork_seconds = started.elapsed().as_secs_f64();
    if command_lines.is_some() {
        children.check_execs()?;
    }

    let mut ready = Report::untimed()
        .with("ready", count)
        .with("fork_seconds", (fork_seconds * 1e4).round() / 1e4);
    if let Some(lines) = &command_lines {
        ready = ready.with("mean_argv_bytes", lines.mean_bytes());
    }
    let ready = ready.named("hold");
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
    /// Forks `count` children (each execing its command line when there are some); on a
    /// failed fork, kills and reaps those already forked.
    fn fork(count: u32, command_lines: Option<&CommandLines>) -> Result<Self> {
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
            // Built before the fork: the child must not allocate.
            let argv = command_lines.map(|lines| lines.argv(index));
            // SAFETY: this process has one thread; the child runs only `idle_child`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: in the child, right after fork.
                unsafe { idle_child(parent, &no_signals, argv.as_ref()) }
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

    /// Fails if a child already ended: its exec failed (it exits 127 then).
    fn check_execs(&self) -> Result<()> {
        // An exec takes a moment; a failed one ends at once.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut status = 0;
        // SAFETY: status is a valid out-pointer; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            bail!(
                "child {pid} ended right after its exec of {} (wait status {status:#x})",
                BUSYBOX.to_string_lossy()
            );
        }
        Ok(())
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
/// the caller's open), take signals normally again, and sleep until killed — or, given an
/// argv, exec busybox with it, reading a pipe that never delivers a byte.
///
/// # Safety
/// Must be called in a freshly forked child; it never returns.
unsafe fn idle_child(parent: libc::pid_t, no_signals: &libc::sigset_t, argv: Option<&Argv>) -> ! {
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The parent may have died before prctl took effect.
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        libc::sigprocmask(libc::SIG_SETMASK, no_signals, std::ptr::null_mut());
        let Some(argv) = argv else {
            loop {
                libc::pause();
            }
        };
        // With every fd closed, new ones take the lowest numbers: the pipe is 0 (read, the
        // shell's stdin) and 1, /dev/null is 2; the write end moves to 3 (held, never
        // written, so `read` blocks until the parent's SIGKILL) and stdout becomes
        // /dev/null. PDEATHSIG survives the exec.
        let mut pipe = [0; 2];
        if libc::pipe(pipe.as_mut_ptr()) != 0
            || libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) != 2
            || libc::dup2(1, 3) != 3
            || libc::dup2(2, 1) != 1
        {
            libc::_exit(126);
        }
        libc::execv(BUSYBOX.as_ptr(), argv.pointers.as_ptr());
        libc::_exit(127);
    }
}

/// One child's argv as execv wants it: the strings, and NULL-terminated pointers to them.
struct Argv {
    _strings: Vec<std::ffi::CString>,
    pointers: Vec<*const libc::c_char>,
}

/// The command lines `--exec` children get, one template per kind of service, each with
/// the child's index in it so no two are alike.
struct CommandLines {
    count: u32,
}

/// `sh -c SCRIPT NAME ARGS...`: busybox sh runs SCRIPT with the rest as $0, $1...; the
/// kernel (and the agent) see the whole vector.
const SHELL_PREFIX: [&str; 3] = ["sh", "-c", "read -r _"];

impl CommandLines {
    fn new(count: u32) -> Result<CommandLines> {
        Ok(CommandLines { count })
    }

    /// The service command line of child `index` (without the shell prefix).
    fn words(index: u32) -> Vec<String> {
        let port = index % 1000;
        let words: Vec<String> = match index % 4 {
            0 => vec![
                "java".into(),
                "-Xms256m".into(),
                "-Xmx1g".into(),
                "-XX:+UseG1GC".into(),
                "-XX:MaxGCPauseMillis=200".into(),
                "-Dspring.profiles.active=prod".into(),
                format!("-Dserver.port=8{port:03}"),
                "-Dlogging.config=/etc/orders/logback.xml".into(),
                "-cp".into(),
                format!("/opt/orders/lib/orders-service-2.14.{index}.jar:/opt/orders/lib/spring-boot-3.2.4.jar:/opt/orders/lib/jackson-databind-2.17.0.jar:/opt/orders/lib/postgresql-42.7.3.jar:/opt/orders/lib/HikariCP-5.1.0.jar"),
                "com.example.orders.OrdersApplication".into(),
                format!("--instance=orders-{index}"),
            ],
            1 => vec![
                "/usr/bin/python3".into(),
                "/opt/web/venv/bin/gunicorn".into(),
                "--workers".into(),
                "4".into(),
                "--bind".into(),
                format!("127.0.0.1:9{port:03}"),
                "--access-logfile".into(),
                "-".into(),
                "--timeout".into(),
                "30".into(),
                "web.wsgi:application".into(),
                format!("--name=web-{index}"),
            ],
            2 => vec![
                "node".into(),
                "--max-old-space-size=512".into(),
                "/srv/api/dist/server.js".into(),
                "--port".into(),
                format!("3{port:03}"),
                "--config".into(),
                format!("/etc/api/config-{index}.json"),
            ],
            _ => vec![
                "/usr/sbin/cron".into(),
                "-f".into(),
                format!("-L{}", index % 16),
            ],
        };
        words
    }

    fn argv(&self, index: u32) -> Argv {
        let strings: Vec<std::ffi::CString> = SHELL_PREFIX
            .iter()
            .map(|w| w.to_string())
            .chain(Self::words(index))
            // Built from literals and numbers: never a NUL inside.
            .filter_map(|w| std::ffi::CString::new(w).ok())
            .collect();
        let mut pointers: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        Argv {
            _strings: strings,
            pointers,
        }
    }

    /// Mean bytes of argv (NUL separators included) over the children, as /proc shows it.
    fn mean_bytes(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let total: usize = (0..self.count)
            .map(|i| {
                SHELL_PREFIX.iter().map(|w| w.len() + 1).sum::<usize>()
                    + Self::words(i).iter().map(|w| w.len() + 1).sum::<usize>()
            })
            .sum();
        (total as f64 / f64::from(self.count) * 10.0).round() / 10.0
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
