//! sqlmap against the scenario web app, judged statement by statement: every statement the
//! server logged during one sqlmap run is classified as carrying sqlmap's injection (a value
//! that broke out of one of the app's templates) or as the app's normal SQL, and each is
//! run through the analyzer (the verdict the `sql-injection` rule acts on).

use std::collections::HashSet;

use rasp_common::hold::precheck;
use serde_json::Value;

use super::{
    analyze::Analyzer,
    corpus::{files_in, stays_plain, Plain},
    lexer::{LexLimits, Token, TokenKind},
    tokenize,
};

/// The injectable endpoints of the web app in `tests/scenarios/sql_drivers.rs`: the query
/// each sends with the request's `name` pasted raw at `{}`.
const APP_TEMPLATES: &[(&str, &str)] = &[
    (
        "/item",
        "SELECT id, name, price FROM items WHERE name = '{}'",
    ),
    ("/byid", "SELECT id, name, price FROM items WHERE id = {}"),
    (
        "/search",
        "SELECT id, name FROM items WHERE (name LIKE '%{}%') ORDER BY id",
    ),
    ("/sorted", "SELECT id, name, price FROM items ORDER BY {}"),
    (
        "/visit",
        "INSERT INTO visits (who, at) VALUES ('{}', now())",
    ),
];

/// One logged statement: its text and whether the server answered it with an error.
struct Logged {
    text: String,
    error: bool,
}

/// Statements from a PostgreSQL `jsonlog` file (`log_statement=all`), in order. A statement
/// that failed is followed by an ERROR record carrying it; one PostgreSQL's parser rejected
/// is not logged as a statement at all, only by its ERROR record (the application sent it
/// all the same).
fn statements(log: &str, what: &str) -> Vec<Logged> {
    let mut out: Vec<Logged> = Vec::new();
    for (n, line) in log.lines().enumerate() {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{what}:{}: not a jsonlog record: {e}", n + 1));
        let message = record["message"].as_str().unwrap_or_default();
        match record["error_severity"].as_str() {
            Some("LOG") => {
                if let Some(text) = message.strip_prefix("statement: ") {
                    out.push(Logged {
                        text: text.to_string(),
                        error: false,
                    });
                }
            }
            Some("ERROR") => {
                let Some(failed) = record["statement"].as_str() else {
                    continue;
                };
                match out.last_mut() {
                    Some(last) if last.text == failed && !last.error => last.error = true,
                    _ => out.push(Logged {
                        text: failed.to_string(),
                        error: true,
                    }),
                }
            }
            _ => {}
        }
    }
    out
}

/// The endpoint whose template `text` was built from, and whether its value broke out.
fn from_template(text: &str) -> Option<(&'static str, bool)> {
    APP_TEMPLATES.iter().find_map(|(endpoint, template)| {
        let (prefix, suffix) = template.split_once("{}")?;
        let fits = text.len() >= prefix.len() + suffix.len()
            && text.starts_with(prefix)
            && text.ends_with(suffix);
        fits.then(|| (*endpoint, broke_out(template, text)))
    })
}

/// Whether the value pasted into `template` changed the query's structure. Besides what
/// `stays_plain` accepts, a value in an unquoted slot that reads as a typed literal (`name'||...||'` in an
/// unquoted slot is the constant `name '...'`) or as one keyword used as a name (`name`)
/// changed nothing.
fn broke_out(template: &str, text: &str) -> bool {
    if stays_plain(template, text) != Plain::No {
        return false;
    }
    let (prefix, suffix) = template.split_once("{}").unwrap_or((template, ""));
    // Those readings are for a value pasted outside quotes only.
    let lexed_prefix = tokenize(prefix, LexLimits::default());
    if lexed_prefix.tokens.last().is_some_and(|t| t.unterminated) {
        return true;
    }
    let value = tokenize(
        &text[prefix.len()..text.len() - suffix.len()],
        LexLimits::default(),
    );
    let word = |t: &Token<'_>| matches!(t.kind, TokenKind::Keyword | TokenKind::Ident);
    let typed_literal = |t: &[Token<'_>]| {
        t.len() == 2
            && word(&t[0])
            && matches!(t[1].kind, TokenKind::String(_))
            && !t[1].unterminated
    };
    !(value.tokens.len() == 1 && word(&value.tokens[0]) || typed_literal(&value.tokens))
}

