//! `NetworkPolicyPeer`: which endpoints a rule's `to` / `from` list admits.
//!
//! Semantics (API reference, NetworkPolicyPeer and IPBlock; concepts page "Behavior of to and from
//! selectors"):
//! - `podSelector` only: pods matching it in the *policy's* namespace;
//! - `namespaceSelector` only: every pod in the matching namespaces (`{}` = all namespaces);
//! - both: pods matching `podSelector` in namespaces matching `namespaceSelector` (AND inside one
//!   peer; OR across peers is the caller's job);
//! - `ipBlock` (exclusive with the other two): the address is in `cidr` and in no `except` CIDR.
//!
//! ipBlock and pod IPs: the API reference and the concepts page say ipBlock is meant for
//! cluster-external addresses and that whether it matches pod IPs is implementation-defined (pod IPs
//! are ephemeral, and traffic may be SNAT/DNATed before or after policy). Most CNIs (Calico, Cilium
//! in its default mode, kube-router, the kube-network-policies reference) do match pod IPs, so this
//! evaluator matches an ipBlock against a pod's `ip` as well as against an [`Endpoint::Ip`].
//! A pod selector never matches an [`Endpoint::Ip`]: it has no labels and is no pod.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;

use super::selectors::{NamespaceLabels, Selector};
use super::Endpoint;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Namespaces {
    /// Only the policy's own namespace (peer without `namespaceSelector`).
    Own(String),
    Matching(Selector),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PeerMatch {
    Pods {
        namespaces: Namespaces,
        /// `podSelector` absent with a `namespaceSelector` means every pod: `{}`.
        pods: Selector,
    },
    IpBlock {
        cidr: IpNet,
        except: Vec<IpNet>,
    },
    /// Rejected by API validation (no field set, ipBlock mixed with selectors, bad CIDR):
    /// matches nothing, reported as a problem.
    Invalid,
}

/// One compiled peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer(PeerMatch);

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    // Kubernetes accepts a bare address nowhere in ipBlock, but older API servers accepted host bits
    // set ("192.168.1.1/24"), meaning the enclosing network: trunc() gives that meaning.
    s.trim()
        .parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|e| format!("bad CIDR {s:?}: {e}"))
}

impl Peer {
    /// Compiles one peer of a policy in `policy_namespace`; problems are appended with `context`.
    pub fn compile(
        peer: &NetworkPolicyPeer,
        policy_namespace: &str,
        context: &dyn std::fmt::Display,
        problems: &mut Vec<String>,
    ) -> Peer {
        let invalid = |problems: &mut Vec<String>, msg: String| {
            problems.push(format!("{context}: {msg} (the peer matches nothing)"));
            Peer(PeerMatch::Invalid)
        };
        match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
            (Some(block), None, None) => {
                let cidr = match parse_cidr(&block.cidr) {
                    Ok(c) => c,
                    Err(e) => return invalid(problems, e),
                };
                let mut except = Vec::new();
                for e in block.except.iter().flatten() {
                    let n = match parse_cidr(e) {
                        Ok(n) => n,
                        Err(e) => return invalid(problems, e),
                    };
                    // Validation wants a strict subset of cidr. One that is not still subtracts
                    // exactly what it covers (never more than the block), so it is kept, and
                    // reported because the API server would have refused the policy.
                    if !(cidr.contains(&n) && n.prefix_len() > cidr.prefix_len()) {
                        problems.push(format!(
                            "{context}: except {e:?} is not a strict subset of cidr {:?}",
                            block.cidr
                        ));
                    }
                    except.push(n);
                }
                Peer(PeerMatch::IpBlock { cidr, except })
            }
            (Some(_), _, _) => invalid(
                problems,
                "ipBlock together with a pod or namespace selector".into(),
            ),
            (None, None, None) => invalid(
                problems,
                "no podSelector, namespaceSelector or ipBlock".into(),
            ),
            (None, ns, pods) => {
                let namespaces = match ns {
                    None => Namespaces::Own(policy_namespace.to_string()),
                    Some(s) => Namespaces::Matching(Selector::compile(
                        s,
                        &format_args!("{context} namespaceSelector"),
                        problems,
                    )),
                };
                let pods = match pods {
                    None => Selector::everything(),
                    Some(s) => {
                        Selector::compile(s, &format_args!("{context} podSelector"), problems)
                    }
                };
                Peer(PeerMatch::Pods { namespaces, pods })
            }
        }
    }

    /// Whether `endpoint` (the other end of the connection) is admitted by this peer.
    pub fn matches(&self, endpoint: &Endpoint) -> bool {
        match (&self.0, endpoint) {
            (PeerMatch::IpBlock { cidr, except }, _) => endpoint
                .ip()
                .is_some_and(|ip| ip_in_block(ip, cidr, except)),
            (
                PeerMatch::Pods { namespaces, pods },
                Endpoint::Pod {
                    namespace,
                    labels,
                    namespace_labels,
                    ..
                },
            ) => {
                let ns_ok = match namespaces {
                    Namespaces::Own(own) => own == namespace,
                    Namespaces::Matching(sel) => sel.matches(&NamespaceLabels {
                        name: namespace,
                        labels: namespace_labels,
                    }),
                };
                ns_ok && pods.matches(labels)
            }
            (PeerMatch::Pods { .. }, Endpoint::Ip(_)) => false,
            (PeerMatch::Invalid, _) => false,
        }
    }
}

