//! The lab's cluster as the Kubernetes API would show it: the pods file the agent reads and the
//! snapshot (`kubectl get ... -o json` List) the recommender reads, both derived from `spec`.

use serde_json::{json, Map, Value};

use super::spec::{PodSpec, ServiceSpec, NODE_NAME, PODS, POD_CIDR, SERVICES};

fn labels(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<Map<_, _>>(),
    )
}

fn list(items: Vec<Value>) -> String {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    serde_json::to_string_pretty(&list).expect("JSON values serialize")
}

pub fn pod(p: &PodSpec) -> Value {
    let (owner_kind, owner_name) = p.owner;
    let api_version = if owner_kind == "ReplicaSet" || owner_kind == "StatefulSet" {
        "apps/v1"
    } else {
        "v1"
    };
    let ports: Vec<Value> = p
        .ports
        .iter()
        .map(|(name, port, proto)| json!({"name": name, "containerPort": port, "protocol": proto}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": p.name, "namespace": p.namespace, "uid": p.uid, "labels": labels(p.labels),
            "ownerReferences": [{"apiVersion": api_version, "kind": owner_kind, "name": owner_name,
                                 "uid": format!("{}-owner", p.uid), "controller": true}]
        },
        "spec": {"nodeName": NODE_NAME, "containers": [{"name": p.short(), "image": format!("lab/{}", p.short()), "ports": ports}]},
        "status": {
            "phase": "Running", "podIP": p.ip, "podIPs": [{"ip": p.ip}],
            "containerStatuses": [{"name": p.short(), "containerID": format!("containerd://{}", p.container_id),
                                   "image": format!("lab/{}", p.short()), "imageID": "", "ready": true, "restartCount": 0}]
        }
    })
}

/// `kubectl get pods -o json` for this node.
pub fn pods_file() -> String {
    list(PODS.iter().map(|p| pod(p)).collect())
}

fn controllers(p: &PodSpec) -> Vec<Value> {
    let app_labels: Vec<(&str, &str)> = p
        .labels
        .iter()
        .copied()
        .filter(|(k, _)| *k == "app" || *k == "k8s-app")
        .collect();
    let selector = json!({"matchLabels": labels(&app_labels)});
    let template = json!({"metadata": {"labels": labels(&app_labels)}, "spec": {"containers": [{"name": p.short(), "image": format!("lab/{}", p.short())}]}});
    match p.owner {
        ("ReplicaSet", rs) => {
            let deployment = rs.rsplit_once('-').map(|(d, _)| d).unwrap_or(rs);
            vec![
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": deployment, "namespace": p.namespace, "uid": format!("{}-deploy", p.uid)},
                       "spec": {"selector": selector, "template": template}}),
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                       "metadata": {"name": rs, "namespace": p.namespace, "uid": format!("{}-owner", p.uid),
                                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                                                         "uid": format!("{}-deploy", p.uid), "controller": true}]},
                       "spec": {"selector": selector, "template": template}}),
            ]
        }
        ("StatefulSet", name) => vec![json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": p.namespace, "uid": format!("{}-owner", p.uid)},
            "spec": {"selector": selector, "serviceName": name, "template": template}})],
        _ => Vec::new(),
    }
}

fn service(s: &ServiceSpec) -> Vec<Value> {
    let ports: Vec<Value> = s
        .ports
        .iter()
        .map(|(name, port, target, proto)| json!({"name": name, "port": port, "targetPort": target, "protocol": proto}))
        .collect();
    let backends: Vec<&PodSpec> = s.backends().collect();
    // EndpointSlice ports carry the targetPort resolved on the backends, under the Service port's name.
    let slice_ports: Vec<Value> = s
        .ports
        .iter()
        .filter_map(|(name, _, target, proto)| {
            let number = backends.iter().find_map(|p| p.port_number(target, proto))?;
            Some(json!({"name": name, "port": number, "protocol": proto}))
        })
        .collect();
    let endpoints: Vec<Value> = backends
        .iter()
        .map(|p| json!({"addresses": [p.ip], "conditions": {"ready": true}, "nodeName": NODE_NAME,
                        "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace, "uid": p.uid}}))
        .collect();
    vec![
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": s.name, "namespace": s.namespace},
               "spec": {"type": "ClusterIP", "clusterIP": s.cluster_ip, "clusterIPs": [s.cluster_ip],
                        "selector": labels(s.selector), "ports": ports}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": format!("{}-lab", s.name), "namespace": s.namespace,
                            "labels": {"kubernetes.io/service-name": s.name}},
               "addressType": "IPv4", "ports": slice_ports, "endpoints": endpoints}),
    ]
}

/// The snapshot the recommender reads, as `kubectl get ns,nodes,pods,deploy,rs,sts,svc,endpointslices -A -o json`.
pub fn snapshot() -> String {
    let mut items = Vec::new();
    let mut namespaces: Vec<&str> = PODS
        .iter()
        .map(|p| p.namespace)
        .chain(["default"])
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for ns in namespaces {
        items.push(json!({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}));
    }
    items.push(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME}},
        "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.100.10"}]}}));
    for p in PODS {
        items.push(pod(p));
        items.extend(controllers(p));
    }
    for s in SERVICES {
        items.extend(service(s));
    }
    items.push(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                 "ports": [{"name": "https", "port": 443, "targetPort": 6443, "protocol": "TCP"}]}}));
    items.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4", "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["192.168.100.10"], "conditions": {"ready": true}}]}));
    list(items)
}
