//! `rasp-agent containers`: the containers the agent has seen (by cgroup), with what their
//! cgroup path says (id, runtime, pod uid) and what their runtime told it (name, image, pod
//! name and namespace).

use anyhow::{anyhow, Result};

use super::{emit, json_line, table::Table, Client, ClientOpts};
use crate::api::protocol::Request;

pub fn containers(opts: &ClientOpts) -> Result<()> {
    let reply = Client::connect(&opts.socket)?.call(&Request::Containers {})?;
    let list = reply
        .containers
        .ok_or_else(|| anyhow!("the agent's reply has no containers"))?;
    let text = if opts.json {
        list.iter().map(json_line).collect::<Result<String>>()?
    } else {
        let mut t = Table::new(&["CONTAINER", "RUNTIME", "NAME", "IMAGE", "NAMESPACE", "POD"]);
        let or_dash = |v: Option<&str>| v.unwrap_or("-").to_string();
        for c in &list {
            let i = &c.identity;
            t.row(vec![
                i.id.get(..12).unwrap_or(&i.id).to_string(),
                i.runtime.name().to_string(),
                or_dash(i.name.as_deref()),
                or_dash(i.image.as_deref()),
                or_dash(i.namespace.as_deref()),
                or_dash(i.pod_name.as_deref().or(i.pod_uid.as_deref())),
            ]);
        }
        t.render()
    };
    emit(&mut std::io::stdout().lock(), &text)?;
    Ok(())
}
