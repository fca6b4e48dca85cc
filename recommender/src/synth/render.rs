//! Deterministic YAML: a small block-style emitter over `serde_json::Value` that can place
//! `# ` comments above sequence items (ipBlock and pod peers), which serde_yaml cannot.
//!
//! Keys come in a fixed reading order (`apiVersion`, `kind`, `metadata`, `spec`, selector before
//! rules, ...), then alphabetically. Strings are plain when that is unambiguous and JSON-quoted
//! otherwise (a JSON string is a valid YAML double-quoted scalar), so nothing depends on a YAML
//! library's style heuristics.

use std::fmt::Write;

use serde_json::Value;

use super::document::{Document, NodeComments, Object, PathSeg, Recommendation};

/// Keys that come first, in this order; all others follow alphabetically.
const KEY_ORDER: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "podSelector",
    "endpointSelector",
    "policyTypes",
    "egress",
    "ingress",
    "to",
    "from",
    "toEndpoints",
    "fromEndpoints",
    "toEntities",
    "toFQDNs",
    "toCIDRSet",
    "namespaceSelector",
    "ipBlock",
    "cidr",
    "except",
    "ports",
    "toPorts",
    "port",
    "endPort",
    "protocol",
];

/// Maps whose keys are user data (label and annotation names).
const DATA_MAPS: &[&str] = &[
    "matchLabels",
    "labels",
    "annotations",
    "selector",
    "nodeSelector",
];

fn key_rank(key: &str) -> usize {
    KEY_ORDER
        .iter()
        .position(|k| *k == key)
        .unwrap_or(KEY_ORDER.len())
}

/// Words YAML 1.1 or 1.2 would read as something other than a string.
fn is_special_word(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "true", "false", "yes", "no", "y", "n", "on", "off", "null", "~", ".inf", ".nan",
    ];
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

/// A string scalar: plain if it is made of safe characters, does not start like a number or an
/// indicator, and is not a special word; JSON-quoted otherwise.
/// Written straight into the output: the emitter prints tens of millions of scalars at scale
/// (BENCHMARKS.md), and a `String` for each was a fifth of its time.
fn push_scalar_string(out: &mut String, s: &str) {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'/' | b'-'))
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && !is_special_word(s);
    if safe {
        out.push_str(s);
    } else {
        // A JSON string is a valid YAML double-quoted scalar.
        let quoted = serde_json::to_string(s).expect("strings serialize");
        out.push_str(&quoted);
    }
}

#[cfg(test)]
fn scalar_string(s: &str) -> String {
    let mut out = String::new();
    push_scalar_string(&mut out, s);
    out
}

/// Writes `v`, which prints on one line ([`is_inline`]: a scalar or an empty container).
fn push_scalar(out: &mut String, v: &Value) {
    debug_assert!(is_inline(v), "containers are emitted as blocks");
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => push_scalar_string(out, s),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

/// Whether `v` prints on one line.
fn is_inline(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => true,
    }
}

/// The path segment of `key`: the schema's keys borrowed from [`KEY_ORDER`], so that walking an
/// object allocates only for keys that are data (label names).
fn key_seg(key: &str, rank: usize) -> PathSeg {
    match KEY_ORDER.get(rank) {
        Some(k) => PathSeg::Key(std::borrow::Cow::Borrowed(k)),
        None => PathSeg::Key(std::borrow::Cow::Owned(key.to_owned())),
    }
}

struct Emitter<'a> {
    out: String,
    comments: &'a NodeComments,
    path: Vec<PathSeg>,
}

impl<'a> Emitter<'a> {
    fn pad(&mut self, indent: usize) {
        self.out.extend(std::iter::repeat_n(' ', indent));
    }

    /// The comment lines above the node at the current path; most documents have few.
    fn comments_at_path(&self) -> Option<&'a Vec<String>> {
        if self.comments.is_empty() {
            return None;
        }
        self.comments.get(&self.path)
    }

    /// Emits the entries of `map` at `indent`; the first one continues the current line when
    /// `inline_first` (after `- `).
    fn map(&mut self, map: &serde_json::Map<String, Value>, indent: usize, inline_first: bool) {
        // Label and annotation keys are data, not schema: plain alphabetical order, or a label
        // named `kind` would jump ahead of `app`.
        let data =
            matches!(self.path.last(), Some(PathSeg::Key(k)) if DATA_MAPS.contains(&k.as_ref()));
        let mut entries: Vec<(usize, &String, &Value)> = map
            .iter()
            .map(|(k, v)| (if data { KEY_ORDER.len() } else { key_rank(k) }, k, v))
            .collect();
        entries.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (i, (rank, key, value)) in entries.into_iter().enumerate() {
            if i > 0 || !inline_first {
                self.pad(indent);
            }
            push_scalar_string(&mut self.out, key);
            self.out.push(':');
            self.path.push(key_seg(key, rank));
            self.value(value, indent);
            self.path.pop();
        }
    }

    /// Emits `value` after `key:` at `indent`.
    fn value(&mut self, value: &Value, indent: usize) {
        if is_inline(value) {
            self.out.push(' ');
            push_scalar(&mut self.out, value);
            self.out.push('\n');
            return;
        }
        self.out.push('\n');
        match value {
            Value::Object(m) => self.map(m, indent + 2, false),
            // Sequences sit at their key's indentation, as kubectl prints them.
            Value::Array(a) => self.seq(a, indent),
            _ => unreachable!("scalars handled above"),
        }
    }

    fn seq(&mut self, items: &[Value], indent: usize) {
        for (i, item) in items.iter().enumerate() {
            self.path.push(PathSeg::Index(i));
            if let Some(lines) = self.comments_at_path() {
                for line in lines {
                    self.pad(indent);
                    let _ = writeln!(self.out, "# {}", line.replace('\n', " "));
                }
            }
            self.pad(indent);
            self.out.push_str("- ");
            match item {
                Value::Object(m) if !m.is_empty() => self.map(m, indent + 2, true),
                Value::Array(a) if !a.is_empty() => {
                    self.out.push('\n');
                    self.seq(a, indent + 2);
                }
                other => {
                    push_scalar(&mut self.out, other);
                    self.out.push('\n');
                }
            }
            self.path.pop();
        }
    }
}

