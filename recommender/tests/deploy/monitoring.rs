//! The Prometheus Operator objects (monitoring.coreos.com/v1), checked by shape: kubernetes-validate
//! has no schema for them, so the fields `deploy/` uses are declared here after the operator's API
//! reference (ServiceMonitor, Endpoint, PrometheusRule, RuleGroup, Rule), unknown fields refused,
//! and what they point at (Services, ports, metric names) is checked to exist.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use recommender::service::metrics::Metrics;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Object<Spec> {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: LabelSelector,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Endpoint {
    port: String,
    path: String,
    interval: Option<String>,
    honor_labels: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrometheusRuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleGroup {
    name: String,
    interval: Option<String>,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The operator's `Duration` pattern: `1h30m`, `30s`, `0`.
fn is_duration(text: &str) -> bool {
    if text == "0" {
        return true;
    }
    let mut rest = text;
    let mut units = ["y", "w", "d", "h", "m", "s", "ms"].iter();
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        let after = &rest[digits..];
        let unit = after
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect::<String>();
        // Units in order, each at most once.
        if !units.any(|u| *u == unit) {
            return false;
        }
        rest = &after[unit.len()..];
        any = true;
    }
    any
}

fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    assert!(selector.match_expressions.is_none());
    selector
        .match_labels
        .as_ref()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// The metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in expr.match_indices("egress_") {
        let inside_a_word = expr[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if inside_a_word {
            continue;
        }
        let name: String = expr[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

/// Every metric the recommender registers, label vectors included.
fn recommender_metrics() -> String {
    let metrics = Metrics::new();
    metrics.unexpected.with_label_values(&["ns", "w"]).inc();
    metrics
        .unexpected_connections
        .with_label_values(&["ns", "w"])
        .inc();
    metrics.render()
}

pub fn check(monitors: &[&Value], rules: &[&Value], services: &[Service]) {
    assert_eq!(monitors.len(), 1);
    let monitor: Object<ServiceMonitorSpec> =
        serde_json::from_value(monitors[0].clone()).expect("a ServiceMonitor's fields");
    assert_eq!(
        (monitor.api_version.as_str(), monitor.kind.as_str()),
        ("monitoring.coreos.com/v1", "ServiceMonitor")
    );
    assert_eq!(
        monitor.metadata.namespace.as_deref(),
        Some("egress-recommender")
    );
    // It selects both Services, and each endpoint names a port one of them has.
    let mut scraped = Vec::new();
    for service in services {
        let labels = service.metadata.labels.clone().unwrap_or_default();
        assert!(
            selects(&monitor.spec.selector, &labels),
            "{:?}",
            service.metadata.name
        );
        for port in service.spec.clone().unwrap().ports.unwrap() {
            scraped.push(port.name.unwrap());
        }
    }
    for endpoint in &monitor.spec.endpoints {
        assert!(scraped.contains(&endpoint.port), "{}", endpoint.port);
        assert_eq!(endpoint.path, "/metrics");
        assert!(endpoint.interval.as_deref().is_none_or(is_duration));
    }
    // The recommender's endpoint keeps its series' own `namespace` label (the source's).
    let recommender = monitor
        .spec
        .endpoints
        .iter()
        .find(|e| e.port == "http")
        .unwrap();
    assert_eq!(recommender.honor_labels, Some(true));

    assert_eq!(rules.len(), 1);
    let rule: Object<PrometheusRuleSpec> =
        serde_json::from_value(rules[0].clone()).expect("a PrometheusRule's fields");
    assert_eq!(
        (rule.api_version.as_str(), rule.kind.as_str()),
        ("monitoring.coreos.com/v1", "PrometheusRule")
    );
    let registered = recommender_metrics();
    let agent_metrics = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/metrics.rs"),
    )
    .unwrap();
    let mut unexpected = None;
    for group in &rule.spec.groups {
        assert!(!group.name.is_empty());
        assert!(group.interval.as_deref().is_none_or(is_duration));
        for r in &group.rules {
            assert!(r.for_.as_deref().is_none_or(is_duration), "{}", r.alert);
            assert!(r.labels.contains_key("severity"), "{}", r.alert);
            assert!(r.annotations.contains_key("summary"), "{}", r.alert);
            let names = metric_names(&r.expr);
            assert!(!names.is_empty(), "{}", r.expr);
            for name in names {
                let known = if name.starts_with("egress_recommender_") {
                    registered.contains(&format!("# TYPE {name} "))
                } else {
                    agent_metrics.contains(&format!("\"{name}\""))
                };
                assert!(known, "{}: no metric {name}", r.alert);
            }
            if r.expr
                .contains("egress_recommender_unexpected_egress_total")
            {
                unexpected = Some(r);
            }
        }
    }
    let unexpected = unexpected.expect("an alert on unexpected egress");
    // Any increase, per source workload.
    assert!(
        unexpected
            .expr
            .contains("increase(egress_recommender_unexpected_egress_total[")
            && unexpected.expr.contains("by (namespace, workload)")
            && unexpected.expr.trim_end().ends_with("> 0"),
        "{}",
        unexpected.expr
    );
}

#[test]
fn durations() {
    for ok in ["30s", "1h30m", "0", "10m", "1d12h", "500ms"] {
        assert!(is_duration(ok), "{ok}");
    }
    for bad in ["", "30", "s", "1m1h", "10 m", "1.5h"] {
        assert!(!is_duration(bad), "{bad}");
    }
}
