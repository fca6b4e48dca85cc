//! The workload a pod belongs to, and the labels a policy selects that workload's pods by.
//!
//! Selector rules (`docs/architecture.md`, "Recommender"):
//! - the top-level owner's whole `spec.selector`, `matchLabels` and `matchExpressions`
//!   (Deployment, StatefulSet, DaemonSet, or a ReplicaSet without a Deployment), when that object is
//!   in the snapshot: a policy then selects exactly the pods the workload's controller owns, and
//!   not a sibling that shares some labels (a canary next to a `track In (stable)` Deployment);
//! - Jobs (and so CronJobs) are never selected by their selector: it is the controller-generated
//!   `controller-uid`, different for every run;
//! - otherwise the pod's labels less the unstable ones ([`UNSTABLE_LABELS`]);
//! - never empty: an empty selector would select every pod in the namespace, so that case is an
//!   error the caller turns into a note.

use std::collections::BTreeMap;

use flow_model::WorkloadRef;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use super::Cluster;
use crate::policy::PodSelector;

/// Pod labels that change with every rollout, revision, pod or job run: selecting by them would
/// tie a policy to one generation of the workload.
pub const UNSTABLE_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/job-completion-index",
];

/// `labels` less [`UNSTABLE_LABELS`].
pub fn stable_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !UNSTABLE_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

fn same(meta: &ObjectMeta, namespace: &str, name: &str) -> bool {
    meta.namespace.as_deref() == Some(namespace) && meta.name.as_deref() == Some(name)
}

/// The workload's selector as a value (see the module comment): `None` when it is empty (it would
/// select the whole namespace) or invalid (the API server would have refused the workload).
fn usable_selector(selector: Option<&LabelSelector>) -> Option<PodSelector> {
    PodSelector::from_label_selector(selector?)
        .ok()
        .filter(|s| !s.is_empty())
}

impl Cluster {
    /// The top-level workload of `pod`: ReplicaSet → its Deployment (from the ReplicaSet's owner, or
    /// by stripping `-<pod-template-hash>` when the ReplicaSet is not in the snapshot), Job → its
    /// CronJob (from the Job's owner, or when the Job is not in the snapshot, a CronJob in the
    /// namespace whose name is the Job's less its `-<schedule>` suffix), StatefulSet and DaemonSet as
    /// they are, other controllers (custom ones) as they are, no controller (or a static pod, owned
    /// by its Node) → kind `Pod`.
    pub fn workload_of(&self, pod: &Pod) -> WorkloadRef {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        match controller_of(&pod.metadata).filter(|o| o.kind != "Node") {
            Some(owner) => self.top_workload(
                namespace,
                &WorkloadRef {
                    kind: owner.kind.clone(),
                    name: owner.name.clone(),
                },
                pod.metadata.labels.as_ref(),
            ),
            None => WorkloadRef {
                kind: "Pod".into(),
                name: pod_name,
            },
        }
    }

    /// The top-level workload for a pod's direct controller `owner` (see [`Cluster::workload_of`]);
    /// `labels` are the pod's, for `pod-template-hash`. Also normalizes a FlowRecord's workload when
    /// the agent could only name the ReplicaSet or Job.
    pub fn top_workload(
        &self,
        namespace: &str,
        owner: &WorkloadRef,
        labels: Option<&BTreeMap<String, String>>,
    ) -> WorkloadRef {
        let named = |kind: &str, name: &str| WorkloadRef {
            kind: kind.into(),
            name: name.into(),
        };
        match owner.kind.as_str() {
            "ReplicaSet" => {
                if let Some(rs) = self
                    .replica_sets
                    .iter()
                    .find(|rs| same(&rs.metadata, namespace, &owner.name))
                {
                    return match controller_of(&rs.metadata) {
                        Some(o) => named(&o.kind, &o.name),
                        None => owner.clone(),
                    };
                }
                let hash = labels.and_then(|l| l.get("pod-template-hash"));
                match hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
                    Some(deployment) => named("Deployment", deployment),
                    None => owner.clone(),
                }
            }
            "Job" => {
                if let Some(job) = self
                    .jobs
                    .iter()
                    .find(|j| same(&j.metadata, namespace, &owner.name))
                {
                    return match controller_of(&job.metadata) {
                        Some(o) => named(&o.kind, &o.name),
                        None => owner.clone(),
                    };
                }
                // CronJob Jobs are named `<cronjob>-<scheduled time in minutes>`; only trust
                // that when such a CronJob exists.
                let cron = owner
                    .name
                    .rsplit_once('-')
                    .filter(|(_, suffix)| {
                        !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
                    })
                    .map(|(base, _)| base)
                    .filter(|base| {
                        self.cron_jobs
                            .iter()
                            .any(|c| same(&c.metadata, namespace, base))
                    });
                match cron {
                    Some(cron) => named("CronJob", cron),
                    None => owner.clone(),
                }
            }
            _ => owner.clone(),
        }
    }

    /// The selector of the workload object `namespace/workload`, when it is in the snapshot and
    /// its selector is usable (see the module comment; Jobs and CronJobs never are).
    pub fn workload_selector(
        &self,
        namespace: &str,
        workload: &WorkloadRef,
    ) -> Option<PodSelector> {
        let name = workload.name.as_str();
        let selector = match workload.kind.as_str() {
            "Deployment" => self
                .deployments
                .iter()
                .find(|o| same(&o.metadata, namespace, name))
                .map(|o| &o.spec.selector),
            "StatefulSet" => self
                .stateful_sets
                .iter()
                .find(|o| same(&o.metadata, namespace, name))
                .map(|o| &o.spec.selector),
            "DaemonSet" => self
                .daemon_sets
                .iter()
                .find(|o| same(&o.metadata, namespace, name))
                .map(|o| &o.spec.selector),
            "ReplicaSet" => self
                .replica_sets
                .iter()
                .find(|o| same(&o.metadata, namespace, name))
                .map(|o| &o.spec.selector),
            _ => None,
        };
        usable_selector(selector)
    }

    /// The selector for pods of `workload` whose labels are `labels`: the workload's own selector
    /// when usable, else the stable labels. `Err` (a note) when that would be empty.
    pub fn selector_for(
        &self,
        namespace: &str,
        workload: &WorkloadRef,
        labels: &BTreeMap<String, String>,
    ) -> Result<PodSelector, String> {
        if let Some(selector) = self.workload_selector(namespace, workload) {
            return Ok(selector);
        }
        let stable = stable_labels(labels);
        if stable.is_empty() {
            return Err(format!(
                "{} {namespace}/{} has no usable selector and its pods no stable labels; a policy \
                 could only select it with an empty podSelector, which would select every pod in \
                 the namespace",
                workload.kind, workload.name
            ));
        }
        Ok(PodSelector::labels(stable))
    }

    /// The selector for `pod`'s workload ([`Cluster::selector_for`] of [`Cluster::workload_of`]).
    pub fn selector_of(&self, pod: &Pod) -> Result<PodSelector, String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        self.selector_for(namespace, &self.workload_of(pod), &labels)
    }
}
