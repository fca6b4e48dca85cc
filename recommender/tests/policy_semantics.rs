//! NetworkPolicy semantics, one table row per rule of the networking.k8s.io/v1 API reference
//! (NetworkPolicySpec, NetworkPolicyEgressRule/IngressRule, NetworkPolicyPeer, LabelSelector) and
//! of https://kubernetes.io/docs/concepts/services-networking/network-policies/ ("concepts").
//! Ports, protocols and ipBlock are in `policy_ports_ipblock.rs`.

mod policy_support;

use policy_support::*;

/// Ingress rules only, no policyTypes.
const WEB_INGRESS_ONLY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: worker}}}]
"#;

/// Egress rules, no policyTypes.
const WEB_EGRESS_TO_10_8: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8}}]
"#;

/// `egress: []` without policyTypes: defaulting looks at len(egress) != 0, so Ingress only.
const SHOP_EMPTY_EGRESS_LIST: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: empty-egress, namespace: shop}
spec:
  podSelector: {}
  egress: []
"#;

/// No rules, no policyTypes: defaults to [Ingress], i.e. deny all ingress.
const SHOP_BARE_POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bare, namespace: shop}
spec:
  podSelector: {}
"#;

/// policyTypes [Ingress] given explicitly: the egress section is ignored.
const SHOP_INGRESS_TYPE_WITH_EGRESS_RULES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ingress-typed, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8}}]
"#;

const SHOP_BOTH_TYPES_INGRESS_OPEN: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: both, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{}]
"#;

/// One rule, `{}`: no `to`, no `ports`.
const WEB_EGRESS_EMPTY_RULE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{}]
"#;

const WEB_EGRESS_EMPTY_TO_PORT_443: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: []
    ports: [{port: 443}]
"#;

/// One peer with both selectors: AND.
const WEB_EGRESS_AND_PEER: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {team: obs}}
      podSelector: {matchLabels: {app: prometheus}}
"#;

/// The same selectors as two peers: OR.
const WEB_EGRESS_OR_PEERS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {team: obs}}
    - podSelector: {matchLabels: {app: prometheus}}
"#;

const WEB_EGRESS_POSTGRES_BY_POD_ONLY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: postgres}}}]
"#;

const WEB_EGRESS_OWN_NAMESPACE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {}}]
"#;

const WEB_EGRESS_ALL_NAMESPACES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}}]
"#;

const WEB_EGRESS_NS_DB_BY_NAME: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: db}}}]
"#;

const WEB_EGRESS_EXPRESSIONS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector:
        matchExpressions:
        - {key: app, operator: NotIn, values: [worker, prometheus]}
        - {key: restricted, operator: DoesNotExist}
  - to:
    - namespaceSelector:
        matchExpressions: [{key: team, operator: Exists}]
      podSelector:
        matchExpressions: [{key: app, operator: In, values: [grafana, alertmanager]}]
"#;

/// Isolates, for egress, every pod of `shop` that is not app=web (including pods with no `app`).
const SHOP_DENY_EGRESS_EXCEPT_WEB: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-non-web, namespace: shop}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: NotIn, values: [web]}]
  policyTypes: [Egress]
"#;

const DB_DENY_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-all, namespace: db}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"#;

/// In namespace db, selecting app=web: there are no such pods in db.
const DB_POLICY_SELECTING_WEB_LABELS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-lookalike, namespace: db}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
"#;

const WEB_EGRESS_HTTPS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-https, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.18.0.0/15}}]
    ports: [{port: 443}]
"#;

const WEB_EGRESS_HTTP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-http, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.18.0.0/15}}]
    ports: [{port: 80}]
"#;

const DB_INGRESS_FROM_SHOP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: postgres-ingress, namespace: db}
spec:
  podSelector: {matchLabels: {app: postgres}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}}]
    ports: [{port: 5432}]
"#;

const DB_INGRESS_POD_ONLY_PEER: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: postgres-ingress, namespace: db}
spec:
  podSelector: {matchLabels: {app: postgres}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
"#;

const WEB_EGRESS_TO_DB_5432: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: db}}
      podSelector: {matchLabels: {app: postgres}}
    ports: [{port: 5432, protocol: TCP}]
"#;

const EVERY_NAMESPACE_DENY_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: db}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

