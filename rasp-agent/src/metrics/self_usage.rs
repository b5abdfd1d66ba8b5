//! The agent's own CPU time, resident memory and thread count, read from /proc/self/stat
//! at scrape time (one small read; nothing samples in the background).

/// What the kernel says the agent uses now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct SelfUsage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub threads: u64,
}

impl SelfUsage {
    /// `None` (and the process metrics left out of the scrape) if /proc is unreadable.
    pub(super) fn read() -> Option<SelfUsage> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // SAFETY: sysconf only reads configuration values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        parse_stat(&stat, ticks.max(1) as u64, page.max(1) as u64)
    }
}

/// Parses proc(5)'s `stat` line. The command name (field 2) may hold spaces and parentheses,
/// so fields are counted from the *last* `)`.
fn parse_stat(stat: &str, ticks_per_second: u64, page_bytes: u64) -> Option<SelfUsage> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime) = (field(14)?, field(15)?);
    Some(SelfUsage {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second as f64,
        threads: field(20)?,
        rss_bytes: field(24)? * page_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A comm with a space and a ')' in it, as a process may name itself.
        let line = "4242 (rasp a) b) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 50 0 0 20 0 7 0 \
                    123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let u = parse_stat(line, 100, 4096).unwrap();
        assert_eq!(u.cpu_seconds, 3.0);
        assert_eq!(u.threads, 7);
        assert_eq!(u.rss_bytes, 2560 * 4096);
    }

    #[test]
    fn a_truncated_line_is_none() {
        assert_eq!(parse_stat("1 (x) S 1 2 3", 100, 4096), None);
    }

    #[test]
    fn this_process_uses_some_memory() {
        let u = SelfUsage::read().unwrap();
        assert!(u.rss_bytes > 0);
        assert!(u.threads >= 1);
    }
}
