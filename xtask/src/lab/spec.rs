//! The lab's cluster, declared once: the world builder, the pods file and the cluster snapshot are
//! all derived from these tables, so they cannot disagree.

/// A pod of the lab: a kubelet-named cgroup with its own network namespace on the node's bridge.
pub struct PodSpec {
    pub namespace: &'static str,
    pub name: &'static str,
    pub uid: &'static str,
    pub container_id: &'static str,
    pub ip: &'static str,
    pub labels: &'static [(&'static str, &'static str)],
    /// The controller that owns the pod: (kind, name). A ReplicaSet implies its Deployment.
    pub owner: (&'static str, &'static str),
    /// Named container ports: (name, port, protocol).
    pub ports: &'static [(&'static str, u16, &'static str)],
}

/// A ClusterIP Service: selector and ports (name, port, targetPort name, protocol).
pub struct ServiceSpec {
    pub namespace: &'static str,
    pub name: &'static str,
    pub cluster_ip: &'static str,
    pub selector: &'static [(&'static str, &'static str)],
    pub ports: &'static [(&'static str, u16, &'static str, &'static str)],
}

pub const POD_CIDR: &str = "10.244.1.0/24";
pub const NODE_BRIDGE_IP: &str = "10.244.1.1";
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";
/// The "internet" host's addresses: api.example.test has two.
pub const EXTERNAL_IPS: &[&str] = &["198.18.0.10", "198.18.0.11"];
pub const NODE_NAME: &str = "lab-node";

pub const WEB: PodSpec = PodSpec {
    namespace: "shop",
    name: "web-5d8f7c9b4-x2k4q",
    uid: "6f1c2a4e-9b1d-4c53-a8f0-1d2e3f405a6b",
    container_id: "4b825dc642cb6eb9a060e54bf8d69288fbee4904a0b1c2d3e4f5a6b7c8d9e0f1",
    ip: "10.244.1.10",
    labels: &[("app", "web"), ("pod-template-hash", "5d8f7c9b4")],
    owner: ("ReplicaSet", "web-5d8f7c9b4"),
    ports: &[],
};

pub const API: PodSpec = PodSpec {
    namespace: "shop",
    name: "api-7c9d8b6f5-q8r2m",
    uid: "0d7e3c1b-5a4f-4e2d-9c8b-7a6f5e4d3c2b",
    container_id: "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0",
    ip: "10.244.1.20",
    labels: &[("app", "api"), ("pod-template-hash", "7c9d8b6f5")],
    owner: ("ReplicaSet", "api-7c9d8b6f5"),
    ports: &[("http", 8080, "TCP")],
};

pub const LEDGER: PodSpec = PodSpec {
    namespace: "payments",
    name: "ledger-0",
    uid: "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
    container_id: "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809",
    ip: "10.244.1.30",
    labels: &[
        ("app", "ledger"),
        ("controller-revision-hash", "ledger-6d5c4b3a2"),
        ("statefulset.kubernetes.io/pod-name", "ledger-0"),
    ],
    owner: ("StatefulSet", "ledger"),
    ports: &[("pg", 5432, "TCP")],
};

pub const COREDNS: PodSpec = PodSpec {
    namespace: "kube-system",
    name: "coredns-5d78c9869d-7xk2p",
    uid: "c0ffee00-1234-4d56-8e9f-0a1b2c3d4e5f",
    container_id: "5e4d3c2b1a0f9e8d7c6b5a4938271605e4d3c2b1a0f9e8d7c6b5a49382716050",
    ip: "10.244.1.53",
    labels: &[("k8s-app", "kube-dns"), ("pod-template-hash", "5d78c9869d")],
    owner: ("ReplicaSet", "coredns-5d78c9869d"),
    // Not 53: a Service port and its targetPort differ, as they may in any cluster.
    ports: &[("dns", 5353, "UDP"), ("dns-tcp", 5353, "TCP")],
};

pub const PODS: &[&PodSpec] = &[&WEB, &API, &LEDGER, &COREDNS];

pub const SERVICES: &[ServiceSpec] = &[
    ServiceSpec {
        namespace: "kube-system",
        name: "kube-dns",
        cluster_ip: CLUSTER_DNS_IP,
        selector: &[("k8s-app", "kube-dns")],
        ports: &[("dns", 53, "dns", "UDP"), ("dns-tcp", 53, "dns-tcp", "TCP")],
    },
    ServiceSpec {
        namespace: "shop",
        name: "api",
        cluster_ip: "10.96.0.20",
        selector: &[("app", "api")],
        ports: &[("http", 80, "http", "TCP")],
    },
    ServiceSpec {
        namespace: "payments",
        name: "ledger",
        cluster_ip: "10.96.0.30",
        selector: &[("app", "ledger")],
        ports: &[("pg", 5432, "pg", "TCP")],
    },
];

/// The names the cluster DNS answers: cluster Services plus the external API (two addresses,
/// and a CNAME in front).
pub const DNS_RECORDS: &[(&str, &str)] = &[
    ("api.shop.svc.cluster.local", "10.96.0.20"),
    ("ledger.payments.svc.cluster.local", "10.96.0.30"),
    ("api.example.test", "198.18.0.10"),
    ("api.example.test", "198.18.0.11"),
];
pub const DNS_CNAMES: &[(&str, &str)] = &[("www.example.test", "api.example.test")];

impl ServiceSpec {
    /// The lab's pods this Service selects.
    pub fn backends(&self) -> impl Iterator<Item = &'static PodSpec> + '_ {
        PODS.iter()
            .copied()
            .filter(|p| self.selector.iter().all(|(k, v)| p.label(k) == Some(*v)))
    }
}

impl PodSpec {
    /// The number of the container port named `name` for `protocol`: a named targetPort resolved
    /// on this pod, as the kubelet and kube-proxy resolve it.
    pub fn port_number(&self, name: &str, protocol: &str) -> Option<u16> {
        self.ports
            .iter()
            .find(|(n, _, p)| *n == name && *p == protocol)
            .map(|(_, number, _)| *number)
    }

    /// The pod's own selector labels, less the controller's hash labels.
    pub fn label(&self, key: &str) -> Option<&'static str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// Its kubelet cgroup (systemd driver, containerd), relative to the cgroup v2 root.
    pub fn cgroup(&self) -> String {
        let uid = self.uid.replace('-', "_");
        format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-{}.scope",
            self.container_id
        )
    }

    /// A short name for its network namespace and veth.
    pub fn short(&self) -> &'static str {
        self.name.split('-').next().unwrap_or(self.name)
    }
}