#[test]
#[rustfmt::skip] // one row per line: this is a table
fn policy_types_defaulting() {
    run_table(vec![
        // spec.policyTypes: "all policies ... are assumed to affect ingress"; egress only if it
        // contains an egress section: an ingress-only policy leaves egress open.
        row("ingress-only policy does not isolate egress", &[WEB_INGRESS_ONLY], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        // ... and it does isolate ingress (default [Ingress]).
        row("ingress-only policy isolates ingress", &[WEB_INGRESS_ONLY], shop_bare(), web(), 80, TCP, DENY),
        row("ingress-only policy allows its peer", &[WEB_INGRESS_ONLY], worker(), web(), 80, TCP, ALLOW),
        // "policies that contain an egress section are assumed to affect egress".
        row("egress rules without policyTypes isolate egress", &[WEB_EGRESS_TO_10_8], web(), ext("198.18.0.10"), 443, TCP, DENY),
        row("egress rules without policyTypes still allow their peers", &[WEB_EGRESS_TO_10_8], web(), ext("10.1.2.3"), 443, TCP, ALLOW),
        // "if you want to write a policy that specifies that no egress is allowed, you must specify
        // a policyTypes value that includes Egress": [Egress] with no rules denies all egress.
        row("policyTypes [Egress] without rules denies all egress", &[SHOP_DENY_ALL_EGRESS], web(), ext("198.18.0.10"), 443, TCP, DENY),
        row("policyTypes [Egress] denies pod-to-pod egress too", &[SHOP_DENY_ALL_EGRESS], web(), worker(), 8080, TCP, DENY),
        // ... and leaves ingress alone.
        row("policyTypes [Egress] does not isolate ingress", &[SHOP_DENY_ALL_EGRESS], ext("198.18.0.10"), web(), 80, TCP, ALLOW),
        // The defaulting is len(spec.egress) != 0: an empty egress list is no egress section.
        row("egress: [] without policyTypes does not isolate egress", &[SHOP_EMPTY_EGRESS_LIST], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        // ingress: "If this field is empty then this NetworkPolicy does not allow any traffic".
        row("rule-less policy without policyTypes denies ingress", &[SHOP_BARE_POLICY], ext("198.18.0.10"), web(), 80, TCP, DENY),
        row("rule-less policy without policyTypes leaves egress", &[SHOP_BARE_POLICY], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        // Explicit policyTypes are taken as given: egress rules of an [Ingress] policy do nothing.
        row("egress rules of a policyTypes [Ingress] policy are ignored", &[SHOP_INGRESS_TYPE_WITH_EGRESS_RULES], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        row("[Ingress, Egress] without egress rules denies egress", &[SHOP_BOTH_TYPES_INGRESS_OPEN], web(), ext("198.18.0.10"), 443, TCP, DENY),
        row("[Ingress, Egress] with ingress: [{}] allows all ingress", &[SHOP_BOTH_TYPES_INGRESS_OPEN], ext("198.18.0.10"), web(), 80, TCP, ALLOW),
    ]);
}

#[test]
#[rustfmt::skip] // one row per line: this is a table
fn empty_versus_absent_peers_and_ports() {
    run_table(vec![
        // EgressRule.to / .ports: "If this field is empty or missing, this rule matches all
        // destinations" / "all ports": `- {}` allows everything, outside the cluster included.
        row("rule {} allows any destination outside the cluster", &[WEB_EGRESS_EMPTY_RULE], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        row("rule {} allows any pod, any protocol", &[WEB_EGRESS_EMPTY_RULE], web(), postgres(), 9999, SCTP, ALLOW),
        row("to: [] with ports allows the port to anywhere", &[WEB_EGRESS_EMPTY_TO_PORT_443], web(), ext("2001:db8::1"), 443, TCP, ALLOW),
        row("to: [] with ports still restricts the port", &[WEB_EGRESS_EMPTY_TO_PORT_443], web(), ext("198.18.0.10"), 80, TCP, DENY),
        // Absent ports with peers: all ports and protocols to those peers.
        row("absent ports allow every port and protocol to the peers", &[WEB_EGRESS_TO_10_8], web(), ext("10.9.9.9"), 9999, UDP, ALLOW),
    ]);
}

#[test]
#[rustfmt::skip] // one row per line: this is a table
fn peers_and_selectors() {
    run_table(vec![
        // NetworkPolicyPeer: with both selectors, "the NetworkPolicyPeer as a whole selects the
        // pods matching podSelector in the namespaces selected by namespaceSelector" (AND).
        row("AND peer: right pod in right namespace", &[WEB_EGRESS_AND_PEER], web(), prometheus(), 9090, TCP, ALLOW),
        row("AND peer: wrong pod in right namespace", &[WEB_EGRESS_AND_PEER], web(), grafana(), 3000, TCP, DENY),
        row("AND peer: right pod in wrong namespace", &[WEB_EGRESS_AND_PEER], web(), shop_prometheus(), 9090, TCP, DENY),
        // EgressRule.to: "Items in this list are combined using a logical OR operation".
        row("OR peers: namespace peer admits any pod there", &[WEB_EGRESS_OR_PEERS], web(), grafana(), 3000, TCP, ALLOW),
        row("OR peers: pod peer admits the pod in the policy namespace", &[WEB_EGRESS_OR_PEERS], web(), shop_prometheus(), 9090, TCP, ALLOW),
        row("OR peers: neither peer", &[WEB_EGRESS_OR_PEERS], web(), postgres(), 5432, TCP, DENY),
        // podSelector alone "selects the pods matching podSelector in the policy's own namespace".
        row("podSelector-only peer does not reach another namespace", &[WEB_EGRESS_POSTGRES_BY_POD_ONLY], web(), postgres(), 5432, TCP, DENY),
        row("podSelector {} peer: every pod of the policy namespace", &[WEB_EGRESS_OWN_NAMESPACE], web(), worker(), 8080, TCP, ALLOW),
        row("podSelector {} peer: not other namespaces", &[WEB_EGRESS_OWN_NAMESPACE], web(), postgres(), 5432, TCP, DENY),
        row("pod peer never admits an address", &[WEB_EGRESS_OWN_NAMESPACE], web(), ext("10.244.1.11"), 8080, TCP, DENY),
        // namespaceSelector "if present but empty, it selects all namespaces".
        row("namespaceSelector {} admits pods in any namespace", &[WEB_EGRESS_ALL_NAMESPACES], web(), postgres(), 5432, TCP, ALLOW),
        row("namespaceSelector {} is pods only, not the outside", &[WEB_EGRESS_ALL_NAMESPACES], web(), ext("198.18.0.10"), 443, TCP, DENY),
        // kubernetes.io/metadata.name is set on every namespace by the API server.
        row("metadata.name selects that namespace", &[WEB_EGRESS_NS_DB_BY_NAME], web(), postgres(), 5432, TCP, ALLOW),
        row("metadata.name selects only that namespace", &[WEB_EGRESS_NS_DB_BY_NAME], web(), prometheus(), 9090, TCP, DENY),
        row(
            "metadata.name is implicit when the caller's namespace labels lack it",
            &[WEB_EGRESS_NS_DB_BY_NAME],
            web(),
            recommender::policy::Endpoint::Pod {
                namespace: "db".into(),
                name: "postgres-1".into(),
                labels: [("app".to_string(), "postgres".to_string())].into(),
                namespace_labels: Default::default(),
                ip: None,
                ports: vec![],
                node_ips: vec![],
            },
            5432,
            TCP,
            ALLOW,
        ),
        // LabelSelectorRequirement operators; NotIn and DoesNotExist match an absent key.
        row("NotIn matches a pod without the key", &[WEB_EGRESS_EXPRESSIONS], web(), shop_bare(), 80, TCP, ALLOW),
        row("NotIn excludes a listed value", &[WEB_EGRESS_EXPRESSIONS], web(), worker(), 80, TCP, DENY),
        row("DoesNotExist excludes a pod with the key", &[WEB_EGRESS_EXPRESSIONS], web(), restricted(), 80, TCP, DENY),
        row("Exists on namespace labels and In on pod labels", &[WEB_EGRESS_EXPRESSIONS], web(), grafana(), 3000, TCP, ALLOW),
        row("Exists fails on a namespace without the key", &[WEB_EGRESS_EXPRESSIONS], web(), postgres(), 5432, TCP, DENY),
        // The spec's podSelector uses the same semantics: NotIn selects pods lacking the key.
        row("policy podSelector NotIn isolates a pod without the key", &[SHOP_DENY_EGRESS_EXCEPT_WEB], shop_bare(), ext("198.18.0.10"), 443, TCP, DENY),
        row("policy podSelector NotIn spares the listed value", &[SHOP_DENY_EGRESS_EXCEPT_WEB], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
    ]);
}

#[test]
#[rustfmt::skip] // one row per line: this is a table
fn isolation_additivity_and_directions() {
    run_table(vec![
        // spec.podSelector "selects pods in the policy's namespace": a policy never isolates pods
        // of another namespace, whatever their labels.
        row("a policy in db does not isolate shop pods", &[DB_DENY_ALL], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        row("matching labels in another namespace do not isolate", &[DB_POLICY_SELECTING_WEB_LABELS], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        // spec.egress: allowed iff "the traffic matches at least one egress rule across all of the
        // NetworkPolicy objects whose podSelector matches the pod": additive.
        row("a deny-all does not subtract from an allow", &[WEB_EGRESS_HTTPS, SHOP_DENY_ALL_EGRESS], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        row("a second policy adds its port", &[WEB_EGRESS_HTTPS, WEB_EGRESS_HTTP], web(), ext("198.18.0.10"), 80, TCP, ALLOW),
        row("a second policy does not remove the first's port", &[WEB_EGRESS_HTTPS, WEB_EGRESS_HTTP], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        row("what neither policy allows stays denied", &[WEB_EGRESS_HTTPS, WEB_EGRESS_HTTP], web(), ext("198.18.0.10"), 22, TCP, DENY),
        // Concepts: "both the egress policy on the source pod and the ingress policy on the
        // destination pod need to allow the connection".
        row("egress open but destination ingress-isolated: denied", &[DB_DENY_ALL], web(), postgres(), 5432, TCP, DENY),
        row("destination ingress allows but source egress denies: denied", &[SHOP_DENY_ALL_EGRESS, DB_INGRESS_FROM_SHOP], web(), postgres(), 5432, TCP, DENY),
        row("both directions allow: allowed", &[WEB_EGRESS_TO_DB_5432, DB_INGRESS_FROM_SHOP], web(), postgres(), 5432, TCP, ALLOW),
        row("ingress allows only its ports", &[WEB_EGRESS_TO_DB_5432, DB_INGRESS_FROM_SHOP], web(), postgres(), 5433, TCP, DENY),
        row("ingress podSelector-only peer means the destination's namespace", &[DB_INGRESS_POD_ONLY_PEER], web(), postgres(), 5432, TCP, DENY),
        // An address end (outside, node, hostNetwork) is not a pod: no policy isolates it, so only
        // the pod end's direction counts.
        row("address source: only the pod's ingress counts", &[SHOP_DENY_ALL_EGRESS], ext("198.18.0.10"), web(), 80, TCP, ALLOW),
        row("address destination is never ingress-isolated", &[EVERY_NAMESPACE_DENY_INGRESS], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        row("address to address: nothing applies", &[WEB_EGRESS_HTTPS, SHOP_DENY_ALL_EGRESS], ext("198.18.0.1"), ext("198.18.0.10"), 22, TCP, ALLOW),
        row("address source into an isolated pod", &[DB_INGRESS_FROM_SHOP], ext("10.244.1.10"), postgres(), 5432, TCP, DENY),
    ]);
}

#[test]
#[rustfmt::skip] // one row per line: this is a table
fn default_deny_egress_with_dns() {
    run_table(vec![
        // The egress guide's baseline: DNS to kube-dns over UDP and TCP, nothing else.
        row("DNS over UDP to cluster DNS", &[SHOP_DENY_EGRESS_ALLOW_DNS], web(), coredns(), 53, UDP, ALLOW),
        row("DNS over TCP to cluster DNS", &[SHOP_DENY_EGRESS_ALLOW_DNS], web(), coredns(), 53, TCP, ALLOW),
        row("other ports of the DNS pods", &[SHOP_DENY_EGRESS_ALLOW_DNS], web(), coredns(), 9153, TCP, DENY),
        row("DNS to an outside resolver", &[SHOP_DENY_EGRESS_ALLOW_DNS], web(), ext("198.18.0.53"), 53, UDP, DENY),
        row("anything else", &[SHOP_DENY_EGRESS_ALLOW_DNS], web(), ext("198.18.0.10"), 443, TCP, DENY),
        row("with an app policy added, its traffic", &[SHOP_DENY_EGRESS_ALLOW_DNS, WEB_EGRESS_HTTPS], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        row("with an app policy added, DNS still", &[SHOP_DENY_EGRESS_ALLOW_DNS, WEB_EGRESS_HTTPS], web(), coredns(), 53, UDP, ALLOW),
        row("the app policy adds nothing for other pods", &[SHOP_DENY_EGRESS_ALLOW_DNS, WEB_EGRESS_HTTPS], worker(), ext("198.18.0.10"), 443, TCP, DENY),
    ]);
}
