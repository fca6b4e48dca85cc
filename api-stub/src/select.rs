//! `fieldSelector` and `labelSelector` query parameters, matched against stored objects.

use serde_json::Value;

use crate::status::{bad_request, ApiError};

#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Both selectors of one request; an empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    fields: Vec<Requirement>,
    labels: Vec<Requirement>,
}

impl Selector {
    pub fn parse(field: Option<&str>, label: Option<&str>) -> Result<Selector, ApiError> {
        let mut selector = Selector::default();
        for term in split_terms(field.unwrap_or("")) {
            selector.fields.push(parse_field(term)?);
        }
        for term in split_terms(label.unwrap_or("")) {
            selector.labels.push(parse_label(term)?);
        }
        Ok(selector)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let field_ok = self.fields.iter().all(|r| match r {
            Requirement::Equals(path, want) => field_value(object, path) == *want,
            Requirement::NotEquals(path, want) => field_value(object, path) != *want,
            _ => true,
        });
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        field_ok
            && self.labels.iter().all(|r| match r {
                Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
                Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
                Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
                Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
                Requirement::Exists(k) => label(k).is_some(),
                Requirement::NotExists(k) => label(k).is_none(),
            })
    }
}

/// Splits on commas outside parentheses (`a in (x,y),b=c`).
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(s[start..].trim());
    terms.into_iter().filter(|t| !t.is_empty()).collect()
}

fn parse_field(term: &str) -> Result<Requirement, ApiError> {
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    Err(bad_request(format!("invalid field selector term {term:?}")))
}

fn parse_label(term: &str) -> Result<Requirement, ApiError> {
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    for (op, notin) in [(" notin ", true), (" in ", false)] {
        if let Some((k, set)) = term.split_once(op) {
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| bad_request(format!("invalid label selector set {set:?}")))?;
            let values = inner.split(',').map(|v| v.trim().to_string()).collect();
            let key = k.trim().to_string();
            return Ok(if notin {
                Requirement::NotIn(key, values)
            } else {
                Requirement::In(key, values)
            });
        }
    }
    match term.strip_prefix('!') {
        Some(k) => Ok(Requirement::NotExists(k.trim().into())),
        None => Ok(Requirement::Exists(term.into())),
    }
}

/// A field path (`spec.nodeName`, `metadata.name`) as the string the API server compares: absent
/// fields compare as the empty string.
fn field_value(object: &Value, path: &str) -> String {
    let mut at = object;
    for part in path.split('.') {
        match at.get(part) {
            Some(v) => at = v,
            None => return String::new(),
        }
    }
    match at {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_like_the_api_server() {
        let pod = json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "fe"}},
                         "spec": {"nodeName": "node-a"}});
        let ok = |f: Option<&str>, l: Option<&str>| Selector::parse(f, l).unwrap().matches(&pod);
        assert!(ok(Some("spec.nodeName=node-a"), None));
        assert!(!ok(Some("spec.nodeName=node-b"), None));
        assert!(ok(Some("spec.nodeName!=node-b,metadata.name=a"), None));
        assert!(ok(None, Some("app=web,tier in (fe,be)")));
        assert!(!ok(None, Some("app notin (web)")));
        assert!(ok(None, Some("app,!missing")));
        assert!(!ok(None, Some("missing")));
        assert!(Selector::parse(Some("nonsense"), None).is_err());
    }
}
