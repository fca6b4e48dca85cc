//! A small cluster built per test, written as kubectl-style JSON with its flow records, and the
//! built `recommender` binary run on it. Tests describe only what they are about (a NodeLocal
//! DNSCache, a Deployment selecting by expression, a snapshot without Services) on top of a
//! realistic base: two nodes with podCIDRs, the `default/kubernetes` Service, CoreDNS behind
//! `kube-system/kube-dns`.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

/// The objects and flows of one test's cluster.
pub struct World {
    pub objects: Vec<Value>,
    pub flows: Vec<Value>,
    /// The files of `run`, removed on drop.
    dir: PathBuf,
}

/// What a run of the binary printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout YAML documents, parsed.
    pub fn documents(&self) -> Vec<Value> {
        yaml_documents(&self.stdout)
    }

    /// The document `namespace/name`; panics with the output when absent.
    pub fn policy(&self, namespace: &str, name: &str) -> Value {
        self.documents()
            .into_iter()
            .find(|d| d["metadata"]["namespace"] == namespace && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no policy {namespace}/{name} in:\n{}", self.stdout))
    }
}

/// Multi-document YAML to JSON values (empty documents left out).
pub fn yaml_documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn container(ports: Value) -> Value {
    json!([{"name": "main", "image": "registry.example.test/app:1", "ports": ports}])
}

