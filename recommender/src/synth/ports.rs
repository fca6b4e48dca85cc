//! Port sets to NetworkPolicy ports: numeric, protocol always explicit, long contiguous runs as
//! `port`/`endPort`.
//!
//! Ports are always numeric here: resolution already turned Service ports into the targetPort the
//! destination pod receives on (NetworkPolicy is enforced after DNAT), so a named port would only
//! add an indirection the reader has to resolve by hand.

use std::collections::BTreeSet;

use flow_model::Protocol;

/// A contiguous run shorter than this stays a list of single ports: `port`/`endPort` only pays
/// for itself (in readability and in rule count) from three ports on.
pub const MIN_RUN: usize = 3;

/// One `ports` entry: `port` alone, or `port`..=`end_port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub port: u16,
    pub end_port: Option<u16>,
    pub protocol: Protocol,
}

impl PortSpec {
    /// `TCP/443` or `TCP/8000-8002`, for comments and annotations.
    pub fn label(&self) -> String {
        match self.end_port {
            Some(end) => format!("{}/{}-{}", self.protocol, self.port, end),
            None => format!("{}/{}", self.protocol, self.port),
        }
    }
}

/// The set of (protocol, port) a peer was reached on. Ordered, so it can key a map of rules.
pub type PortSet = BTreeSet<(Protocol, u16)>;

/// Compresses a port set into `ports` entries, sorted by port then protocol so that, for example,
/// DNS reads `53/TCP, 53/UDP`.
pub fn compress(ports: &PortSet) -> Vec<PortSpec> {
    let mut out = Vec::new();
    let mut iter = ports.iter().peekable();
    while let Some(&(protocol, start)) = iter.next() {
        let mut end = start;
        while let Some(&&(p, next)) = iter.peek() {
            if p == protocol && end.checked_add(1) == Some(next) {
                end = next;
                iter.next();
            } else {
                break;
            }
        }
        if usize::from(end - start) + 1 >= MIN_RUN {
            out.push(PortSpec {
                port: start,
                end_port: Some(end),
                protocol,
            });
        } else {
            for port in start..=end {
                out.push(PortSpec {
                    port,
                    end_port: None,
                    protocol,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (a.port, a.end_port, a.protocol.as_str()).cmp(&(b.port, b.end_port, b.protocol.as_str()))
    });
    out
}

/// Adds the other of TCP/UDP on every UDP or TCP port: DNS clients fall back to TCP when an
/// answer is truncated (and some resolvers start with TCP), so a DNS rule with one protocol only
/// breaks lookups in ways the observation window may never have shown.
pub fn with_dns_fallback(ports: &PortSet) -> PortSet {
    let mut out = ports.clone();
    for &(protocol, port) in ports {
        match protocol {
            Protocol::Udp => {
                out.insert((Protocol::Tcp, port));
            }
            Protocol::Tcp => {
                out.insert((Protocol::Udp, port));
            }
            Protocol::Sctp => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(Protocol, u16)]) -> PortSet {
        items.iter().copied().collect()
    }

    fn single(port: u16, protocol: Protocol) -> PortSpec {
        PortSpec {
            port,
            end_port: None,
            protocol,
        }
    }

    #[test]
    fn short_runs_stay_single_ports() {
        let specs = compress(&set(&[(Protocol::Tcp, 80), (Protocol::Tcp, 81)]));
        assert_eq!(
            specs,
            [single(80, Protocol::Tcp), single(81, Protocol::Tcp)]
        );
    }

    #[test]
    fn runs_of_three_become_ranges() {
        let specs = compress(&set(&[
            (Protocol::Tcp, 8000),
            (Protocol::Tcp, 8001),
            (Protocol::Tcp, 8002),
            (Protocol::Tcp, 8004),
        ]));
        assert_eq!(
            specs,
            [
                PortSpec {
                    port: 8000,
                    end_port: Some(8002),
                    protocol: Protocol::Tcp
                },
                single(8004, Protocol::Tcp)
            ]
        );
    }

    #[test]
    fn runs_do_not_cross_protocols() {
        let specs = compress(&set(&[
            (Protocol::Tcp, 1),
            (Protocol::Tcp, 2),
            (Protocol::Udp, 3),
            (Protocol::Udp, 4),
        ]));
        assert_eq!(specs.len(), 4);
        assert!(specs.iter().all(|s| s.end_port.is_none()));
    }

    #[test]
    fn run_up_to_the_last_port_does_not_overflow() {
        let specs = compress(&set(&[
            (Protocol::Udp, 65533),
            (Protocol::Udp, 65534),
            (Protocol::Udp, 65535),
        ]));
        assert_eq!(specs[0].end_port, Some(65535));
        assert_eq!(specs[0].label(), "UDP/65533-65535");
    }

    #[test]
    fn dns_gets_both_protocols_sorted_by_port() {
        let specs = compress(&with_dns_fallback(&set(&[(Protocol::Udp, 53)])));
        assert_eq!(
            specs,
            [single(53, Protocol::Tcp), single(53, Protocol::Udp)]
        );
    }
}
