//! The evaluator at recommendation scale: one policy per workload (hundreds in a namespace), a
//! default-deny with DNS, and many flows. Checks that the indexed fast path (`allows`) agrees with
//! the explaining path (`evaluate`). Timing at scale is a benchmark (see BENCHMARKS.md), not a test.

use flow_model::Protocol;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use recommender::policy::{Connection, Endpoint, PolicySet};

const WORKLOADS: usize = 300;

fn policy(yaml: &str) -> NetworkPolicy {
    serde_yaml::from_str(yaml).unwrap()
}

/// What `recommend --default-deny` produces for one namespace of `WORKLOADS` workloads: w{i}
/// calls w{i+1} on 8080 and one external address on 443.
fn recommendation() -> Vec<NetworkPolicy> {
    let mut out = vec![policy(
        r#"
metadata: {name: default-deny-all-egress, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
"#,
    )];
    for i in 0..WORKLOADS {
        out.push(policy(&format!(
            r#"
metadata: {{name: w{i}-egress, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: w{i}}}}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: shop}}}}
      podSelector: {{matchLabels: {{app: w{next}}}}}
    ports: [{{port: 8080, protocol: TCP}}]
  - to: [{{ipBlock: {{cidr: 198.18.{hi}.{lo}/32}}}}]
    ports: [{{port: 443, protocol: TCP}}]
"#,
            next = (i + 1) % WORKLOADS,
            hi = i / 256,
            lo = i % 256,
        )));
    }
    out
}

fn pod(i: usize) -> Endpoint {
    Endpoint::pod(
        "shop",
        format!("w{i}-0"),
        [
            ("app", format!("w{i}")),
            ("pod-template-hash", "abc".into()),
        ],
    )
    .with_ip(format!("10.244.{}.{}", i / 256, i % 256).parse().unwrap())
}

fn dns() -> Endpoint {
    Endpoint::pod("kube-system", "coredns", [("k8s-app", "kube-dns")])
}

/// A deterministic mix of allowed and denied flows.
fn flows(n: usize) -> Vec<Connection> {
    (0..n)
        .map(|k| {
            let i = (k * 7919) % WORKLOADS;
            match k % 5 {
                0 => Connection::new(pod(i), pod((i + 1) % WORKLOADS), 8080, Protocol::Tcp),
                1 => Connection::new(pod(i), pod((i + 2) % WORKLOADS), 8080, Protocol::Tcp),
                2 => Connection::new(pod(i), dns(), 53, Protocol::Udp),
                3 => {
                    let j = if k % 2 == 0 { i } else { (i + 1) % WORKLOADS };
                    let ip = format!("198.18.{}.{}", j / 256, j % 256);
                    Connection::new(
                        pod(i),
                        Endpoint::Ip(ip.parse().unwrap()),
                        443,
                        Protocol::Tcp,
                    )
                }
                _ => Connection::new(
                    Endpoint::Ip([198, 18, 9, 9].into()),
                    pod(i),
                    80,
                    Protocol::Tcp,
                ),
            }
        })
        .collect()
}

#[test]
fn fast_path_agrees_with_explanations_at_scale() {
    let set = PolicySet::new(&recommendation());
    assert!(set.problems().is_empty());
    let mut allowed = 0;
    for conn in flows(5_000) {
        let v = set.evaluate(&conn);
        assert_eq!(set.allows(&conn), v.allowed, "{v}");
        allowed += usize::from(v.allowed);
    }
    // Kinds 0, 2, 4 and half of 3 are allowed; kind 1 and the other half of 3 are not.
    assert_eq!(allowed, 3_500);
}
