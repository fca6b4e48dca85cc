//! Destinations that must not silently become ipBlocks (docs/architecture.md, "Addresses that are
//! not peers"): what resolution does with an address that no Service, pod or node of the model
//! has, and with addresses that never leave the pod.
//!
//! Refused (no rule; the flow is listed as not covered, with why):
//! - loopback and the unspecified address: the traffic never leaves the pod's network namespace
//!   (a connect to `0.0.0.0` goes to the host itself over loopback); NetworkPolicy never sees it;
//! - an address in the Service range (given with `--service-cidr`, or proved by the ClusterIPs:
//!   the smallest prefix covering them) that no Service has: a ClusterIP of a Service missing from
//!   the snapshot; an ipBlock for it never matches, since policy applies after Service
//!   translation;
//! - an address in a node's pod range that no running pod has: a pod that is gone (or missing from
//!   the snapshot); an ipBlock would allow whichever pod gets the address next;
//! - an address the source resolved from a Service name (`*.svc.*`) that nothing in the snapshot
//!   has (checked per record, see `resolver`): the same Service or pod, missing from the snapshot.
//!
//! Kept, with a warning:
//! - an address where the Service range probably extends (no range given; the widest range the
//!   API server could have given `default/kubernetes` the first address of, without pods or nodes
//!   in it): it may be a ClusterIP of a missing Service, or an outside address next to the range;
//! - multicast and broadcast: the traffic does leave the pod, and CNIs differ in whether policies
//!   apply to it, so the rule stays (removing it could break the application) and the warning says
//!   to check it;
//! - any outside address when the snapshot has no Service at all (`kubectl get pods,ns,nodes`):
//!   it may be a ClusterIP that cannot be told apart; the warning names it and says to add the
//!   Services.

use std::net::IpAddr;

use super::facts::Facts;
use super::model::{Warning, WarningReason};
use crate::cluster::{is_terminated, pod_ips, Cluster};

/// Why traffic to `ip` needs no rule at all: it never leaves the pod.
pub(super) fn never_leaves_the_pod(ip: IpAddr) -> Option<String> {
    if ip.is_loopback() {
        return Some(format!(
            "{ip} is loopback: the traffic never leaves the pod and NetworkPolicy does not apply to it; no rule"
        ));
    }
    if ip.is_unspecified() {
        return Some(format!(
            "{ip} is the unspecified address, which the kernel connects to the pod itself over loopback: the traffic never leaves the pod; no rule"
        ));
    }
    None
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// An address nothing in the model has: `Err` (refused, see the module comment) or the warning
/// the kept rule needs, if any.
pub(super) fn unowned(
    cluster: &Cluster,
    facts: &Facts,
    ip: IpAddr,
) -> Result<Option<Warning>, String> {
    if let Some(range) = facts.service_ranges.iter().find(|r| r.contains(&ip)) {
        return Err(format!(
            "{ip} is in the Service range {range} but no Service in the cluster files has it (deleted since, or missing from the files): an ipBlock for a ClusterIP never matches, since policy applies after Service translation; no rule"
        ));
    }
    if let Some((node, range)) = facts.pod_ranges.iter().find(|(_, r)| r.contains(&ip)) {
        if range.prefix_len() < range.max_prefix_len() - 1
            && range.broadcast() == ip
            && ip.is_ipv4()
        {
            return Ok(Some(Warning {
                reason: WarningReason::Broadcast,
                message: format!(
                    "{ip} is the broadcast address of node {node}'s pod range {range}: whether policies apply to broadcast depends on the CNI; the ipBlock is kept, check it"
                ),
            }));
        }
        let finished: Vec<String> = cluster
            .pods
            .iter()
            .filter(|p| is_terminated(p) && pod_ips(p).contains(&ip))
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect();
        let finished = if finished.is_empty() {
            String::new()
        } else {
            format!(" (it was {}, which has finished)", finished.join(", "))
        };
        return Err(format!(
            "{ip} is in node {node}'s pod range {range} but no running pod has it{finished}: a pod that is gone or missing from the cluster files; an ipBlock would allow whichever pod gets the address next; no rule"
        ));
    }
    if let Some(range) = facts
        .probable_service_ranges
        .iter()
        .find(|r| r.contains(&ip))
    {
        return Ok(Some(Warning {
            reason: WarningReason::MaybeServiceAddress,
            message: format!(
                "{ip} is taken as an outside address, but it lies where the Service range probably is ({range}, from the kubernetes Service's ClusterIP): if it is the ClusterIP of a Service missing from the cluster files, its ipBlock never matches (policy applies after Service translation); give --service-cidr or add the Service"
            ),
        }));
    }
    if ip.is_multicast() {
        return Ok(Some(Warning {
            reason: WarningReason::Multicast,
            message: format!(
                "{ip} is a multicast address: whether policies apply to multicast depends on the CNI; the ipBlock is kept, check it"
            ),
        }));
    }
    if is_broadcast(ip) {
        return Ok(Some(Warning {
            reason: WarningReason::Broadcast,
            message: format!(
                "{ip} is the broadcast address: whether policies apply to broadcast depends on the CNI; the ipBlock is kept, check it"
            ),
        }));
    }
    if facts.no_services {
        return Ok(Some(Warning {
            reason: WarningReason::MaybeServiceAddress,
            message: format!(
                "{ip} is taken as an outside address, but the cluster files hold no Services (not even default/kubernetes): it may be a ClusterIP, whose ipBlock would never match since policy applies after Service translation; add `kubectl get services,endpointslices -A` to the cluster files"
            ),
        }));
    }
    Ok(None)
}

/// The first of `names` that is a Service name (`<service>.<namespace>.svc.<domain>`, or a pod's
/// name under a headless Service).
pub(super) fn service_name(names: &[String]) -> Option<&str> {
    names
        .iter()
        .map(String::as_str)
        .find(|n| n.trim_end_matches('.').ends_with(".svc") || n.contains(".svc."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_under_any_cluster_domain() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            service_name(&names(&[
                "api.example.test",
                "orders.shop.svc.cluster.local."
            ])),
            Some("orders.shop.svc.cluster.local.")
        );
        assert_eq!(
            service_name(&names(&["db-0.db.data.svc.corp.internal"])),
            Some("db-0.db.data.svc.corp.internal")
        );
        assert_eq!(
            service_name(&names(&["orders.shop.svc"])),
            Some("orders.shop.svc")
        );
        assert_eq!(
            service_name(&names(&["svc.example.test", "my.svcs.example"])),
            None
        );
    }

    #[test]
    fn loopback_and_unspecified_never_leave_the_pod() {
        for ip in ["127.0.0.1", "127.3.2.1", "::1", "0.0.0.0", "::"] {
            assert!(never_leaves_the_pod(ip.parse().unwrap()).is_some(), "{ip}");
        }
        assert!(never_leaves_the_pod("10.0.0.1".parse().unwrap()).is_none());
    }
}