impl World {
    /// Namespaces `default`, `kube-system`, `shop`, `monitoring`; nodes `cp-1` (10.0.0.1, pods
    /// 10.244.0.0/24) and `node-a` (10.0.0.11, pods 10.244.1.0/24); the API server at 10.0.0.1:6443
    /// behind `default/kubernetes` (10.96.0.1:443). No DNS: see [`World::with_coredns`].
    pub fn new(test: &str) -> World {
        // Tests of one binary run in parallel and may share a name: a counter keeps them apart.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "recommender-world-{}-{n}-{test}",
            std::process::id()
        ));
        let mut world = World {
            objects: Vec::new(),
            flows: Vec::new(),
            dir,
        };
        for ns in ["default", "kube-system", "shop", "monitoring"] {
            world
                .objects
                .push(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}));
        }
        for (name, ip, cidr) in [
            ("cp-1", "10.0.0.1", "10.244.0.0/24"),
            ("node-a", "10.0.0.11", "10.244.1.0/24"),
        ] {
            world.objects.push(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}}));
        }
        world.service(
            "default",
            "kubernetes",
            "10.96.0.1",
            None,
            json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]),
        );
        world.slice(
            "default",
            "kubernetes",
            json!([{"name": "https", "port": 6443, "protocol": "TCP"}]),
            &[("10.0.0.1", None)],
        );
        world
    }

    /// CoreDNS: Deployment `kube-system/coredns` (pods labelled `k8s-app: kube-dns`, containers
    /// ports dns 53/UDP, dns-tcp 53/TCP, metrics 9153/TCP; pods 10.244.0.2 and 10.244.1.2) behind
    /// `kube-system/kube-dns` at 10.96.0.10 (53/UDP `dns`, 53/TCP `dns-tcp`, 9153/TCP `metrics`).
    pub fn with_coredns(mut self) -> World {
        self.coredns(
            "kube-dns",
            json!({"k8s-app": "kube-dns"}),
            json!({"k8s-app": "kube-dns"}),
            53,
        );
        self
    }

    /// A CoreDNS Deployment whose pods carry `pod_labels` and listen for DNS on `dns_port`, behind
    /// the Service `kube-system/<service>` (10.96.0.10) labelled `service_labels`, whose DNS ports
    /// (53, named `dns`/`dns-tcp`) target the container ports by name.
    pub fn coredns(
        &mut self,
        service: &str,
        service_labels: Value,
        pod_labels: Value,
        dns_port: u16,
    ) {
        let ports = json!([
            {"name": "dns", "containerPort": dns_port, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": dns_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}]);
        let pods = self.deployment_with(
            "kube-system",
            "coredns",
            json!({"matchLabels": pod_labels}),
            pod_labels.clone(),
            &[("10.244.0.2", "cp-1"), ("10.244.1.2", "node-a")],
            ports,
        );
        let mut svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service, "namespace": "kube-system", "labels": service_labels},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": pod_labels,
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
                          {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns-tcp"},
                          {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}});
        svc["metadata"]["uid"] = json!(format!("svc-{service}"));
        self.objects.push(svc);
        let endpoints: Vec<(&str, Option<&str>)> = vec![
            ("10.244.0.2", Some(pods[0].as_str())),
            ("10.244.1.2", Some(pods[1].as_str())),
        ];
        self.slice("kube-system", service,
            json!([{"name": "dns", "port": dns_port, "protocol": "UDP"}, {"name": "dns-tcp", "port": dns_port, "protocol": "TCP"},
                   {"name": "metrics", "port": 9153, "protocol": "TCP"}]),
            &endpoints);
    }

    /// NodeLocal DNSCache as the upstream addon deploys it: the hostNetwork DaemonSet
    /// `kube-system/node-local-dns` whose `-localip` argument lists the addresses it binds.
    pub fn with_node_local_dns(mut self, localip: &str) -> World {
        let labels = json!({"k8s-app": "node-local-dns"});
        let spec = json!({"hostNetwork": true, "dnsPolicy": "Default", "containers": [{"name": "node-cache",
            "image": "registry.k8s.io/dns/k8s-dns-node-cache:1.26.4",
            "args": ["-localip", localip, "-conf", "/etc/Corefile", "-upstreamsvc", "kube-dns-upstream"],
            "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"}, {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                      {"containerPort": 9253, "name": "metrics", "protocol": "TCP"}]}]});
        self.objects.push(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "node-local-dns", "namespace": "kube-system", "labels": labels},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": spec}}}));
        for (node, ip) in [("cp-1", "10.0.0.1"), ("node-a", "10.0.0.11")] {
            let mut pod_spec = spec.clone();
            pod_spec["nodeName"] = json!(node);
            self.objects.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("node-local-dns-{node}"), "namespace": "kube-system",
                    "labels": {"k8s-app": "node-local-dns", "controller-revision-hash": "7c9f8d6b5", "pod-template-generation": "1"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "node-local-dns", "uid": "ds-nld", "controller": true}]},
                "spec": pod_spec,
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": ip}}));
        }
        self
    }

    /// A Deployment selecting by `app: <name>`, one pod per `(ip, node)`, no container ports;
    /// returns the pod names.
    pub fn deployment(&mut self, ns: &str, name: &str, pods: &[(&str, &str)]) -> Vec<String> {
        let labels = json!({"app": name});
        self.deployment_with(
            ns,
            name,
            json!({"matchLabels": labels}),
            labels,
            pods,
            json!([]),
        )
    }

    /// A Deployment with its ReplicaSet and pods: `selector` as written in the Deployment, pods
    /// labelled `labels` (plus `pod-template-hash`), with container `ports`; returns the pod names.
    pub fn deployment_with(
        &mut self,
        ns: &str,
        name: &str,
        selector: Value,
        labels: Value,
        pods: &[(&str, &str)],
        ports: Value,
    ) -> Vec<String> {
        let hash = format!("{:x}", name.len() * 7919 + 0x5d78c000);
        let rs = format!("{name}-{hash}");
        self.objects.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "uid": format!("d-{ns}-{name}")},
            "spec": {"selector": selector, "template": {"metadata": {"labels": labels}, "spec": {"containers": container(ports.clone())}}}}));
        let mut rs_labels = labels.clone();
        rs_labels["pod-template-hash"] = json!(hash);
        self.objects.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": rs, "namespace": ns, "uid": format!("rs-{ns}-{name}"), "labels": rs_labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": format!("d-{ns}-{name}"), "controller": true}]},
            "spec": {"selector": {"matchLabels": rs_labels}, "template": {"metadata": {"labels": rs_labels}, "spec": {"containers": container(ports.clone())}}}}));
        let mut names = Vec::new();
        for (i, (ip, node)) in pods.iter().enumerate() {
            let pod = format!("{rs}-p{i}x2k");
            self.objects.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "uid": format!("{ns}-{pod}"), "labels": rs_labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("rs-{ns}-{name}"), "controller": true}]},
                "spec": {"nodeName": node, "containers": container(ports.clone())},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}));
            names.push(pod);
        }
        names
    }

    /// A Service with `ports` (and `selector` when given).
    pub fn service(
        &mut self,
        ns: &str,
        name: &str,
        ip: &str,
        selector: Option<Value>,
        ports: Value,
    ) -> &mut Value {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": ports}});
        if let Some(selector) = selector {
            svc["spec"]["selector"] = selector;
        }
        self.objects.push(svc);
        self.objects.last_mut().unwrap()
    }

    /// The EndpointSlice of Service `ns/service`: `ports`, and one ready endpoint per
    /// `(address, pod name)`.
    pub fn slice(
        &mut self,
        ns: &str,
        service: &str,
        ports: Value,
        endpoints: &[(&str, Option<&str>)],
    ) {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(ip, pod)| {
                let mut e = json!({"addresses": [ip], "conditions": {"ready": true}});
                if let Some(pod) = pod {
                    e["targetRef"] = json!({"kind": "Pod", "namespace": ns, "name": pod});
                }
                e
            })
            .collect();
        self.objects.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": format!("{service}-x1y2z"), "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
            "ports": ports, "endpoints": endpoints}));
    }

    /// Objects of these kinds are left out (`kubectl get pods,ns,nodes` leaves out Services...).
    pub fn without(&mut self, kinds: &[&str]) {
        self.objects
            .retain(|o| !kinds.contains(&o["kind"].as_str().unwrap_or_default()));
    }

    /// A flow record from pod `ns/pod` to `ip:port/protocol`, resolved to `names`.
    pub fn flow(
        &mut self,
        ns: &str,
        pod: &str,
        ip: &str,
        port: u16,
        protocol: &str,
        names: &[&str],
    ) {
        let source = self
            .objects
            .iter()
            .find(|o| {
                o["kind"] == "Pod"
                    && o["metadata"]["namespace"] == ns
                    && o["metadata"]["name"] == pod
            })
            .unwrap_or_else(|| panic!("no pod {ns}/{pod}"));
        let meta = &source["metadata"];
        let outcome = if protocol == "UDP" {
            "sent"
        } else {
            "established"
        };
        self.flows.push(json!({"node": source["spec"]["nodeName"],
            "source": {"kind": "pod", "namespace": ns, "pod": pod, "uid": meta["uid"], "labels": meta["labels"]},
            "destination": {"ip": ip, "port": port, "protocol": protocol, "dns_names": names},
            "first_seen": "2026-11-26T16:00:00Z", "last_seen": "2026-11-26T16:05:00Z", "count": 3, "outcome": outcome}));
    }

    /// Writes `cluster.json` and `flows.jsonl`; returns their paths.
    pub fn write(&self) -> (String, String) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let cluster = self.dir.join("cluster.json");
        let list = json!({"apiVersion": "v1", "kind": "List", "items": self.objects});
        std::fs::write(&cluster, serde_json::to_string_pretty(&list).unwrap()).unwrap();
        let flows = self.dir.join("flows.jsonl");
        let lines: Vec<String> = self.flows.iter().map(|f| f.to_string() + "\n").collect();
        std::fs::write(&flows, lines.concat()).unwrap();
        (cluster.display().to_string(), flows.display().to_string())
    }

    /// A file next to the cluster's (policies to judge with, ...); returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        std::fs::create_dir_all(&self.dir).unwrap();
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// `recommender recommend --cluster <cluster> --flows <flows> <more>`.
    pub fn recommend(&self, more: &[&str]) -> Run {
        let (cluster, flows) = self.write();
        let mut args = vec!["recommend", "--cluster", &cluster, "--flows", &flows];
        args.extend_from_slice(more);
        run(&args)
    }

    /// `recommend` with `more`, then `verify` of the same flows against its output; returns both.
    pub fn recommend_and_verify(&self, more: &[&str]) -> (Run, Run) {
        let recommended = self.recommend(more);
        assert_eq!(
            recommended.code, 0,
            "recommend failed: {}",
            recommended.stderr
        );
        let policies = self.file("policies.yaml", &recommended.stdout);
        let (cluster, flows) = self.write();
        let verified = run(&[
            "verify",
            "--cluster",
            &cluster,
            "--flows",
            &flows,
            "--policies",
            &policies,
        ]);
        (recommended, verified)
    }

    /// `recommender evaluate` on this cluster with `policies` (YAML text).
    pub fn evaluate(
        &self,
        policies: &str,
        from: &str,
        to: &str,
        port: &str,
        protocol: &str,
    ) -> Run {
        let (cluster, _) = self.write();
        let policies = self.file("evaluate-policies.yaml", policies);
        run(&[
            "evaluate",
            "--cluster",
            &cluster,
            "--policies",
            &policies,
            "--from",
            from,
            "--to",
            to,
            "--port",
            port,
            "--protocol",
            protocol,
        ])
    }
}

