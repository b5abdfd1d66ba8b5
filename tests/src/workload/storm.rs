//! `storm`: open + close of one watched path (or many distinct ones in turn) from several
//! threads, paced to a total rate, to find the highest event rate the agent drains without
//! drops.

use std::io;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::open::{open_close, PathCycle};
use super::pacing::{per_thread_rate, Pacer, Step};
use super::{process_cpu_time, Report, Tally};

/// What one storm thread did.
struct ThreadTally {
    ops: u64,
    missed: u64,
}

pub fn run(
    path: &Path,
    distinct: u32,
    rate: f64,
    threads: u32,
    duration: Duration,
) -> Result<Report> {
    let paths = Arc::new(PathCycle::new(path, distinct)?);
    let thread_rate = per_thread_rate(rate, threads);
    // Every thread and this one start the clock together.
    let start_line = Arc::new(Barrier::new(threads as usize + 1));
    let mut workers = Vec::with_capacity(threads as usize);
    for index in 0..threads {
        let paths = Arc::clone(&paths);
        let start_line = Arc::clone(&start_line);
        // Threads start spread over the cycle, so they do not open the same file in step.
        let first = u64::from(index) * paths.count() as u64 / u64::from(threads);
        // If a spawn fails, the threads already started wait at the barrier until the
        // process exits, which returning the error here leads to.
        let worker = thread::Builder::new()
            .name(format!("storm-{index}"))
            .spawn(move || {
                start_line.wait();
                storm_thread(&paths, first, thread_rate, duration)
            })
            .with_context(|| format!("starting storm thread {index}"))?;
        workers.push(worker);
    }
    start_line.wait();
    let start = Instant::now();
    let cpu_start = process_cpu_time();
    let mut ops = 0;
    let mut missed = 0;
    let mut first_error = None;
    for worker in workers {
        match worker.join() {
            Ok(Ok(tally)) => {
                ops += tally.ops;
                missed += tally.missed;
            }
            Ok(Err(err)) => {
                first_error.get_or_insert(
                    anyhow::Error::new(err).context(format!("opening {}", path.display())),
                );
            }
            Err(_) => {
                first_error.get_or_insert(anyhow!("a storm thread panicked"));
            }
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }
    let tally = Tally {
        ops,
        elapsed: start.elapsed(),
        cpu: process_cpu_time().saturating_sub(cpu_start),
    };
    Ok(Report::timed(tally)
        .with("target_rate", rate)
        .with("threads", threads)
        .with("distinct", distinct)
        .with("missed", missed))
}

/// One thread's paced loop; the clock is read once per batch, not per op.
fn storm_thread(
    paths: &PathCycle,
    first: u64,
    rate: f64,
    duration: Duration,
) -> io::Result<ThreadTally> {
    let mut pacer = Pacer::new(rate);
    let start = Instant::now();
    let mut ops = 0u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        match pacer.next(ops, elapsed) {
            Step::Run(n) => {
                for i in 0..n {
                    open_close(paths.get(first + ops + i))?;
                }
                ops += n;
            }
            Step::Wait(wait) => thread::sleep(wait.min(duration - elapsed)),
        }
    }
    Ok(ThreadTally {
        ops,
        missed: pacer.missed(),
    })
}
