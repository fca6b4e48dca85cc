//! The lab's cluster, read from ordinary Kubernetes YAML (`deploy/lab/`) with the recommender's
//! own snapshot reader, so that a mistake is reported the way `recommender` reports it (file,
//! line and column) and the lab cannot read the files differently from the service it feeds.
//!
//! The lab plays the controllers, the scheduler and the kubelet: from each Deployment,
//! StatefulSet and CronJob it makes the pods their controllers would (names, hash labels, owner
//! references), gives them the addresses of the workload's `lab.egress-recommender.dev/pod-ips`
//! annotation, and writes them (with their ReplicaSets and Jobs) as the pods file the agent reads
//! and the part of the snapshot that `recommender serve` gets besides `deploy/lab/`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use recommender::cluster::Cluster;
use serde_json::{json, Value};

/// The annotation that lists a workload's pod addresses, one per replica.
pub const POD_IPS: &str = "lab.egress-recommender.dev/pod-ips";

/// How a pod's main process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// From the start of the lab to its end (Deployments, StatefulSets).
    Always,
    /// Once, when the lab fires the CronJob during the learning window.
    Scheduled,
}

/// One pod the lab builds.
#[derive(Clone, Debug)]
pub struct LabPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    /// The direct controller: (apiVersion, kind, name).
    pub owner: Owner,
    /// The workload users know it by: (kind, name).
    pub workload: (&'static str, String),
    pub container: Container,
    pub runs: Runs,
}

/// The lab's cluster: what the files say, and the pods made from them.
pub struct Manifest {
    pub files: Vec<PathBuf>,
    pub cluster: Cluster,
    pub pods: Vec<LabPod>,
    pub node_name: String,
    /// The node's InternalIP (where the lab's API server answers).
    pub node_ip: Ipv4Addr,
    /// The cluster DNS Service's ClusterIP.
    pub dns_ip: Ipv4Addr,
}

