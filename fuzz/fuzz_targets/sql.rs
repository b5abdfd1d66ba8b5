//! `detect::sql`: the PostgreSQL lexer, the injection analysis and query shapes, on any
//! text (the libpq uprobe hands over whatever the application sends).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rasp_agent::detect::sql::{shape_of, tokenize, Analyzer, LexLimits};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lexed = tokenize(&text, LexLimits::default());
    let _ = shape_of(&lexed.tokens);
    let analyzer = Analyzer::new(LexLimits::default());
    let _ = analyzer.analyze(&text, false);
    let _ = analyzer.analyze(&text, true);
});
