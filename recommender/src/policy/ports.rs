//! `NetworkPolicyPort`: which destination ports and protocols a rule allows.
//!
//! Semantics (API reference, NetworkPolicyPort; concepts page "Targeting a range of ports"):
//! - `protocol` defaults to TCP, so a port entry without a protocol never allows UDP or SCTP;
//! - `port` absent: every port of that protocol;
//! - numeric `port` with `endPort`: the inclusive range `port..=endPort` (endPort only with a numeric
//!   port, and endPort >= port);
//! - named `port`: resolved on the *destination* pod's container ports, by name AND protocol. For an
//!   egress rule that is the `to` end, for an ingress rule the policy's own pod, which is also the
//!   `to` end: either way the connection's destination. An address that is not a pod has no named
//!   ports, so a named port never matches it.

use flow_model::Protocol;
use k8s_openapi::api::networking::v1::NetworkPolicyPort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Endpoint;

#[derive(Clone, Debug, PartialEq, Eq)]
enum PortMatch {
    /// `port` absent.
    All,
    /// Numeric `port`, with `endPort` or alone (then `first == last`).
    Range { first: u16, last: u16 },
    /// Named `port`, looked up on the destination pod.
    Named(String),
    /// Rejected by API validation: matches nothing (reported as a problem).
    Invalid,
}

/// One compiled `ports` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    protocol: Protocol,
    port: PortMatch,
}

impl Port {
    /// Compiles one `ports` entry; problems are appended with `context` as prefix.
    pub fn compile(
        p: &NetworkPolicyPort,
        context: &dyn std::fmt::Display,
        problems: &mut Vec<String>,
    ) -> Port {
        let mut invalid = |msg: String| {
            problems.push(format!("{context}: {msg} (the port entry matches nothing)"));
            PortMatch::Invalid
        };
        // The API only accepts the upper-case names; parse case-insensitively anyway, since
        // a lower-case protocol in a hand-written file is a typo with an unambiguous meaning.
        let protocol = match p.protocol.as_deref() {
            None => Protocol::Tcp,
            Some(s) => match s.parse() {
                Ok(protocol) => protocol,
                Err(e) => {
                    problems.push(format!("{context}: {e} (the port entry matches nothing)"));
                    return Port {
                        protocol: Protocol::Tcp,
                        port: PortMatch::Invalid,
                    };
                }
            },
        };
        let port = match (&p.port, p.end_port) {
            (None, None) => PortMatch::All,
            (None, Some(_)) => invalid("endPort without port".into()),
            (Some(IntOrString::String(name)), None) => PortMatch::Named(name.clone()),
            (Some(IntOrString::String(name)), Some(_)) => {
                invalid(format!("endPort with the named port {name:?}"))
            }
            (Some(IntOrString::Int(first)), end) => {
                let last = end.unwrap_or(*first);
                match (u16::try_from(*first), u16::try_from(last)) {
                    (Ok(first), Ok(last)) if first >= 1 && last >= first => {
                        PortMatch::Range { first, last }
                    }
                    _ => invalid(format!(
                        "port {first}{} is not a range within 1-65535",
                        end.map(|e| format!(" endPort {e}")).unwrap_or_default()
                    )),
                }
            }
        };
        Port { protocol, port }
    }

    /// Whether traffic to `dest` on `port`/`protocol` matches this entry.
    pub fn matches(&self, protocol: Protocol, port: u16, dest: &Endpoint) -> bool {
        if self.protocol != protocol {
            return false;
        }
        match &self.port {
            PortMatch::All => true,
            PortMatch::Range { first, last } => (*first..=*last).contains(&port),
            PortMatch::Named(name) => match dest {
                Endpoint::Pod { ports, .. } => ports
                    .iter()
                    .any(|p| p.port == port && p.protocol == protocol && p.name == *name),
                Endpoint::Ip(_) => false,
            },
            PortMatch::Invalid => false,
        }
    }
}

/// A rule's `ports` list: absent or empty allows every port and protocol; otherwise OR across entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports(Vec<Port>);

