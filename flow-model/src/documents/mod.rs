//! Bounded reading of the JSON and YAML files the tools are given: the recommender's cluster
//! snapshots and policy files, and the agent's pods file. Every such file goes through [`parse`],
//! so that all of them have the same limits and the same error positions.
//!
//! - A UTF-8 byte-order mark at the start is not part of the text.
//! - Text whose first character is `{` or `[` is JSON (one value or several in a row); anything
//!   else is YAML, possibly several documents separated by `---`. serde_json names JSON errors
//!   more precisely than a YAML parser would.
//! - Nesting deeper than [`MAX_DEPTH`] is refused before the parser builds anything, at the line
//!   and column where it goes too deep (see `scan` for why the parser's own limit comes too late).
//! - YAML aliases may expand a file to at most [`alias_budget`] nodes ("billion laughs" is
//!   refused at the alias that crosses it).
//!
//! Every error names the source, line and column.

mod scan;

use serde::Deserialize;
use serde_json::Value;

/// Deepest nesting of collections accepted, in JSON and YAML alike. serde_json stops at 128 on
/// its own; Kubernetes objects, CRD schemas included, stay far below.
pub const MAX_DEPTH: usize = 128;

/// Nodes a file may hold once YAML aliases are expanded: its size in bytes (no file writes more
/// nodes than it has bytes) plus 100,000, so that an alias may repeat a block a few times but
/// never multiply the file.
pub fn alias_budget(text_len: usize) -> u64 {
    100_000 + text_len as u64
}

/// The syntax a file was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Yaml => "YAML",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One document of a file: its 1-based number in the file, and its value. Empty documents (a
/// trailing `---`, a file of comments) are not returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub number: usize,
    pub value: Value,
}

/// A file that could not be read as documents.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}:{column}: not valid {format}: {problem}")]
pub struct DocumentError {
    pub source_name: String,
    /// 1-based; 0 only when the parser gave no position and none could be found.
    pub line: usize,
    pub column: usize,
    pub format: Format,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Syntax(String),
    #[error("nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("alias *{alias} expands the file past {limit} nodes (aliases that repeat aliases, \"billion laughs\"?)")]
    AliasExpansion { alias: String, limit: u64 },
}

/// The documents of a file's text. `source_name` names the file in errors.
pub fn parse(text: &str, source_name: &str) -> Result<(Format, Vec<Document>), DocumentError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if matches!(text.trim_start().chars().next(), Some('{' | '[')) {
        parse_json(text, source_name).map(|docs| (Format::Json, docs))
    } else {
        parse_yaml(text, source_name).map(|docs| (Format::Yaml, docs))
    }
}

fn parse_json(text: &str, source_name: &str) -> Result<Vec<Document>, DocumentError> {
    let mut documents = Vec::new();
    // serde_json refuses nesting past 128 as it reads, at once: no pre-scan needed.
    for (index, value) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let value = value.map_err(|e| DocumentError {
            source_name: source_name.to_owned(),
            line: e.line(),
            column: e.column(),
            format: Format::Json,
            problem: syntax(&e.to_string()),
        })?;
        if !value.is_null() {
            documents.push(Document {
                number: index + 1,
                value,
            });
        }
    }
    Ok(documents)
}

fn parse_yaml(text: &str, source_name: &str) -> Result<Vec<Document>, DocumentError> {
    let error = |line, column, problem| DocumentError {
        source_name: source_name.to_owned(),
        line,
        column,
        format: Format::Yaml,
        problem,
    };
    let scanned = scan::scan(text, MAX_DEPTH, alias_budget(text.len())).map_err(|refusal| {
        let problem = match refusal.reason {
            scan::Reason::TooDeep { limit } => Problem::TooDeep { limit },
            scan::Reason::Expansion { alias, limit } => Problem::AliasExpansion { alias, limit },
        };
        error(refusal.line, refusal.column, problem)
    })?;
    let mut documents = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|e| {
            let message = e.to_string();
            match e.location() {
                Some(at) => error(at.line(), at.column(), syntax(&message)),
                // The parser's alias limit carries no position: the first alias is where the
                // expansion starts.
                None => {
                    let (line, column) = scanned.first_alias.unwrap_or((0, 0));
                    error(line, column, syntax(&message))
                }
            }
        })?;
        if !value.is_null() {
            documents.push(Document {
                number: index + 1,
                value,
            });
        }
    }
    Ok(documents)
}

fn syntax(message: &str) -> Problem {
    if message.starts_with("recursion limit exceeded") {
        Problem::TooDeep { limit: MAX_DEPTH }
    } else {
        Problem::Syntax(message.to_owned())
    }
}

#[cfg(test)]
mod tests;
