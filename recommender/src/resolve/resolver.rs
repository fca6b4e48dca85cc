//! [`Resolver`]: resolution and connections for many records against one cluster, with the
//! lookups memoized. Flows repeat sources and destinations (every replica calls the same
//! Services), and each lookup is a scan of the cluster's objects, so batches (`recommend`,
//! `verify`, a server's ingest) resolve each distinct source and destination once.
//!
//! Every flow it resolves shares its source and peer with the others of the same workload and
//! peer (one `Arc` each, interned), and its observation with the other flows of that record.
//!
//! The memo is only valid for one state of the cluster; holding `&Cluster` makes the borrow
//! checker enforce that.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::fast::RandomState as FastHash;

use flow_model::{FlowRecord, Protocol, SourceKind, WorkloadRef};

use super::address::service_name;
use super::connections::{source_endpoint, targets, Connections, Targets};
use super::destination::{intern, DestinationPeers};
use super::facts::Facts;
use super::model::{Peer, Resolution, ResolvedFlow, SourceWorkload, Warning};
use super::observation::Observation;
use super::records::describe;
use super::source::source_workload;
use crate::cluster::Cluster;
use crate::policy::Endpoint;

/// Everything of a record's source that its resolution depends on.
type SourceKey = (
    SourceKind,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    Option<WorkloadRef>,
    BTreeMap<String, String>,
);

type DestinationKey = (IpAddr, u16, Protocol);

fn source_key(record: &FlowRecord) -> SourceKey {
    let s = &record.source;
    (
        s.kind,
        s.namespace.clone(),
        s.pod.clone(),
        s.uid.clone(),
        s.host_network,
        s.workload.clone(),
        s.labels.clone(),
    )
}

/// The destination as the network sees it: a dual-stack socket reports an IPv4 peer as
/// `::ffff:a.b.c.d`, but the packet, the Service and the pod are IPv4.
fn destination_key(record: &FlowRecord) -> DestinationKey {
    let d = &record.destination;
    (d.ip.to_canonical(), d.port, d.protocol)
}

/// Resolves records against one cluster; see the module comment.
pub struct Resolver<'c> {
    cluster: &'c Cluster,
    facts: Facts,
    sources: HashMap<SourceKey, Result<Arc<SourceWorkload>, String>, FastHash>,
    destinations: HashMap<DestinationKey, DestinationPeers, FastHash>,
    /// Every distinct source workload and peer handed out, to share them across keys (the pods
    /// of a workload have keys of their own, and so does each port of a peer).
    known_sources: BTreeSet<Arc<SourceWorkload>>,
    known_peers: BTreeSet<Arc<Peer>>,
    /// By source and address family (a pod's address depends on it).
    source_endpoints: HashMap<(SourceKey, bool), Result<Endpoint, String>, FastHash>,
    targets: HashMap<DestinationKey, Targets, FastHash>,
}

impl<'c> Resolver<'c> {
    pub fn new(cluster: &'c Cluster) -> Self {
        Resolver {
            cluster,
            facts: Facts::of(cluster),
            sources: HashMap::default(),
            destinations: HashMap::default(),
            known_sources: BTreeSet::new(),
            known_peers: BTreeSet::new(),
            source_endpoints: HashMap::default(),
            targets: HashMap::default(),
        }
    }

    /// [`super::resolve()`] of one record.
    pub fn resolve(&mut self, record: &FlowRecord) -> Resolution {
        let cluster = self.cluster;
        let mut out = Resolution::default();
        let prefix = describe(record);
        let known_sources = &mut self.known_sources;
        let source = self.sources.entry(source_key(record)).or_insert_with(|| {
            source_workload(cluster, record).map(|source| intern(known_sources, source))
        });
        let source = match source {
            Ok(source) => Arc::clone(source),
            Err(why) => {
                out.notes.push(format!("{prefix}: {why}"));
                return out;
            }
        };
        let d = &record.destination;
        let known_peers = &mut self.known_peers;
        let facts = &self.facts;
        let key = destination_key(record);
        let mut first = false;
        let destination = self.destinations.entry(key).or_insert_with(|| {
            first = true;
            DestinationPeers::new(cluster, facts, key, known_peers)
        });
        out.notes
            .extend(destination.notes.iter().map(|n| format!("{prefix}: {n}")));
        if first {
            // Warnings are about the destination: once, with the first record that reached it.
            out.warnings
                .extend(destination.warnings.iter().map(|w| Warning {
                    reason: w.reason,
                    message: format!("{prefix}: {}", w.message),
                }));
        }
        match &destination.peers {
            Ok(_) if destination.unowned && service_name(&d.dns_names).is_some() => {
                out.notes.push(format!(
                    "{prefix}: {}",
                    svc_refusal(key.0, service_name(&d.dns_names).unwrap_or_default())
                ));
            }
            Ok(peers) => {
                let observed = Arc::new(Observation::of(record));
                out.flows = peers
                    .iter()
                    .map(|(peer, port)| ResolvedFlow {
                        source: Arc::clone(&source),
                        peer: Arc::clone(peer),
                        port: *port,
                        protocol: d.protocol,
                        observed: Arc::clone(&observed),
                    })
                    .collect();
            }
            Err(why) => out.notes.push(format!("{prefix}: {why}")),
        }
        out
    }

    /// [`super::connections_for`] of one record.
    pub fn connections_for(&mut self, record: &FlowRecord) -> Connections {
        let cluster = self.cluster;
        let prefix = describe(record);
        let d = &record.destination;
        let key = destination_key(record);
        let from = self
            .source_endpoints
            .entry((source_key(record), key.0.is_ipv6()))
            .or_insert_with(|| source_endpoint(cluster, record, key.0));
        let from = match from {
            Ok(from) => from,
            Err(why) => {
                return Connections {
                    notes: vec![format!("{prefix}: {why}")],
                    ..Connections::default()
                }
            }
        };
        let facts = &self.facts;
        let targets = self
            .targets
            .entry(key)
            .or_insert_with(|| targets(cluster, facts, key.0, key.1, key.2));
        if let Some(name) = service_name(&d.dns_names).filter(|_| targets.unowned) {
            return Connections {
                notes: vec![format!("{prefix}: {}", svc_refusal(key.0, name))],
                ..Connections::default()
            };
        }
        let mut connections = targets.connections(from, d.protocol);
        for note in &mut connections.notes {
            *note = format!("{prefix}: {note}");
        }
        connections
    }

    /// The per-cluster facts resolution uses.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }
}

/// Why an address resolved from a Service name but unknown to the model gets no rule.
fn svc_refusal(ip: IpAddr, name: &str) -> String {
    format!(
        "{ip} was resolved from the Service name {name}, but no Service or pod in the cluster files has it (missing from the files, or gone): an ipBlock for it would never match a ClusterIP, and would follow a pod IP to whichever pod gets it next; no rule"
    )
}
