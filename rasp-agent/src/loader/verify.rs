//! Verifying the programs on every CPU at once. Loading a program runs the kernel's
//! verifier in the loading thread, and the verifier is most of the agent's start (1.1M
//! instructions walked for all programs, a third of them for one program); programs are
//! independent, so they load in parallel and attach afterwards, in the order the process
//! tracking needs. The attach functions ask [`Verified`] before loading a program themselves.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use aya::{programs::Program, Btf, Ebpf};

use super::error_chain;

/// The programs whose verification takes longest, measured (verified instructions on 6.18
/// at the pre-check's subprogram change: exec 344k, file_change 169k, file_open 136k,
/// library_load 117k; every other program under 75k). They start first so that no CPU is
/// left with one of them at the end.
const LONGEST_FIRST: &[&str] = &[
    "rasp_exec",
    "rasp_file_change",
    "rasp_file_open",
    "rasp_library_load",
];

/// One program to load: its name and, for BTF tracepoints and LSM programs, the hook
/// (what their `load` takes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job<'a> {
    pub name: &'a str,
    pub hook: Option<&'a str>,
}

/// What the parallel pass did with each program it was given.
#[derive(Default)]
pub struct Verified {
    results: HashMap<String, (Result<(), String>, Duration)>,
}

impl Verified {
    /// Load `name` with `load` unless the parallel pass already did; the pass's error if
    /// the verifier refused it there.
    pub fn ensure(
        &self,
        name: &str,
        load: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), String> {
        match self.results.get(name) {
            Some((result, _)) => result.clone(),
            None => load(),
        }
    }

    /// The programs the verifier refused, by name, each with the gist of its answer.
    pub fn refused(&self) -> Vec<(String, String)> {
        let mut refused: Vec<(String, String)> = self
            .results
            .iter()
            .filter_map(|(name, (result, _))| {
                let error = result.as_ref().err()?;
                Some((name.clone(), gist(error)))
            })
            .collect();
        refused.sort();
        refused
    }
}

/// The line of a verifier answer that says why (the log before it is the walk): the
/// verdict lines the kernel prints, or the last line, at most 200 characters.
fn gist(error: &str) -> String {
    const VERDICTS: &[&str] = &[
        "too large",
        "invalid func",
        "unknown BTF type",
        "unbounded memory access",
        "invalid access",
        "invalid mem access",
        "not supported",
    ];
    let lines: Vec<&str> = error
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .find(|l| VERDICTS.iter().any(|v| l.contains(v)))
        .or(lines.last())
        .copied()
        .unwrap_or("refused");
    let mut gist: String = line.chars().take(200).collect();
    // A kfunc call this kernel could not link still carries its placeholder number.
    for (placeholder, kfunc) in rasp_common::offsets::KFUNC_PLACEHOLDERS {
        if error.contains(&format!("invalid func unknown#{placeholder}")) {
            gist.push_str(&format!(" (the kernel has no kfunc {kfunc})"));
            break;
        }
    }
    gist
}

/// Load every program of `jobs` that is in `ebpf`, on up to as many threads as the agent
/// may run on. Programs of other types than the agent uses are left to their attach
/// functions (not loaded here).
/// `refuse` (fault injection) names programs recorded as refused without being loaded.
pub(crate) fn verify_in_parallel(
    ebpf: &mut Ebpf,
    btf: &Btf,
    jobs: &[Job<'_>],
    refuse: &[String],
) -> Verified {
    let started = Instant::now();
    let mut queue: Vec<(String, &mut Program, Option<&str>)> = ebpf
        .programs_mut()
        .filter_map(|(name, program)| {
            let job = jobs.iter().find(|j| j.name == name)?;
            Some((name.to_string(), program, job.hook))
        })
        .collect();
    // Popped from the end: the longest go last in the vector.
    queue.sort_by_key(|(name, _, _)| {
        std::cmp::Reverse(
            LONGEST_FIRST
                .iter()
                .position(|n| n == name)
                .unwrap_or(LONGEST_FIRST.len()),
        )
    });
    let programs = queue.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(programs.max(1));
    let queue = Mutex::new(queue);
    let done: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
                let Some((name, program, hook)) = next else {
                    break;
                };
                let began = Instant::now();
                let result = if refuse.contains(&name) {
                    Err("refused by --fault-refuse-program (not loaded)".to_string())
                } else {
                    load(program, hook, btf)
                };
                if let Ok(mut done) = done.lock() {
                    done.push(Outcome {
                        name,
                        result,
                        took: began.elapsed(),
                    });
                }
            });
        }
    });
    let done = done.into_inner().unwrap_or_default();
    let busy: Duration = done.iter().map(|o| o.took).sum();
    for o in &done {
        tracing::debug!(
            program = %o.name,
            ms = o.took.as_millis() as u64,
            ok = o.result.is_ok(),
            "program verified"
        );
    }
    tracing::info!(
        programs,
        threads,
        wall_ms = started.elapsed().as_millis() as u64,
        verifier_ms = busy.as_millis() as u64,
        "programs loaded"
    );
    Verified {
        results: done
            .into_iter()
            .map(|o| (o.name, (o.result, o.took)))
            .collect(),
    }
}

