//! `rasp-agent quarantine list | release CGROUP`: what the agent has cut off, and giving a
//! workload its network back (thawed). Release needs root.

use anyhow::{bail, Result};

use super::{emit, json_line, table::Table, Client, ClientOpts};
use crate::{api::protocol::Request, enforce::Quarantined};

#[derive(clap::Subcommand, Debug)]
pub enum QuarantineCommand {
    /// Cgroups under quarantine: since when, which rule, what was done.
    List(ClientOpts),
    /// Restore a quarantined cgroup's network and thaw it (root only).
    Release {
        #[command(flatten)]
        client: ClientOpts,
        /// The cgroup's path in the cgroup2 hierarchy, or its id, as `list` shows it.
        cgroup: String,
    },
}

pub fn run(cmd: &QuarantineCommand) -> Result<()> {
    let (opts, request) = match cmd {
        QuarantineCommand::List(opts) => (opts, Request::QuarantineList {}),
        QuarantineCommand::Release { client, cgroup } => (
            client,
            Request::QuarantineRelease {
                cgroup: cgroup.clone(),
            },
        ),
    };
    let reply = Client::connect(&opts.socket)?.call(&request)?;
    if !reply.ok {
        bail!(
            "{}",
            reply.error.unwrap_or_else(|| "the agent refused".into())
        );
    }
    let list = reply.quarantines.unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if opts.json {
        for q in &list {
            emit(&mut out, &json_line(q)?)?;
        }
        return Ok(());
    }
    if let QuarantineCommand::Release { .. } = cmd {
        for q in &list {
            emit(
                &mut out,
                &format!("released {}: {}\n", q.cgroup, q.steps.join("; ")),
            )?;
        }
        return Ok(());
    }
    emit(&mut out, &table(&list))?;
    Ok(())
}

fn table(list: &[Quarantined]) -> String {
    if list.is_empty() {
        return "no cgroup is quarantined\n".to_string();
    }
    let mut t = Table::new(&["CGROUP", "ID", "SINCE", "RULE", "MODE", "STEPS"]);
    for q in list {
        t.row(vec![
            q.cgroup.clone(),
            q.cgroup_id.to_string(),
            q.since.clone(),
            q.rule.clone(),
            format!("{:?}", q.mode).to_lowercase(),
            q.steps.join("; "),
        ]);
    }
    t.render()
}
