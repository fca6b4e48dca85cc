//! Addresses to ipBlocks: host prefixes, exact aggregation, deliberate widening, and the cluster's
//! own pod and Service ranges (the `except` of internet egress).
//!
//! Exact aggregation merges addresses into a wider prefix only when every address of that prefix
//! was observed (`.0` and `.1` make a `/31`; `.1` and `.2` stay two `/32`s because no `/31` holds
//! both and nothing else): the policy then allows exactly the observed set, and ipBlock churn
//! (the `/32` lists other tools regenerate on every run) only ever shrinks it. Wider prefixes come
//! only from the user (`cidr_prefix_v4`/`cidr_prefix_v6`).
//!
//! Cluster ranges, when the user gives none (`Options::cluster_cidrs`), are derived per family:
//! - pods: every Node's `spec.podCIDRs` (or `spec.podCIDR`); for a family no node declares (CNIs
//!   with their own IPAM), the smallest prefix covering the IPs of the cluster's non-hostNetwork
//!   pods;
//! - Services: [`Cluster::service_ranges`], the ranges given with `--service-cidr` or else the
//!   smallest prefix covering every Service `clusterIP(s)` of that family (the real Service CIDR is
//!   an API-server flag that no object exposes; the covering prefix is what the objects prove). It
//!   matters little: NetworkPolicy is enforced after DNAT, so a ClusterIP never meets an ipBlock;
//!   excluding it keeps the rule honest for CNIs that look before translation.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::cluster::{is_host_network, Cluster};

/// `/32` for IPv4, `/128` for IPv6.
pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// The minimal list of prefixes holding exactly `nets` (no address more), sorted.
pub fn exact_aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out = IpNet::aggregate(&nets.to_vec());
    out.sort();
    out
}

/// `ip` widened to the user's prefix length for its family (never narrower than the host prefix).
pub fn widen(ip: IpAddr, prefix_v4: Option<u8>, prefix_v6: Option<u8>) -> IpNet {
    let prefix = match ip {
        IpAddr::V4(_) => prefix_v4.map(|p| p.min(32)),
        IpAddr::V6(_) => prefix_v6.map(|p| p.min(128)),
    };
    match prefix {
        Some(p) => IpNet::new(ip, p)
            .expect("prefix clamped to the family's length")
            .trunc(),
        None => host_net(ip),
    }
}

pub use crate::cluster::covering_prefix;

/// The cluster's pod and Service ranges, aggregated and sorted (see the module doc).
pub fn cluster_ranges(cluster: &Cluster, given: &[IpNet]) -> Vec<IpNet> {
    if !given.is_empty() {
        return exact_aggregate(&given.iter().map(IpNet::trunc).collect::<Vec<_>>());
    }
    let mut nets: Vec<IpNet> = cluster
        .node_pod_cidrs()
        .into_iter()
        .map(|(_, net)| net)
        .collect();
    let pod_families: BTreeSet<bool> = nets.iter().map(|n| n.addr().is_ipv6()).collect();
    let mut pod_ips: [Vec<IpAddr>; 2] = [Vec::new(), Vec::new()];
    for pod in cluster.pods.iter().filter(|p| !is_host_network(p)) {
        for ip in crate::cluster::pod_ips(pod) {
            pod_ips[usize::from(ip.is_ipv6())].push(ip);
        }
    }
    for (family, ips) in pod_ips.iter_mut().enumerate() {
        if !pod_families.contains(&(family == 1)) {
            ips.sort();
            ips.dedup();
            nets.extend(covering_prefix(ips));
        }
    }
    nets.extend(cluster.service_ranges());
    exact_aggregate(&nets)
}

