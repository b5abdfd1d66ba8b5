//! Path globs, differentially against `globset`, on the subset where both define the same
//! language (fuzz/README.md says why each excluded form differs):
//! - the pattern is absolute (`/` first) and made of components of `[a-z0-9._-]`, `*`
//!   and `?`, or a whole-component `**` that is not the last component;
//! - the path is absolute, of `[a-z0-9._-/]`, without empty components;
//! - globset is built with `literal_separator(true)` (`*` and `?` stay in a component).
//!
//! Outside the subset only our own invariants are checked: no panic, and a literal
//! pattern matches exactly itself.
#![no_main]

use globset::GlobBuilder;
use libfuzzer_sys::fuzz_target;
use rasp_agent::policy::glob::{Glob, GlobMode};

fn comparable_pattern(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let components: Vec<&str> = rest.split('/').collect();
    let last = components.len() - 1;
    components.iter().enumerate().all(|(i, c)| {
        !c.is_empty()
            && (*c == "**" && i != last
                || !c.contains("**")
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-*?".contains(&b)
                    }))
    })
}

fn comparable_path(s: &str) -> bool {
    s.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, path) = text.split_once('\n').unwrap_or((&text, ""));
    let ours = match Glob::new(pattern, GlobMode::Path) {
        Ok(g) => g,
        Err(e) => {
            assert!(e.offset <= pattern.chars().count(), "{e:?} for {pattern:?}");
            return;
        }
    };
    let matched = ours.is_match(path);
    if let Some(lit) = ours.literal() {
        assert_eq!(matched, lit == path, "literal {lit:?} vs {path:?}");
    }
    let _ = Glob::new(pattern, GlobMode::Text).map(|g| g.is_match(path));
    if !(comparable_pattern(pattern) && comparable_path(path)) {
        return;
    }
    let theirs = GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .expect("the comparable subset is valid globset syntax")
        .compile_matcher();
    assert_eq!(
        matched,
        theirs.is_match(path),
        "pattern {pattern:?} path {path:?}: rasp says {matched}"
    );
});
