//! The test's pods: their metadata, and the pods file (`kubectl get pods -o json`, List form) that
//! tells the agent about them.

use std::collections::BTreeMap;

use serde_json::json;

use super::cgroup::{kubelet_path, Driver, Qos, Runtime};
use super::{random_hex, random_uid};

/// The node name the agent is started with and the pods are scheduled on.
pub const NODE_NAME: &str = "test-node";

/// One pod: what the API server would say about it, and where its container lives.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// 64 hex digits, as containerd names containers.
    pub container_id: String,
    pub driver: Driver,
    pub qos: Qos,
    pub runtime: Runtime,
    /// Whether the pods file lists the pod. An unlisted pod (one started after the file was
    /// written, say) is still a pod to the agent, known only by what its cgroup path says.
    pub listed: bool,
    pub labels: BTreeMap<String, String>,
    /// The ReplicaSet that owns the pod; the agent should report its Deployment.
    pub replica_set: String,
    pub deployment: String,
    pub ip4: String,
    pub ip6: String,
    /// The node the pod is scheduled on (`spec.nodeName`).
    pub node: String,
    /// A cgroup directory (relative to the cgroup v2 root) that holds the kubelet's hierarchy:
    /// one simulated node's subtree when several agents share the machine (`--cgroup-root`).
    pub cgroup_parent: Option<String>,
}

impl PodSpec {
    /// A pod of Deployment `deployment` (ReplicaSet `<deployment>-<hash>`) with fresh random UID and
    /// container id, so that pods of parallel test runs never collide.
    pub fn new(
        namespace: &str,
        deployment: &str,
        hash: &str,
        suffix: &str,
        driver: Driver,
        qos: Qos,
        index: u8,
    ) -> PodSpec {
        let labels = BTreeMap::from([
            ("app".to_owned(), deployment.to_owned()),
            ("pod-template-hash".to_owned(), hash.to_owned()),
        ]);
        PodSpec {
            namespace: namespace.to_owned(),
            name: format!("{deployment}-{hash}-{suffix}"),
            uid: random_uid(),
            container_id: random_hex(32),
            driver,
            qos,
            runtime: Runtime::Containerd,
            listed: true,
            labels,
            replica_set: format!("{deployment}-{hash}"),
            deployment: deployment.to_owned(),
            ip4: format!("10.244.1.{}", 10 + index),
            ip6: format!("fd00:10:244::{:x}", 10 + index),
            node: NODE_NAME.to_owned(),
            cgroup_parent: None,
        }
    }

    /// This pod on node `node`, its cgroups below `cgroup_parent` (that node's subtree).
    pub fn on_node(mut self, node: &str, cgroup_parent: &str) -> PodSpec {
        self.node = node.to_owned();
        self.cgroup_parent = Some(cgroup_parent.to_owned());
        self
    }

    /// This pod under CRI-O instead of containerd.
    pub fn crio(mut self) -> PodSpec {
        self.runtime = Runtime::Crio;
        self
    }

    /// This pod left out of the pods file.
    pub fn unlisted(mut self) -> PodSpec {
        self.listed = false;
        self
    }

    /// The container's cgroup, relative to the cgroup v2 root.
    pub fn cgroup_path(&self) -> String {
        let path = kubelet_path(
            self.driver,
            self.qos,
            self.runtime,
            &self.uid,
            &self.container_id,
        );
        match &self.cgroup_parent {
            Some(parent) => format!("{parent}/{path}"),
            None => path,
        }
    }

    /// The pod as `kubectl get pod -o json` shows it (trimmed to fields a kubelet-era API fills in
    /// for a running pod; enough for the agent and close to the real thing).
    pub fn to_json(&self) -> serde_json::Value {
        let container = self.deployment.clone();
        let resources = match self.qos {
            Qos::BestEffort => json!({}),
            Qos::Burstable => json!({"requests": {"cpu": "50m", "memory": "32Mi"}}),
            Qos::Guaranteed => json!({
                "requests": {"cpu": "100m", "memory": "64Mi"},
                "limits": {"cpu": "100m", "memory": "64Mi"}
            }),
        };
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "generateName": format!("{}-", self.replica_set),
                "creationTimestamp": "2026-11-26T15:00:00Z",
                "labels": self.labels,
                "ownerReferences": [{
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": self.replica_set,
                    "uid": random_uid(),
                    "controller": true,
                    "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "nodeName": self.node,
                "hostNetwork": false,
                "dnsPolicy": "ClusterFirst",
                "restartPolicy": "Always",
                "serviceAccountName": "default",
                "containers": [{
                    "name": container,
                    "image": "registry.example.test/web:1.0",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": resources
                }]
            },
            "status": {
                "phase": "Running",
                "qosClass": self.qos.class_name(),
                "hostIP": "10.244.0.2",
                "podIP": self.ip4,
                "podIPs": [{"ip": self.ip4}, {"ip": self.ip6}],
                "containerStatuses": [{
                    "name": container,
                    "ready": true,
                    "started": true,
                    "restartCount": 0,
                    "image": "registry.example.test/web:1.0",
                    "imageID": format!("registry.example.test/web@sha256:{}", random_hex(32)),
                    "containerID": format!("{}://{}", match self.runtime {
                        Runtime::Containerd => "containerd",
                        Runtime::Crio => "cri-o",
                    }, self.container_id),
                    "state": {"running": {"startedAt": "2026-11-26T15:00:05Z"}}
                }]
            }
        })
    }
}

/// The three pods the tests use: two of Deployment `web` in `shop` (a systemd-driver BestEffort pod
/// and a cgroupfs-driver Burstable pod), and a Guaranteed systemd-driver pod of Deployment `api`
/// in `payments`, so that each kubelet cgroup layout and QoS level is exercised.
pub fn test_pods() -> Vec<PodSpec> {
    vec![
        PodSpec::new(
            "shop",
            "web",
            "5d8f7c9b4",
            "x2k4q",
            Driver::Systemd,
            Qos::BestEffort,
            0,
        ),
        PodSpec::new(
            "shop",
            "web",
            "5d8f7c9b4",
            "h7m2p",
            Driver::Cgroupfs,
            Qos::Burstable,
            1,
        ),
        PodSpec::new(
            "payments",
            "api",
            "7c9f8d6b5",
            "q8w2e",
            Driver::Systemd,
            Qos::Guaranteed,
            2,
        ),
    ]
}

/// The pods file: a `v1` `List` of the listed pods, as `kubectl get pods -o json` writes it.
pub fn pods_file_json(pods: &[PodSpec]) -> String {
    let list = json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": pods.iter().filter(|p| p.listed).map(PodSpec::to_json).collect::<Vec<_>>()
    });
    serde_json::to_string_pretty(&list).expect("serialize pods list")
}
