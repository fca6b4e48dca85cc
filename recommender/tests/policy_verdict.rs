//! The verdict's structure and wording, PolicySet behaviour, and invalid input.

mod policy_support;

use policy_support::*;
use recommender::policy::{
    evaluate, Connection, Direction, DirectionVerdict, Endpoint, PolicySet, Verdict,
};

const WEB_EGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.18.0.0/15}}]
    ports: [{port: 443}]
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]
    ports: [{port: 53, protocol: UDP}]
  - to:
    - podSelector: {matchLabels: {app: worker}}
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: db}}
      podSelector: {matchLabels: {app: postgres}}
    ports: [{port: 8080}, {port: 5432}]
"#;

const SHOP_DENY_ALL_EGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-all-egress, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
"#;

const DB_DENY_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: db}
spec:
  podSelector: {}
"#;

fn all(docs: &[&str]) -> Vec<k8s_openapi::api::networking::v1::NetworkPolicy> {
    docs.iter().flat_map(|d| policies(d)).collect()
}

#[test]
fn allowed_by_reports_policy_rule_peer_and_port() {
    let set = PolicySet::new(&all(&[WEB_EGRESS, SHOP_DENY_ALL_EGRESS]));
    let v = set.evaluate(&Connection::new(web(), postgres(), 5432, TCP));
    assert!(v.allowed);
    assert_eq!(
        v.egress,
        DirectionVerdict::AllowedBy {
            policy: "shop/web-egress".into(),
            rule: 2,
            peer: Some(1),
            port: Some(1),
        }
    );
    assert_eq!(v.ingress, DirectionVerdict::NotIsolated);
    assert_eq!(
        v.to_string(),
        "allowed: egress allowed by shop/web-egress rule 2 peer 1; ingress: db/postgres-0 not isolated"
    );
}

#[test]
fn denied_lists_every_isolating_policy_sorted() {
    let v = evaluate(
        &all(&[WEB_EGRESS, SHOP_DENY_ALL_EGRESS]),
        &Connection::new(web(), postgres(), 5433, TCP),
    );
    assert!(!v.allowed);
    assert_eq!(
        v.egress,
        DirectionVerdict::DeniedBy {
            policies: vec![
                "shop/default-deny-all-egress".into(),
                "shop/web-egress".into()
            ]
        }
    );
    assert_eq!(
        v.to_string(),
        "denied: egress of shop/web is isolated by shop/default-deny-all-egress, shop/web-egress \
         and no rule allows TCP 5433 to db/postgres-0; ingress: db/postgres-0 not isolated"
    );
}

#[test]
fn ingress_denial_is_explained_first() {
    let v = evaluate(
        &all(&[DB_DENY_INGRESS]),
        &Connection::new(web(), postgres(), 5432, TCP),
    );
    assert!(!v.allowed);
    assert_eq!(v.egress, DirectionVerdict::NotIsolated);
    assert_eq!(
        v.to_string(),
        "denied: ingress of db/postgres-0 is isolated by db/deny-ingress and no rule allows \
         TCP 5432 from shop/web; egress: shop/web not isolated"
    );
}

#[test]
fn both_denials_are_explained() {
    let v = evaluate(
        &all(&[SHOP_DENY_ALL_EGRESS, DB_DENY_INGRESS]),
        &Connection::new(web(), postgres(), 5432, TCP),
    );
    assert_eq!(
        v.to_string(),
        "denied: egress of shop/web is isolated by shop/default-deny-all-egress and no rule allows \
         TCP 5432 to db/postgres-0; ingress of db/postgres-0 is isolated by db/deny-ingress and no \
         rule allows TCP 5432 from shop/web"
    );
}

#[test]
fn address_ends_are_worded_as_not_pods() {
    let v = evaluate(
        &all(&[WEB_EGRESS]),
        &Connection::new(web(), ext("198.18.0.10"), 443, TCP),
    );
    assert_eq!(
        v.to_string(),
        "allowed: egress allowed by shop/web-egress rule 0 peer 0; \
         ingress: 198.18.0.10 is not a pod, never isolated"
    );
    assert_eq!(
        v.direction(Direction::Ingress),
        &DirectionVerdict::NotIsolated
    );
}

