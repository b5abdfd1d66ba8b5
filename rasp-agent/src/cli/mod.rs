//! The client side of the socket: `status`, `events`, `processes`. Human tables by default,
//! `--json` for machines (one JSON object per line for lists and streams). Errors say what
//! to do next.

pub mod containers;
pub mod detections;
pub mod policy;
pub mod quarantine;
mod table;

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::{
    api::protocol::{Reply, Request, Status, StreamItem},
    events::{latency::LatencyStats, Event, EventDetail, Kind},
    process::Process,
};
use table::Table;

pub const DEFAULT_SOCKET: &str = "/run/rasp/agent.sock";

#[derive(clap::Args, Debug)]
pub struct ClientOpts {
    /// The agent's socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Machine-readable output: JSON, one object per line for lists and streams.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Stream events live instead of printing the most recent ones.
    #[arg(long, short)]
    pub follow: bool,
    /// Only events of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Only events of this process id.
    #[arg(long)]
    pub pid: Option<u32>,
    /// At most this many of the most recent events (without --follow).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct ProcessesArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Show processes as a tree of parents and children.
    #[arg(long)]
    pub tree: bool,
    /// One process: with its ancestry (or, with --tree, its chain from the root and its
    /// subtree).
    #[arg(long)]
    pub pid: Option<u32>,
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(socket: &Path) -> Result<Client> {
        let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => anyhow!(
                "permission denied on {}: run as root, or as a member of the agent's --socket-group",
                socket.display()
            ),
            _ => anyhow!(
                "cannot connect to {}: {e}: is the agent running? (start it as root with `rasp-agent run`, or pass --socket)",
                socket.display()
            ),
        })?;
        let writer = stream.try_clone().context("duplicating the socket")?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn send(&mut self, request: &Request) -> Result<()> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .context("sending the request to the agent")
    }

    fn read_line(&mut self) -> Result<Option<String>> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("reading the agent's reply")?;
        Ok((n > 0).then_some(line))
    }

    fn call(&mut self, request: &Request) -> Result<Reply> {
        let sent = self.send(request);
        // A refused connection gets one error line and is closed, possibly before the
        // request went out: that line says why, where the failed write only says
        // "Broken pipe".
        let line = match (sent, self.read_line()) {
            (_, Ok(Some(line))) => line,
            (Err(e), _) => return Err(e),
            (Ok(()), Ok(None)) => bail!("the agent closed the connection without replying"),
            (Ok(()), Err(e)) => return Err(e),
        };
        let reply: Reply =
            serde_json::from_str(&line).context("the agent's reply is not valid JSON")?;
        if !reply.ok {
            let mut msg = format!(
                "the agent refused the request: {}",
                reply.error.unwrap_or_default()
            );
            for e in reply.policy_errors.unwrap_or_default() {
                msg.push_str("\n  ");
                msg.push_str(&e);
            }
            bail!(msg);
        }
        Ok(reply)
    }
}

/// Write to stdout; a closed pipe (`| head`) ends the command quietly.
fn emit(out: &mut impl Write, text: &str) -> Result<bool> {
    match out.write_all(text.as_bytes()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn json_line<T: serde::Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string(value)? + "\n")
}

pub fn status(opts: &ClientOpts) -> Result<()> {
    let reply = Client::connect(&opts.socket)?.call(&Request::Status {})?;
    let status = reply
        .status
        .ok_or_else(|| anyhow!("the agent's reply has no status"))?;
    let text = if opts.json {
        json_line(&status)?
    } else {
        render_status(&status)
    };
    emit(&mut std::io::stdout().lock(), &text)?;
    Ok(())
}

