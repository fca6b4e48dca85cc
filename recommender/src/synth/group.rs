//! Flows of one source workload to its egress policy plan: peers keyed by what selects them,
//! ports per peer, peers with identical port sets sharing one rule.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use flow_model::{FlowRecord, Outcome, Protocol, WorkloadRef};
use ipnet::IpNet;

use super::cidr;
use super::model::{Direction, IpOrigin, PeerPlan, PolicyPlan, RulePlan, Target};
use super::ports::{self, PortSet};
use super::{Context, InternetEgress};
use crate::resolve::{Peer, ResolvedFlow, SourceWorkload};

/// What we know of one (peer, protocol, port).
#[derive(Default)]
struct PortAcc {
    /// Some flow was established, sent (UDP) or of unknown outcome: not known to fail.
    not_failed: bool,
    /// Refused/timeout outcomes seen.
    failures: BTreeSet<Outcome>,
}

#[derive(Default)]
struct PeerAcc<'a> {
    ports: BTreeMap<(Protocol, u16), PortAcc>,
    dns_names: BTreeSet<&'a str>,
    /// (namespace, workload) of in-cluster peers, for comments.
    workloads: BTreeSet<(&'a str, &'a WorkloadRef)>,
    services: BTreeSet<&'a str>,
    cluster_dns: bool,
    node: Option<&'a str>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PeerKey<'a> {
    Pods {
        namespace: &'a str,
        selector: &'a BTreeMap<String, String>,
    },
    Ip {
        origin: IpOrigin,
        ip: IpAddr,
    },
}

/// Whether a record shows the destination answering (or, for UDP and unknown outcomes, does not
/// show it failing).
fn not_failed(record: &FlowRecord) -> bool {
    record.outcomes.established > 0
        || matches!(
            record.outcome,
            Outcome::Established | Outcome::Preexisting | Outcome::Sent | Outcome::Unknown
        )
}

/// DNS falls back to TCP: the cluster DNS gets both protocols on every port it was reached on,
/// any other peer on port 53.
fn with_fallback(ports: &PortSet, cluster_dns: bool) -> PortSet {
    if cluster_dns {
        return ports::with_dns_fallback(ports);
    }
    let dns: PortSet = ports.iter().filter(|(_, p)| *p == 53).copied().collect();
    let mut out = ports.clone();
    out.extend(ports::with_dns_fallback(&dns));
    out
}

/// `Kind namespace/name`.
pub fn workload_label(namespace: &str, workload: &WorkloadRef) -> String {
    format!("{} {}/{}", workload.kind, namespace, workload.name)
}

/// The observation window and flow count of a set of flows, as annotations.
pub fn annotate_window<'a>(plan: &mut PolicyPlan, records: impl Iterator<Item = &'a FlowRecord>) {
    let mut window: Option<(jiff::Timestamp, jiff::Timestamp)> = None;
    let mut count = 0usize;
    for r in records {
        count += 1;
        window = Some(match window {
            None => (r.first_seen, r.last_seen),
            Some((from, to)) => (from.min(r.first_seen), to.max(r.last_seen)),
        });
    }
    if let Some((from, to)) = window {
        plan.annotate("observed-from", from.to_string());
        plan.annotate("observed-to", to.to_string());
    }
    plan.annotate("flows", count.to_string());
}

/// A workload that needs the `InternetEgress::Label` pattern: its namespace policy must allow
/// these ports.
pub struct InternetNeed {
    pub workload: WorkloadRef,
    pub ports: PortSet,
}

/// The egress plan of one workload.
pub struct WorkloadEgress {
    pub plan: PolicyPlan,
    pub internet_need: Option<InternetNeed>,
}