impl Manifest {
    /// Reads every `*.yaml`/`*.yml`/`*.json` file of `dir`, sorted by name.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{}: no YAML files", dir.display());
        }
        // The recommender's error names the file, line and column.
        let cluster = Cluster::load_files(&files)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .cluster;
        let node = cluster
            .nodes
            .first()
            .with_context(|| format!("{}: no Node: the lab needs its one node", dir.display()))?;
        let node_name = node.metadata.name.clone().unwrap_or_default();
        let node_ip = recommender::cluster::node_addresses(node)
            .find_map(|ip| match ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .with_context(|| format!("Node {node_name}: no IPv4 InternalIP"))?;
        let dns = cluster
            .services
            .iter()
            .find(|s| recommender::cluster::is_cluster_dns(s))
            .context("no cluster DNS Service (kube-system/kube-dns)")?;
        let dns_ip = match recommender::cluster::cluster_ips(dns).first() {
            Some(IpAddr::V4(ip)) => *ip,
            _ => bail!("the cluster DNS Service has no IPv4 ClusterIP"),
        };
        let mut pods = Vec::new();
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 60);
        for d in &cluster.deployments {
            let spec = Some(&d.spec);
            let hash = pod_hash(&format!("{}/{}", ns(&d.metadata), name(&d.metadata)), 10);
            let rs = format!("{}-{hash}", name(&d.metadata));
            let template = spec.map(|s| &s.template);
            let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
            for (i, ip) in pod_ips(&d.metadata, "Deployment", replicas)?
                .into_iter()
                .enumerate()
            {
                let pod = format!("{rs}-{}", pod_hash(&format!("{rs}/{i}"), 5));
                let mut extra = BTreeMap::new();
                extra.insert("pod-template-hash".into(), hash.clone());
                pods.push(make(
                    &d.metadata,
                    template,
                    pod,
                    ip,
                    extra,
                    ("apps/v1", "ReplicaSet", rs.clone()),
                    ("Deployment", name(&d.metadata)),
                    Runs::Always,
                )?);
            }
        }
        for s in &cluster.stateful_sets {
            let spec = Some(&s.spec);
            let sts = name(&s.metadata);
            let revision = format!(
                "{sts}-{}",
                pod_hash(&format!("{}/{sts}", ns(&s.metadata)), 10)
            );
            let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
            for (i, ip) in pod_ips(&s.metadata, "StatefulSet", replicas)?
                .into_iter()
                .enumerate()
            {
                let pod = format!("{sts}-{i}");
                let mut extra = BTreeMap::new();
                extra.insert("controller-revision-hash".into(), revision.clone());
                extra.insert("statefulset.kubernetes.io/pod-name".into(), pod.clone());
                pods.push(make(
                    &s.metadata,
                    spec.map(|s| &s.template),
                    pod,
                    ip,
                    extra,
                    ("apps/v1", "StatefulSet", sts.clone()),
                    ("StatefulSet", sts.clone()),
                    Runs::Always,
                )?);
            }
        }
        for c in &cluster.cron_jobs {
            let cron = name(&c.metadata);
            // Jobs of a CronJob are named after the scheduled time, in minutes.
            let job = format!("{cron}-{minute}");
            let template = c.spec.job_template.spec.as_ref().map(|s| &s.template);
            let ip = pod_ips(&c.metadata, "CronJob", 1)?[0];
            let pod = format!("{job}-{}", pod_hash(&job, 5));
            let mut extra = BTreeMap::new();
            extra.insert("batch.kubernetes.io/job-name".into(), job.clone());
            extra.insert("job-name".into(), job.clone());
            pods.push(make(
                &c.metadata,
                template,
                pod,
                ip,
                extra,
                ("batch/v1", "Job", job),
                ("CronJob", cron),
                Runs::Scheduled,
            )?);
        }
        let manifest = Manifest {
            files,
            cluster,
            pods,
            node_name,
            node_ip,
            dns_ip,
        };
        manifest.check()?;
        Ok(manifest)
    }

    /// What the files must agree on for the lab to build them: distinct addresses inside the
    /// node's pod range, and EndpointSlices that list the lab's pods.
    fn check(&self) -> Result<()> {
        let mut seen = BTreeMap::new();
        for p in &self.pods {
            if let Some(other) = seen.insert(p.ip, &p.name) {
                bail!(
                    "{POD_IPS}: {} is given to both {other} and {}",
                    p.ip,
                    p.name
                );
            }
            if p.command().is_empty() {
                bail!(
                    "pod {}/{}: its container has no command",
                    p.namespace,
                    p.name
                );
            }
        }
        for slice in &self.cluster.endpoint_slices {
            for endpoint in slice.endpoints.iter().flatten() {
                for address in &endpoint.addresses {
                    let ok = address
                        .parse::<Ipv4Addr>()
                        .is_ok_and(|ip| seen.contains_key(&ip) || ip == self.node_ip);
                    if !ok {
                        bail!(
                            "EndpointSlice {}/{}: {address} is neither a lab pod ({POD_IPS}) nor the node",
                            ns(&slice.metadata),
                            name(&slice.metadata)
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The lab pod with this namespace and workload name.
    pub fn pods_of(&self, namespace: &str, workload: &str) -> impl Iterator<Item = &LabPod> {
        let (namespace, workload) = (namespace.to_owned(), workload.to_owned());
        self.pods
            .iter()
            .filter(move |p| p.namespace == namespace && p.workload.1 == workload)
    }

    /// The objects the controllers and the kubelet would have made, as a `kubectl get -o json`
    /// List: the agent's pods file, and the rest of the snapshot for `serve`.
    pub fn scheduled(&self) -> String {
        let mut items: Vec<Value> = Vec::new();
        let mut controllers = BTreeMap::new();
        for p in &self.pods {
            items.push(self.pod_object(p));
            let (api, kind, name) = &p.owner;
            if *kind != "StatefulSet" {
                let (top_kind, top_name) = &p.workload;
                let top_api = if *top_kind == "CronJob" {
                    "batch/v1"
                } else {
                    "apps/v1"
                };
                controllers.insert((p.namespace.clone(), name.clone()), json!({
                    "apiVersion": api, "kind": kind,
                    "metadata": {"name": name, "namespace": p.namespace, "uid": uid(&format!("{}/{name}", p.namespace)),
                        "ownerReferences": [{"apiVersion": top_api, "kind": top_kind, "name": top_name,
                            "uid": uid(&format!("{}/{top_name}/top", p.namespace)), "controller": true}]},
                    "spec": {"selector": {"matchLabels": p.labels}, "template": {"metadata": {"labels": p.labels},
                        "spec": {"containers": [{"name": p.container.name, "image": p.container.image}]}}}
                }));
            }
        }
        items.extend(controllers.into_values());
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        serde_json::to_string_pretty(&list).expect("JSON values serialize")
    }

    fn pod_object(&self, p: &LabPod) -> Value {
        let (api, kind, owner) = &p.owner;
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.namespace, "uid": p.uid, "labels": p.labels,
                "ownerReferences": [{"apiVersion": api, "kind": kind, "name": owner,
                    "uid": uid(&format!("{}/{owner}", p.namespace)), "controller": true}]},
            "spec": {"nodeName": self.node_name, "containers": [p.container]},
            "status": {"phase": "Running", "podIP": p.ip.to_string(), "podIPs": [{"ip": p.ip.to_string()}],
                "hostIP": self.node_ip.to_string(),
                "containerStatuses": [{"name": p.container.name, "containerID": format!("containerd://{}", p.container_id),
                    "image": p.container.image, "imageID": "", "ready": true, "restartCount": 0}]}
        })
    }
}

impl LabPod {
    /// The container's command and arguments, as the container runtime joins them.
    pub fn command(&self) -> Vec<String> {
        let c = &self.container;
        c.command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .cloned()
            .collect()
    }

    /// Its kubelet cgroup (systemd driver, containerd), relative to the cgroup v2 root.
    pub fn cgroup(&self) -> String {
        let uid = self.uid.replace('-', "_");
        format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-{}.scope",
            self.container_id
        )
    }

    /// `namespace/name`.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The container port named `name`, for `protocol`.
    pub fn port_named(&self, name: &str) -> Option<u16> {
        self.container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
    }
}

/// A pod's direct controller: (apiVersion, kind, name).
type Owner = (&'static str, &'static str, String);

#[allow(clippy::too_many_arguments)]
fn make(
    meta: &ObjectMeta,
    template: Option<&PodTemplateSpec>,
    name: String,
    ip: Ipv4Addr,
    extra_labels: BTreeMap<String, String>,
    owner: Owner,
    workload: (&'static str, String),
    runs: Runs,
) -> Result<LabPod> {
    let namespace = ns(meta);
    let what = format!("{} {namespace}/{}", workload.0, workload.1);
    let template = template.with_context(|| format!("{what}: no pod template"))?;
    let containers = &template
        .spec
        .as_ref()
        .with_context(|| format!("{what}: no pod spec"))?
        .containers;
    let [container] = containers.as_slice() else {
        bail!("{what}: the lab runs pods of exactly one container");
    };
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.extend(extra_labels);
    let key = format!("{namespace}/{name}");
    Ok(LabPod {
        uid: uid(&key),
        container_id: format!(
            "{}{}{}{}",
            hex(&key, 1),
            hex(&key, 2),
            hex(&key, 3),
            hex(&key, 4)
        ),
        namespace,
        name,
        ip,
        labels,
        owner,
        workload,
        container: container.clone(),
        runs,
    })
}

fn ns(meta: &ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".into())
}

fn name(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// The workload's pod addresses, one per replica.
fn pod_ips(meta: &ObjectMeta, kind: &str, replicas: i32) -> Result<Vec<Ipv4Addr>> {
    let what = format!("{kind} {}/{}", ns(meta), name(meta));
    let listed = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_IPS))
        .with_context(|| format!("{what}: no {POD_IPS} annotation (the lab's pod addresses)"))?;
    let ips = listed
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Ipv4Addr>()
                .with_context(|| format!("{what}: {POD_IPS}: {s:?} is not an IPv4 address"))
        })
        .collect::<Result<Vec<_>>>()?;
    if ips.len() != usize::try_from(replicas).unwrap_or(0) {
        bail!(
            "{what}: {replicas} replicas but {} addresses in {POD_IPS}",
            ips.len()
        );
    }
    Ok(ips)
}

