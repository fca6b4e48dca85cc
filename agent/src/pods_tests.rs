use super::*;

const UID_WEB: &str = "11111111-2222-3333-4444-555555555555";

fn pod_json(uid: &str, name: &str, owner: Option<(&str, &str)>, hash: Option<&str>) -> String {
    let owner = owner
        .map(|(kind, oname)| {
            format!(
                r#","ownerReferences":[{{"apiVersion":"apps/v1","kind":"{kind}","name":"{oname}","uid":"x","controller":true}}]"#
            )
        })
        .unwrap_or_default();
    let hash = hash
        .map(|h| format!(r#","pod-template-hash":"{h}""#))
        .unwrap_or_default();
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"shop","uid":"{uid}","labels":{{"app":"web"{hash}}}{owner}}},"spec":{{"containers":[{{"name":"c","image":"i"}}]}}}}"#
    )
}

fn one(json: &str) -> PodInfo {
    let mut pods = parse_pods(json, "t.json").unwrap();
    assert_eq!(pods.len(), 1);
    pods.remove(0)
}

fn workload(p: &PodInfo) -> (&str, &str) {
    (p.workload.kind.as_str(), p.workload.name.as_str())
}

#[test]
fn kubectl_json_list() {
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"List","metadata":{{"resourceVersion":""}},"items":[{},{}]}}"#,
        pod_json(
            UID_WEB,
            "web-5d8f7c9b4-x2k4q",
            Some(("ReplicaSet", "web-5d8f7c9b4")),
            Some("5d8f7c9b4")
        ),
        pod_json(
            "aaaaaaaa-0000-0000-0000-000000000000",
            "db-0",
            Some(("StatefulSet", "db")),
            None
        ),
    );
    let pods = parse_pods(&list, "pods.json").unwrap();
    assert_eq!(pods.len(), 2);
    assert_eq!(pods[0].uid, UID_WEB);
    assert_eq!(pods[0].namespace, "shop");
    assert_eq!(pods[0].name, "web-5d8f7c9b4-x2k4q");
    assert_eq!(workload(&pods[0]), ("Deployment", "web"));
    assert_eq!(pods[0].labels["app"], "web");
    assert_eq!(workload(&pods[1]), ("StatefulSet", "db"));
    assert!(!pods[0].host_network);
}

#[test]
fn owners() {
    // The hash label must match the suffix for the ReplicaSet to count as a Deployment's.
    let p = one(&pod_json(
        UID_WEB,
        "x",
        Some(("ReplicaSet", "web-abc")),
        Some("zzz"),
    ));
    assert_eq!(workload(&p), ("ReplicaSet", "web-abc"));
    let p = one(&pod_json(
        UID_WEB,
        "x",
        Some(("ReplicaSet", "web-abc")),
        None,
    ));
    assert_eq!(workload(&p), ("ReplicaSet", "web-abc"));
    let p = one(&pod_json(
        UID_WEB,
        "x",
        Some(("ReplicaSet", "abc")),
        Some("abc"),
    ));
    assert_eq!(workload(&p), ("ReplicaSet", "abc"));
    let p = one(&pod_json(UID_WEB, "x", Some(("DaemonSet", "agent")), None));
    assert_eq!(workload(&p), ("DaemonSet", "agent"));
    let p = one(&pod_json(
        UID_WEB,
        "x",
        Some(("Job", "backup-28472910")),
        None,
    ));
    assert_eq!(workload(&p), ("Job", "backup-28472910"));
    let p = one(&pod_json(UID_WEB, "bare", None, None));
    assert_eq!(workload(&p), ("Pod", "bare"));
    let p = one(&pod_json(
        UID_WEB,
        "kube-apiserver-n1",
        Some(("Node", "n1")),
        None,
    ));
    assert_eq!(workload(&p), ("Node", "n1"));
}

