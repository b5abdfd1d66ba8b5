//! `rasp-agent policy ...`: validate and simulate work offline (CI gates before rollout);
//! list, apply and rollback talk to the running agent.

use std::{
    collections::BTreeMap,
    io::BufReader,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};

use super::{
    detections::{detection_row, detection_table},
    emit, json_line,
    table::Table,
    Client, ClientOpts,
};
use crate::{
    api::protocol::{PolicyFile, PolicyListing, Reply, Request},
    detect::simulate,
    policy::{self, active::PolicySet},
};

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// The active policy set (version, source, policies) and the sets rollback can restore.
    List(ClientOpts),
    /// Check policy files (or directories of *.yaml) without a running agent: every problem
    /// as file:line:column; exit status 1 if there is any.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Also say, per enforce-mode `block` rule, what the running kernel can do about it
        /// (refuse in the kernel, kill before the program runs, kill after the call, or act
        /// in userspace after the event). Asks the running agent what its kernel accepted.
        #[arg(long)]
        kernel: bool,
        /// The agent's socket, for `--kernel`.
        #[arg(long, default_value = super::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Replace the agent's active set with these files (validated as one set first; on any
    /// error nothing changes).
    Apply {
        #[command(flatten)]
        client: ClientOpts,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Restore the set that was active before the current one.
    Rollback(ClientOpts),
    /// Replay recorded events (`rasp-agent events --json` output) through policies offline
    /// and print what would have fired.
    Simulate {
        /// JSON-lines file of events.
        #[arg(long)]
        events: PathBuf,
        /// Policy files or directories.
        #[arg(required = true)]
        policies: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: &PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::List(opts) => {
            let reply = Client::connect(&opts.socket)?.call(&Request::PolicyList {})?;
            print_listing(reply, opts.json)
        }
        PolicyCommand::Validate {
            paths,
            json,
            kernel,
            socket,
        } => {
            validate(paths, *json)?;
            if *kernel {
                kernel_rungs(paths, socket, *json)?;
            }
            Ok(())
        }
        PolicyCommand::Apply { client, paths } => apply(client, paths),
        PolicyCommand::Rollback(opts) => {
            let reply = Client::connect(&opts.socket)?.call(&Request::PolicyRollback {})?;
            print_listing(reply, opts.json)
        }
        PolicyCommand::Simulate {
            events,
            policies,
            json,
        } => simulate(events, policies, *json),
    }
}

fn validate(paths: &[PathBuf], json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match policy::load_paths(paths) {
        Ok(policies) => {
            let rules: usize = policies.iter().map(|p| p.rules.len()).sum();
            let text = if json {
                json_line(
                    &serde_json::json!({"ok": true, "policies": policies.len(), "rules": rules}),
                )?
            } else {
                format!("ok: {} policies, {rules} rules\n", policies.len())
            };
            emit(&mut out, &text)?;
            Ok(())
        }
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            let text = if json {
                json_line(&serde_json::json!({"ok": false, "errors": lines}))?
            } else {
                lines.iter().map(|l| format!("{l}\n")).collect()
            };
            emit(&mut out, &text)?;
            bail!("{} problem(s) found", errors.len())
        }
    }
}

