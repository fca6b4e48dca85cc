//! The LearnedEdgeSet objects `serve --store kubernetes` writes, as the API stub received them:
//! the store's own code path (`KubernetesStore::commit`), with every peer kind, selectors with
//! expressions, DNS names, counts past int64, and a workload split into several parts.

use std::sync::Arc;

use api_stub::{ApiStub, Resource};
use flow_model::{Outcome, Outcomes, Protocol, WorkloadRef};
use recommender::policy::selectors::PodSelector;
use recommender::resolve::{Observation, Peer, SourceWorkload};
use recommender::store::kubernetes::{KubernetesConfig, KubernetesStore};
use recommender::store::{Commit, Edge, Store};
use serde_json::Value;

fn selector(json: Value) -> PodSelector {
    serde_json::from_value(json).unwrap()
}

fn edges() -> Vec<Edge> {
    let web = Arc::new(SourceWorkload {
        namespace: "shop".into(),
        workload: WorkloadRef {
            kind: "Deployment".into(),
            name: "web".into(),
        },
        selector: selector(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "track", "operator": "NotIn", "values": ["canary"]},
                                 {"key": "tier", "operator": "Exists"}]
        })),
    });
    let ip = |s: &str| s.parse().unwrap();
    let mut peers = vec![
        Peer::Pods {
            namespace: "data".into(),
            workload: WorkloadRef {
                kind: "StatefulSet".into(),
                name: "db".into(),
            },
            selector: selector(serde_json::json!({"matchLabels": {"app": "db"}})),
            service: Some("db".into()),
            cluster_dns: false,
        },
        Peer::Pods {
            namespace: "kube-system".into(),
            workload: WorkloadRef {
                kind: "Deployment".into(),
                name: "coredns".into(),
            },
            selector: selector(serde_json::json!({"matchLabels": {"k8s-app": "kube-dns"}})),
            service: None,
            cluster_dns: true,
        },
        Peer::NodeLocalDns {
            ip: ip("169.254.20.10"),
        },
        Peer::ApiServer {
            ip: ip("172.18.0.2"),
        },
        Peer::Node {
            ip: ip("172.18.0.3"),
            node: "node-b".into(),
        },
        Peer::External {
            ip: ip("2001:db8::10"),
            service: Some("legacy".into()),
        },
    ];
    // Enough external peers for the split.
    peers.extend((0..40u32).map(|n| Peer::External {
        ip: std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + n).into(),
        service: None,
    }));
    let at = |s: &str| s.parse().unwrap();
    peers
        .into_iter()
        .enumerate()
        .map(|(i, peer)| Edge {
            source: Arc::clone(&web),
            peer: Arc::new(peer),
            port: 53 + i as u16,
            protocol: [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][i % 3],
            learned_at: at("2026-11-26T16:00:05.5Z"),
            observed: Arc::new(Observation {
                first_seen: at("2026-11-26T16:00:00Z"),
                last_seen: at("2026-11-26T16:05:00.123456789Z"),
                count: if i == 0 { u64::MAX } else { i as u64 },
                outcome: [Outcome::Established, Outcome::Sent, Outcome::Refused][i % 3],
                outcomes: Outcomes {
                    established: i as u64,
                    refused: 1,
                    timeout: 0,
                    preexisting: u64::from(i % 2 == 0),
                },
                dns_names: if i % 2 == 0 {
                    [format!("host-{i}.example.test")].into()
                } else {
                    Default::default()
                },
            }),
        })
        .collect()
}

/// The objects the store wrote for [`edges`] (with a 4 KiB bound, so in several parts).
pub fn written() -> Vec<Value> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let stub = ApiStub::start().await.unwrap();
        let resource = Resource::new("egress-recommender.io", "v1alpha1", "learnededgesets");
        stub.register_kind(resource.clone(), "LearnedEdgeSet", true);
        let client =
            kube::Client::try_from(kube::Config::new(stub.url().parse().unwrap())).unwrap();
        let store = KubernetesStore::new(
            client,
            KubernetesConfig {
                namespace: "egress-recommender".into(),
                writer: "deploy-test".into(),
                object_bytes: 4096,
            },
            None,
        );
        store
            .commit(Arc::new(Commit {
                edges: edges(),
                ..Commit::default()
            }))
            .await
            .unwrap();
        let objects = stub.objects(&resource);
        assert!(objects.len() > 1, "the edges were not split");
        objects
            .into_iter()
            .map(|mut o| {
                o["apiVersion"] = "egress-recommender.io/v1alpha1".into();
                o["kind"] = "LearnedEdgeSet".into();
                o
            })
            .collect()
    })
}
