//! The source of a record: the pod in the cluster model, or what the record itself says of a pod
//! the model no longer has; never a node process or a hostNetwork pod (NetworkPolicy does not
//! apply to them).

use flow_model::{FlowRecord, SourceKind, WorkloadRef};
use k8s_openapi::api::core::v1::Pod;

use super::model::SourceWorkload;
use crate::cluster::{is_host_network, Cluster};

/// The record's source pod in the snapshot (`None` when absent), or why the record has no pod
/// source that NetworkPolicy governs.
pub(super) fn source_pod<'c>(
    cluster: &'c Cluster,
    record: &FlowRecord,
) -> Result<Option<&'c Pod>, String> {
    let source = &record.source;
    if source.kind == SourceKind::Host {
        return Err("a node process: NetworkPolicy does not apply to it; skipped".into());
    }
    let pod = source
        .uid
        .as_deref()
        .and_then(|uid| cluster.pod_by_uid(uid))
        .or_else(|| cluster.pod(source.namespace.as_deref()?, source.pod.as_deref()?));
    if source.host_network || pod.is_some_and(is_host_network) {
        return Err("a hostNetwork pod: NetworkPolicy does not apply to it; skipped".into());
    }
    Ok(pod)
}

/// The namespace of a record whose pod is not in the snapshot.
pub(super) fn record_namespace(record: &FlowRecord) -> Result<String, String> {
    record
        .source
        .namespace
        .clone()
        .ok_or_else(|| "source pod has no namespace and is not in the cluster snapshot".into())
}

pub(super) fn source_workload(
    cluster: &Cluster,
    record: &FlowRecord,
) -> Result<SourceWorkload, String> {
    if let Some(pod) = source_pod(cluster, record)? {
        return Ok(SourceWorkload {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            workload: cluster.workload_of(pod),
            selector: cluster.selector_of(pod)?,
        });
    }
    let source = &record.source;
    let namespace = record_namespace(record)?;
    let workload = match (&source.workload, &source.pod) {
        (Some(w), _) => cluster.top_workload(&namespace, w, Some(&source.labels)),
        (None, Some(pod)) => WorkloadRef {
            kind: "Pod".into(),
            name: pod.clone(),
        },
        (None, None) => return Err("source has neither workload nor pod name".into()),
    };
    let selector = cluster.selector_for(&namespace, &workload, &source.labels)?;
    Ok(SourceWorkload {
        namespace,
        workload,
        selector,
    })
}