impl Ports {
    pub fn compile(
        ports: Option<&Vec<NetworkPolicyPort>>,
        context: &dyn std::fmt::Display,
        problems: &mut Vec<String>,
    ) -> Ports {
        Ports(
            ports
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| Port::compile(p, &format_args!("{context} port {i}"), problems))
                .collect(),
        )
    }

    /// The index of the first entry that matches (`None` inside `Some` when the list allows all).
    pub fn matching(
        &self,
        protocol: Protocol,
        port: u16,
        dest: &Endpoint,
    ) -> Option<Option<usize>> {
        if self.0.is_empty() {
            return Some(None);
        }
        self.0
            .iter()
            .position(|p| p.matches(protocol, port, dest))
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NamedPort;
    use std::collections::BTreeMap;

    fn port(yaml: &str) -> (Port, Vec<String>) {
        let p: NetworkPolicyPort = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        (Port::compile(&p, &"t", &mut problems), problems)
    }

    fn pod(ports: Vec<NamedPort>) -> Endpoint {
        Endpoint::Pod {
            namespace: "ns".into(),
            name: "p".into(),
            labels: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
            ip: None,
            ports,
            node_ips: Vec::new(),
        }
    }

    #[test]
    fn protocol_defaults_to_tcp() {
        let (p, problems) = port("port: 53");
        assert!(problems.is_empty());
        let ip = Endpoint::Ip("10.0.0.1".parse().unwrap());
        assert!(p.matches(Protocol::Tcp, 53, &ip));
        assert!(!p.matches(Protocol::Udp, 53, &ip));
    }

    #[test]
    fn end_port_is_inclusive() {
        let (p, _) = port("{port: 32000, endPort: 32768}");
        let ip = Endpoint::Ip("10.0.0.1".parse().unwrap());
        assert!(!p.matches(Protocol::Tcp, 31999, &ip));
        assert!(p.matches(Protocol::Tcp, 32000, &ip));
        assert!(p.matches(Protocol::Tcp, 32768, &ip));
        assert!(!p.matches(Protocol::Tcp, 32769, &ip));
    }

    #[test]
    fn named_port_needs_name_number_and_protocol_on_destination() {
        let (p, _) = port("{port: metrics, protocol: TCP}");
        let dest = pod(vec![NamedPort {
            name: "metrics".into(),
            port: 9090,
            protocol: Protocol::Tcp,
        }]);
        assert!(p.matches(Protocol::Tcp, 9090, &dest));
        assert!(!p.matches(Protocol::Tcp, 9091, &dest));
        let udp = pod(vec![NamedPort {
            name: "metrics".into(),
            port: 9090,
            protocol: Protocol::Udp,
        }]);
        assert!(!p.matches(Protocol::Tcp, 9090, &udp));
        assert!(!p.matches(
            Protocol::Tcp,
            9090,
            &Endpoint::Ip("10.0.0.1".parse().unwrap())
        ));
    }

    #[test]
    fn invalid_entries_match_nothing_and_are_reported() {
        for yaml in [
            "{port: 80, endPort: 79}",
            "{port: http, endPort: 90}",
            "{endPort: 90}",
            "{port: 70000}",
            "{port: 0}",
            "{port: 80, protocol: ICMP}",
        ] {
            let (p, problems) = port(yaml);
            assert_eq!(problems.len(), 1, "{yaml}: {problems:?}");
            let ip = Endpoint::Ip("10.0.0.1".parse().unwrap());
            for n in [79, 80, 90] {
                assert!(!p.matches(Protocol::Tcp, n, &ip), "{yaml}");
            }
        }
    }

    #[test]
    fn empty_list_allows_everything() {
        let ports = Ports::compile(Some(&Vec::new()), &"t", &mut Vec::new());
        let ip = Endpoint::Ip("10.0.0.1".parse().unwrap());
        assert_eq!(ports.matching(Protocol::Sctp, 1, &ip), Some(None));
        let ports = Ports::compile(None, &"t", &mut Vec::new());
        assert_eq!(ports.matching(Protocol::Udp, 65535, &ip), Some(None));
    }
}
