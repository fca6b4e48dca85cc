//! A decoded batch made ready for the writer: each record resolved against the cluster model of
//! the moment it arrived (pod IPs are reused: resolving later could name the wrong workload), its
//! edges merged within the batch, what the policies will not cover noted, and, in monitor mode,
//! each record judged against the baseline. Synchronous and CPU-bound: the service runs it on the
//! blocking pool, a few batches at a time.

use std::collections::HashMap;
use std::sync::Arc;

use flow_model::{FlowKey, FlowRecord, Protocol, SourceKind};

use super::metrics::Skip;
use super::monitor::{Judged, Monitor};
use super::state::{FastHash, Interner};
use crate::cluster::{is_host_network, Cluster};
use crate::resolve::{ResolvedFlow, Resolver};
use crate::store::UncoveredFlow;

/// One batch, resolved.
#[derive(Debug, Default)]
pub struct Prepared {
    pub id: Option<String>,
    pub records: usize,
    /// The batch's edges, merged by edge.
    pub edges: Vec<ResolvedFlow>,
    /// Flows the policies will not cover (latest resolution per flow key).
    pub uncovered: Vec<(FlowKey, UncoveredFlow)>,
    pub skipped: HashMap<Skip, u64>,
    /// Monitor mode's findings.
    pub judged: Option<Judged>,
}

/// Resolves (and judges) `records` against `cluster`; the edges' sources and peers come out
/// interned by `interner`.
pub fn prepare(
    id: Option<String>,
    records: &[FlowRecord],
    cluster: &Cluster,
    monitor: Option<&Monitor>,
    interner: &Interner,
) -> Prepared {
    let mut resolver = Resolver::new(cluster);
    let mut out = Prepared {
        id,
        records: records.len(),
        judged: monitor.map(|_| Judged::default()),
        ..Prepared::default()
    };
    // The resolver hands out one `Arc` per distinct source and peer, so within a batch an edge
    // is known by the addresses of its parts.
    let mut edges: HashMap<(usize, usize, u16, Protocol), ResolvedFlow, FastHash> =
        HashMap::default();
    let mut uncovered: HashMap<FlowKey, UncoveredFlow> = HashMap::new();
    // In flow key order, as `recommend` reads them: the resolver gives a destination's warnings
    // with the first record that reaches it, and that must be the same record as there.
    let mut ordered: Vec<&FlowRecord> = records.iter().collect();
    ordered.sort_by(|a, b| key_order(a, b));
    for record in ordered {
        if record.source.kind == SourceKind::Host {
            *out.skipped.entry(Skip::HostProcess).or_default() += 1;
            uncovered.insert(record.key(), UncoveredFlow::HostProcess);
            continue;
        }
        // The destination's address may have belonged to a pod since deleted (and its address
        // reused) when the flow was seen: resolve it against the cluster of that time.
        let then = (!cluster.tombstones.is_empty())
            .then(|| cluster.reassigned_pod(record.destination.ip, record.first_seen))
            .flatten();
        let resolution = match then {
            Some(owner_then) => Resolver::new(&cluster.as_when(owner_then)).resolve(record),
            None => resolver.resolve(record),
        };
        if !resolution.notes.is_empty() || !resolution.warnings.is_empty() {
            let key = record.key();
            // A record sent twice in a batch keeps its warnings from the first time.
            let earlier = match uncovered.remove(&key) {
                Some(UncoveredFlow::Unresolved { warnings, .. }) => warnings,
                _ => Vec::new(),
            };
            let mut warnings: Vec<String> = resolution
                .warnings
                .iter()
                .map(ToString::to_string)
                .collect();
            if warnings.is_empty() {
                warnings = earlier;
            }
            uncovered.insert(
                key,
                UncoveredFlow::Unresolved {
                    notes: resolution.notes,
                    warnings,
                },
            );
        }
        if resolution.flows.is_empty() {
            let reason = if host_network(cluster, record) {
                Skip::HostNetwork
            } else {
                Skip::Unresolved
            };
            *out.skipped.entry(reason).or_default() += 1;
        }
        if let (Some(monitor), Some(judged)) = (monitor, out.judged.as_mut()) {
            if reason_to_judge(cluster, record) {
                let source = resolution.flows.first().map(|f| &*f.source);
                monitor.judge(&mut resolver, record, source, judged);
            }
        }
        for flow in resolution.flows {
            let key = (
                Arc::as_ptr(&flow.source) as usize,
                Arc::as_ptr(&flow.peer) as usize,
                flow.port,
                flow.protocol,
            );
            match edges.entry(key) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    Arc::make_mut(&mut e.get_mut().observed).merge(&flow.observed);
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(flow);
                }
            }
        }
    }
    // The resolver's parts are already one `Arc` per distinct value: each is interned once.
    let mut sources: HashMap<usize, Arc<crate::resolve::SourceWorkload>, FastHash> =
        HashMap::default();
    let mut peers: HashMap<usize, Arc<crate::resolve::Peer>, FastHash> = HashMap::default();
    out.edges = edges
        .into_values()
        .map(|mut flow| {
            flow.source = Arc::clone(
                sources
                    .entry(Arc::as_ptr(&flow.source) as usize)
                    .or_insert_with(|| interner.source(&flow.source)),
            );
            flow.peer = Arc::clone(
                peers
                    .entry(Arc::as_ptr(&flow.peer) as usize)
                    .or_insert_with(|| interner.peer(&flow.peer)),
            );
            flow
        })
        .collect();
    out.uncovered = uncovered.into_iter().collect();
    out
}

/// [`FlowRecord::key`] order, without building the keys.
fn key_order(a: &FlowRecord, b: &FlowRecord) -> std::cmp::Ordering {
    type Key<'r> = (
        &'r str,
        SourceKind,
        Option<&'r str>,
        Option<&'r str>,
        Option<&'r str>,
        Option<&'r str>,
        std::net::IpAddr,
        u16,
        Protocol,
    );
    fn key(r: &FlowRecord) -> Key<'_> {
        let s = &r.source;
        let d = &r.destination;
        (
            r.node.as_str(),
            s.kind,
            s.namespace.as_deref(),
            s.pod.as_deref(),
            s.uid.as_deref(),
            s.container_id.as_deref(),
            d.ip,
            d.port,
            d.protocol,
        )
    }
    key(a).cmp(&key(b))
}

/// Whether the record's source is a hostNetwork pod (by the record, or by the model).
fn host_network(cluster: &Cluster, record: &FlowRecord) -> bool {
    let s = &record.source;
    s.host_network
        || s.uid
            .as_deref()
            .and_then(|uid| cluster.pod_by_uid(uid))
            .or_else(|| cluster.pod(s.namespace.as_deref()?, s.pod.as_deref()?))
            .is_some_and(is_host_network)
}

/// NetworkPolicy governs only pods outside the host's network namespace: only their flows can be
/// unexpected.
fn reason_to_judge(cluster: &Cluster, record: &FlowRecord) -> bool {
    record.source.kind == SourceKind::Pod && !host_network(cluster, record)
}
