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
    matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "y" | "n" | "on" | "off" | "null" | "~" | ".inf" | ".nan"
    )
}

/// A string scalar: plain if it is made of safe characters, does not start like a number or an
/// indicator, and is not a special word; JSON-quoted otherwise.
fn scalar_string(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && !is_special_word(s);
    if safe {
        s.to_owned()
    } else {
        serde_json::to_string(s).expect("strings serialize")
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("null".to_owned()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(scalar_string(s)),
        Value::Array(a) if a.is_empty() => Some("[]".to_owned()),
        Value::Object(o) if o.is_empty() => Some("{}".to_owned()),
        _ => None,
    }
}

struct Emitter<'a> {
    out: String,
    comments: &'a NodeComments,
    path: Vec<PathSeg>,
}

impl Emitter<'_> {
    fn pad(&mut self, indent: usize) {
        self.out.extend(std::iter::repeat_n(' ', indent));
    }

    /// Emits the entries of `map` at `indent`; the first one continues the current line when
    /// `inline_first` (after `- `).
    fn map(&mut self, map: &serde_json::Map<String, Value>, indent: usize, inline_first: bool) {
        let mut keys: Vec<&String> = map.keys().collect();
        // Label and annotation keys are data, not schema: plain alphabetical order, or a label
        // named `kind` would jump ahead of `app`.
        let data =
            matches!(self.path.last(), Some(PathSeg::Key(k)) if DATA_MAPS.contains(&k.as_ref()));
        if data {
            keys.sort();
        } else {
            keys.sort_by(|a, b| (key_rank(a), a.as_str()).cmp(&(key_rank(b), b.as_str())));
        }
        for (i, key) in keys.into_iter().enumerate() {
            if i > 0 || !inline_first {
                self.pad(indent);
            }
            let value = &map[key];
            let _ = write!(self.out, "{}:", scalar_string(key));
            self.path
                .push(PathSeg::Key(std::borrow::Cow::Owned(key.clone())));
            self.value(value, indent);
            self.path.pop();
        }
    }

    /// Emits `value` after `key:` at `indent`.
    fn value(&mut self, value: &Value, indent: usize) {
        if let Some(s) = scalar(value) {
            let _ = writeln!(self.out, " {s}");
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
            if let Some(lines) = self.comments.get(&self.path) {
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
                    let s = scalar(other).expect("non-empty containers handled above");
                    let _ = writeln!(self.out, "{s}");
                }
            }
            self.path.pop();
        }
    }
}

/// One document, starting with `---`.
pub fn render_document(doc: &Document) -> String {
    let value = match &doc.object {
        Object::NetworkPolicy(np) => serde_json::to_value(np),
        Object::Cilium(cnp) => serde_json::to_value(cnp),
    }
    .expect("policy objects serialize");
    let mut e = Emitter {
        out: String::from("---\n"),
        comments: &doc.node_comments,
        path: Vec::new(),
    };
    for line in &doc.comments {
        let _ = writeln!(e.out, "# {}", line.replace('\n', " "));
    }
    match &value {
        Value::Object(m) => e.map(m, 0, false),
        _ => unreachable!("policies are objects"),
    }
    e.out
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
        out.push_str(&render_document(doc));
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