/// One document, starting with `---`, at the end of `out`, which the emitter grows in place.
fn push_document(out: &mut String, doc: &Document) {
    let value = match &doc.object {
        Object::NetworkPolicy(np) => serde_json::to_value(np),
        Object::Cilium(cnp) => serde_json::to_value(cnp),
    }
    .expect("policy objects serialize");
    let mut e = Emitter {
        out: std::mem::take(out),
        comments: &doc.node_comments,
        path: Vec::new(),
    };
    e.out.push_str("---\n");
    for line in &doc.comments {
        let _ = writeln!(e.out, "# {}", line.replace('\n', " "));
    }
    match &value {
        Value::Object(m) => e.map(m, 0, false),
        _ => unreachable!("policies are objects"),
    }
    *out = e.out;
}

/// The whole recommendation as multi-document YAML: notes as leading comments, then one document
/// per policy.
pub fn render(rec: &Recommendation) -> String {
    let mut out = String::from("# Generated by egress-recommender from observed egress flows.\n");
    for warning in &rec.warnings {
        let _ = writeln!(out, "# warning: {}", warning.replace('\n', " "));
    }
    for note in &rec.notes {
        let _ = writeln!(out, "# {}", note.replace('\n', " "));
    }
    if rec.documents.is_empty() {
        out.push_str("# No policies.\n");
    }
    for doc in &rec.documents {
        push_document(&mut out, doc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_strings_are_quoted() {
        assert_eq!(scalar_string("web"), "web");
        assert_eq!(
            scalar_string("app.kubernetes.io/name"),
            "app.kubernetes.io/name"
        );
        assert_eq!(scalar_string("true"), "\"true\"");
        assert_eq!(scalar_string("No"), "\"No\"");
        assert_eq!(scalar_string("10.0.0.0/8"), "\"10.0.0.0/8\"");
        assert_eq!(
            scalar_string("2026-11-26T16:00:00Z"),
            "\"2026-11-26T16:00:00Z\""
        );
        assert_eq!(scalar_string("*"), "\"*\"");
        assert_eq!(scalar_string(""), "\"\"");
        assert_eq!(scalar_string("a: b"), "\"a: b\"");
        assert_eq!(
            scalar_string("k8s:io.kubernetes.pod.namespace"),
            "\"k8s:io.kubernetes.pod.namespace\""
        );
    }

    #[test]
    fn emits_block_yaml_with_comments_that_parses_back() {
        let value: Value = serde_json::json!({
            "kind": "X",
            "apiVersion": "v1",
            "spec": {"egress": [{"to": [{"ipBlock": {"cidr": "1.2.3.4/32"}, "podSelector": {"matchLabels": {"kind": "x", "app": "z"}}}], "ports": [{"port": 443, "protocol": "TCP"}]}],
                     "podSelector": {}, "policyTypes": ["Egress"], "list": [[1, 2], []]},
        });
        let mut comments = NodeComments::new();
        comments.insert(
            vec![
                PathSeg::Key("spec".into()),
                PathSeg::Key("egress".into()),
                PathSeg::Index(0),
                PathSeg::Key("to".into()),
                PathSeg::Index(0),
            ],
            vec!["api.example.test".into()],
        );
        let mut e = Emitter {
            out: String::new(),
            comments: &comments,
            path: Vec::new(),
        };
        e.map(value.as_object().unwrap(), 0, false);
        let expected = "apiVersion: v1
kind: X
spec:
  podSelector: {}
  policyTypes:
  - Egress
  egress:
  - to:
    # api.example.test
    - podSelector:
        matchLabels:
          app: z
          kind: x
      ipBlock:
        cidr: \"1.2.3.4/32\"
    ports:
    - port: 443
      protocol: TCP
  list:
  - 
    - 1
    - 2
  - []
";
        assert_eq!(e.out, expected);
        let back: Value = serde_yaml::from_str(&e.out).unwrap();
        assert_eq!(back, value);
    }
}
