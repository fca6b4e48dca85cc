//! The recommender's error type: everything that makes a command give up (bad input files, bad
//! arguments). Things that only make one object or one flow unusable are *notes*, not errors.

use std::path::PathBuf;

/// Why a command could not do its work. Every variant names the input it is about, so that the
/// one-line `error: ...` the CLI prints is enough to find and fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file that is not valid YAML/JSON, with the position the parser stopped at.
    #[error("{}:{line}:{column}: not valid {format}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        /// 1-based; 0 when the parser gave no position.
        line: usize,
        column: usize,
        format: &'static str,
        message: String,
    },
    /// A document that parses but is not a usable Kubernetes object: no `kind`, or an object of a
    /// kind we read that k8s-openapi rejects (a missing required field, a wrong type, ...).
    #[error("{}: {location}: {kind} {name}: {message}", path.display())]
    Object {
        path: PathBuf,
        /// `document N` (1-based), plus `item M` (0-based, as in `items[M]`) inside a List.
        location: String,
        kind: String,
        /// `namespace/name`, `name`, or `(unnamed)`.
        name: String,
        message: String,
    },
    /// A FlowRecord file that does not parse (the error names the file, line and column).
    #[error(transparent)]
    Flows(#[from] flow_model::ReadError),
    /// A command-line value that makes no sense (`--from nosuch/pod`, `--port 0`, ...).
    #[error("{0}")]
    BadInput(String),
    /// Policies to judge with that the API server would reject.
    #[error(transparent)]
    InvalidPolicies(#[from] crate::policy::InvalidPolicies),
    /// The service or its store could not do what was asked (store in use, server unreachable,
    /// address taken, ...); the message names what.
    #[error("{0}")]
    Service(String),
}
