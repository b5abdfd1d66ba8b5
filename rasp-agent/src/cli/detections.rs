//! `rasp-agent detections`: what the policies caught, from the agent's index (which the
//! journal refills after a restart), or live with `--follow`.

use anyhow::{anyhow, bail, Context, Result};

use super::{
    emit, json_line, shell_words,
    table::{self, Table},
    Client, ClientOpts,
};
use crate::{
    api::protocol::{Request, StreamItem},
    detect::{Detection, Outcome},
    policy::vocab::Severity,
};

#[derive(clap::Args, Debug)]
pub struct DetectionsArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Stream new detections live after the matching recent ones.
    #[arg(long, short)]
    pub follow: bool,
    /// Only detections since this time: RFC 3339 ("2026-11-25T18:00:00Z") or a duration
    /// ago ("10m", "2h").
    #[arg(long)]
    pub since: Option<String>,
    /// Only detections of at least this severity.
    #[arg(long, value_enum)]
    pub severity: Option<Severity>,
    /// Only detections of this rule id.
    #[arg(long)]
    pub rule: Option<String>,
    /// At most this many of the most recent detections.
    #[arg(long)]
    pub limit: Option<usize>,
}

pub fn detections(args: &DetectionsArgs) -> Result<()> {
    let mut client = Client::connect(&args.client.socket)?;
    let request = Request::Detections {
        follow: args.follow,
        since: args.since.clone(),
        severity: args.severity,
        rule: args.rule.clone(),
        limit: args.limit,
    };
    let reply = client.call(&request)?;
    let backlog = reply
        .detections
        .ok_or_else(|| anyhow!("the agent's reply has no detections"))?;
    let mut out = std::io::stdout().lock();
    let text = if args.client.json {
        backlog.iter().map(json_line).collect::<Result<String>>()?
    } else {
        let mut t = detection_table();
        backlog.iter().for_each(|d| t.row(detection_row(d)));
        t.render()
    };
    if !emit(&mut out, &text)? || !args.follow {
        return Ok(());
    }
    while let Some(line) = client.read_line()? {
        let item: StreamItem =
            serde_json::from_str(&line).context("the agent streamed invalid JSON")?;
        let text = match (&item, args.client.json) {
            (StreamItem::Detection(d), true) => json_line(d)?,
            (StreamItem::Detection(d), false) => table::safe_line(&detection_row(d)),
            (StreamItem::Lost(n), true) => {
                json_line(&serde_json::json!({"kind": "lost", "count": n}))?
            }
            (StreamItem::Lost(n), false) => {
                format!("-- this client fell behind and lost {n} detections --\n")
            }
            (StreamItem::Event(_), _) => continue,
        };
        if !emit(&mut out, &text)? {
            return Ok(());
        }
    }
    bail!("the agent closed the stream (was it stopped?)")
}

pub fn detection_table() -> Table {
    Table::new(&[
        "TIME", "SEVERITY", "RULE", "POLICY", "OUTCOME", "COUNT", "PID", "PROCESS",
    ])
}

pub fn detection_row(d: &Detection) -> Vec<String> {
    let time = d.time.get(11..19).unwrap_or(&d.time).to_string();
    let outcome = match (&d.outcome, &d.outcome_detail) {
        (Outcome::Alerted, _) => "alerted".to_string(),
        (o, Some(detail)) => format!("{}: {detail}", o.name()),
        (o, None) => o.name().to_string(),
    };
    let process = match (&d.process.exe, d.process.argv.is_empty()) {
        (Some(exe), false) => format!("{exe} {}", shell_words(&d.process.argv)),
        (Some(exe), true) => exe.to_string(),
        (None, _) => d.process.comm.to_string(),
    };
    vec![
        time,
        d.severity.name().to_string(),
        d.rule_id.clone(),
        format!("{}@v{}", d.policy, d.policy_version),
        outcome,
        d.count.to_string(),
        d.process.pid.to_string(),
        process,
    ]
}