#[test]
fn yaml_list_single_pod_and_multi_document() {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  namespace: ns1\n  uid: {UID_WEB}\nspec:\n  hostNetwork: true\n  containers: [{{name: c, image: i}}]\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {{name: b, uid: BBBBBBBB-0000-0000-0000-000000000000}}\n---\n"
    );
    let pods = parse_pods(&yaml, "pods.yaml").unwrap();
    assert_eq!(pods.len(), 2);
    assert!(pods[0].host_network);
    assert_eq!(pods[0].namespace, "ns1");
    assert_eq!(pods[1].uid, "bbbbbbbb-0000-0000-0000-000000000000");
    assert_eq!(pods[1].namespace, "default");
    // An empty list is fine.
    assert!(parse_pods("apiVersion: v1\nkind: List\nitems: []\n", "p")
        .unwrap()
        .is_empty());
}

#[test]
fn errors_name_the_file_and_position() {
    let err = parse_pods("{\"kind\": \"List\",\n \"items\": [}", "pods.json").unwrap_err();
    assert!(err.to_string().starts_with("pods.json:2:"), "{err}");
    let err = parse_pods("kind: Pod\nmetadata: [unclosed\n", "pods.yaml").unwrap_err();
    assert!(err.to_string().starts_with("pods.yaml:"), "{err}");
    let err = parse_pods("kind: Service\n", "pods.yaml").unwrap_err();
    assert!(err.to_string().contains("document 1"), "{err}");
    let err = parse_pods(
        "kind: List\nitems:\n- kind: Pod\n  metadata: {name: x}\n",
        "p.yaml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("item 1"), "{err}");
    let err = parse_pods("kind: Pod\nmetadata: {uid: 5}\nspec: 7\n", "p.yaml").unwrap_err();
    assert!(matches!(err, Error::NotAPod { .. }), "{err}");
}

#[test]
fn load_and_reload_keep_the_last_good_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pods.json");
    assert!(matches!(PodsFile::load(&path), Err(Error::Read { .. })));

    std::fs::write(&path, pod_json(UID_WEB, "web", None, None)).unwrap();
    let mut file = PodsFile::load(&path).unwrap();
    assert_eq!(file.index()[UID_WEB].name, "web");
    assert_eq!(file.reload_if_changed(), Reload::Unchanged);

    std::fs::write(&path, "{ broken").unwrap();
    assert_eq!(file.reload_if_changed(), Reload::Failed);
    assert_eq!(file.index()[UID_WEB].name, "web");
    assert_eq!(file.reload_if_changed(), Reload::Unchanged); // one warning per change

    std::fs::write(&path, pod_json(UID_WEB, "web-renamed", None, None)).unwrap();
    assert_eq!(file.reload_if_changed(), Reload::Reloaded { pods: 1 });
    assert_eq!(file.index()[UID_WEB].name, "web-renamed");

    std::fs::remove_file(&path).unwrap();
    assert_eq!(file.reload_if_changed(), Reload::Failed);
    assert_eq!(file.index().len(), 1);
    assert_eq!(file.reload_if_changed(), Reload::Unchanged);
}

