//! The two exceptions the API documentation makes to every policy (concepts page "Network
//! Policies", on what a policy can name): "a pod cannot block access to itself", and "traffic to
//! and from the node where a Pod is running is always allowed, regardless of the IP address of the
//! Pod or the node". Both are checked before any policy, for each direction.
//!
//! The node is known by its addresses ([`Endpoint::Pod`]'s `node_ips`: the Node's InternalIP and
//! ExternalIP addresses and the pod's `status.hostIPs`); a hostNetwork pod on that node has the
//! node's address, so it is covered too.

use std::fmt;

use super::verdict::Direction;
use super::{Connection, Endpoint};

/// Why a direction of a connection is allowed whatever the policies say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exemption {
    /// The pod connects to itself.
    Itself,
    /// The other end is the node the pod runs on.
    OwnNode,
}

impl fmt::Display for Exemption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exemption::Itself => "a pod can always reach itself",
            Exemption::OwnNode => "traffic between a pod and its own node is always allowed",
        })
    }
}

/// The exemption that allows `direction` of `conn`, if any: egress is judged at `from`, ingress at
/// `to`.
pub fn exemption(direction: Direction, conn: &Connection) -> Option<Exemption> {
    let (subject, other) = match direction {
        Direction::Egress => (&conn.from, &conn.to),
        Direction::Ingress => (&conn.to, &conn.from),
    };
    let Endpoint::Pod {
        namespace,
        name,
        ip,
        node_ips,
        ..
    } = subject
    else {
        return None;
    };
    match other {
        Endpoint::Pod {
            namespace: other_namespace,
            name: other_name,
            ip: other_ip,
            ..
        } => {
            let same_name = !name.is_empty() && name == other_name && namespace == other_namespace;
            let same_ip = ip.is_some() && ip == other_ip;
            (same_name || same_ip).then_some(Exemption::Itself)
        }
        Endpoint::Ip(address) => {
            let address = address.to_canonical();
            if ip.is_some_and(|own| own.to_canonical() == address) {
                Some(Exemption::Itself)
            } else if node_ips.iter().any(|n| n.to_canonical() == address) {
                Some(Exemption::OwnNode)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_model::Protocol;

    fn web() -> Endpoint {
        Endpoint::pod("shop", "web-1", [("app", "web")])
            .with_ip("10.244.1.10".parse().unwrap())
            .with_node_ip("10.0.0.11".parse().unwrap())
    }

    fn conn(from: Endpoint, to: Endpoint) -> Connection {
        Connection::new(from, to, 8080, Protocol::Tcp)
    }

    #[test]
    fn own_node_both_ways_and_not_another_node() {
        let node = Endpoint::Ip("10.0.0.11".parse().unwrap());
        let mapped = Endpoint::Ip("::ffff:10.0.0.11".parse().unwrap());
        let other = Endpoint::Ip("10.0.0.1".parse().unwrap());
        assert_eq!(
            exemption(Direction::Egress, &conn(web(), node.clone())),
            Some(Exemption::OwnNode)
        );
        assert_eq!(
            exemption(Direction::Egress, &conn(web(), mapped)),
            Some(Exemption::OwnNode)
        );
        assert_eq!(
            exemption(Direction::Ingress, &conn(node.clone(), web())),
            Some(Exemption::OwnNode)
        );
        // The node's own side is never isolated anyway; the exemption is the pod's.
        assert_eq!(exemption(Direction::Ingress, &conn(web(), node)), None);
        assert_eq!(exemption(Direction::Egress, &conn(web(), other)), None);
    }

    #[test]
    fn itself_by_name_or_address() {
        assert_eq!(
            exemption(Direction::Egress, &conn(web(), web())),
            Some(Exemption::Itself)
        );
        assert_eq!(
            exemption(Direction::Ingress, &conn(web(), web())),
            Some(Exemption::Itself)
        );
        let own_ip = Endpoint::Ip("10.244.1.10".parse().unwrap());
        assert_eq!(
            exemption(Direction::Egress, &conn(web(), own_ip)),
            Some(Exemption::Itself)
        );
        let twin = Endpoint::pod("shop", "web-2", [("app", "web")])
            .with_ip("10.244.1.11".parse().unwrap());
        assert_eq!(exemption(Direction::Egress, &conn(web(), twin)), None);
        let nameless = Endpoint::pod("shop", "", [("app", "web")]);
        assert_eq!(
            exemption(Direction::Egress, &conn(nameless.clone(), nameless)),
            None
        );
    }
}
