//! Property: on generated clusters and flows, the whole pipeline (load → resolve → recommend →
//! render → parse back) yields policies that allow every observed connection (what `verify`
//! checks) and deny unobserved neighbours of it: another port, a pod of another workload, the same
//! labels in another namespace, the next external address.

mod synth_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use flow_model::FlowRecord;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use proptest::prelude::*;
use recommender::cluster::Cluster;
use recommender::policy::{Connection, Endpoint, PolicySet};
use recommender::resolve::{
    connections_for, ip_endpoint, merge_records, pod_endpoint, resolve_all,
};
use recommender::synth::{recommend, render, Options};
use serde_json::{json, Value};

#[derive(Clone, Debug)]
struct WSpec {
    ns: usize,
    stateful: bool,
    replicas: usize,
    service: bool,
}

#[derive(Clone, Debug)]
enum FSpec {
    Workload {
        src: usize,
        replica: usize,
        dst: usize,
        port: usize,
        via_service: bool,
    },
    External {
        src: usize,
        ip: u8,
        port: u16,
    },
    ApiServer {
        src: usize,
    },
    Dns {
        src: usize,
    },
}

#[derive(Clone, Debug)]
struct Model {
    namespaces: usize,
    workloads: Vec<WSpec>,
    flows: Vec<FSpec>,
    default_deny: bool,
    with_ingress: bool,
    /// A low `max_external_peers`, so that busy workloads get internet egress.
    internet: bool,
}

fn model() -> impl Strategy<Value = Model> {
    let w = (0..3usize, any::<bool>(), 1..=2usize, any::<bool>()).prop_map(
        |(ns, stateful, replicas, service)| WSpec {
            ns,
            stateful,
            replicas,
            service,
        },
    );
    let f = prop_oneof![
        4 => (0..8usize, 0..2usize, 0..8usize, 0..3usize, any::<bool>()).prop_map(|(src, replica, dst, port, via_service)| FSpec::Workload { src, replica, dst, port, via_service }),
        3 => (0..8usize, 0..12u8, prop::sample::select(vec![80u16, 443, 8443])).prop_map(|(src, ip, port)| FSpec::External { src, ip, port }),
        1 => (0..8usize).prop_map(|src| FSpec::ApiServer { src }),
        1 => (0..8usize).prop_map(|src| FSpec::Dns { src }),
    ];
    (
        1..=3usize,
        prop::collection::vec(w, 2..=6),
        prop::collection::vec(f, 1..=24),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(namespaces, mut workloads, flows, default_deny, with_ingress, internet)| {
                for w in &mut workloads {
                    w.ns %= namespaces;
                }
                Model {
                    namespaces,
                    workloads,
                    flows,
                    default_deny,
                    with_ingress,
                    internet,
                }
            },
        )
}

fn ns_name(i: usize) -> String {
    format!("ns{i}")
}

fn pod_name(w: usize, spec: &WSpec, r: usize) -> String {
    if spec.stateful {
        format!("w{w}-{r}")
    } else {
        format!("w{w}-5d8f7c9b4-{r}x")
    }
}

fn pod_ip(w: usize, r: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, (10 + w * 4 + r) as u8)
}

/// Container port `k` of workload `w` (distinct per workload, so that ports say who they are).
fn container_port(w: usize, k: usize) -> u16 {
    (8000 + w * 10 + k) as u16
}

fn uid(tag: &str, n: usize) -> String {
    format!("00000000-0000-4000-8000-{:04x}{:08x}", tag.len(), n)
}

