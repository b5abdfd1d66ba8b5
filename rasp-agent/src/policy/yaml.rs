//! A small positioned YAML tree: maps, sequences and scalars, each with the line and column
//! where it starts, built from yaml-rust2's event parser. The typed conversion in `schema`
//! reads this tree so every complaint can point at the exact key or value.

use std::collections::HashMap;

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::{Marker, TScalarStyle},
};

/// Expanding aliases past this many nodes is refused (the "billion laughs" file).
const MAX_ALIAS_NODES: usize = 10_000;

/// 1-based line and column (in characters), and the byte offset into the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
    pub index: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        Pos {
            line: m.line(),
            col: m.col() + 1,
            index: m.index(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Null,
    Scalar {
        text: String,
        /// Unquoted: YAML gives it a type (number, boolean); quoted text is always a string.
        plain: bool,
        /// Where the text starts in the source, when the source holds it verbatim: lets a
        /// complaint about one character of a value point at that character.
        verbatim: Option<Pos>,
    },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

#[derive(Clone, Debug, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    /// How a value is described in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "nothing".into(),
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a map".into(),
            Kind::Scalar { text, plain, .. } => {
                let shown = if text.chars().count() > 40 {
                    format!("{}…", text.chars().take(40).collect::<String>())
                } else {
                    text.clone()
                };
                if !plain {
                    format!("string {shown:?}")
                } else if parse_int(text).is_some() || text.parse::<f64>().is_ok() {
                    format!("number {shown}")
                } else if parse_bool(text).is_some() {
                    format!("boolean {shown}")
                } else {
                    format!("string {shown:?}")
                }
            }
        }
    }

    /// Position of character `offset` of this scalar's text, when the source has the text
    /// verbatim; otherwise the start of the value.
    pub fn pos_at(&self, offset: usize) -> Pos {
        match &self.kind {
            Kind::Scalar {
                verbatim: Some(p), ..
            } => Pos {
                line: p.line,
                col: p.col + offset,
                index: p.index,
            },
            _ => self.pos,
        }
    }
}

/// YAML 1.2 core-schema integers (decimal, 0x, 0o), as i64.
pub fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, Pos)>,
    },
}

struct Builder<'t> {
    text: &'t str,
    stack: Vec<Frame>,
    docs: Vec<Node>,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
    errors: Vec<YamlError>,
}

/// Parse every document of `text`. Documents complete before a syntax error are returned
/// along with that error, so their own problems can be reported too.
pub fn parse(text: &str) -> (Vec<Node>, Vec<YamlError>) {
    let mut b = Builder {
        text,
        stack: Vec::new(),
        docs: Vec::new(),
        anchors: HashMap::new(),
        alias_nodes: 0,
        errors: Vec::new(),
    };
    if let Some(e) = too_deep(text) {
        b.errors.push(e);
        return (b.docs, b.errors);
    }
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut b, true) {
        let pos = Pos::from_marker(e.marker());
        b.errors.push(YamlError {
            pos,
            message: syntax_message(e.info(), text, pos),
        });
    }
    (b.docs, b.errors)
}

/// Deeper nesting than any policy needs (policies nest four or five levels). The YAML
/// loader recurses once per level, so a hostile file (`- - - … x`, 100 KB of it) would
/// overflow the stack and kill the process before anything could be reported.
const MAX_DEPTH: usize = 64;

/// Walks the document's events without building anything (the event stream itself is
/// produced iteratively) and reports where nesting passes `MAX_DEPTH`. Syntax errors are
/// left to the real parse, which explains them.
fn too_deep(text: &str) -> Option<YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let (event, marker) = parser.next_token().ok()?;
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(YamlError {
                        pos: Pos::from_marker(&marker),
                        message: format!(
                            "lists and maps nested deeper than {MAX_DEPTH} levels; no policy needs that: flatten it"
                        ),
                    });
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::StreamEnd => return None,
            _ => {}
        }
    }
}

