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

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

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

/// A `matchExpressions` operator.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    /// The operator the API spells `name` (case matters, as in the API).
    pub fn parse(name: &str) -> Option<Operator> {
        match name {
            "In" => Some(Operator::In),
            "NotIn" => Some(Operator::NotIn),
            "Exists" => Some(Operator::Exists),
            "DoesNotExist" => Some(Operator::DoesNotExist),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }

    /// `In` and `NotIn` need values, `Exists` and `DoesNotExist` take none.
    fn needs_values(self) -> bool {
        matches!(self, Operator::In | Operator::NotIn)
    }
}

/// One `matchExpressions` entry (valid: values present exactly when the operator needs them).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and unique in a [`PodSelector`]; empty for `Exists`/`DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &impl Labels) -> bool {
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
    pub fn compile(
        selector: &LabelSelector,
        context: &dyn std::fmt::Display,
        problems: &mut Vec<String>,
    ) -> Self {
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
            match requirement(expr) {
                Ok(r) => requirements.push(r),
                Err(why) => {
                    problems.push(format!("{context}: {why} (the selector matches nothing)"));
                    invalid = true;
                }
            }
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

/// One `matchExpressions` entry, checked as the API server checks it.
fn requirement(expr: &LabelSelectorRequirement) -> Result<Requirement, String> {
    let Some(operator) = Operator::parse(&expr.operator) else {
        return Err(format!(
            "unknown matchExpressions operator {:?} for key {:?}",
            expr.operator, expr.key
        ));
    };
    let values = expr.values.clone().unwrap_or_default();
    if operator.needs_values() == values.is_empty() {
        return Err(format!(
            "operator {} for key {:?} {}",
            expr.operator,
            expr.key,
            if operator.needs_values() {
                "needs values"
            } else {
                "takes no values"
            }
        ));
    }
    Ok(Requirement {
        key: expr.key.clone(),
        operator,
        values,
    })
}

/// The pods a policy selects, as a value: `matchLabels` and `matchExpressions` together, the way a
/// workload's own `spec.selector` says them, so that a policy selects exactly that workload's
/// pods (a Deployment selecting `app=api, track In (stable)` does not open its canary twin).
///
/// Normalised on construction (expressions sorted, values sorted and unique) so that equal
/// selectors compare, hash and serialize equal: it is part of the learned edges the store keeps.
/// Serialized as the API writes a `LabelSelector` (`matchLabels`, `matchExpressions`).
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct PodSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl PodSelector {
    /// A selector of `matchLabels` only.
    pub fn labels(labels: BTreeMap<String, String>) -> PodSelector {
        PodSelector {
            match_labels: labels,
            match_expressions: Vec::new(),
        }
    }

    /// `selector` as a value; `Err` names what the API server would have rejected.
    pub fn from_label_selector(selector: &LabelSelector) -> Result<PodSelector, String> {
        let mut match_expressions = selector
            .match_expressions
            .iter()
            .flatten()
            .map(requirement)
            .collect::<Result<Vec<_>, _>>()?;
        for r in &mut match_expressions {
            r.values.sort();
            r.values.dedup();
        }
        match_expressions.sort();
        match_expressions.dedup();
        Ok(PodSelector {
            match_labels: selector.match_labels.clone().unwrap_or_default(),
            match_expressions,
        })
    }

    /// As the API's `LabelSelector` (absent parts left out; `{}` when empty).
    pub fn to_label_selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: (!self.match_labels.is_empty()).then(|| self.match_labels.clone()),
            match_expressions: (!self.match_expressions.is_empty()).then(|| {
                self.match_expressions
                    .iter()
                    .map(|r| LabelSelectorRequirement {
                        key: r.key.clone(),
                        operator: r.operator.as_str().to_owned(),
                        values: (!r.values.is_empty()).then(|| r.values.clone()),
                    })
                    .collect()
            }),
        }
    }

    /// `{}`: selects every pod of a namespace.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether pods labelled `labels` are selected (the API's semantics, see the module doc).
    pub fn matches(&self, labels: &impl Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.label(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// `app=api, track In (stable)`, for comments and messages.
    pub fn describe(&self) -> String {
        let labels = self.match_labels.iter().map(|(k, v)| format!("{k}={v}"));
        let expressions = self.match_expressions.iter().map(|r| match r.operator {
            Operator::In | Operator::NotIn => {
                format!(
                    "{} {} ({})",
                    r.key,
                    r.operator.as_str(),
                    r.values.join(", ")
                )
            }
            Operator::Exists => r.key.clone(),
            Operator::DoesNotExist => format!("!{}", r.key),
        });
        let parts: Vec<String> = labels.chain(expressions).collect();
        if parts.is_empty() {
            "{}".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

impl From<BTreeMap<String, String>> for PodSelector {
    fn from(labels: BTreeMap<String, String>) -> PodSelector {
        PodSelector::labels(labels)
    }
}

/// Convenience for one-off matching: compiles and matches, ignoring problems (an invalid selector
/// matches nothing).
pub fn selector_matches(selector: &LabelSelector, labels: &impl Labels) -> bool {
    Selector::compile(selector, &"", &mut Vec::new()).matches(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(yaml: &str) -> Selector {
        let s: LabelSelector = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let compiled = Selector::compile(&s, &"test", &mut problems);
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
            let compiled = Selector::compile(&s, &"p", &mut problems);
            assert_eq!(problems.len(), 1, "{yaml}");
            assert!(!compiled.matches(&labels(&[("env", "a")])), "{yaml}");
            assert!(!compiled.matches(&labels(&[])), "{yaml}");
        }
    }

    #[test]
    fn pod_selectors_keep_expressions_normalise_and_round_trip() {
        let written: LabelSelector = serde_yaml::from_str(
            "matchLabels: {app: api}\nmatchExpressions: [{key: track, operator: In, values: [stable, beta, stable]}, {key: env, operator: Exists}]",
        )
        .unwrap();
        let s = PodSelector::from_label_selector(&written).unwrap();
        assert_eq!(s.match_expressions[0].key, "env");
        assert_eq!(s.match_expressions[1].values, ["beta", "stable"]);
        assert_eq!(s.describe(), "app=api, env, track In (beta, stable)");
        assert!(s.matches(&labels(&[("app", "api"), ("track", "beta"), ("env", "")])));
        assert!(!s.matches(&labels(&[("app", "api"), ("track", "canary"), ("env", "")])));
        assert!(!s.matches(&labels(&[("app", "api"), ("track", "beta")])));
        // The compiled form agrees with the value on what it selects.
        let compiled = Selector::compile(&s.to_label_selector(), &"t", &mut Vec::new());
        for l in [
            labels(&[("app", "api"), ("track", "beta"), ("env", "")]),
            labels(&[("app", "api"), ("track", "canary"), ("env", "")]),
        ] {
            assert_eq!(compiled.matches(&l), s.matches(&l));
        }
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["matchLabels"]["app"], "api");
        assert_eq!(
            json["matchExpressions"][0],
            serde_json::json!({"key": "env", "operator": "Exists"})
        );
        assert_eq!(serde_json::from_value::<PodSelector>(json).unwrap(), s);
        let bad: LabelSelector =
            serde_yaml::from_str("matchExpressions: [{key: a, operator: Equals, values: [x]}]")
                .unwrap();
        assert!(PodSelector::from_label_selector(&bad)
            .unwrap_err()
            .contains("Equals"));
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