fn cluster_json(m: &Model) -> Value {
    let mut items = vec![
        json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-0"},
        "spec":{"podCIDRs":["10.244.0.0/24"]},"status":{"addresses":[{"type":"InternalIP","address":"172.18.0.10"}]}}),
    ];
    for ns in (0..m.namespaces)
        .map(ns_name)
        .chain(["kube-system".to_owned(), "default".to_owned()])
    {
        items.push(json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":ns,"labels":{"kubernetes.io/metadata.name":ns}}}));
    }
    items.push(json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"kubernetes","namespace":"default"},
        "spec":{"clusterIP":"10.96.0.1","ports":[{"name":"https","port":443,"protocol":"TCP","targetPort":6443}]}}));
    items.push(json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","addressType":"IPv4",
        "metadata":{"name":"kubernetes","namespace":"default","labels":{"kubernetes.io/service-name":"kubernetes"}},
        "ports":[{"name":"https","port":6443,"protocol":"TCP"}],"endpoints":[{"addresses":["172.18.0.100"]}]}));
    items.push(json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"coredns","namespace":"kube-system","uid":uid("d",999)},
        "spec":{"selector":{"matchLabels":{"k8s-app":"kube-dns"}},"template":{"metadata":{"labels":{"k8s-app":"kube-dns"}},"spec":{"containers":[{"name":"coredns"}]}}}}));
    items.push(json!({"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"coredns-66bc5c9577","namespace":"kube-system","uid":uid("rs",999),
        "ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":"coredns","uid":uid("d",999),"controller":true}]},
        "spec":{"selector":{"matchLabels":{"k8s-app":"kube-dns","pod-template-hash":"66bc5c9577"}},"template":{"metadata":{"labels":{"k8s-app":"kube-dns","pod-template-hash":"66bc5c9577"}},"spec":{"containers":[{"name":"coredns"}]}}}}));
    items.push(json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"coredns-66bc5c9577-abcde","namespace":"kube-system","uid":uid("p",999),
        "labels":{"k8s-app":"kube-dns","pod-template-hash":"66bc5c9577"},
        "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"coredns-66bc5c9577","uid":uid("rs",999),"controller":true}]},
        "spec":{"nodeName":"node-0","containers":[{"name":"coredns","ports":[{"name":"dns","containerPort":53,"protocol":"UDP"},{"name":"dns-tcp","containerPort":53,"protocol":"TCP"}]}]},
        "status":{"phase":"Running","podIP":"10.244.0.2","podIPs":[{"ip":"10.244.0.2"}]}}));
    items.push(json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system"},
        "spec":{"clusterIP":"10.96.0.10","selector":{"k8s-app":"kube-dns"},"ports":[{"name":"dns","port":53,"protocol":"UDP","targetPort":53},{"name":"dns-tcp","port":53,"protocol":"TCP","targetPort":53}]}}));
    items.push(json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","addressType":"IPv4",
        "metadata":{"name":"kube-dns-x","namespace":"kube-system","labels":{"kubernetes.io/service-name":"kube-dns"}},
        "ports":[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}],
        "endpoints":[{"addresses":["10.244.0.2"],"conditions":{"ready":true},"targetRef":{"kind":"Pod","namespace":"kube-system","name":"coredns-66bc5c9577-abcde"}}]}));
    for (w, spec) in m.workloads.iter().enumerate() {
        let ns = ns_name(spec.ns);
        let app = format!("w{w}");
        let ports: Vec<Value> = (0..3).map(|k| json!({"name":format!("p{k}"),"containerPort":container_port(w,k),"protocol":"TCP"})).collect();
        let template = json!({"metadata":{"labels":{"app":app}},"spec":{"containers":[{"name":"c","ports":ports}]}});
        let (owner_kind, owner_name, owner_uid, mut labels) = if spec.stateful {
            items.push(json!({"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":app,"namespace":ns,"uid":uid("s",w)},
                "spec":{"serviceName":app,"selector":{"matchLabels":{"app":app}},"template":template}}));
            (
                "StatefulSet",
                app.clone(),
                uid("s", w),
                json!({"app":app,"controller-revision-hash":format!("{app}-6c8f7d9b5c")}),
            )
        } else {
            items.push(json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":app,"namespace":ns,"uid":uid("d",w)},
                "spec":{"selector":{"matchLabels":{"app":app}},"template":template}}));
            let rs = format!("{app}-5d8f7c9b4");
            items.push(json!({"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":rs,"namespace":ns,"uid":uid("rs",w),
                "ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":app,"uid":uid("d",w),"controller":true}]},
                "spec":{"selector":{"matchLabels":{"app":app,"pod-template-hash":"5d8f7c9b4"}},"template":template}}));
            (
                "ReplicaSet",
                rs,
                uid("rs", w),
                json!({"app":app,"pod-template-hash":"5d8f7c9b4"}),
            )
        };
        let mut endpoints = Vec::new();
        for r in 0..spec.replicas {
            let name = pod_name(w, spec, r);
            if spec.stateful {
                labels["statefulset.kubernetes.io/pod-name"] = json!(name);
            }
            items.push(json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"namespace":ns,"uid":uid("p",w*4+r),"labels":labels,
                "ownerReferences":[{"apiVersion":"apps/v1","kind":owner_kind,"name":owner_name,"uid":owner_uid,"controller":true}]},
                "spec":{"nodeName":"node-0","containers":[{"name":"c","ports":ports}]},
                "status":{"phase":"Running","podIP":pod_ip(w,r).to_string(),"podIPs":[{"ip":pod_ip(w,r).to_string()}]}}));
            endpoints.push(json!({"addresses":[pod_ip(w,r).to_string()],"conditions":{"ready":true},"targetRef":{"kind":"Pod","namespace":ns,"name":name}}));
        }
        if spec.service {
            items.push(json!({"apiVersion":"v1","kind":"Service","metadata":{"name":app,"namespace":ns},
                "spec":{"clusterIP":format!("10.96.1.{}", 10 + w),"selector":{"app":app},
                        "ports":(0..3).map(|k| json!({"name":format!("s{k}"),"port":80+k,"protocol":"TCP","targetPort":format!("p{k}")})).collect::<Vec<_>>()}}));
            items.push(json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","addressType":"IPv4",
                "metadata":{"name":format!("{app}-x"),"namespace":ns,"labels":{"kubernetes.io/service-name":app}},
                "ports":(0..3).map(|k| json!({"name":format!("s{k}"),"port":container_port(w,k),"protocol":"TCP"})).collect::<Vec<_>>(),
                "endpoints":endpoints}));
        }
    }
    json!({"apiVersion":"v1","kind":"List","items":items})
}

