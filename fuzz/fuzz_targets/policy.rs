//! The `policy validate` path: YAML (several documents, any bytes) → schema → set-wide
//! checks → kernel-capacity check → pre-filter compilation → summaries. Never a panic, a
//! stack overflow (nesting is bounded before the recursive loader) or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rasp_agent::policy::{self, active::PolicySet, compile};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Two files: the second half of the input is a second file of the same set, so the
    // set-wide checks (duplicate names across files) run too.
    let split = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    let (a, b) = text.split_at(split);
    for files in [
        vec![("a.yaml", text.as_ref())],
        vec![("a.yaml", a), ("b.yaml", b)],
    ] {
        match policy::parse_files(&files) {
            Ok(policies) => {
                assert!(compile::capacity_errors(&policies).is_empty());
                let _ = compile::interest(&policies);
                let _ = PolicySet::offline(policies, "fuzz".into()).summary();
            }
            Err(errors) => {
                assert!(!errors.is_empty());
                for e in errors {
                    let _ = e.to_string();
                }
            }
        }
    }
});
