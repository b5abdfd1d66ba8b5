//! The SQL analyzer: a PostgreSQL lexer, a structural analysis of one query (statement
//! kinds, tables and functions, injection findings with a confidence each), and query shapes
//! (normalised fingerprints) with a verdict cache and per-service novelty.
//!
//! The pipeline calls `Analyzer::judge` on the hot path (a shape already judged costs a hash
//! lookup after one lexing pass) and `Analyzer::analyze` when it needs the full facts.

pub mod analyze;
pub mod lexer;
pub mod shape;

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod sqlmap;

pub use analyze::{
    Analysis, Analyzer, Finding, FindingKind, FindingKinds, Judgement, StatementKind, Verdict,
    INJECTION_SCORE,
};
pub use lexer::{tokenize, LexLimits, Lexed, StringKind, Token, TokenKind};
pub use shape::{
    shape_of, ServiceShapes, ServiceShapesConfig, Shape, ShapeCache, ShapeHash, ShapeNovelty,
    SqlNames,
};
