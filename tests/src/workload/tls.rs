//! `tls-writes` and `tls-handshakes`: a TLS client on the system libssl.so.3 against a real
//! `openssl s_server` this workload starts (self-signed RSA-2048 certificate made once per
//! run in a temp dir) and kills at the end.

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::libssl::LibSsl;
use super::tcp::connect_loopback;
use super::{run_for, Report};

/// How long s_server gets to start accepting.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Writes between clock reads (a 1 KiB SSL_write is a few µs).
const WRITE_BATCH: u32 = 16;

pub fn run_writes(size: usize, duration: Duration) -> Result<Report> {
    let lib = LibSsl::load()?;
    let server = SServer::start()?;
    let ctx = lib.client_context()?;
    let sock = connect_loopback(server.port)
        .with_context(|| format!("connecting to s_server on 127.0.0.1:{}", server.port))?;
    let mut session = ctx
        .connect(sock)
        .with_context(|| format!("TLS handshake with s_server on 127.0.0.1:{}", server.port))?;
    let payload = vec![b'x'; size];
    let tally = run_for(duration, WRITE_BATCH, || session.write(&payload))
        .context("writing to s_server")
        .map_err(|err| server.explain(err))?;
    Ok(Report::timed(tally)
        .with("size", size)
        .with("bytes", tally.ops * size as u64)
        .with("libssl", lib.path.display().to_string()))
}

pub fn run_handshakes(duration: Duration) -> Result<Report> {
    let lib = LibSsl::load()?;
    let server = SServer::start()?;
    let ctx = lib.client_context()?;
    let port = server.port;
    let tally = run_for(duration, 1, || {
        // The socket closes with an RST (SO_LINGER 0) when the session drops, so no
        // TIME_WAIT piles up however many handshakes a run makes.
        let mut session = ctx.connect(connect_loopback(port)?)?;
        session.shutdown()
    })
    .with_context(|| format!("TLS handshake with s_server on 127.0.0.1:{port}"))
    .map_err(|err| server.explain(err))?;
    Ok(Report::timed(tally).with("libssl", lib.path.display().to_string()))
}

/// A running `openssl s_server` on 127.0.0.1, killed (and its temp dir removed) on drop.
struct SServer {
    child: Child,
    /// Held open and never written. s_server polls its stdin for data to send to the
    /// client: at EOF (/dev/null) that fd is always readable, so it spins at 100% CPU and
    /// may end the session, which throttled and broke tls-writes when tried.
    _stdin: Option<ChildStdin>,
    port: u16,
    /// Certificate, key and s_server's stderr; dropped (removed) after the kill.
    dir: TempDir,
}

impl SServer {
    fn start() -> Result<Self> {
        let dir = TempDir::create(&format!("rasp-workload-tls-{}", std::process::id()))?;
        let (cert, key) = make_certificate(&dir.0)?;
        let port = free_port()?;
        let log_path = dir.0.join("s_server.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new("openssl");
        command
            .arg("s_server")
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-quiet")
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped())
            // What the client sends is echoed to stdout: /dev/null drains it at once.
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            command.pre_exec(|| {
                // The server must not outlive this workload, however it ends.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .context("starting `openssl s_server` (is the openssl package installed?)")?;
        let stdin = child.stdin.take();
        let mut server = SServer {
            child,
            _stdin: stdin,
            port,
            dir,
        };
        server.wait_until_accepting()?;
        Ok(server)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("s_server.log")
    }

    /// Polls until a TCP connect to the port succeeds; fails early if s_server exits.
    fn wait_until_accepting(&mut self) -> Result<()> {
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for s_server")? {
                bail!(
                    "openssl s_server exited ({status}) before accepting on {addr}: {}",
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "openssl s_server did not accept on {addr} within {:?}: {}",
                    SERVER_START_TIMEOUT,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Adds what s_server said, when a client call failed because the server went away.
    fn explain(&self, err: anyhow::Error) -> anyhow::Error {
        err.context(format!("s_server log: {}", self.log_tail()))
    }

    /// The end of s_server's stderr, for error messages.
    fn log_tail(&self) -> String {
        match fs::read_to_string(self.log_path()) {
            Ok(text) if text.trim().is_empty() => "(s_server wrote nothing)".into(),
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(5)..].join(" | ")
            }
            Err(err) => format!("(cannot read {}: {err})", self.log_path().display()),
        }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        // Errors here only mean the server is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory under the system temp dir, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(name);
        // One left by a killed earlier run that had our pid is stale.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless.
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Generates a self-signed RSA-2048 certificate for CN=localhost valid for a day.
fn make_certificate(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", "/CN=localhost", "-days", "1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .context("running `openssl req` (is the openssl package installed?)")?;
    if !output.status.success() {
        bail!(
            "`openssl req` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok((cert, key))
}

/// A port on 127.0.0.1 free right now. s_server binds it a moment later; if something
/// else took it meanwhile, s_server exits and the start fails with its message.
fn free_port() -> Result<u16> {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(probe
        .local_addr()
        .context("reading the probe's port")?
        .port())
}
