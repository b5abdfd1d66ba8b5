//! Aligned text tables for people. The last column is never padded (it is usually the long
//! one: arguments, details).

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
        self.rows.push(cells);
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