/// Builds the egress policy of `source` from its flows (all with that source).
pub fn egress_plan(
    ctx: &Context,
    source: &SourceWorkload,
    flows: &[&ResolvedFlow],
    name: String,
) -> WorkloadEgress {
    let mut peers: BTreeMap<PeerKey, PeerAcc> = BTreeMap::new();
    for flow in flows {
        let key = match &*flow.peer {
            Peer::Pods {
                namespace,
                selector,
                cluster_dns,
                ..
            } => PeerKey::Pods {
                namespace,
                selector: if *cluster_dns && *namespace == ctx.dns_namespace {
                    &ctx.dns_selector
                } else {
                    selector
                },
            },
            // A dual-stack socket reports an IPv4 peer as `::ffff:a.b.c.d`; on the wire (and to
            // the CNI) it is IPv4, so an ipBlock must name the IPv4 address.
            Peer::ApiServer { ip } => PeerKey::Ip {
                origin: IpOrigin::ApiServer,
                ip: ip.to_canonical(),
            },
            Peer::Node { ip, .. } => PeerKey::Ip {
                origin: IpOrigin::Node,
                ip: ip.to_canonical(),
            },
            Peer::External { ip, .. } => PeerKey::Ip {
                origin: IpOrigin::External,
                ip: ip.to_canonical(),
            },
        };
        let acc = peers.entry(key).or_default();
        let port = acc.ports.entry((flow.protocol, flow.port)).or_default();
        if not_failed(&flow.record) {
            port.not_failed = true;
        } else {
            port.failures.insert(flow.record.outcome);
        }
        match &*flow.peer {
            Peer::Pods {
                namespace,
                workload,
                service,
                cluster_dns,
                ..
            } => {
                acc.workloads.insert((namespace, workload));
                acc.services.extend(service.as_deref());
                acc.cluster_dns |= *cluster_dns;
            }
            Peer::Node { node, .. } => acc.node = Some(node),
            Peer::External { dns_names, .. } => {
                acc.dns_names.extend(dns_names.iter().map(String::as_str));
                acc.dns_names
                    .extend(flow.record.destination.dns_names.iter().map(String::as_str));
            }
            Peer::ApiServer { .. } => {}
        }
    }

    let mut plan = PolicyPlan::new(name, source.namespace.clone(), Direction::Egress);
    plan.selector = source.selector.clone();
    plan.annotate(
        "workload",
        format!("{}/{}", source.workload.kind, source.workload.name),
    );
    annotate_window(&mut plan, flows.iter().map(|f| &*f.record));

    let externals: Vec<(IpAddr, &PeerAcc)> = peers
        .iter()
        .filter_map(|(k, acc)| match k {
            PeerKey::Ip {
                origin: IpOrigin::External,
                ip,
            } => Some((*ip, acc)),
            _ => None,
        })
        .collect();
    let internet = externals.len() > ctx.options.max_external_peers;

    let mut rules: BTreeMap<PortSet, Vec<PeerPlan>> = BTreeMap::new();
    let mut unconfirmed: Vec<String> = Vec::new();
    let mut dns_annotation: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, acc) in &peers {
        let (target, mut comments, label) = match *key {
            PeerKey::Pods {
                namespace,
                selector,
            } => {
                let ns = (namespace != source.namespace).then(|| namespace.to_owned());
                let names: Vec<String> = acc
                    .workloads
                    .iter()
                    .map(|(ns, w)| workload_label(ns, w))
                    .collect();
                let mut what = names.join(", ");
                if !acc.services.is_empty() {
                    let services: Vec<&str> = acc.services.iter().copied().collect();
                    what = format!("{what} via Service {}", services.join(", "));
                }
                if acc.cluster_dns {
                    what = format!("cluster DNS: {what}");
                }
                let target = Target::Pods {
                    namespace: ns,
                    selector: selector.clone(),
                };
                (target, vec![what], names.join(","))
            }
            PeerKey::Ip { origin, ip } => {
                if origin == IpOrigin::External {
                    continue; // below, aggregated or replaced by internet egress
                }
                let net = cidr::host_net(ip);
                let what = match origin {
                    IpOrigin::ApiServer => "Kubernetes API server".to_owned(),
                    _ => format!("node {}", acc.node.unwrap_or("?")),
                };
                let target = Target::IpBlock {
                    cidr: net,
                    except: Vec::new(),
                    origin,
                };
                (target, vec![what], net.to_string())
            }
        };
        let failed = failure_lines(acc);
        for line in &failed {
            unconfirmed.push(format!("{label} {line}"));
        }
        comments.extend(failed.iter().map(|l| format!("never succeeded: {l}")));
        let ports: PortSet = acc.ports.keys().copied().collect();
        rules
            .entry(with_fallback(&ports, acc.cluster_dns))
            .or_default()
            .push(PeerPlan {
                target,
                dns_names: BTreeSet::new(),
                cluster_dns: acc.cluster_dns,
                comments,
            });
    }

    // A workload that resolved names needs DNS even if no DNS flow was recorded for it (answers
    // served from a cache in the window, a lost record): without it, its next lookup fails.
    // Any peer on port 53 counts: a node-local DNS cache (169.254.20.10) or an outside resolver
    // then answers, and the cluster DNS would be a rule nobody uses.
    let has_dns = peers
        .values()
        .any(|acc| acc.cluster_dns || acc.ports.keys().any(|(_, port)| *port == 53));
    let resolved_names = flows.iter().any(|f| {
        !f.record.destination.dns_names.is_empty()
            || matches!(&*f.peer, Peer::External { dns_names, .. } if !dns_names.is_empty())
    });
    if resolved_names && !has_dns {
        let mut dns = super::namespace::dns_peer(ctx, &source.namespace);
        dns.comments = vec![
            "cluster DNS: no DNS flow observed, but the workload resolved names (see dns-names)"
                .into(),
        ];
        rules.entry(ctx.dns_ports.clone()).or_default().push(dns);
    }

    let mut internet_need = None;
    if internet {
        let ports: PortSet = externals
            .iter()
            .flat_map(|(_, acc)| acc.ports.keys().copied())
            .collect();
        let ports = with_fallback(&ports, false);
        let note = format!(
            "{} external addresses (more than {}): internet egress on {}",
            externals.len(),
            ctx.options.max_external_peers,
            ports::compress(&ports)
                .iter()
                .map(|p| p.label())
                .collect::<Vec<_>>()
                .join(", ")
        );
        match ctx.options.internet_egress {
            InternetEgress::Cidr => {
                plan.annotate("internet-egress", format!("cidr; {note}"));
                let entry = rules.entry(ports).or_default();
                for (all, except) in cidr::internet_blocks(&ctx.cluster_ranges) {
                    entry.push(PeerPlan {
                        target: Target::IpBlock {
                            cidr: all,
                            except: except.clone(),
                            origin: IpOrigin::Internet,
                        },
                        dns_names: BTreeSet::new(),
                        cluster_dns: false,
                        comments: internet_comments(&note, &except),
                    });
                    // An observed external address inside an excepted range must stay allowed.
                    for (ip, acc) in &externals {
                        if except.iter().any(|e| e.contains(ip)) {
                            entry.push(external_peer(cidr::host_net(*ip), &[(*ip, acc)]));
                        }
                    }
                }
            }
            InternetEgress::Label => {
                plan.annotate("internet-egress", format!("label; {note}"));
                plan.comments.push(format!(
                    "needs the pod label {}={:?} ({note}); policy {}",
                    super::model::INTERNET_LABEL.0,
                    super::model::INTERNET_LABEL.1,
                    super::naming::INTERNET_EGRESS
                ));
                internet_need = Some(InternetNeed {
                    workload: source.workload.clone(),
                    ports,
                });
            }
        }
    } else {
        // Addresses are merged only among those reached on the same ports: merging across port
        // sets would allow an observed address on another address's ports.
        let mut by_ports: BTreeMap<PortSet, Vec<(IpAddr, &PeerAcc)>> = BTreeMap::new();
        for (ip, acc) in &externals {
            let ports: PortSet = acc.ports.keys().copied().collect();
            by_ports
                .entry(with_fallback(&ports, false))
                .or_default()
                .push((*ip, acc));
        }
        for (ports, members) in by_ports {
            let nets: Vec<IpNet> = members
                .iter()
                .map(|(ip, _)| {
                    cidr::widen(*ip, ctx.options.cidr_prefix_v4, ctx.options.cidr_prefix_v6)
                })
                .collect();
            for net in cidr::exact_aggregate(&nets) {
                let inside: Vec<(IpAddr, &PeerAcc)> = members
                    .iter()
                    .filter(|(ip, _)| net.contains(ip))
                    .copied()
                    .collect();
                let peer = external_peer(net, &inside);
                for (ip, acc) in &inside {
                    for line in failure_lines(acc) {
                        unconfirmed.push(format!("{ip} {line}"));
                    }
                }
                if !peer.dns_names.is_empty() {
                    dns_annotation
                        .entry(net.to_string())
                        .or_default()
                        .extend(peer.dns_names.iter().cloned());
                }
                rules.entry(ports.clone()).or_default().push(peer);
            }
        }
    }

    if !dns_annotation.is_empty() {
        let names: BTreeMap<String, String> = dns_annotation
            .into_iter()
            .map(|(k, v)| (k, v.join(",")))
            .collect();
        plan.annotate(
            "dns-names",
            serde_json::to_string(&names).expect("strings serialize"),
        );
    }
    if !unconfirmed.is_empty() {
        unconfirmed.sort();
        plan.annotate(
            "never-succeeded",
            serde_json::to_string(&unconfirmed).expect("strings serialize"),
        );
    }
    plan.rules = into_rules(rules);
    WorkloadEgress {
        plan,
        internet_need,
    }
}