/// A `kubectl get pods -o yaml` List as a real cluster prints it (status, timestamps, probes...).
#[test]
fn realistic_kubectl_yaml() {
    let yaml = r#"apiVersion: v1
items:
- apiVersion: v1
  kind: Pod
  metadata:
    creationTimestamp: "2026-11-26T15:58:01Z"
    generateName: web-5d8f7c9b4-
    labels:
      app: web
      pod-template-hash: 5d8f7c9b4
    name: web-5d8f7c9b4-x2k4q
    namespace: shop
    ownerReferences:
    - apiVersion: apps/v1
      blockOwnerDeletion: true
      controller: true
      kind: ReplicaSet
      name: web-5d8f7c9b4
      uid: 6a1c2a4e-1b0f-4bb5-9d0c-0c6f8f2f7a10
    resourceVersion: "48213"
    uid: 9f0e3a54-6c1b-4a4e-8f0e-6f2f6a1d2b3c
  spec:
    containers:
    - image: registry.example.test/web:1.4.2
      imagePullPolicy: IfNotPresent
      name: web
      ports:
      - containerPort: 8080
        name: http
        protocol: TCP
      readinessProbe:
        httpGet: {path: /healthz, port: http, scheme: HTTP}
        periodSeconds: 10
      resources:
        limits: {cpu: 500m, memory: 256Mi}
        requests: {cpu: 100m, memory: 128Mi}
    dnsPolicy: ClusterFirst
    nodeName: node-a
    restartPolicy: Always
    serviceAccountName: default
    tolerations:
    - effect: NoExecute
      key: node.kubernetes.io/not-ready
      operator: Exists
      tolerationSeconds: 300
  status:
    conditions:
    - lastProbeTime: null
      lastTransitionTime: "2026-11-26T15:58:03Z"
      status: "True"
      type: Ready
    containerStatuses:
    - containerID: containerd://3b2c0a6f5e1d4c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b
      image: registry.example.test/web:1.4.2
      imageID: registry.example.test/web@sha256:0123
      lastState: {}
      name: web
      ready: true
      restartCount: 0
      started: true
      state:
        running:
          startedAt: "2026-11-26T15:58:02Z"
    hostIP: 10.0.0.11
    phase: Running
    podIP: 10.244.1.23
    podIPs:
    - ip: 10.244.1.23
    qosClass: Burstable
    startTime: "2026-11-26T15:58:01Z"
kind: List
metadata:
  resourceVersion: ""
"#;
    let pods = parse_pods(yaml, "pods.yaml").unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].uid, "9f0e3a54-6c1b-4a4e-8f0e-6f2f6a1d2b3c");
    assert_eq!(workload(&pods[0]), ("Deployment", "web"));
    assert_eq!(pods[0].labels.len(), 2);
}

#[test]
fn hostile_pods_files_are_refused_with_a_position() {
    // 100,000 nested sequences: refused by the shared reader's depth limit, not parsed.
    let err = parse_pods(
        &format!("kind: List\nitems: {}", "[".repeat(100_000)),
        "p.yaml",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("p.yaml:2:135: not valid YAML: nested deeper than 128"),
        "{err}"
    );
    let err = parse_pods(&"[".repeat(100_000), "p.json").unwrap_err();
    assert!(err.to_string().contains("nested deeper than 128"), "{err}");
    // Billion laughs: refused at the alias that crosses the budget.
    let mut text = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    for pair in ["a", "b", "c", "d", "e", "f", "g"].windows(2) {
        let aliases = vec![format!("*{}", pair[0]); 9].join(",");
        text.push_str(&format!("{}: &{} [{aliases}]\n", pair[1], pair[1]));
    }
    let err = parse_pods(&text, "p.yaml").unwrap_err();
    assert!(err.to_string().starts_with("p.yaml:6:"), "{err}");
    assert!(err.to_string().contains("alias *e expands"), "{err}");
}

#[test]
fn a_byte_order_mark_is_tolerated() {
    let json = format!("\u{feff}{}", pod_json(UID_WEB, "web-1", None, None));
    assert_eq!(one(&json).name, "web-1");
    let yaml =
        format!("\u{feff}apiVersion: v1\nkind: Pod\nmetadata: {{name: a, uid: {UID_WEB}}}\n");
    assert_eq!(one(&yaml).name, "a");
}

#[test]
fn a_static_pods_mirror_is_indexed_by_the_static_pods_uid_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pods.yaml");
    std::fs::write(
        &path,
        format!(
            "kind: Pod\nmetadata:\n  name: etcd-n1\n  namespace: kube-system\n  uid: {UID_WEB}\n  annotations:\n    kubernetes.io/config.mirror: 6d1ab2e1f0a9b8c7d6e5f4a3b2c1d0e9\n    kubernetes.io/config.hash: 6d1ab2e1f0a9b8c7d6e5f4a3b2c1d0e9\n  ownerReferences: [{{apiVersion: v1, kind: Node, name: n1, uid: x, controller: true}}]\n"
        ),
    )
    .unwrap();
    let index = PodsFile::load(&path).unwrap().index();
    assert_eq!(index.len(), 2);
    assert_eq!(index["6d1ab2e1f0a9b8c7d6e5f4a3b2c1d0e9"].name, "etcd-n1");
    assert_eq!(
        index[UID_WEB].static_uid.as_deref(),
        Some("6d1ab2e1f0a9b8c7d6e5f4a3b2c1d0e9")
    );
}
