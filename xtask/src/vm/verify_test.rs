//! `cargo xtask vm-verify`: whether the kernel of the guest (Debian's newest cloud kernel,
//! an older line than most hosts) accepts each of the agent's programs, and what its
//! verifier walked. `rasp-agent verify` in the guest: minutes where a whole `vm-test` takes
//! one agent start, for changes to a program the newer host kernel accepts anyway.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use super::guest::Guest;
use crate::workspace::Workspace;

/// A program the verifier gives up on walks its 1M instructions: ~11 minutes under TCG.
const TIMEOUT: Duration = Duration::from_secs(1800);

/// Verify `programs` (every program the agent loads at start when empty) in the guest.
pub fn verify_test(ws: &Workspace, agent: &Path, programs: &[String]) -> Result<()> {
    if !agent.is_file() {
        bail!(
            "{} not found: build it with `cargo xtask build`",
            agent.display()
        );
    }
    let mut guest = Guest::new(ws, "verify-test")?;
    guest.use_host_cpus(4);
    guest.add_binary(agent, "bin/rasp-agent")?;
    let mut args = String::new();
    for program in programs {
        // Program names are identifiers; anything else would be a shell word to quote.
        if !program
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            bail!("{program:?} is not a program name");
        }
        args.push_str(" --program ");
        args.push_str(program);
    }
    let script = format!(
        "RASP_LOG=warn /bin/rasp-agent verify{args} > /tmp/verify.out 2>&1\n\
         echo \"exit $?\" >> /tmp/verify.out\n\
         while read -r line; do result \"$line\"; done < /tmp/verify.out\n"
    );
    let run = guest.boot(&script, TIMEOUT)?;
    let mut refused = 0;
    let mut exit = None;
    for line in &run.results {
        println!("vm-verify: {line}");
        if line.starts_with("refused ") || line.starts_with("unknown ") {
            refused += 1;
        }
        if let Some(code) = line.strip_prefix("exit ") {
            exit = Some(code.to_string());
        }
    }
    println!(
        "vm-verify: guest {}, {:.0} s in all; serial log {}",
        run.kernel_release,
        run.elapsed.as_secs_f64(),
        run.serial_log.display()
    );
    match exit.as_deref() {
        Some("0") if refused == 0 => Ok(()),
        Some(code) => bail!("the guest kernel refused {refused} program(s) (exit {code})"),
        None => bail!(
            "`rasp-agent verify` reported no exit status (serial log: {})",
            run.serial_log.display()
        ),
    }
}