/// Per-run counts.
#[derive(Default)]
struct Run {
    statements: usize,
    normal: usize,
    /// Normal statements built from a template whose value stayed a literal (sqlmap's
    /// payloads with the wrong boundary, or plain values).
    literal: usize,
    normal_flagged: usize,
    injected: usize,
    injected_detected: usize,
    /// Injected statements the server executed without an error.
    executed: usize,
    executed_detected: usize,
    /// 1-based position among the run's statements of the first detection, and how many
    /// injected statements reached the server before it.
    first_detection: Option<(usize, usize)>,
    /// Detected injected statements the kernel's hold pre-check flags (what an enforcing
    /// rule could stop before it leaves), and normal statements it flags (held, then let go).
    held: usize,
    normal_held: usize,
}

/// Statement logs of sqlmap runs, read from `RASP_SQLMAP_LOGS` (a directory of `*.json`
/// files, each the PostgreSQL `jsonlog` lines of one run). Prints, per run and in total,
/// recall over injected statements (all, and those the server executed), false positives
/// among the app's normal statements, whether and how early each run was detected, and
/// every distinct miss. Asserts that every run was detected and no normal statement was
/// flagged.
///
/// How the logs were made (`sudo tests/sqlmap/run.sh OUT` does all of it, then
/// `RASP_SQLMAP_LOGS=OUT/logs cargo test --release -p rasp-agent --lib detect::sql::sqlmap --
/// --ignored --nocapture`): PostgreSQL 15 from Debian (`initdb -A trust -U postgres`;
/// `pg_ctl -o "-k OUT -c listen_addresses='' -c log_statement=all -c statement_timeout=20s
/// -c logging_collector=on -c log_destination=jsonlog ..."`), the tables `items` and
/// `visits` as `sql_drivers.rs` creates them, its `APP` on psycopg2-binary (`python app.py
/// psycopg2 OUT cert.pem key.pem`), and Debian's sqlmap 1.7.2, one log per run, each run
/// `sqlmap -u "https://127.0.0.1:PORT/ENDPOINT" -p name --batch --flush-session
/// --disable-precon ARGS` where ENDPOINT is `item?name=apple`, `byid?name=1`,
/// `search?name=app`, `sorted?name=name` or `visit?name=bob`, and ARGS is one of
/// - `--technique=X --level 5 --risk 3` for X in B, E, U, S, T, Q (every endpoint);
/// - `--technique=BEUSTQ --level 5 --risk 3 --banner --current-user --dbs --tables --dump
///   -T items` and `--technique=S --os-cmd id` (`/item`);
/// - `--technique=BEUSTQ --level 5 --risk 3 --tamper=T` for T in
///   `between,space2comment,charencode,randomcase`, `space2dash,greatest,substring2leftright`,
///   `randomcomments,symboliclogical,equaltolike,space2randomblank`,
///   `between,commalesslimit,if2case,least,space2plus,unionalltounion` (`/item`);
/// - `--technique=BEUSTQ --level 5 --risk 3` against `/safe?name=apple` (parameterized:
///   every payload stays a literal, every statement is normal).
#[test]
#[ignore]
fn sqlmap_statement_logs() {
    let (dir, files) = files_in(
        "RASP_SQLMAP_LOGS",
        "json",
        "a directory of jsonlog files, one per sqlmap run",
    );
    let analyzer = Analyzer::default();
    let mut total = Run::default();
    let mut misses: HashSet<String> = HashSet::new();
    let mut false_positives: HashSet<String> = HashSet::new();
    let mut undetected_runs: Vec<String> = Vec::new();
    for path in files {
        let name = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let mut run = Run::default();
        for (n, s) in statements(&log, &name).iter().enumerate() {
            run.statements += 1;
            let a = analyzer.analyze(&s.text, false);
            let detected = a.is_injection();
            match from_template(&s.text) {
                None | Some((_, false)) => {
                    run.normal += 1;
                    run.normal_held += usize::from(precheck(s.text.as_bytes()) != 0);
                    run.literal += usize::from(from_template(&s.text).is_some());
                    run.normal_flagged += usize::from(detected);
                    if detected {
                        false_positives.insert(format!("{}\n    {:?}", s.text, a.findings));
                    }
                }
                Some((endpoint, true)) => {
                    run.injected += 1;
                    run.injected_detected += usize::from(detected);
                    run.held += usize::from(detected && precheck(s.text.as_bytes()) != 0);
                    if !s.error {
                        run.executed += 1;
                        run.executed_detected += usize::from(detected);
                    }
                    if !detected {
                        let how = if s.error { "rejected" } else { "executed" };
                        misses.insert(format!("[{endpoint} {how}] {}", s.text));
                    }
                }
            }
            if detected && run.first_detection.is_none() {
                run.first_detection = Some((n + 1, run.injected));
            }
        }
        let recall = |hit: usize, all: usize| hit as f64 / all.max(1) as f64;
        println!(
            "{name}: {} statements; injected {} detected {} (recall {:.3}), executed {} detected {} ({:.3}); normal {} ({} literal values) flagged {}; first detection: {}",
            run.statements,
            run.injected,
            run.injected_detected,
            recall(run.injected_detected, run.injected),
            run.executed,
            run.executed_detected,
            recall(run.executed_detected, run.executed),
            run.normal,
            run.literal,
            run.normal_flagged,
            match run.first_detection {
                Some((at, injected)) => format!("statement {at} (injected statement {injected})"),
                None => "none".to_string(),
            }
        );
        if run.injected > 0 && run.first_detection.is_none() {
            undetected_runs.push(name);
        }
        total.statements += run.statements;
        total.normal += run.normal;
        total.literal += run.literal;
        total.normal_flagged += run.normal_flagged;
        total.injected += run.injected;
        total.injected_detected += run.injected_detected;
        total.executed += run.executed;
        total.executed_detected += run.executed_detected;
        total.held += run.held;
        total.normal_held += run.normal_held;
    }
    let mut misses: Vec<_> = misses.into_iter().collect();
    misses.sort();
    for m in &misses {
        println!("missed: {m}");
    }
    for f in &false_positives {
        println!("false positive: {f}");
    }
    println!(
        "all runs: {} statements; injected {}, recall {:.4} ({} distinct misses); executed {}, recall {:.4}; normal {} ({} literal values), flagged {}",
        total.statements,
        total.injected,
        total.injected_detected as f64 / total.injected.max(1) as f64,
        misses.len(),
        total.executed,
        total.executed_detected as f64 / total.executed.max(1) as f64,
        total.normal,
        total.literal,
        total.normal_flagged
    );
    println!(
        "hold pre-check: {} of {} detected injected statements held ({:.4}); {} of {} normal held ({:.2}%)",
        total.held,
        total.injected_detected,
        total.held as f64 / total.injected_detected.max(1) as f64,
        total.normal_held,
        total.normal,
        total.normal_held as f64 * 100.0 / total.normal.max(1) as f64
    );
    assert!(total.injected > 0, "no injected statement in {dir}");
    assert!(
        undetected_runs.is_empty(),
        "runs never detected: {undetected_runs:?}"
    );
    assert_eq!(total.normal_flagged, 0, "normal statements flagged");
}
