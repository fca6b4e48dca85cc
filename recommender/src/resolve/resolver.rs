//! [`Resolver`]: resolution and connections for many records against one cluster, with the
//! lookups memoized. Flows repeat sources and destinations (every replica calls the same
//! Services), and each lookup is a scan of the cluster's objects, so batches (`recommend`,
//! `verify`, a server's ingest) resolve each distinct source and destination once.
//!
//! The memo is only valid for one state of the cluster; holding `&Cluster` makes the borrow
//! checker enforce that.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use flow_model::{FlowRecord, Protocol, SourceKind, WorkloadRef};

use super::connections::{source_endpoint, targets, Connections, Targets};
use super::{
    describe, source_workload, DestinationPeers, Resolution, ResolvedFlow, SourceWorkload,
};
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

fn destination_key(record: &FlowRecord) -> DestinationKey {
    let d = &record.destination;
    (d.ip, d.port, d.protocol)
}

/// Resolves records against one cluster; see the module comment.
pub struct Resolver<'c> {
    cluster: &'c Cluster,
    sources: HashMap<SourceKey, Result<SourceWorkload, String>>,
    destinations: HashMap<DestinationKey, DestinationPeers>,
    /// By source and address family (a pod's address depends on it).
    source_endpoints: HashMap<(SourceKey, bool), Result<Endpoint, String>>,
    targets: HashMap<DestinationKey, Targets>,
}

impl<'c> Resolver<'c> {
    pub fn new(cluster: &'c Cluster) -> Self {
        Resolver {
            cluster,
            sources: HashMap::new(),
            destinations: HashMap::new(),
            source_endpoints: HashMap::new(),
            targets: HashMap::new(),
        }
    }

    /// [`super::resolve`] of one record.
    pub fn resolve(&mut self, record: &FlowRecord) -> Resolution {
        let cluster = self.cluster;
        let mut out = Resolution::default();
        let prefix = describe(record);
        let source = self
            .sources
            .entry(source_key(record))
            .or_insert_with(|| source_workload(cluster, record));
        let source = match source {
            Ok(source) => source.clone(),
            Err(why) => {
                out.notes.push(format!("{prefix}: {why}"));
                return out;
            }
        };
        let d = &record.destination;
        let destination = self
            .destinations
            .entry(destination_key(record))
            .or_insert_with(|| DestinationPeers::new(cluster, d.ip, d.port, d.protocol));
        out.notes
            .extend(destination.notes.iter().map(|n| format!("{prefix}: {n}")));
        match destination.for_record(d) {
            Ok(peers) => {
                out.flows = peers
                    .into_iter()
                    .map(|(peer, port)| ResolvedFlow {
                        source: source.clone(),
                        peer,
                        port,
                        protocol: d.protocol,
                        record: record.clone(),
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
        let from = self
            .source_endpoints
            .entry((source_key(record), d.ip.is_ipv6()))
            .or_insert_with(|| source_endpoint(cluster, record));
        let from = match from {
            Ok(from) => from,
            Err(why) => {
                return Connections {
                    notes: vec![format!("{prefix}: {why}")],
                    ..Connections::default()
                }
            }
        };
        let targets = self
            .targets
            .entry(destination_key(record))
            .or_insert_with(|| targets(cluster, d.ip, d.port, d.protocol));
        let mut connections = targets.connections(from, d.protocol);
        for note in &mut connections.notes {
            *note = format!("{prefix}: {note}");
        }
        connections
    }
}