fn syntax_message(info: &str, text: &str, pos: Pos) -> String {
    let at = text.get(pos.index..).and_then(|s| s.chars().next());
    let hint = if info.contains("unknown anchor") {
        "a value that starts with `*` is a YAML alias: put globs that start with `*` in quotes, e.g. \"*/nginx\""
    } else if info.contains("tab") || at == Some('\t') {
        "YAML does not allow tabs for indentation: indent with spaces"
    } else if info.contains("mapping values are not allowed") {
        "check this line's indentation, or quote a value that contains `: `"
    } else if info.contains("did not find expected key") {
        "check the indentation: every key of a map must start in the same column"
    } else if info.contains("found character that cannot start any token") {
        "quote values that start with `@`, `` ` ``, `%` or `|`"
    } else if info.contains("quoted scalar") {
        "close the quote"
    } else if info.contains("flow sequence") || info.contains("flow mapping") {
        "close the `[` or `{` list, and quote globs that contain `[`, `]`, `{`, `}` or `,`"
    } else {
        "check the YAML syntax here"
    };
    format!("YAML syntax error: {info}; {hint}")
}

impl Builder<'_> {
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    let key_text = match &node.kind {
                        Kind::Scalar { text, .. } => Some(text.clone()),
                        Kind::Null => Some(String::new()),
                        _ => None,
                    };
                    match key_text {
                        Some(k) => *key = Some((k, node.pos)),
                        None => {
                            self.errors.push(YamlError {
                                pos: node.pos,
                                message: format!(
                                    "a key must be plain text, found {}; write `name: value`",
                                    node.describe()
                                ),
                            });
                            *key = Some(("\u{0}".into(), node.pos));
                        }
                    }
                }
                Some((k, key_pos)) => entries.push(Entry {
                    key: k,
                    key_pos,
                    value: node,
                }),
            },
        }
    }

    fn verbatim(&self, text: &str, style: TScalarStyle, pos: Pos) -> Option<Pos> {
        let skip = match style {
            TScalarStyle::Plain => 0,
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => 1,
            _ => return None,
        };
        let src = self.text.get(pos.index..)?;
        let body = src.get(skip..)?;
        (!text.contains('\n') && body.starts_with(text)).then_some(Pos {
            line: pos.line,
            col: pos.col + skip,
            index: pos.index + skip,
        })
    }
}

