//! Which sockets of one network namespace are egress connections.
//!
//! - TCP: an established socket is ingress when its local port is that of a listening socket of
//!   the namespace, on the same address or a wildcard: it was accepted. Everything else was
//!   connected from here. (The kernel never gives `connect()` an ephemeral port that a listener
//!   holds, so a client is not mistaken for a server; a connection whose listener has since closed
//!   is taken for egress.)
//! - UDP: only connected sockets (a fixed peer, `TCP_ESTABLISHED` in the UDP state) are
//!   connections; an unconnected socket has no destination to report. A connected socket is
//!   ingress when an unconnected socket of the namespace is bound to its local port on the same
//!   address or a wildcard: a server's per-peer socket (QUIC and DTLS servers connect one per
//!   client). Whether it has sent yet cannot be read from the socket table; a socket connected and
//!   never used (glibc connects throwaway UDP sockets to sort answers, and closes them at once) is
//!   only caught in the instant between its connect and its close.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::FlowKey;

use super::diag::{DiagSocket, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN};

/// The verdict on one namespace's sockets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Classified {
    /// One flow key per egress connection (several connections may share a key).
    pub egress: Vec<FlowKey>,
    pub inbound: u64,
    /// Egress connections without a cgroup id: they cannot be attributed.
    pub unattributed: u64,
}

pub fn classify(sockets: &[DiagSocket]) -> Classified {
    let tcp = libc::IPPROTO_TCP as u8;
    let udp = libc::IPPROTO_UDP as u8;
    let bound: Vec<(u8, IpAddr, u16)> = sockets
        .iter()
        .filter(|s| {
            (s.protocol == tcp && s.state == TCP_LISTEN)
                || (s.protocol == udp && s.state == TCP_CLOSE && s.dport == 0 && s.sport != 0)
        })
        .map(|s| (s.protocol, address(s.family, &s.src), s.sport))
        .collect();
    let accepted = |s: &DiagSocket| {
        let local = address(s.family, &s.src);
        bound.iter().any(|(protocol, addr, port)| {
            *protocol == s.protocol && *port == s.sport && (addr.is_unspecified() || *addr == local)
        })
    };
    let mut out = Classified::default();
    for s in sockets {
        let connected = s.state == TCP_ESTABLISHED && s.dport != 0;
        if !connected || !(s.protocol == tcp || s.protocol == udp) {
            continue;
        }
        if accepted(s) {
            out.inbound += 1;
            continue;
        }
        let Some(cgroup_id) = s.cgroup_id else {
            out.unattributed += 1;
            continue;
        };
        out.egress.push(FlowKey {
            cgroup_id,
            daddr: s.dst,
            dport: s.dport,
            family: s.family,
            protocol: s.protocol,
            _pad: [0; 4],
        });
    }
    out
}

/// The address of a socket, IPv4-mapped IPv6 as IPv4 (a dual-stack listener's accepted IPv4
/// connection is an IPv6 socket with mapped addresses).
fn address(family: u8, raw: &[u8; 16]) -> IpAddr {
    if i32::from(family) == libc::AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let v6 = Ipv6Addr::from(*raw);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }
}

#[cfg(test)]
mod tests {
    use super::super::diag::tests::socket;
    use super::*;

    fn udp(mut s: DiagSocket) -> DiagSocket {
        s.protocol = libc::IPPROTO_UDP as u8;
        s
    }

    #[test]
    fn accepted_connections_are_ingress() {
        let me = [10, 244, 1, 10];
        let sockets = [
            // A server on 8080 (wildcard) and one on 9000 of another address only.
            socket(TCP_LISTEN, [0; 4], 8080, [0; 4], 0),
            socket(TCP_LISTEN, [127, 0, 0, 1], 9000, [0; 4], 0),
            // Accepted by the 8080 server.
            socket(TCP_ESTABLISHED, me, 8080, [10, 244, 1, 11], 51000),
            // Our own client connections (one from a port equal to the loopback-only listener's).
            socket(TCP_ESTABLISHED, me, 43000, [198, 18, 0, 10], 443),
            socket(TCP_ESTABLISHED, me, 9000, [198, 18, 0, 11], 80),
            // Not connections.
            socket(TCP_CLOSE, me, 43001, [198, 18, 0, 10], 443),
        ];
        let c = classify(&sockets);
        assert_eq!(c.inbound, 1);
        let dests: Vec<_> = c.egress.iter().map(|k| (k.daddr[3], k.dport)).collect();
        assert_eq!(dests, [(10, 443), (11, 80)]);
        assert_eq!(c.egress[0].cgroup_id, 4242);
        assert_eq!(c.egress[0].protocol, libc::IPPROTO_TCP as u8);
    }

    #[test]
    fn connected_udp_is_egress_unless_a_server_owns_the_port() {
        let me = [10, 244, 1, 10];
        let sockets = [
            // A DNS-like server socket, unconnected, and its per-peer connected socket.
            udp(socket(TCP_CLOSE, [0; 4], 4433, [0; 4], 0)),
            udp(socket(TCP_ESTABLISHED, me, 4433, [10, 244, 1, 11], 50000)),
            // A client connected to a resolver.
            udp(socket(TCP_ESTABLISHED, me, 40001, [10, 96, 0, 10], 53)),
            // An unconnected client socket: no destination.
            udp(socket(TCP_CLOSE, [0; 4], 40002, [0; 4], 0)),
        ];
        let c = classify(&sockets);
        assert_eq!(c.inbound, 1);
        assert_eq!(c.egress.len(), 1);
        assert_eq!((c.egress[0].daddr[3], c.egress[0].dport), (10, 53));
        assert_eq!(c.egress[0].protocol, libc::IPPROTO_UDP as u8);
    }

    #[test]
    fn dual_stack_listeners_and_unattributed_sockets() {
        let mapped = |a: [u8; 4]| {
            let mut x = [0u8; 16];
            x[10] = 0xff;
            x[11] = 0xff;
            x[12..].copy_from_slice(&a);
            x
        };
        let mut listener = socket(TCP_LISTEN, [0; 4], 8443, [0; 4], 0);
        listener.family = libc::AF_INET6 as u8;
        listener.src = [0; 16];
        let mut accepted = socket(TCP_ESTABLISHED, [0; 4], 8443, [0; 4], 40000);
        accepted.family = libc::AF_INET6 as u8;
        accepted.src = mapped([10, 244, 1, 10]);
        accepted.dst = mapped([10, 244, 1, 11]);
        let mut orphan = socket(
            TCP_ESTABLISHED,
            [10, 244, 1, 10],
            43000,
            [198, 18, 0, 1],
            443,
        );
        orphan.cgroup_id = None;
        let c = classify(&[listener, accepted, orphan]);
        assert_eq!((c.inbound, c.unattributed, c.egress.len()), (1, 1, 0));
    }
}