#[test]
fn rule_without_peers_has_no_peer_index() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}]}]
"#;
    let v = evaluate(
        &policies(yaml),
        &Connection::new(web(), ext("198.18.0.53"), 53, UDP),
    );
    assert_eq!(
        v.egress,
        DirectionVerdict::AllowedBy {
            policy: "shop/dns".into(),
            rule: 0,
            peer: None,
            port: Some(0)
        }
    );
    assert!(v
        .to_string()
        .starts_with("allowed: egress allowed by shop/dns rule 0;"));
}

#[test]
fn no_policies_allow_everything() {
    let v: Verdict = evaluate(&[], &Connection::new(web(), postgres(), 1, SCTP));
    assert!(v.allowed);
    assert!(v.to_string().starts_with("allowed: "));
    assert!(PolicySet::new(&[]).is_empty());
}

#[test]
fn isolating_lists_policies_of_the_pods_namespace() {
    let set = PolicySet::new(&all(&[WEB_EGRESS, SHOP_DENY_ALL_EGRESS, DB_DENY_INGRESS]));
    assert_eq!(set.len(), 3);
    assert_eq!(
        set.isolating(&web(), Direction::Egress),
        vec!["shop/default-deny-all-egress", "shop/web-egress"]
    );
    assert_eq!(
        set.isolating(&worker(), Direction::Egress),
        vec!["shop/default-deny-all-egress"]
    );
    assert!(set.isolating(&web(), Direction::Ingress).is_empty());
    assert_eq!(
        set.isolating(&postgres(), Direction::Ingress),
        vec!["db/deny-ingress"]
    );
    assert!(set
        .isolating(&ext("198.18.0.1"), Direction::Egress)
        .is_empty());
}

#[test]
fn invalid_policies_are_reported_and_match_nothing() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress, Sideways]
  egress:
  - to: [{ipBlock: {cidr: 198.18.0.0}}]
  - ports: [{port: 80, endPort: 70}]
  - ports: [{port: https, endPort: 444}]
  - to: [{podSelector: {matchExpressions: [{key: app, operator: Like, values: [web]}]}}]
  - to: [{}]
"#;
    let set = PolicySet::new(&policies(yaml));
    assert_eq!(set.problems().len(), 6, "{:#?}", set.problems());
    assert!(set.problems().iter().all(|p| p.starts_with("shop/broken")));
    // The policy still isolates (its podSelector is valid); no broken part allows anything.
    for (to, port) in [
        (ext("198.18.0.1"), 443),
        (ext("198.18.0.1"), 75),
        (worker(), 80),
    ] {
        assert!(!set.allows(&Connection::new(web(), to, port, TCP)));
    }
}

#[test]
fn duplicates_are_reported_and_both_apply() {
    let set = PolicySet::new(&all(&[SHOP_DENY_ALL_EGRESS, SHOP_DENY_ALL_EGRESS]));
    assert_eq!(set.problems().len(), 1);
    assert!(!set.allows(&Connection::new(web(), ext("198.18.0.1"), 443, TCP)));
}

#[test]
fn policy_without_namespace_lives_in_default() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec: {podSelector: {}, policyTypes: [Egress]}
"#;
    let set = PolicySet::new(&policies(yaml));
    let in_default = Endpoint::pod("default", "a", [("app", "a")]);
    assert!(!set.allows(&Connection::new(in_default, ext("198.18.0.1"), 443, TCP)));
    assert!(set.allows(&Connection::new(web(), ext("198.18.0.1"), 443, TCP)));
}

#[test]
fn endpoint_describe() {
    assert_eq!(web().describe(), "shop/web");
    assert_eq!(ext("2001:db8::1").describe(), "2001:db8::1");
    assert_eq!(web().to_string(), "shop/web");
}