/// Comments above an internet-egress block; says so when no cluster range is known for its
/// family, because the block then also matches pod addresses on CNIs that apply ipBlocks to pods.
pub fn internet_comments(note: &str, except: &[IpNet]) -> Vec<String> {
    let mut lines = vec![format!("internet egress: {note}")];
    if except.is_empty() {
        lines.push(
            "no pod or Service range known for this family (give the cluster ranges explicitly): in-cluster addresses are not excepted"
                .to_owned(),
        );
    }
    lines
}

/// `TCP/8443 refused` lines for the ports of a peer that never succeeded.
fn failure_lines(acc: &PeerAcc) -> Vec<String> {
    acc.ports
        .iter()
        .filter(|(_, p)| !p.not_failed && !p.failures.is_empty())
        .map(|((protocol, port), p)| {
            let outcomes: Vec<String> = p
                .failures
                .iter()
                .map(|o| format!("{o:?}").to_lowercase())
                .collect();
            format!("{protocol}/{port} {}", outcomes.join("/"))
        })
        .collect()
}

/// An ipBlock peer for external addresses `members` (all inside `net`).
fn external_peer(net: IpNet, members: &[(IpAddr, &PeerAcc)]) -> PeerPlan {
    let dns_names: BTreeSet<String> = members
        .iter()
        .flat_map(|(_, acc)| acc.dns_names.iter().map(|s| (*s).to_owned()))
        .collect();
    let mut comments = vec![if dns_names.is_empty() {
        "no DNS name observed".to_owned()
    } else {
        dns_names.iter().cloned().collect::<Vec<_>>().join(", ")
    }];
    for (ip, acc) in members {
        for line in failure_lines(acc) {
            comments.push(format!("never succeeded: {ip} {line}"));
        }
    }
    PeerPlan {
        target: Target::IpBlock {
            cidr: net,
            except: Vec::new(),
            origin: IpOrigin::External,
        },
        dns_names,
        cluster_dns: false,
        comments,
    }
}

/// Rules from peers grouped by port set: peers sorted, rules ordered by their first peer (pods
/// first, then addresses) and then by ports, so the output never depends on input order.
pub fn into_rules(rules: BTreeMap<PortSet, Vec<PeerPlan>>) -> Vec<RulePlan> {
    let mut out: Vec<(PortSet, RulePlan)> = rules
        .into_iter()
        .map(|(ports, mut peers)| {
            peers.sort();
            peers.dedup();
            let specs = ports::compress(&ports);
            (
                ports,
                RulePlan {
                    peers,
                    ports: specs,
                },
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.1.peers[0].target, &a.0).cmp(&(&b.1.peers[0].target, &b.0)));
    out.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