fn records(m: &Model) -> Vec<FlowRecord> {
    let n = m.workloads.len();
    let mut out = Vec::new();
    for f in &m.flows {
        let (src, replica, ip, port, protocol): (usize, usize, IpAddr, u16, &str) = match *f {
            FSpec::Workload {
                src,
                replica,
                dst,
                port,
                via_service,
            } => {
                let (src, dst) = (src % n, dst % n);
                let d = &m.workloads[dst];
                if via_service && d.service {
                    (
                        src,
                        replica,
                        format!("10.96.1.{}", 10 + dst).parse().unwrap(),
                        80 + port as u16,
                        "TCP",
                    )
                } else {
                    (
                        src,
                        replica,
                        IpAddr::V4(pod_ip(dst, replica % d.replicas)),
                        container_port(dst, port),
                        "TCP",
                    )
                }
            }
            FSpec::External { src, ip, port } => (
                src % n,
                0,
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10 + ip)),
                port,
                "TCP",
            ),
            FSpec::ApiServer { src } => (src % n, 0, "10.96.0.1".parse().unwrap(), 443, "TCP"),
            FSpec::Dns { src } => (src % n, 0, "10.96.0.10".parse().unwrap(), 53, "UDP"),
        };
        let spec = &m.workloads[src];
        let r = replica % spec.replicas;
        let outcome = if protocol == "UDP" {
            "sent"
        } else {
            "established"
        };
        out.push(serde_json::from_value(json!({"node":"node-0",
            "source":{"kind":"pod","namespace":ns_name(spec.ns),"pod":pod_name(src, spec, r),"uid":uid("p",src*4+r)},
            "destination":{"ip":ip,"port":port,"protocol":protocol},
            "first_seen":"2026-11-26T16:00:00Z","last_seen":"2026-11-26T16:10:00Z","count":1,"outcome":outcome})).unwrap());
    }
    out
}

fn parse(yaml: &str) -> Vec<NetworkPolicy> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            (!v.is_null()).then(|| serde_yaml::from_value(v).unwrap())
        })
        .collect()
}

fn with_namespace(e: &Endpoint, cluster: &Cluster, ns: &str) -> Endpoint {
    match e.clone() {
        Endpoint::Pod {
            name,
            labels,
            ports,
            ..
        } => Endpoint::Pod {
            namespace: ns.to_owned(),
            namespace_labels: cluster.namespace_labels(ns),
            name,
            labels,
            ip: None,
            ports,
            node_ips: Vec::new(),
        },
        other => other,
    }
}

/// `namespace/app` of a pod (the workload, as the generated selectors see it), or the address.
fn workload_key(e: &Endpoint) -> Option<String> {
    Some(match e {
        Endpoint::Pod {
            namespace, labels, ..
        } => format!(
            "{namespace}/{}",
            labels.get("app").or(labels.get("k8s-app"))?
        ),
        Endpoint::Ip(ip) => ip.to_string(),
    })
}

