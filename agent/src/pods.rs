//! Pod metadata from a pods file (`kubectl get pods -o json|yaml`), indexed by pod UID.
//!
//! Accepts a `List`/`PodList`, a single `Pod`, or multi-document YAML of either. The file is polled
//! for changes (mtime and length): a broken edit keeps the last good index, since losing every
//! pod's identity because of one typo would be worse than slightly stale labels.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use flow_model::{Source, WorkloadRef};
use k8s_openapi::api::core::v1::Pod;

/// Pods by UID (lower case), as a pod source last knew them. Cheap to clone and hold while the
/// source moves on.
pub type PodIndex = Arc<HashMap<String, Arc<PodInfo>>>;

/// What the agent needs of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub workload: WorkloadRef,
    pub host_network: bool,
    /// For the API's mirror of a static pod: the UID the kubelet gave the static pod itself (the
    /// `kubernetes.io/config.mirror` annotation), which is the one its cgroup is named after.
    pub static_uid: Option<String>,
}

/// The annotation of a mirror pod that holds its static pod's UID (the config hash).
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

impl PodInfo {
    /// The UIDs a cgroup path may name this pod by: its own, and a static pod's.
    pub fn uids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.uid.as_str()).chain(self.static_uid.as_deref())
    }

    /// Writes what the pod's metadata says into a FlowRecord's `source` (whose UID and container
    /// id come from the cgroup path).
    pub fn describe(&self, source: &mut Source) {
        source.namespace = Some(self.namespace.clone());
        source.pod = Some(self.name.clone());
        source.workload = Some(self.workload.clone());
        source.labels = self.labels.clone();
        source.host_network = self.host_network;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read the pods file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not JSON or YAML, or past the limits every input file has (see `flow_model::documents`).
    #[error(transparent)]
    Syntax(#[from] flow_model::documents::DocumentError),
    #[error("{path}: {position}: not a Pod: {message}")]
    NotAPod {
        path: String,
        position: String,
        message: String,
    },
}

/// Parses a pods file's text. `path` only names the input in errors.
pub fn parse_pods(text: &str, path: &str) -> Result<Vec<PodInfo>, Error> {
    let mut pods = Vec::new();
    let (_, documents) = flow_model::documents::parse(text, path)?;
    for document in documents {
        let position = format!("document {}", document.number);
        collect_document(document.value, path, &position, &mut pods)?;
    }
    Ok(pods)
}

fn collect_document(
    doc: serde_json::Value,
    path: &str,
    position: &str,
    out: &mut Vec<PodInfo>,
) -> Result<(), Error> {
    let not_a_pod = |position: String, message: String| Error::NotAPod {
        path: path.to_owned(),
        position,
        message,
    };
    let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    match kind {
        "List" | "PodList" => {
            let items = match doc.get("items") {
                Some(serde_json::Value::Array(items)) => items.clone(),
                Some(serde_json::Value::Null) | None => Vec::new(),
                Some(_) => {
                    return Err(not_a_pod(position.to_owned(), "items is not a list".into()))
                }
            };
            for (i, item) in items.into_iter().enumerate() {
                let at = format!("{position}, item {}", i + 1);
                let item_kind = item.get("kind").and_then(|k| k.as_str());
                // `kubectl get pods -o json` items carry no kind; a List may mix kinds.
                if item_kind.is_some_and(|k| k != "Pod") {
                    continue;
                }
                let pod: Pod = serde_json::from_value(item)
                    .map_err(|e| not_a_pod(at.clone(), e.to_string()))?;
                out.push(pod_info(&pod).ok_or_else(|| not_a_pod(at, "no metadata.uid".into()))?);
            }
            Ok(())
        }
        "Pod" => {
            let pod: Pod = serde_json::from_value(doc)
                .map_err(|e| not_a_pod(position.to_owned(), e.to_string()))?;
            out.push(
                pod_info(&pod)
                    .ok_or_else(|| not_a_pod(position.to_owned(), "no metadata.uid".into()))?,
            );
            Ok(())
        }
        other => Err(not_a_pod(
            position.to_owned(),
            format!("kind {other:?}, expected Pod, PodList or List"),
        )),
    }
}

/// The fields the agent reports, or `None` for a pod without UID (never from a real API server).
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let uid = meta
        .uid
        .clone()
        .filter(|u| !u.is_empty())?
        .to_ascii_lowercase();
    let name = meta.name.clone().unwrap_or_default();
    let labels: BTreeMap<String, String> = meta.labels.clone().unwrap_or_default();
    let workload = owner_workload(pod, &name, &labels);
    Some(PodInfo {
        uid,
        namespace: meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        name,
        labels,
        workload,
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
        static_uid: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIRROR_ANNOTATION))
            .map(|hash| hash.trim().to_ascii_lowercase())
            .filter(|hash| !hash.is_empty()),
    })
}