fn render_status(s: &Status) -> String {
    let mut out = String::new();
    let lsm = if s.lsm.available {
        format!("available ({})", s.lsm.reason)
    } else {
        format!("unavailable: {}", s.lsm.reason)
    };
    let mut facts = Table::new(&["", ""]);
    facts.row(vec![
        "agent".into(),
        format!("{} pid {} up {}s", s.agent_version, s.pid, s.uptime_secs),
    ]);
    facts.row(vec!["kernel".into(), s.kernel_release.clone()]);
    facts.row(vec!["BPF-LSM".into(), lsm]);
    let e = &s.enforcement;
    facts.row(vec![
        "enforcement".into(),
        match (e.lsm, e.cgroup_socket) {
            (true, _) => "BPF-LSM refuses denied exec, open, mmap/mprotect and connect".into(),
            (false, true) => "no BPF-LSM: denied connects refused (cgroup hooks); denied execs killed before they run; denied opens and maps killed after the call".into(),
            (false, false) => "no kernel enforcement hooks: enforce rules act after the event".into(),
        },
    ]);
    facts.row(vec![
        "actions".into(),
        format!(
            "{} refused by the rate limit, {} cgroups quarantined",
            e.rate_limited, e.quarantined
        ),
    ]);
    facts.row(vec![
        "ring buffer".into(),
        format!("{} bytes", s.ring_buffer_bytes),
    ]);
    facts.row(vec![
        "processes".into(),
        format!(
            "{} tracked, {} exited, {} evicted",
            s.processes.tracked, s.processes.exited, s.processes.evicted
        ),
    ]);
    facts.row(vec![
        "event buffer".into(),
        format!("{} events, {} live followers", s.event_buffer, s.followers),
    ]);
    facts.row(vec!["decode errors".into(), s.decode_errors.to_string()]);
    facts.row(vec!["pipeline".into(), s.pipeline.clone()]);
    facts.row(vec![
        "policy set".into(),
        format!("v{} from {}", s.policy_set_version, s.policy_source),
    ]);
    let d = &s.detections;
    facts.row(vec![
        "detections".into(),
        format!(
            "{} submitted, {} folded, {} written to {} ({} bytes), {} journal drops, {} write errors",
            d.submitted, d.folded, d.written, d.journal_path, d.journal_bytes, d.journal_dropped, d.write_errors
        ),
    ]);
    for (what, l) in [
        ("latency events", &s.latency.events),
        ("latency detections", &s.latency.detections),
    ] {
        facts.row(vec![what.into(), latency_line(l)]);
    }
    if let Some(c) = &s.tls_capture {
        facts.row(vec![
            "tls capture".into(),
            format!(
                "first {} B a call, {} B a burst: {} calls captured ({} B), {} cut by the call cap, {} by the burst budget, {} over budget ({} B skipped, {} calls uncounted)",
                c.bounds.call_cap,
                c.bounds.burst_budget,
                c.calls_captured,
                c.bytes_captured,
                c.calls_cut_by_cap,
                c.calls_cut_by_budget,
                c.calls_over_budget,
                c.bytes_skipped,
                c.calls_uncounted
            ),
        ]);
    }
    if let Some(h) = &s.http_stage {
        facts.row(vec![
            "http stage".into(),
            format!(
                "{} connections ({} evicted, {} peers unresolved), {} requests, {} responses, {} taint links",
                h.connections,
                h.connections_evicted,
                h.peers_unresolved,
                h.requests,
                h.responses,
                h.taint_links
            ),
        ]);
    }
    let (c, g) = (&s.containers, &s.cgroups);
    facts.row(vec![
        "containers".into(),
        format!(
            "{} known, {} named by their runtime ({} lookups, {} failed, {} dropped)",
            c.known, c.named, c.lookups, c.lookup_failures, c.lookups_dropped
        ),
    ]);
    facts.row(vec![
        "cgroup2".into(),
        format!(
            "{} ({} ids cached; resolved {} by handle, {} from /proc, {} rescans, {} forgotten)",
            s.cgroup2_mount, g.cached, g.by_handle, g.by_proc, g.rescans, g.forgotten
        ),
    ]);
    facts.row(vec!["socket".into(), s.socket.clone()]);
    facts.row(vec!["metrics".into(), s.metrics_addr.clone()]);
    facts.row(vec!["state dir".into(), s.state_dir.clone()]);
    // The header row of a key/value table is empty: skip it.
    out.extend(facts.render().lines().skip(1).map(|l| format!("{l}\n")));

    let mut programs = Table::new(&["PROGRAM", "HOOK", "STATE", "ERROR"]);
    for p in &s.programs {
        let state = serde_json::to_value(p.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from));
        programs.row(vec![
            p.name.clone(),
            p.hook.clone(),
            state.unwrap_or_default(),
            p.error.clone().unwrap_or_default(),
        ]);
    }
    out.push('\n');
    out.push_str(&programs.render());

    let mut kinds = Table::new(&[
        "EVENTS",
        "RECEIVED",
        "DROPPED",
        "READ ERRORS",
        "BYTES/RECORD",
    ]);
    for (kind, k) in &s.events {
        kinds.row(vec![
            kind.clone(),
            k.received.to_string(),
            k.dropped.to_string(),
            k.read_errors.to_string(),
            k.bytes.checked_div(k.received).unwrap_or(0).to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&kinds.render());
    if !s.enforcement.rules.is_empty() {
        let mut rules = Table::new(&["ENFORCED RULE", "HOW"]);
        for r in &s.enforcement.rules {
            rules.row(vec![r.rule.clone(), r.description.clone()]);
        }
        out.push('\n');
        out.push_str(&rules.render());
    }
    if !s.uprobe_targets.is_empty() {
        let mut targets = Table::new(&["UPROBE TARGET", "KIND", "BUILD ID", "PROBES"]);
        for t in &s.uprobe_targets {
            let probes: Vec<String> = t
                .attached
                .iter()
                .map(|p| {
                    let how = if p.emulated { "" } else { " single-step" };
                    format!("{}+{}{how}", p.function, p.offset_in_symbol)
                })
                .collect();
            targets.row(vec![
                t.path.clone(),
                t.kind.clone(),
                t.build_id.clone().unwrap_or_default(),
                if probes.is_empty() {
                    "none (no programs for this kind yet)".to_string()
                } else {
                    probes.join(", ")
                },
            ]);
        }
        out.push('\n');
        out.push_str(&targets.render());
    }
    if !s.exports.is_empty() {
        let mut exports = Table::new(&[
            "EXPORT",
            "DELIVERED",
            "RETRIED",
            "REFUSED",
            "GAPS",
            "LAG BYTES",
            "TARGET / LAST ERROR",
        ]);
        for e in &s.exports {
            exports.row(vec![
                e.sink.clone(),
                e.delivered.to_string(),
                e.retried.to_string(),
                e.refused.to_string(),
                e.gaps.to_string(),
                e.lag_bytes.to_string(),
                match &e.last_error {
                    Some(err) => format!("{}: {err}", e.target),
                    None => e.target.clone(),
                },
            ]);
        }
        out.push('\n');
        out.push_str(&exports.render());
    }
    if !s.losses.is_empty() {
        let mut losses = Table::new(&["LOSS SITE", "PROGRAM", "EFFECT", "COUNT", "LINE", "WHAT"]);
        for l in &s.losses {
            losses.row(vec![
                l.site.clone(),
                l.program.clone(),
                l.effect.clone(),
                l.count.to_string(),
                l.line.to_string(),
                l.what.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&losses.render());
    }
    if !s.policy_reload_errors.is_empty() {
        out.push_str("\nlast policy reload refused (the active set stayed):\n");
        for e in &s.policy_reload_errors {
            out.push_str(&format!("  {}\n", table::terminal_safe(e)));
        }
    }
    if !s.environment.is_empty() {
        out.push_str("\nenvironment:\n");
        for n in &s.environment {
            out.push_str(&format!("  {}\n", table::terminal_safe(n)));
        }
    }
    out
}

/// "p50 12µs  p99 480µs  max 2.1ms  (n 12345)", percentiles as bucket bounds.
fn latency_line(l: &LatencyStats) -> String {
    let Some(max) = l.max_us else {
        return "none yet".into();
    };
    let us = |v: Option<u64>| match v {
        Some(u64::MAX) => "> 10s".to_string(),
        Some(v) if v >= 10_000 => format!("{:.1}ms", v as f64 / 1000.0),
        Some(v) => format!("{v}µs"),
        None => "-".into(),
    };
    format!(
        "p50 {}  p90 {}  p99 {}  max {}  (n {})",
        us(l.p50_us),
        us(l.p90_us),
        us(l.p99_us),
        us(Some(max)),
        l.count
    )
}

pub fn events(args: &EventsArgs) -> Result<()> {
    let mut client = Client::connect(&args.client.socket)?;
    let request = Request::Events {
        follow: args.follow,
        kind: args.kind,
        pid: args.pid,
        limit: args.limit,
    };
    let reply = client.call(&request)?;
    let mut out = std::io::stdout().lock();
    if !args.follow {
        let events = reply.events.unwrap_or_default();
        let text = if args.client.json {
            events.iter().map(json_line).collect::<Result<String>>()?
        } else {
            let mut t = event_table();
            events.iter().for_each(|e| t.row(event_row(e)));
            t.render()
        };
        emit(&mut out, &text)?;
        return Ok(());
    }
    if !args.client.json {
        let header = event_table().render();
        if !emit(&mut out, &header)? {
            return Ok(());
        }
    }
    while let Some(line) = client.read_line()? {
        let item: StreamItem =
            serde_json::from_str(&line).context("the agent streamed invalid JSON")?;
        let text = match (&item, args.client.json) {
            (StreamItem::Event(e), true) => json_line(e)?,
            (StreamItem::Lost(n), true) => {
                json_line(&serde_json::json!({"kind": "lost", "count": n}))?
            }
            (StreamItem::Event(e), false) => table::safe_line(&event_row(e)),
            (StreamItem::Lost(n), false) => {
                format!("-- this client fell behind and lost {n} events --\n")
            }
            (StreamItem::Detection(_), _) => continue,
        };
        if !emit(&mut out, &text)? {
            return Ok(());
        }
        out.flush().ok();
    }
    bail!("the agent closed the stream (was it stopped?)")
}

fn event_table() -> Table {
    Table::new(&[
        "TIME", "KIND", "PID", "PPID", "UID", "COMM", "CGROUP", "DETAIL",
    ])
}

fn event_row(e: &Event) -> Vec<String> {
    // "2026-11-25T18:07:44.123456789Z" → "18:07:44.123"
    let time = e.time.to_string();
    let time = time.get(11..23).unwrap_or(&time).to_string();
    let detail = match &e.detail {
        EventDetail::Exec(d) => {
            let exe = d.exe.as_deref().unwrap_or("?");
            let trunc = if d.argv_truncated {
                " [argv truncated]"
            } else {
                ""
            };
            format!("{exe} {}{trunc}", shell_words(&d.argv))
        }
        EventDetail::Fork(d) => format!("forked by tid {}", d.parent_tid),
        EventDetail::Exit(d) => exit_text(d.exit_code, d.signal, d.core_dumped),
        EventDetail::FileOpen(d) => format!(
            "{} [{}] fd {}",
            d.path.as_deref().unwrap_or("?"),
            d.access,
            d.fd
        ),
        EventDetail::LibraryLoad(d) => d.path.as_deref().unwrap_or("?").to_string(),
        EventDetail::Connect(d) => format!("connect {} (attempt)", d.dest()),
        EventDetail::AgentHealth(d) => format!(
            "agent health: {} over {} s: {}",
            d.problem,
            d.interval_secs,
            d.losses
                .iter()
                .map(|(w, n)| format!("{n} × {w}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        EventDetail::SqlQuery(d) => format!(
            "{} conn {:#x}: {}{}",
            d.function.name(),
            d.conn,
            escape_control(&d.query),
            if d.truncated { " [truncated]" } else { "" }
        ),
        EventDetail::FileChange(d) => {
            use crate::events::hooks::Named;
            let path = escape_control(d.path.as_deref().unwrap_or("?"));
            let mut text = format!("{} {path}", d.operation.name());
            if let Some(new) = &d.new_path {
                text.push_str(&format!(" -> {}", escape_control(new)));
            }
            if let Some(mode) = d.mode {
                text.push_str(&format!(" mode {mode:04o}"));
            }
            if let Some(x) = &d.xattr {
                text.push_str(&format!(" xattr {}", escape_control(x)));
            }
            if let Some(t) = &d.target {
                text.push_str(&format!(" -> {}", escape_control(t)));
            }
            text
        }
        EventDetail::Ptrace(d) => {
            use crate::events::hooks::Named;
            let target = d
                .target
                .as_ref()
                .and_then(|t| t.exe.as_deref())
                .unwrap_or("?");
            format!("{} pid {} ({target})", d.operation.name(), d.target_pid)
        }
        EventDetail::Namespace(d) => {
            use crate::events::hooks::Named;
            format!(
                "{} {}{}",
                d.operation.name(),
                d.namespaces.join(","),
                d.target
                    .as_deref()
                    .map(|t| format!(" {t}"))
                    .unwrap_or_default()
            )
        }
        EventDetail::Mount(d) => format!(
            "mount {} on {} type {}",
            escape_control(d.source.as_deref().unwrap_or("-")),
            escape_control(d.target.as_deref().unwrap_or("-")),
            escape_control(d.fstype.as_deref().unwrap_or("-"))
        ),
        EventDetail::UnixConnect(d) => format!(
            "connect unix:{} (attempt)",
            escape_control(d.path.as_deref().unwrap_or("?"))
        ),
        EventDetail::KernelModule(d) => {
            use crate::events::hooks::Named;
            format!(
                "{} {}",
                d.operation.name(),
                escape_control(d.path.as_deref().or(d.name.as_deref()).unwrap_or("-"))
            )
        }
        EventDetail::BpfLoad(d) => format!(
            "bpf prog load {} {:?} ({} insns)",
            d.prog_type, d.prog_name, d.insn_cnt
        ),
        EventDetail::IoUring(d) => format!(
            "io_uring {}{}",
            d.operation,
            if d.sq_thread { " (sqpoll)" } else { "" }
        ),
        EventDetail::Socket(d) => format!(
            "socket {} {} protocol {} (fd {})",
            d.family, d.sock_type, d.protocol, d.fd
        ),
        EventDetail::Tls(d) => tls_text(d),
        EventDetail::Http(d) => http_text(d),
    };
    vec![
        time,
        e.kind().name().to_string(),
        e.pid.to_string(),
        e.ppid.to_string(),
        e.uid.to_string(),
        e.comm.to_string(),
        e.cgroup
            .as_deref()
            .map_or_else(|| format!("id:{}", e.cgroup_id), str::to_string),
        detail,
    ]
}

/// Plaintext shown in a table row.
const PLAINTEXT_IN_ROW: usize = 120;

fn tls_text(d: &crate::events::TlsDetail) -> String {
    let peer = d
        .endpoints
        .peer
        .map_or_else(|| "peer ?".to_string(), |p| format!("peer {p}"));
    if d.closed {
        return format!("ssl {:#x} closed, {peer}", d.ssl);
    }
    let shown = d.plaintext.shown();
    let cut: String = shown.chars().take(PLAINTEXT_IN_ROW).collect();
    let mut text = format!(
        "{} ssl {:#x} {peer} {}/{} B: {}",
        d.direction.name(),
        d.ssl,
        d.captured,
        d.call_len,
        escape_control(&cut)
    );
    for f in &d.findings {
        text.push_str(&format!(" [{}: {}]", f.kind, f.sample));
    }
    text
}

fn http_text(d: &crate::events::HttpDetail) -> String {
    use crate::events::HttpMessageKind as M;
    let peer = d
        .endpoints
        .peer
        .map_or_else(|| "peer ?".to_string(), |p| format!("peer {p}"));
    let mut text = match d.message {
        M::Request => format!(
            "{} {} {} host {} {peer}",
            d.direction.name(),
            d.method.as_deref().unwrap_or("?"),
            d.path.as_deref().unwrap_or("?"),
            d.host.as_deref().unwrap_or("-"),
        ),
        M::Response => format!(
            "{} status {} {peer}",
            d.direction.name(),
            d.status.map_or_else(|| "?".to_string(), |s| s.to_string())
        ),
        M::Protocol => format!(
            "{} protocol {} {peer}",
            d.direction.name(),
            d.protocol.as_deref().unwrap_or("?")
        ),
        M::Taint => format!(
            "{} {} reached SQL {} ms later: {}",
            d.method.as_deref().unwrap_or("?"),
            d.path.as_deref().unwrap_or("?"),
            d.after_ms.unwrap_or(0),
            d.query.as_deref().unwrap_or("")
        ),
    };
    for f in &d.findings {
        let at = f
            .param
            .as_deref()
            .map(|p| format!(" in {p}"))
            .unwrap_or_default();
        text.push_str(&format!(" [{}{at}: {}]", f.kind, f.sample));
    }
    escape_control(&text)
}

fn exit_text(code: Option<i32>, signal: Option<i32>, core: bool) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!(
            "killed by signal {s}{}",
            if core { " (core dumped)" } else { "" }
        ),
        (None, None) => "exited".into(),
    }
}

/// Control characters would break a table row: shown escaped (`\n`, `\u{1b}`).
fn escape_control(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// argv for display: quote what a shell would need quoted.
fn shell_words(argv: &crate::events::Argv) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c))
            {
                a.to_string()
            } else {
                format!("'{}'", escape_control(a).replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn processes(args: &ProcessesArgs) -> Result<()> {
    let reply = Client::connect(&args.client.socket)?.call(&Request::Processes {})?;
    let procs = reply.processes.unwrap_or_default();
    let view = ProcessView::new(procs);
    let text = match (args.tree, args.pid) {
        (false, None) => view.list(args.client.json)?,
        (false, Some(pid)) => view.one(pid, args.client.json)?,
        (true, pid) => view.tree(pid, args.client.json)?,
    };
    emit(&mut std::io::stdout().lock(), &text)?;
    Ok(())
}

struct ProcessView {
    by_pid: BTreeMap<u32, Process>,
    children: HashMap<u32, Vec<u32>>,
}

impl ProcessView {
    fn new(procs: Vec<Process>) -> Self {
        let by_pid: BTreeMap<u32, Process> = procs.into_iter().map(|p| (p.pid, p)).collect();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for p in by_pid.values() {
            if p.ppid != p.pid && by_pid.contains_key(&p.ppid) {
                children.entry(p.ppid).or_default().push(p.pid);
            }
        }
        ProcessView { by_pid, children }
    }

    fn get(&self, pid: u32) -> Result<&Process> {
        self.by_pid
            .get(&pid)
            .ok_or_else(|| anyhow!("process {pid} is not in the agent's process table (exited and reaped, or never seen)"))
    }

    fn ancestors(&self, pid: u32) -> Vec<&Process> {
        crate::process::ancestry(pid, |p| self.by_pid.get(&p))
    }

    fn list(&self, json: bool) -> Result<String> {
        if json {
            return self.by_pid.values().map(json_line).collect();
        }
        let mut t = Table::new(&["PID", "PPID", "UID", "CGROUP", "COMM", "STATE", "COMMAND"]);
        for p in self.by_pid.values() {
            t.row(process_row(p));
        }
        Ok(t.render())
    }

    fn one(&self, pid: u32, json: bool) -> Result<String> {
        let p = self.get(pid)?;
        let ancestors = self.ancestors(pid);
        if json {
            let mut v = serde_json::to_value(p)?;
            let chain: Vec<Value> = ancestors
                .iter()
                .map(|a| serde_json::json!({"pid": a.pid, "comm": a.comm, "exe": a.exe}))
                .collect();
            v["ancestors"] = Value::Array(chain);
            return json_line(&v);
        }
        let mut t = Table::new(&["PID", "PPID", "UID", "CGROUP", "COMM", "STATE", "COMMAND"]);
        t.row(process_row(p));
        let mut out = t.render();
        out.push_str("\nancestry (nearest first):\n");
        for a in ancestors {
            out.push_str(&format!(
                "  {:>7}  {}  {}\n",
                a.pid,
                a.comm,
                a.exe.as_deref().unwrap_or("?")
            ));
        }
        Ok(out)
    }

    fn tree(&self, pid: Option<u32>, json: bool) -> Result<String> {
        let mut out = String::new();
        match pid {
            None => {
                let roots = self
                    .by_pid
                    .values()
                    .filter(|p| p.ppid == p.pid || !self.by_pid.contains_key(&p.ppid));
                for root in roots {
                    if json {
                        out.push_str(&json_line(&self.subtree_json(root.pid, 0))?);
                    } else {
                        self.render_subtree(root.pid, 0, &mut out);
                    }
                }
            }
            Some(pid) => {
                self.get(pid)?;
                // Root first: the chain down to `pid`, then its whole subtree.
                let mut chain: Vec<u32> = self.ancestors(pid).iter().map(|p| p.pid).collect();
                chain.reverse();
                if json {
                    let mut node = self.subtree_json(pid, 0);
                    for &a in chain.iter().rev() {
                        let mut parent = self.node_json(a);
                        parent["children"] = Value::Array(vec![node]);
                        node = parent;
                    }
                    out.push_str(&json_line(&node)?);
                } else {
                    for (depth, &a) in chain.iter().enumerate() {
                        out.push_str(&tree_line(&self.by_pid[&a], depth));
                    }
                    self.render_subtree(pid, chain.len(), &mut out);
                }
            }
        }
        Ok(out)
    }

    fn node_json(&self, pid: u32) -> Value {
        let mut v = serde_json::to_value(&self.by_pid[&pid]).unwrap_or(Value::Null);
        v["children"] = Value::Array(Vec::new());
        v
    }

    fn subtree_json(&self, pid: u32, depth: usize) -> Value {
        let mut v = self.node_json(pid);
        // The table can hold a cycle after pid reuse; the depth bound ends it.
        if depth < 256 {
            let kids = self.children.get(&pid).map(|k| k.as_slice()).unwrap_or(&[]);
            v["children"] = Value::Array(
                kids.iter()
                    .map(|&k| self.subtree_json(k, depth + 1))
                    .collect(),
            );
        }
        v
    }

    fn render_subtree(&self, pid: u32, depth: usize, out: &mut String) {
        out.push_str(&tree_line(&self.by_pid[&pid], depth));
        if depth < 256 {
            for &k in self.children.get(&pid).map(|k| k.as_slice()).unwrap_or(&[]) {
                self.render_subtree(k, depth + 1, out);
            }
        }
    }
}

fn command_text(p: &Process) -> String {
    if p.argv.is_empty() {
        format!("[{}]", p.comm)
    } else {
        shell_words(&p.argv)
    }
}

fn state_text(p: &Process) -> String {
    match &p.exited {
        None => "running".into(),
        Some(x) => exit_text(x.exit_code, x.signal, false),
    }
}

fn process_row(p: &Process) -> Vec<String> {
    vec![
        p.pid.to_string(),
        p.ppid.to_string(),
        p.uid.to_string(),
        p.cgroup.as_deref().unwrap_or("?").to_string(),
        p.comm.to_string(),
        state_text(p),
        command_text(p),
    ]
}

fn tree_line(p: &Process, depth: usize) -> String {
    let indent = if depth == 0 {
        String::new()
    } else {
        format!("{}└─ ", "   ".repeat(depth - 1))
    };
    let exited = if p.exited.is_some() {
        format!(" ({})", state_text(p))
    } else {
        String::new()
    };
    format!("{indent}{} {}{exited}\n", p.pid, command_text(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32) -> Process {
        Process {
            pid,
            ppid,
            comm: format!("p{pid}").as_str().into(),
            exe: None,
            argv: vec![format!("p{pid}")].into(),
            argv_truncated: false,
            cwd: None,
            uid: 0,
            gid: 0,
            pid_ns: None,
            mnt_ns: None,
            euid: None,
            egid: None,
            start_ns: 0,
            cgroup_id: 0,
            cgroup: None,
            start_boot_ns: None,
            exited: None,
            from_proc: false,
            exited_at: None,
        }
    }

    #[test]
    fn tree_for_one_pid_is_chain_plus_subtree() {
        let v = ProcessView::new(vec![
            proc(1, 0),
            proc(10, 1),
            proc(11, 1),
            proc(20, 10),
            proc(30, 20),
        ]);
        let text = v.tree(Some(20), false).unwrap();
        assert_eq!(text, "1 p1\n└─ 10 p10\n   └─ 20 p20\n      └─ 30 p30\n");
        let json: Value = serde_json::from_str(v.tree(Some(20), true).unwrap().trim()).unwrap();
        assert_eq!(json["pid"], 1);
        assert_eq!(json["children"][0]["pid"], 10);
        assert_eq!(json["children"][0]["children"][0]["pid"], 20);
        assert_eq!(json["children"][0]["children"][0]["children"][0]["pid"], 30);
        assert_eq!(json["children"].as_array().unwrap().len(), 1);
        assert!(v
            .tree(Some(99), false)
            .unwrap_err()
            .to_string()
            .contains("99"));
    }

    #[test]
    fn ancestors_stop_on_cycles() {
        let v = ProcessView::new(vec![proc(1, 3), proc(2, 1), proc(3, 2)]);
        let chain: Vec<u32> = v.ancestors(3).iter().map(|p| p.pid).collect();
        assert_eq!(chain, [2, 1]);
    }

    #[test]
    fn shell_quoting() {
        let argv = vec![
            "sh".to_string(),
            "-c".into(),
            "exit 7".into(),
            "it's".into(),
        ];
        assert_eq!(shell_words(&argv.into()), r"sh -c 'exit 7' 'it'\''s'");
        assert_eq!(shell_words(&["a\nb"].into()), r"'a\nb'");
    }
}
