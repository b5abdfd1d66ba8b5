//! Aligned text tables for people. The last column is never padded (it is usually the long
//! one: arguments, details). Every cell is made terminal-safe first: cells carry what
//! processes put in their argv, paths, comm and SQL, and a `\x1b[2J`, a newline or a
//! bidi override there must reach the screen as visible text, never act on the terminal.

use std::{borrow::Cow, fmt::Write};

/// Characters a terminal would act on rather than print: C0 and C1 controls, DEL, and the
/// Unicode bidi controls that reorder what is shown ("Trojan source").
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every such character written out as an escape (`\n`, `\t`, `\r`,
/// `\x1b`, `\u{202e}`); a backslash stays as it is. Unchanged text is not copied.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x100 && acts_on_terminal(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if acts_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Cells joined into one terminal-safe line (a streamed row, outside a table).
pub fn safe_line(cells: &[String]) -> String {
    let mut line = cells
        .iter()
        .map(|c| terminal_safe(c))
        .collect::<Vec<_>>()
        .join("  ");
    line.push('\n');
    line
}

pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| match terminal_safe(&c) {
                    Cow::Borrowed(_) => c,
                    Cow::Owned(safe) => safe,
                })
                .collect(),
        );
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        let all = std::iter::once(
            self.header
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .chain(self.rows.iter().cloned());
        let all: Vec<Vec<String>> = all.collect();
        for row in &all {
            for (i, cell) in row.iter().enumerate().take(cols) {
                width[i] = width[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &all {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(cols) {
                if i + 1 == cols || i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(
                        ' ',
                        width[i] - cell.chars().count() + 2,
                    ));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_came_from_an_event_cannot_act_on_the_terminal() {
        assert!(matches!(terminal_safe("/usr/bin/ls -la"), Cow::Borrowed(_)));
        assert_eq!(
            terminal_safe("sh -c \x1b[2Jclear\nfake line\there\r"),
            "sh -c \\x1b[2Jclear\\nfake line\\there\\r"
        );
        assert_eq!(terminal_safe("a\u{7f}b\u{9b}c"), "a\\x7fb\\x9bc");
        assert_eq!(terminal_safe("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(terminal_safe("名前 ok"), "名前 ok");

        let mut t = Table::new(&["PID", "COMMAND"]);
        t.row(vec!["1".into(), "x\x1b]0;pwned\x07\nroot  /bin/sh".into()]);
        let out = t.render();
        assert_eq!(out.lines().count(), 2, "one row stays one line: {out:?}");
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert_eq!(safe_line(&["1".into(), "a\nb".into()]), "1  a\\nb\n");
    }

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&["PID", "COMM", "ARGS"]);
        t.row(vec!["1".into(), "init".into(), "/sbin/init splash".into()]);
        t.row(vec!["12345".into(), "sh".into(), "sh -c true".into()]);
        assert_eq!(
            t.render(),
            "PID    COMM  ARGS\n1      init  /sbin/init splash\n12345  sh    sh -c true\n"
        );
    }
}