fn size(node: &Node) -> usize {
    1 + match &node.kind {
        Kind::Seq(items) => items.iter().map(size).sum(),
        Kind::Map(entries) => entries.iter().map(|e| size(&e.value)).sum(),
        _ => 0,
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(&mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let tagged_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let plain = style == TScalarStyle::Plain && !tagged_str;
                let kind = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Kind::Null
                } else {
                    let verbatim = self.verbatim(&text, style, pos);
                    Kind::Scalar {
                        text,
                        plain,
                        verbatim,
                    }
                };
                self.finish(Node { pos, kind }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                pos,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                pos,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd => {
                if let Some(Frame::Seq { pos, anchor, items }) = self.stack.pop() {
                    self.finish(
                        Node {
                            pos,
                            kind: Kind::Seq(items),
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
                    for e in entries {
                        if let Some(first) = kept.iter().find(|k| k.key == e.key) {
                            self.errors.push(YamlError {
                                pos: e.key_pos,
                                message: format!(
                                    "duplicate key `{}` (first at line {}, column {}); keep one of them",
                                    e.key, first.key_pos.line, first.key_pos.col
                                ),
                            });
                        } else {
                            kept.push(e);
                        }
                    }
                    // yaml-rust2 marks a block map after its first key: the first key is
                    // where a reader sees the map start.
                    let pos = kept.first().map(|e| e.key_pos).unwrap_or(pos).min(pos);
                    self.finish(
                        Node {
                            pos,
                            kind: Kind::Map(kept),
                        },
                        anchor,
                    );
                }
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) if self.alias_nodes + size(n) <= MAX_ALIAS_NODES => {
                        self.alias_nodes += size(n);
                        Node {
                            pos,
                            kind: n.kind.clone(),
                        }
                    }
                    _ => {
                        self.errors.push(YamlError {
                            pos,
                            message: format!(
                                "aliases expand to more than {MAX_ALIAS_NODES} values; write the lists out"
                            ),
                        });
                        Node {
                            pos,
                            kind: Kind::Null,
                        }
                    }
                };
                self.finish(node, 0);
            }
            Event::DocumentStart => {
                self.anchors.clear();
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 KB of `- - - … x` overflowed the stack in the loader (issue 22): now an error at
    /// the line where nesting passes the bound, and the process lives.
    #[test]
    fn hostile_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}x\n", "- ".repeat(50_000));
        let (docs, errors) = parse(&deep);
        assert!(docs.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].pos.line, 1);
        assert!(
            errors[0].message.contains("nested deeper than 64"),
            "{errors:?}"
        );
        let flow = format!("a: {}1{}\n", "[".repeat(10_000), "]".repeat(10_000));
        // Flow nesting: the YAML scanner's own recursion limit answers first; an error either way.
        let (docs, errors) = parse(&flow);
        assert!(docs.is_empty());
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("nested deeper")
                    || e.message.contains("recursion limit")),
            "{errors:?}"
        );
        // Real policies nest a handful of levels and are untouched.
        let ok = format!("a: {}1{}\n", "[".repeat(20), "]".repeat(20));
        let (docs, errors) = parse(&ok);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 1);
    }

    fn map(n: &Node) -> &[Entry] {
        match &n.kind {
            Kind::Map(e) => e,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn positions_are_one_based_and_maps_start_at_their_first_key() {
        let (docs, errors) = parse("name: x\nrules:\n  - id: \"a\"\n    n: 3\n---\nname: y\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 2);
        let top = map(&docs[0]);
        assert_eq!((top[0].key_pos.line, top[0].key_pos.col), (1, 1));
        assert_eq!((top[0].value.pos.line, top[0].value.pos.col), (1, 7));
        let Kind::Seq(rules) = &top[1].value.kind else {
            panic!()
        };
        assert_eq!((rules[0].pos.line, rules[0].pos.col), (3, 5));
        let rule = map(&rules[0]);
        assert_eq!((rule[0].value.pos.line, rule[0].value.pos.col), (3, 9));
        // The quoted value's text starts after the quote.
        assert_eq!(rule[0].value.pos_at(0).col, 10);
        assert!(matches!(
            &rule[1].value.kind,
            Kind::Scalar { plain: true, .. }
        ));
        assert_eq!((docs[1].pos.line, docs[1].pos.col), (6, 1));
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_have_positions() {
        let (_, errors) = parse("a: 1\nb: 2\na: 3\n");
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].pos.line, errors[0].pos.col), (3, 1));
        assert!(errors[0]
            .message
            .contains("duplicate key `a` (first at line 1, column 1)"));

        let (docs, errors) = parse("a: 1\n---\nexe: [*/nginx]\n");
        assert_eq!(docs.len(), 1, "the complete first document is kept");
        assert_eq!((errors[0].pos.line, errors[0].pos.col), (3, 7));
        assert!(
            errors[0].message.contains("in quotes"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn aliases_expand_with_a_bound() {
        let (docs, errors) = parse("a: &x [1, 2]\nb: *x\n");
        assert!(errors.is_empty());
        assert_eq!(map(&docs[0])[1].value.kind, map(&docs[0])[0].value.kind);
        let mut bomb = String::from("a: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (_, errors) = parse(&bomb);
        assert!(errors.iter().any(|e| e.message.contains("aliases expand")));
    }

    #[test]
    fn nulls_tags_and_descriptions() {
        let (docs, _) = parse("a:\nb: ~\nc: !!str 3\nd: '3'\ne: 3\nf: yes\n");
        let m = map(&docs[0]);
        assert_eq!(m[0].value.kind, Kind::Null);
        assert_eq!(m[1].value.kind, Kind::Null);
        assert_eq!(m[2].value.describe(), "string \"3\"");
        assert_eq!(m[3].value.describe(), "string \"3\"");
        assert_eq!(m[4].value.describe(), "number 3");
        assert_eq!(m[5].value.describe(), "string \"yes\"");
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(parse_int("3.5"), None);
    }
}
