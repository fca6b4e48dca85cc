//! Shared fixtures for the policy table tests: a small cluster of pods, policies from YAML
//! manifests, and a table runner that reports every failing row at once.

#![allow(dead_code)] // each test binary uses a different part of the fixtures

use std::net::IpAddr;

use flow_model::Protocol;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use recommender::policy::{Connection, Endpoint, PolicySet};

pub use flow_model::Protocol::{Sctp as SCTP, Tcp as TCP, Udp as UDP};

pub const ALLOW: bool = true;
pub const DENY: bool = false;

/// Parses multi-document YAML (`---` separated NetworkPolicy manifests).
pub fn policies(yaml: &str) -> Vec<NetworkPolicy> {
    yaml.split("\n---")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("bad manifest: {e}\n{doc}")))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn ext(s: &str) -> Endpoint {
    Endpoint::Ip(ip(s))
}

// The cluster. Namespaces: shop (team=shop), db (tier=data), monitoring (team=obs), kube-system.

pub fn web() -> Endpoint {
    Endpoint::pod("shop", "web", [("app", "web")])
        .with_ip(ip("10.244.1.10"))
        .with_namespace_label("team", "shop")
}

pub fn worker() -> Endpoint {
    Endpoint::pod("shop", "worker", [("app", "worker")])
        .with_ip(ip("10.244.1.11"))
        .with_namespace_label("team", "shop")
}

/// A pod in `shop` labelled like the one in `monitoring`, to tell namespaces apart.
pub fn shop_prometheus() -> Endpoint {
    Endpoint::pod("shop", "prometheus", [("app", "prometheus")])
        .with_ip(ip("10.244.1.12"))
        .with_namespace_label("team", "shop")
}

/// A pod with no labels at all, to exercise absent keys.
pub fn shop_bare() -> Endpoint {
    Endpoint::pod("shop", "bare", [] as [(&str, &str); 0])
        .with_ip(ip("10.244.1.13"))
        .with_namespace_label("team", "shop")
}

pub fn restricted() -> Endpoint {
    Endpoint::pod(
        "shop",
        "restricted",
        [("app", "batch"), ("restricted", "true")],
    )
    .with_ip(ip("10.244.1.14"))
    .with_namespace_label("team", "shop")
}

/// `db` named port 5432.
pub fn postgres() -> Endpoint {
    Endpoint::pod("db", "postgres-0", [("app", "postgres")])
        .with_ip(ip("10.244.2.20"))
        .with_namespace_label("tier", "data")
        .with_port("db", 5432, TCP)
}

/// The same port name `db`, mapped to 6432.
pub fn postgres_alt() -> Endpoint {
    Endpoint::pod("db", "pgbouncer-0", [("app", "postgres")])
        .with_ip(ip("10.244.2.21"))
        .with_namespace_label("tier", "data")
        .with_port("db", 6432, TCP)
}

/// A pod whose IP the caller does not know.
pub fn postgres_no_ip() -> Endpoint {
    Endpoint::pod("db", "postgres-9", [("app", "postgres")])
        .with_namespace_label("tier", "data")
        .with_port("db", 5432, TCP)
}

pub fn prometheus() -> Endpoint {
    Endpoint::pod("monitoring", "prometheus", [("app", "prometheus")])
        .with_ip(ip("10.244.3.30"))
        .with_namespace_label("team", "obs")
}

pub fn grafana() -> Endpoint {
    Endpoint::pod("monitoring", "grafana", [("app", "grafana")])
        .with_ip(ip("10.244.3.31"))
        .with_namespace_label("team", "obs")
}

/// Cluster DNS: named ports `dns` (UDP 53) and `dns-tcp` (TCP 53), as CoreDNS ships them.
pub fn coredns() -> Endpoint {
    Endpoint::pod("kube-system", "coredns", [("k8s-app", "kube-dns")])
        .with_ip(ip("10.244.0.10"))
        .with_port("dns", 53, UDP)
        .with_port("dns-tcp", 53, TCP)
        .with_port("metrics", 9153, TCP)
}

/// One semantic point: these policies, this connection, this answer.
pub struct Row {
    pub what: &'static str,
    /// Manifests; each may hold several `---` separated documents.
    pub policies: Vec<&'static str>,
    pub from: Endpoint,
    pub to: Endpoint,
    pub port: u16,
    pub protocol: Protocol,
    pub allowed: bool,
}

pub fn row(
    what: &'static str,
    policies: &[&'static str],
    from: Endpoint,
    to: Endpoint,
    port: u16,
    protocol: Protocol,
    allowed: bool,
) -> Row {
    Row {
        what,
        policies: policies.to_vec(),
        from,
        to,
        port,
        protocol,
        allowed,
    }
}

/// Runs every row, checks that the policies are valid, that `allows`, `evaluate` and the free
/// function agree, and that the answer does not depend on the order of the policies. Panics
/// listing all failing rows.
pub fn run_table(rows: Vec<Row>) -> usize {
    let mut failures = Vec::new();
    let n = rows.len();
    for r in rows {
        let mut list: Vec<_> = r.policies.iter().flat_map(|p| policies(p)).collect();
        let conn = Connection::new(r.from, r.to, r.port, r.protocol);
        let set = PolicySet::new(&list);
        if !set.problems().is_empty() {
            failures.push(format!("{}: policy problems {:?}", r.what, set.problems()));
        }
        let verdict = set.evaluate(&conn);
        if verdict.allowed != r.allowed {
            failures.push(format!(
                "{}: expected {}, got `{verdict}`",
                r.what, r.allowed
            ));
        }
        if set.allows(&conn) != verdict.allowed {
            failures.push(format!("{}: allows() disagrees with evaluate()", r.what));
        }
        let first_word = verdict.to_string();
        let expected_word = if r.allowed { "allowed" } else { "denied" };
        if first_word.split(':').next() != Some(expected_word) && verdict.allowed == r.allowed {
            failures.push(format!("{}: message `{first_word}`", r.what));
        }
        list.reverse();
        if recommender::policy::evaluate(&list, &conn) != verdict {
            failures.push(format!("{}: verdict depends on policy order", r.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    n
}