/// `0.0.0.0/0` and `::/0`, each with the cluster ranges of its family as `except`. A range that
/// would swallow the whole family (a `/0`) is dropped: `except` must be strictly inside `cidr`.
pub fn internet_blocks(cluster_ranges: &[IpNet]) -> Vec<(IpNet, Vec<IpNet>)> {
    let all_v4: IpNet = "0.0.0.0/0".parse().expect("literal");
    let all_v6: IpNet = "::/0".parse().expect("literal");
    [all_v4, all_v6]
        .into_iter()
        .map(|all| {
            let except = cluster_ranges
                .iter()
                .filter(|r| r.addr().is_ipv6() == all.addr().is_ipv6() && r.prefix_len() > 0)
                .copied()
                .collect();
            (all, except)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(items: &[&str]) -> Vec<IpNet> {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hosts(items: &[&str]) -> Vec<IpNet> {
        items.iter().map(|s| host_net(ip(s))).collect()
    }

    #[test]
    fn adjacent_aligned_pairs_merge() {
        assert_eq!(
            exact_aggregate(&hosts(&["198.18.0.1", "198.18.0.0"])),
            nets(&["198.18.0.0/31"])
        );
        assert_eq!(
            exact_aggregate(&hosts(&[
                "198.18.0.0",
                "198.18.0.1",
                "198.18.0.2",
                "198.18.0.3"
            ])),
            nets(&["198.18.0.0/30"])
        );
    }

    #[test]
    fn unaligned_neighbours_do_not_merge() {
        assert_eq!(
            exact_aggregate(&hosts(&["198.18.0.1", "198.18.0.2"])),
            nets(&["198.18.0.1/32", "198.18.0.2/32"])
        );
        assert_eq!(
            exact_aggregate(&hosts(&["198.18.0.0", "198.18.0.1", "198.18.0.2"])),
            nets(&["198.18.0.0/31", "198.18.0.2/32"])
        );
    }

    #[test]
    fn ipv6_aggregates_exactly_and_stays_separate_from_ipv4() {
        assert_eq!(
            exact_aggregate(&hosts(&[
                "2001:db8::1",
                "2001:db8::",
                "2001:db8::3",
                "10.0.0.1"
            ])),
            nets(&["10.0.0.1/32", "2001:db8::/127", "2001:db8::3/128"])
        );
    }

    #[test]
    fn duplicates_collapse() {
        assert_eq!(
            exact_aggregate(&hosts(&["198.18.0.5", "198.18.0.5"])),
            nets(&["198.18.0.5/32"])
        );
    }

    #[test]
    fn widening_is_explicit() {
        assert_eq!(
            widen(ip("198.18.3.77"), Some(24), None),
            nets(&["198.18.3.0/24"])[0]
        );
        assert_eq!(
            widen(ip("198.18.3.77"), None, Some(64)),
            nets(&["198.18.3.77/32"])[0]
        );
        assert_eq!(
            widen(ip("2001:db8:1:2::7"), None, Some(64)),
            nets(&["2001:db8:1:2::/64"])[0]
        );
        assert_eq!(
            widen(ip("198.18.3.77"), Some(40), None),
            nets(&["198.18.3.77/32"])[0]
        );
    }

    fn cluster() -> Cluster {
        let node = serde_json::json!({"metadata":{"name":"a"},
            "spec":{"podCIDR":"10.244.0.0/24","podCIDRs":["10.244.0.0/24","fd00:10:244::/64"]}});
        let node_b =
            serde_json::json!({"metadata":{"name":"b"},"spec":{"podCIDRs":["10.244.1.0/24"]}});
        let svc = |ips: &[&str]| {
            serde_json::from_value(serde_json::json!({"metadata":{"name":"s"},
                "spec":{"clusterIP":ips[0],"clusterIPs":ips}}))
            .unwrap()
        };
        let host_pod = serde_json::json!({"metadata":{"name":"h"},"spec":{"hostNetwork":true,"containers":[]},
            "status":{"podIP":"172.18.0.2","podIPs":[{"ip":"172.18.0.2"}]}});
        Cluster {
            nodes: vec![
                serde_json::from_value(node).unwrap(),
                serde_json::from_value(node_b).unwrap(),
            ],
            services: vec![
                svc(&["10.96.0.1"]),
                svc(&["10.96.0.10", "fd00:10:96::a"]),
                svc(&["None"]),
            ],
            pods: vec![serde_json::from_value(host_pod).unwrap()],
            ..Cluster::default()
        }
    }

    #[test]
    fn cluster_ranges_come_from_node_pod_cidrs_and_service_ips() {
        assert_eq!(
            cluster_ranges(&cluster(), &[]),
            nets(&[
                "10.96.0.0/28",
                "10.244.0.0/23",
                "fd00:10:96::a/128",
                "fd00:10:244::/64"
            ])
        );
    }

    #[test]
    fn given_cluster_ranges_win() {
        let given = nets(&["10.0.0.0/8", "10.1.0.0/16"]);
        assert_eq!(cluster_ranges(&cluster(), &given), nets(&["10.0.0.0/8"]));
    }

    #[test]
    fn pod_ips_stand_in_for_missing_pod_cidrs() {
        let pod = |ip: &str| {
            serde_json::from_value(serde_json::json!({"metadata":{"name":"p"},
                "status":{"podIP":ip,"podIPs":[{"ip":ip}]}}))
            .unwrap()
        };
        let c = Cluster {
            pods: vec![pod("10.42.0.5"), pod("10.42.3.7")],
            ..Cluster::default()
        };
        assert_eq!(cluster_ranges(&c, &[]), nets(&["10.42.0.0/22"]));
    }

    #[test]
    fn internet_blocks_keep_except_within_family() {
        let blocks = internet_blocks(&nets(&["10.244.0.0/16", "fd00:10::/56", "0.0.0.0/0"]));
        assert_eq!(blocks[0].0, nets(&["0.0.0.0/0"])[0]);
        assert_eq!(blocks[0].1, nets(&["10.244.0.0/16"]));
        assert_eq!(blocks[1].1, nets(&["fd00:10::/56"]));
    }
}