/// Runs the built binary; RUST_LOG is removed so that stderr holds what the command prints.
pub fn run(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_recommender"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the recommender binary runs");
    Run {
        code: out.status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Every egress (or ingress) rule of a NetworkPolicy document as (peers, ports) JSON.
pub fn rules(policy: &Value) -> Vec<(Vec<Value>, Vec<Value>)> {
    let spec = &policy["spec"];
    let (list, key) = if spec["egress"].is_array() {
        ("egress", "to")
    } else {
        ("ingress", "from")
    };
    spec[list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let peers = r[key].as_array().cloned().unwrap_or_default();
            let ports = r["ports"].as_array().cloned().unwrap_or_default();
            (peers, ports)
        })
        .collect()
}

/// `"53/UDP"`-style labels of a rule's ports, sorted.
pub fn port_labels(ports: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = ports
        .iter()
        .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
        .collect();
    out.sort();
    out
}

/// The ports a policy allows to peers for which `is_peer` holds, as labels, sorted and unique.
pub fn ports_to(policy: &Value, is_peer: impl Fn(&Value) -> bool) -> Vec<String> {
    let mut out: Vec<String> = rules(policy)
        .into_iter()
        .filter(|(peers, _)| peers.iter().any(&is_peer))
        .flat_map(|(_, ports)| port_labels(&ports))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a peer selects pods labelled `key: value` (in its podSelector's matchLabels).
pub fn selects(peer: &Value, key: &str, value: &str) -> bool {
    peer["podSelector"]["matchLabels"][key] == value
}

/// Whether a peer is the ipBlock `cidr`.
pub fn block(peer: &Value, cidr: &str) -> bool {
    peer["ipBlock"]["cidr"] == cidr
}
