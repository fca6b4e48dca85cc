//! Label selectors (`metav1.LabelSelector`), compiled once and matched without allocating.
//!
//! Semantics (API reference, LabelSelector / LabelSelectorRequirement):
//! - `matchLabels` and `matchExpressions` are ANDed; a `matchLabels` entry is an `In` with one value;
//! - `In`: the key is present and its value is one of `values`;
//! - `NotIn`: the key is absent, or its value is none of `values`;
//! - `Exists` / `DoesNotExist`: the key is present / absent (values must be empty);
//! - an empty selector (`{}`) matches everything. (A *null* selector matches nothing in general, but
//!   NetworkPolicy gives every optional selector its own meaning, so callers decide what absence means.)
//!
//! A selector the API server would reject (unknown operator, `In`/`NotIn` without values,
//! `Exists`/`DoesNotExist` with values) compiles to one that matches nothing, and the problem is
//! reported to the caller: an evaluator must not guess what an invalid policy meant.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The label every namespace carries (set by the API server since Kubernetes 1.21, immutable).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Read access to a set of labels, so that a namespace's implicit name label needs no copy.
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// A namespace's labels plus the `kubernetes.io/metadata.name` label the API server always sets,
/// even when the caller's copy of the namespace lacks it (e.g. a namespace no snapshot file defines).
pub struct NamespaceLabels<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl Labels for NamespaceLabels<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        if key == NAMESPACE_NAME_LABEL {
            // The API server overwrites any other value, so the name is authoritative.
            return Some(self.name);
        }
        self.labels.label(key)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &impl Labels) -> bool {
        let value = labels.label(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.iter().any(|w| w == v)),
            // An absent key satisfies NotIn: it has none of the listed values.
            Operator::NotIn => value.is_none_or(|v| self.values.iter().all(|w| w != v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A compiled label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// ANDed; empty means "everything".
    requirements: Vec<Requirement>,
    /// Set when the selector is invalid: it then matches nothing.
    invalid: bool,
}

impl Selector {
    /// The empty selector `{}`: matches everything.
    pub fn everything() -> Self {
        Selector {
            requirements: Vec::new(),
            invalid: false,
        }
    }

    /// Compiles `selector`; problems (which make it match nothing) are appended to `problems`,
    /// each prefixed with `context`.
    pub fn compile(selector: &LabelSelector, context: &str, problems: &mut Vec<String>) -> Self {
        let mut requirements = Vec::new();
        let mut invalid = false;
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement {
                key: key.clone(),
                operator: Operator::In,
                values: vec![value.clone()],
            });
        }
        for expr in selector.match_expressions.iter().flatten() {
            let values = expr.values.clone().unwrap_or_default();
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    problems.push(format!(
                        "{context}: unknown matchExpressions operator {other:?} for key {:?} \
                         (the selector matches nothing)",
                        expr.key
                    ));
                    invalid = true;
                    continue;
                }
            };
            let needs_values = matches!(operator, Operator::In | Operator::NotIn);
            if needs_values == values.is_empty() {
                problems.push(format!(
                    "{context}: operator {} for key {:?} {} (the selector matches nothing)",
                    expr.operator,
                    expr.key,
                    if needs_values {
                        "needs values"
                    } else {
                        "takes no values"
                    }
                ));
                invalid = true;
                continue;
            }
            requirements.push(Requirement {
                key: expr.key.clone(),
                operator,
                values,
            });
        }
        Selector {
            requirements,
            invalid,
        }
    }

    /// Whether this selector is `{}` (matches everything).
    pub fn is_everything(&self) -> bool {
        !self.invalid && self.requirements.is_empty()
    }

    /// A `(key, value)` label that every object this selector matches carries, if the selector has
    /// one (a `matchLabels` entry or a one-value `In`): lets a caller index selectors by label.
    pub fn required_label(&self) -> Option<(&str, &str)> {
        if self.invalid {
            return None;
        }
        self.requirements
            .iter()
            .find_map(|r| match (r.operator, r.values.as_slice()) {
                (Operator::In, [value]) => Some((r.key.as_str(), value.as_str())),
                _ => None,
            })
    }

    pub fn matches(&self, labels: &impl Labels) -> bool {
        !self.invalid && self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// Convenience for one-off matching: compiles and matches, ignoring problems (an invalid selector
/// matches nothing).
pub fn selector_matches(selector: &LabelSelector, labels: &impl Labels) -> bool {
    Selector::compile(selector, "", &mut Vec::new()).matches(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(yaml: &str) -> Selector {
        let s: LabelSelector = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let compiled = Selector::compile(&s, "test", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        compiled
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(sel("{}").matches(&labels(&[])));
        assert!(sel("{}").matches(&labels(&[("a", "b")])));
        assert!(sel("{}").is_everything());
        assert_eq!(sel("{}").required_label(), None);
    }

    #[test]
    fn required_label_is_a_necessary_label() {
        let s = sel("matchExpressions: [{key: a, operator: NotIn, values: [x]}, {key: b, operator: In, values: [y]}]");
        assert_eq!(s.required_label(), Some(("b", "y")));
        let s = sel("matchExpressions: [{key: b, operator: In, values: [y, z]}]");
        assert_eq!(s.required_label(), None);
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = sel(
            "matchLabels: {app: web}\nmatchExpressions: [{key: tier, operator: In, values: [a, b]}]",
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[("tier", "a")])));
    }

    #[test]
    fn operators_and_absent_keys() {
        let not_in = sel("matchExpressions: [{key: env, operator: NotIn, values: [prod]}]");
        assert!(not_in.matches(&labels(&[])), "NotIn matches an absent key");
        assert!(not_in.matches(&labels(&[("env", "dev")])));
        assert!(!not_in.matches(&labels(&[("env", "prod")])));

        let exists = sel("matchExpressions: [{key: env, operator: Exists}]");
        assert!(exists.matches(&labels(&[("env", "")])));
        assert!(!exists.matches(&labels(&[])));

        let dne = sel("matchExpressions: [{key: env, operator: DoesNotExist}]");
        assert!(
            dne.matches(&labels(&[])),
            "DoesNotExist matches an absent key"
        );
        assert!(!dne.matches(&labels(&[("env", "x")])));

        let in_ = sel("matchExpressions: [{key: env, operator: In, values: [a]}]");
        assert!(!in_.matches(&labels(&[])), "In never matches an absent key");
    }

    #[test]
    fn invalid_selectors_match_nothing_and_are_reported() {
        for yaml in [
            "matchExpressions: [{key: env, operator: Equals, values: [a]}]",
            "matchExpressions: [{key: env, operator: In}]",
            "matchExpressions: [{key: env, operator: Exists, values: [a]}]",
        ] {
            let s: LabelSelector = serde_yaml::from_str(yaml).unwrap();
            let mut problems = Vec::new();
            let compiled = Selector::compile(&s, "p", &mut problems);
            assert_eq!(problems.len(), 1, "{yaml}");
            assert!(!compiled.matches(&labels(&[("env", "a")])), "{yaml}");
            assert!(!compiled.matches(&labels(&[])), "{yaml}");
        }
    }

    #[test]
    fn namespace_name_label_is_implicit() {
        let s = sel("matchLabels: {kubernetes.io/metadata.name: shop}");
        let empty = labels(&[]);
        assert!(s.matches(&NamespaceLabels {
            name: "shop",
            labels: &empty
        }));
        // A stale or forged copy cannot override the API server's value.
        let forged = labels(&[(NAMESPACE_NAME_LABEL, "shop")]);
        assert!(!s.matches(&NamespaceLabels {
            name: "db",
            labels: &forged
        }));
    }
}