/// What the running agent's kernel would do about each enforce-mode `block` rule of the
/// files: the deny plan the agent would compile, with the hooks it has attached.
fn kernel_rungs(paths: &[PathBuf], socket: &Path, json: bool) -> Result<()> {
    let policies =
        policy::load_paths(paths).map_err(|errors| anyhow!("{} problem(s) found", errors.len()))?;
    let status = Client::connect(socket)
        .context("--kernel asks the running agent what its kernel accepted")?
        .call(&Request::Status {})?
        .status
        .ok_or_else(|| anyhow!("the agent's reply has no status"))?;
    let caps = policy::deny::KernelCapabilities {
        lsm: status.enforcement.lsm,
        cgroup_socket: status.enforcement.cgroup_socket,
    };
    let plan = policy::deny::plan(&policies, 1, caps, &policy::deny::HostFs::detect());
    let mut out = std::io::stdout().lock();
    if json {
        for (rule, rung) in &plan.rungs {
            let line = serde_json::json!({"rule": rule, "enforcement": rung, "description": rung.describe()});
            emit(&mut out, &json_line(&line)?)?;
        }
        return Ok(());
    }
    if plan.rungs.is_empty() {
        emit(&mut out, "no enforce-mode block rules\n")?;
        return Ok(());
    }
    let mut t = Table::new(&["RULE", "ON THIS KERNEL"]);
    for (rule, rung) in &plan.rungs {
        t.row(vec![rule.clone(), rung.describe()]);
    }
    emit(&mut out, &t.render())?;
    Ok(())
}

fn apply(client: &ClientOpts, paths: &[PathBuf]) -> Result<()> {
    let files = policy::read_policy_files(paths).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow!("{}", lines.join("\n"))
    })?;
    let files = files
        .into_iter()
        .map(|(name, text)| PolicyFile { name, text })
        .collect();
    let reply = Client::connect(&client.socket)?.call(&Request::PolicyApply { files })?;
    print_listing(reply, client.json)
}

fn print_listing(reply: Reply, json: bool) -> Result<()> {
    let listing: PolicyListing = reply
        .policies
        .ok_or_else(|| anyhow!("the agent's reply has no policy set"))?;
    let mut out = std::io::stdout().lock();
    if json {
        emit(&mut out, &json_line(&listing)?)?;
        return Ok(());
    }
    let a = &listing.active;
    let restored = a
        .restored_from
        .map(|v| format!(", restored from v{v}"))
        .unwrap_or_default();
    let mut text = format!(
        "active policy set v{} from {} (applied {}{restored})\n\n",
        a.version, a.source, a.applied_at
    );
    let mut t = Table::new(&["POLICY", "VERSION", "MODE", "RULES", "LOCATION"]);
    for p in &a.policies {
        let mode = serde_json::to_value(p.mode)?
            .as_str()
            .unwrap_or_default()
            .to_string();
        t.row(vec![
            p.name.clone(),
            p.version.to_string(),
            mode,
            p.rules.len().to_string(),
            p.location.clone(),
        ]);
    }
    text.push_str(&t.render());
    if !listing.history.is_empty() {
        text.push_str("\nrollback can restore (newest last):\n");
        for h in &listing.history {
            text.push_str(&format!(
                "  v{} from {} (applied {})\n",
                h.version, h.source, h.applied_at
            ));
        }
    }
    emit(&mut out, &text)?;
    Ok(())
}

fn simulate(events: &Path, paths: &[PathBuf], json: bool) -> Result<()> {
    let policies = policy::load_paths(paths).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow!("the policies do not validate:\n{}", lines.join("\n"))
    })?;
    let set = PolicySet::offline(policies, "simulation".into());
    let file =
        std::fs::File::open(events).with_context(|| format!("opening {}", events.display()))?;
    let replay = simulate::replay(&set, &events.display().to_string(), BufReader::new(file))?;
    let mut out = std::io::stdout().lock();
    let text = if json {
        replay
            .detections
            .iter()
            .map(json_line)
            .collect::<Result<String>>()?
    } else {
        let mut t = detection_table();
        replay
            .detections
            .iter()
            .for_each(|d| t.row(detection_row(d)));
        t.render()
    };
    emit(&mut out, &text)?;
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &replay.detections {
        *by_rule.entry(&d.rule_id).or_default() += 1;
    }
    let summary: Vec<String> = by_rule.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    eprintln!(
        "{} events replayed, {} detections{}{}",
        replay.events,
        replay.detections.len(),
        if summary.is_empty() { "" } else { " — " },
        summary.join(", ")
    );
    Ok(())
}