/// The top-level workload, as far as the pod itself tells.
///
/// A ReplicaSet named `<deployment>-<pod-template-hash>` (the hash matching the pod's own label)
/// belongs to that Deployment, as kubectl assumes; other owners are reported as they are. A Job is
/// reported as a Job even when its name looks like `<cronjob>-<digits>`: the pod does not say which
/// CronJob (if any) made it.
fn owner_workload(pod: &Pod, pod_name: &str, labels: &BTreeMap<String, String>) -> WorkloadRef {
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first());
    let Some(owner) = owner else {
        return WorkloadRef {
            kind: "Pod".to_owned(),
            name: pod_name.to_owned(),
        };
    };
    if owner.kind == "ReplicaSet" {
        let deployment = labels
            .get("pod-template-hash")
            .filter(|hash| !hash.is_empty())
            .and_then(|hash| owner.name.strip_suffix(hash.as_str()))
            .and_then(|rest| rest.strip_suffix('-'))
            .filter(|name| !name.is_empty());
        if let Some(name) = deployment {
            return WorkloadRef {
                kind: "Deployment".to_owned(),
                name: name.to_owned(),
            };
        }
    }
    WorkloadRef {
        kind: owner.kind.clone(),
        name: owner.name.clone(),
    }
}

/// What a reload check did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded {
        pods: usize,
    },
    /// The file changed but could not be used; the previous index stays (already logged).
    Failed,
}

/// The pods file and the index built from its last good version.
pub struct PodsFile {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    pods: PodIndex,
}

impl PodsFile {
    /// Loads the file; any problem is an error naming the file (and position).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let mut file = Self {
            path: path.to_owned(),
            stamp: None,
            pods: Arc::default(),
        };
        let stamp = file.stamp().map_err(|source| file.read_error(source))?;
        file.pods = Arc::new(file.read()?);
        file.stamp = Some(stamp);
        Ok(file)
    }

    /// Re-reads the file if its mtime or length changed since the last look.
    pub fn reload_if_changed(&mut self) -> Reload {
        let stamp = match self.stamp() {
            Ok(stamp) => stamp,
            Err(source) => {
                if self.stamp.take().is_some() {
                    tracing::warn!(error = %self.read_error(source), "keeping the last good pods file");
                    return Reload::Failed;
                }
                return Reload::Unchanged; // already reported
            }
        };
        if self.stamp == Some(stamp) {
            return Reload::Unchanged;
        }
        // Remember the stamp even on failure: one warning per change, not one per poll.
        self.stamp = Some(stamp);
        match self.read() {
            Ok(pods) => {
                let n = pods.len();
                self.pods = Arc::new(pods);
                tracing::info!(path = %self.path.display(), pods = n, "reloaded the pods file");
                Reload::Reloaded { pods: n }
            }
            Err(error) => {
                tracing::warn!(%error, "keeping the last good pods file");
                Reload::Failed
            }
        }
    }

    /// The current index, uid → pod. Cheap to clone and hold while the file reloads.
    pub fn index(&self) -> PodIndex {
        Arc::clone(&self.pods)
    }

    fn stamp(&self) -> std::io::Result<(SystemTime, u64)> {
        let meta = std::fs::metadata(&self.path)?;
        Ok((meta.modified()?, meta.len()))
    }

    fn read_error(&self, source: std::io::Error) -> Error {
        Error::Read {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn read(&self) -> Result<HashMap<String, Arc<PodInfo>>, Error> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.read_error(e))?;
        let pods = parse_pods(&text, &self.path.display().to_string())?;
        let mut index = HashMap::with_capacity(pods.len());
        for pod in pods {
            let pod = Arc::new(pod);
            for uid in pod.uids() {
                index.insert(uid.to_owned(), Arc::clone(&pod));
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
#[path = "pods_tests.rs"]
mod tests;