/// One program's load in the parallel pass.
struct Outcome {
    name: String,
    result: Result<(), String>,
    took: Duration,
}

fn load(program: &mut Program, hook: Option<&str>, btf: &Btf) -> Result<(), String> {
    let missing = |what: &str| Err(format!("{what} program loaded without its hook name"));
    let result = match program {
        Program::TracePoint(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        Program::UProbe(p) => p.load(),
        Program::BtfTracePoint(p) => match hook {
            Some(hook) => p.load(hook, btf),
            None => return missing("BTF tracepoint"),
        },
        Program::Lsm(p) => match hook {
            Some(hook) => p.load(hook, btf),
            None => return missing("LSM"),
        },
        other => {
            return Err(format!(
                "{:?} programs are not loaded in the parallel pass",
                other.prog_type()
            ))
        }
    };
    result.map_err(|e| error_chain(&e))
}

/// `rasp-agent verify`: what the kernel's verifier says of each program, without attaching
/// anything: whether a change to a program still loads on a kernel (the guest's Debian
/// kernel among them) in seconds, not an agent's start.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Only this program (repeatable); default every program the agent loads at start.
    #[arg(long = "program", value_name = "NAME")]
    pub programs: Vec<String>,
}

/// Verify the programs and print one line each: `loaded NAME verified_insns=N ms=T` or
/// `refused NAME ms=T: ...` (the end of the verifier's answer). False if any was refused
/// or a named program is not in the object.
pub fn run(args: &VerifyArgs) -> Result<bool, super::LoadError> {
    let (mut ebpf, btf) = super::open(rasp_common::limits::DEFAULT_RING_BYTES)?;
    let (lsm, _) = super::probe_lsm(&mut ebpf, &btf);
    let mut jobs = super::parallel_jobs(lsm.available);
    let mut all_ok = true;
    if !args.programs.is_empty() {
        jobs.retain(|j| args.programs.iter().any(|p| p == j.name));
        for unknown in args
            .programs
            .iter()
            .filter(|p| !jobs.iter().any(|j| j.name == p.as_str()))
        {
            println!("unknown {unknown}: not a program the agent loads at start");
            all_ok = false;
        }
    }
    let verified = verify_in_parallel(&mut ebpf, &btf, &jobs, &[]);
    for job in &jobs {
        let Some((result, took)) = verified.results.get(job.name) else {
            println!("unknown {}: not in the eBPF object", job.name);
            all_ok = false;
            continue;
        };
        let ms = took.as_millis();
        match result {
            Ok(()) => {
                let insns = ebpf
                    .program(job.name)
                    .and_then(|p| p.info().ok())
                    .and_then(|i| i.verified_instruction_count())
                    .map_or_else(|| "?".to_string(), |n| n.to_string());
                println!("loaded {} verified_insns={insns} ms={ms}", job.name);
            }
            Err(e) => {
                all_ok = false;
                let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
                let tail = lines[lines.len().saturating_sub(6)..].join(" | ");
                println!("refused {} ms={ms}: {tail}", job.name);
            }
        }
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::gist;

    #[test]
    fn the_gist_is_the_verdict_and_names_a_missing_kfunc() {
        let log = "0: (85) call unknown#1918987008\ninvalid func unknown#1918987008\n\
                   verification time 6402 usec\nprocessed 46 insns (limit 1000000)\n";
        let placeholder = rasp_common::offsets::KFUNC_PLACEHOLDERS[0].0;
        let log = log.replace("1918987008", &placeholder.to_string());
        assert_eq!(
            gist(&log),
            format!("invalid func unknown#{placeholder} (the kernel has no kfunc bpf_rdonly_cast)")
        );
        let log =
            "342: (71) r3 = *(u8 *)(r1 +0)\nBPF program is too large. Processed 1000001 insn\n\
                   processed 1000001 insns (limit 1000000)\n";
        assert_eq!(
            gist(log),
            "BPF program is too large. Processed 1000001 insn"
        );
        assert_eq!(gist("something else\n"), "something else");
    }
}