fn ip_in_block(ip: IpAddr, cidr: &IpNet, except: &[IpNet]) -> bool {
    // IpNet::contains is false across families, so a v4 block never admits a v6 address.
    // An IPv4-mapped IPv6 address is compared as the IPv4 address the kernel would use.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn peer(yaml: &str) -> (Peer, Vec<String>) {
        let p: NetworkPolicyPeer = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        (Peer::compile(&p, "shop", &"t", &mut problems), problems)
    }

    fn ip(s: &str) -> Endpoint {
        Endpoint::Ip(s.parse().unwrap())
    }

    #[test]
    fn ip_block_with_except_boundaries() {
        let (p, problems) = peer("ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}");
        assert!(problems.is_empty());
        assert!(p.matches(&ip("10.0.0.255")));
        assert!(!p.matches(&ip("10.0.1.0")));
        assert!(!p.matches(&ip("10.0.1.255")));
        assert!(p.matches(&ip("10.0.2.0")));
        assert!(!p.matches(&ip("10.1.0.0")));
        assert!(!p.matches(&ip("::ffff:10.0.1.1")));
        assert!(p.matches(&ip("::ffff:10.0.2.1")));
    }

    #[test]
    fn host_bits_in_cidr_mean_the_network() {
        let (p, _) = peer("ipBlock: {cidr: 192.168.1.1/24}");
        assert!(p.matches(&ip("192.168.1.200")));
    }

    #[test]
    fn pod_peer_never_matches_an_address() {
        let (p, _) = peer("namespaceSelector: {}");
        assert!(!p.matches(&ip("10.0.0.1")));
    }

    #[test]
    fn pod_selector_only_is_the_policy_namespace() {
        let (p, _) = peer("podSelector: {}");
        let pod = |ns: &str| Endpoint::Pod {
            namespace: ns.into(),
            name: "x".into(),
            labels: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
            ip: None,
            ports: Vec::new(),
            node_ips: Vec::new(),
        };
        assert!(p.matches(&pod("shop")));
        assert!(!p.matches(&pod("other")));
    }

    #[test]
    fn invalid_peers_are_reported() {
        for yaml in [
            "{}",
            "{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}",
            "ipBlock: {cidr: 10.0.0.0}",
            "ipBlock: {cidr: 10.0.0.0/8, except: [nope]}",
            "ipBlock: {cidr: 11.0.0.0/8, except: [10.0.0.0/8]}",
            "ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}",
        ] {
            let (p, problems) = peer(yaml);
            assert_eq!(problems.len(), 1, "{yaml}: {problems:?}");
            assert!(!p.matches(&ip("10.0.0.1")), "{yaml}");
        }
    }
}