/// Checks one model; returns the rendered YAML for schema validation.
fn check(m: &Model) -> Result<String, TestCaseError> {
    let dir = std::env::temp_dir().join(format!("synth-property-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.json");
    std::fs::write(&file, cluster_json(m).to_string()).unwrap();
    let cluster = Cluster::load_files(&[file.as_path()])
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .cluster;
    let _ = std::fs::remove_dir_all(&dir);
    let records = merge_records(records(m));
    let resolution = resolve_all(&cluster, &records);
    let options = Options {
        default_deny: m.default_deny,
        with_ingress: m.with_ingress,
        // internet egress (0.0.0.0/0 less the cluster ranges derived from the Nodes and Services)
        max_external_peers: m.internet.then_some(2),
        ..Options::default()
    };
    let yaml = render(&recommend(&cluster, &resolution.flows, &options));
    let set = PolicySet::new(&parse(&yaml));
    prop_assert!(set.problems().is_empty(), "{:?}", set.problems());

    // Everything observed is allowed; remember who reached what.
    let mut reached: BTreeMap<String, (Endpoint, BTreeSet<(String, u16)>)> = BTreeMap::new();
    let mut conns: Vec<Connection> = Vec::new();
    for record in &records {
        for conn in connections_for(&cluster, record).connections {
            prop_assert!(set.allows(&conn), "denied observed {conn:?}\n{yaml}");
            // policies are per workload: what one replica did, all may do
            let src = workload_key(&conn.from).unwrap();
            let to_key = workload_key(&conn.to).unwrap();
            reached
                .entry(src)
                .or_insert_with(|| (conn.from.clone(), BTreeSet::new()))
                .1
                .insert((to_key, conn.port));
            conns.push(conn);
        }
    }
    let namespaces: Vec<String> = (0..m.namespaces).map(ns_name).collect();
    for conn in &conns {
        let Some(src) = workload_key(&conn.from) else {
            continue;
        };
        let seen = &reached[&src].1;
        let seen_ports: BTreeSet<u16> = seen.iter().map(|(_, p)| *p).collect();
        let to_key = match &conn.to {
            Endpoint::Pod {
                namespace, labels, ..
            } => {
                let key = format!(
                    "{namespace}/{}",
                    labels.get("app").or(labels.get("k8s-app")).unwrap()
                );
                if conn.to == conn.from {
                    continue; // a pod always reaches itself, whatever the policies
                }
                if labels.contains_key("k8s-app") {
                    continue; // DNS: both protocols on purpose
                }
                // the same labels in another namespace
                for other in namespaces.iter().filter(|n| *n != namespace) {
                    let mutated = Connection {
                        to: with_namespace(&conn.to, &cluster, other),
                        ..conn.clone()
                    };
                    prop_assert!(
                        !set.allows(&mutated),
                        "allowed another namespace: {mutated:?}\n{yaml}"
                    );
                }
                key
            }
            Endpoint::Ip(ip) => {
                let IpAddr::V4(v4) = ip else { continue };
                if v4.octets()[..2] != [198, 18] {
                    continue; // the apiserver: not one of the generated external hosts
                }
                let next = IpAddr::V4(Ipv4Addr::from(u32::from(*v4) + 1));
                if !m.internet && !seen.iter().any(|(k, _)| *k == next.to_string()) {
                    let mutated = Connection {
                        to: ip_endpoint(&cluster, next),
                        ..conn.clone()
                    };
                    prop_assert!(
                        !set.allows(&mutated),
                        "allowed a neighbouring address: {mutated:?}\n{yaml}"
                    );
                }
                ip.to_string()
            }
        };
        // another port of the same destination
        let other_port = seen
            .iter()
            .filter(|(k, _)| *k == to_key)
            .map(|(_, p)| *p)
            .max()
            .unwrap()
            + 1;
        let mutated = Connection {
            port: other_port,
            ..conn.clone()
        };
        prop_assert!(
            !set.allows(&mutated),
            "allowed an unobserved port: {mutated:?}\n{yaml}"
        );
        // a pod of a workload this source never reached, on a port it did use
        for (w, spec) in m.workloads.iter().enumerate() {
            let key = format!("{}/w{w}", ns_name(spec.ns));
            if seen.iter().any(|(k, _)| *k == key) || src == key {
                continue;
            }
            let pod = cluster
                .pod(&ns_name(spec.ns), &pod_name(w, spec, 0))
                .unwrap();
            for port in &seen_ports {
                let mutated = Connection {
                    to: pod_endpoint(
                        &cluster,
                        pod,
                        conn.from.ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    ),
                    port: *port,
                    ..conn.clone()
                };
                prop_assert!(
                    !set.allows(&mutated),
                    "allowed an unreached workload: {mutated:?}\n{yaml}"
                );
            }
        }
    }
    Ok(yaml)
}

#[test]
fn recommendation_allows_observed_and_denies_neighbours() {
    let config = ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let outputs = std::sync::Mutex::new(Vec::new());
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&model(), |m| {
        let yaml = check(&m)?;
        outputs.lock().unwrap().push(yaml);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Every generated policy is schema-valid too: one validator run over all distinct documents.
    let mut docs = std::collections::BTreeSet::new();
    for yaml in outputs.into_inner().unwrap() {
        for doc in yaml.split("---\n").skip(1) {
            docs.insert(doc.to_owned());
        }
    }
    let all: String = docs.iter().map(|d| format!("---\n{d}")).collect();
    synth_common::validate(&all, "property");
}
