//! Which program produced an executable. A compiler or linker run names its output on its
//! command line (`cc -o /tmp/x/hello hello.c`, `go build -o bin/app`, `rustc -o t`): the
//! exec of that output, moments later, can then be told apart from a payload someone
//! downloaded, copied or wrote there (`curl -o`, `cp`, `cat >`). Bounded and short-lived:
//! outputs are forgotten after an hour or when crowded out.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::events::{Argv, Text};

const MAX_OUTPUTS: usize = 4096;
const REMEMBERED: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct BuiltFiles {
    by_path: HashMap<String, (Text, Instant)>,
    order: VecDeque<String>,
}

impl BuiltFiles {
    pub fn new() -> Self {
        BuiltFiles::default()
    }

    /// The output `argv` names (`-o PATH`, `-oPATH`, `--output=PATH`, `--output PATH`),
    /// absolute (joined to `cwd` when relative).
    pub fn output_of(argv: &Argv, cwd: Option<&str>) -> Option<String> {
        let mut args = argv.iter().skip(1);
        while let Some(a) = args.next() {
            let path = match a {
                "-o" | "--output" => args.next()?,
                _ if a.starts_with("--output=") => &a["--output=".len()..],
                _ if a.starts_with("-o") && a.len() > 2 && !a.starts_with("--") => &a[2..],
                _ => continue,
            };
            if path.is_empty() || path == "-" {
                return None;
            }
            let dir = (!path.starts_with('/')).then_some(cwd.unwrap_or(""));
            return Some(crate::events::decode::join_location(dir, path, false));
        }
        None
    }

    /// `builder` ran with `argv` in `cwd`: remember what it said it would write.
    pub fn record(&mut self, builder: &Text, argv: &Argv, cwd: Option<&str>, now: Instant) {
        let Some(path) = Self::output_of(argv, cwd) else {
            return;
        };
        if self
            .by_path
            .insert(path.clone(), (builder.clone(), now))
            .is_none()
        {
            self.order.push_back(path);
        }
        while self.order.len() > MAX_OUTPUTS
            || self
                .order
                .front()
                .and_then(|p| self.by_path.get(p))
                .is_some_and(|(_, t)| now.duration_since(*t) >= REMEMBERED)
        {
            match self.order.pop_front() {
                Some(old) => {
                    self.by_path.remove(&old);
                }
                None => break,
            }
        }
    }

    /// The program that last named `path` as its output, within the last hour.
    pub fn builder(&self, path: &str, now: Instant) -> Option<&Text> {
        self.by_path
            .get(path)
            .filter(|(_, t)| now.duration_since(*t) < REMEMBERED)
            .map(|(b, _)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_named_on_command_lines() {
        let out = |a: &[&str]| BuiltFiles::output_of(&Argv::new(a), Some("/tmp/w"));
        assert_eq!(
            out(&["cc", "-O2", "-o", "hello", "h.c"]).as_deref(),
            Some("/tmp/w/hello")
        );
        assert_eq!(out(&["gcc", "-o/tmp/x", "h.c"]).as_deref(), Some("/tmp/x"));
        assert_eq!(
            out(&["go", "build", "--output=bin/app"]).as_deref(),
            Some("/tmp/w/bin/app")
        );
        assert_eq!(out(&["cc", "h.c"]), None);
        assert_eq!(out(&["curl", "-o", "-"]), None);
        let mut b = BuiltFiles::new();
        let now = Instant::now();
        let cc: Text = "/usr/bin/x86_64-linux-gnu-gcc-12".into();
        b.record(
            &cc,
            &Argv::new(["cc", "-o", "../h", "h.c"]),
            Some("/tmp/w/src"),
            now,
        );
        assert_eq!(b.builder("/tmp/w/h", now), Some(&cc));
        assert_eq!(b.builder("/tmp/w/h", now + REMEMBERED), None);
        assert_eq!(b.builder("/tmp/other", now), None);
    }
}