/// FNV-1a with a salt: stable names and ids for the lab's objects, the same on every run.
fn fnv(text: &str, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn hex(text: &str, salt: u64) -> String {
    format!("{:016x}", fnv(text, salt))
}

/// A UUID-shaped id.
fn uid(key: &str) -> String {
    let (a, b) = (hex(key, 10), hex(key, 11));
    format!(
        "{}-{}-4{}-8{}-{}",
        &a[..8],
        &a[8..12],
        &a[13..16],
        &b[..3],
        &b[4..16]
    )
}

/// Characters Kubernetes uses in generated names (no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn pod_hash(key: &str, len: usize) -> String {
    let mut h = fnv(key, 7);
    (0..len)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_lab() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lab")
    }

    #[test]
    fn the_shipped_lab_loads() {
        let m = Manifest::load(&repo_lab()).unwrap();
        let namespaces: std::collections::BTreeSet<_> =
            m.pods.iter().map(|p| p.namespace.as_str()).collect();
        assert!(namespaces.len() >= 4, "{namespaces:?}");
        assert_eq!(m.pods_of("shop", "web").count(), 2);
        assert!(m.pods.iter().any(|p| p.runs == Runs::Scheduled));
        let scheduled = m.scheduled();
        let mut cluster = Cluster::default();
        cluster
            .add_text(&scheduled, Path::new("scheduled.json"), &mut Vec::new())
            .unwrap();
        assert_eq!(cluster.pods.len(), m.pods.len());
    }

    #[test]
    fn a_yaml_mistake_names_file_line_and_column() {
        let dir = std::env::temp_dir().join(format!("lab-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: [x\n",
        )
        .unwrap();
        let error = Manifest::load(&dir).err().unwrap().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            error.contains("a.yaml:4:") || error.contains("a.yaml:3:"),
            "{error}"
        );
    }

    #[test]
    fn replicas_and_addresses_must_agree() {
        let dir = std::env::temp_dir().join(format!("lab-manifest-r-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(repo_lab().join("10-shop.yaml")).unwrap();
        std::fs::copy(repo_lab().join("00-cluster.yaml"), dir.join("0.yaml")).unwrap();
        std::fs::write(
            dir.join("a.yaml"),
            text.replace("10.244.1.10 10.244.1.11", "10.244.1.10"),
        )
        .unwrap();
        let error = Manifest::load(&dir).err().unwrap().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(error.contains("2 replicas but 1 addresses"), "{error}");
    }
}
