use super::*;
use crate::resolve::Observation;
use crate::store::UncoveredFlow;
use flow_model::Protocol;
use flow_model::{FlowKey, Outcome, Outcomes, SourceKind, WorkloadRef};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("store.redb")
}

fn edge(workload: &str, ip: [u8; 4], port: u16, count: u64) -> Edge {
    Edge {
        source: Arc::new(SourceWorkload {
            namespace: "shop".into(),
            workload: WorkloadRef {
                kind: "Deployment".into(),
                name: workload.into(),
            },
            selector: std::collections::BTreeMap::from([("app".to_string(), workload.to_string())])
                .into(),
        }),
        peer: Arc::new(Peer::External {
            ip: ip.into(),
            service: None,
        }),
        port,
        protocol: Protocol::Tcp,
        learned_at: "2026-12-01T12:00:00Z".parse().unwrap(),
        observed: Arc::new(Observation {
            first_seen: "2026-11-26T16:00:00Z".parse().unwrap(),
            last_seen: "2026-11-26T16:05:00Z".parse().unwrap(),
            count,
            outcome: Outcome::Established,
            outcomes: Outcomes {
                established: count,
                ..Outcomes::default()
            },
            dns_names: ["api.example.test".to_string()].into(),
        }),
    }
}

fn sorted(mut edges: Vec<Edge>) -> Vec<(String, String, u16, u64)> {
    let mut out: Vec<_> = edges
        .drain(..)
        .map(|e| {
            (
                e.source.workload.name.clone(),
                format!("{:?}", e.peer),
                e.port,
                e.observed.count,
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn commits_read_back_from_the_journal_and_after_a_checkpoint() {
    let path = scratch("roundtrip");
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    {
        let store = EmbeddedStore::open_or_create(&path).unwrap();
        store
            .commit_now(&Commit {
                edges: vec![
                    edge("web", [198, 18, 0, 1], 443, 1),
                    edge("api", [198, 18, 0, 2], 80, 2),
                ],
                uncovered: vec![(
                    FlowKey {
                        node: "n".into(),
                        source_kind: SourceKind::Host,
                        namespace: None,
                        pod: None,
                        uid: None,
                        container_id: None,
                        ip: "198.18.0.9".parse().unwrap(),
                        port: 22,
                        protocol: Protocol::Tcp,
                    },
                    UncoveredFlow::HostProcess,
                )],
                batch_ids: vec!["a:1".into()],
                acknowledged_at: at("2026-12-01T12:00:00Z"),
                forget_ids_before: None,
            })
            .unwrap();
        // A later value of the same edge wins; a new workload and peer get ids.
        store
            .commit_now(&Commit {
                edges: vec![
                    edge("web", [198, 18, 0, 1], 443, 5),
                    edge("db", [198, 18, 0, 3], 5432, 1),
                ],
                batch_ids: vec!["a:2".into()],
                acknowledged_at: at("2026-12-01T13:00:00Z"),
                forget_ids_before: Some(at("2026-12-01T12:30:00Z")),
                ..Commit::default()
            })
            .unwrap();
    }
    let expected = vec![
        (
            "api".to_string(),
            format!(
                "{:?}",
                Peer::External {
                    ip: [198, 18, 0, 2].into(),
                    service: None
                }
            ),
            80,
            2,
        ),
        (
            "db".to_string(),
            format!(
                "{:?}",
                Peer::External {
                    ip: [198, 18, 0, 3].into(),
                    service: None
                }
            ),
            5432,
            1,
        ),
        (
            "web".to_string(),
            format!(
                "{:?}",
                Peer::External {
                    ip: [198, 18, 0, 1].into(),
                    service: None
                }
            ),
            443,
            5,
        ),
    ];
    // Reopened: edges from the journal, the old id forgotten.
    let mut store = EmbeddedStore::open_existing(&path).unwrap();
    let learned = store.load_now().unwrap();
    assert_eq!(sorted(learned.edges.clone()), expected);
    assert_eq!(learned.uncovered.len(), 1);
    assert_eq!(
        learned
            .batch_ids
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["a:2"]
    );
    assert_eq!(learned.edges[0].observed.dns_names.len(), 1);
    // Folded into `edges`, compacted, reopened: the same.
    store.compact().unwrap();
    drop(store);
    let store = EmbeddedStore::open_existing(&path).unwrap();
    assert_eq!(sorted(store.load_now().unwrap().edges), expected);
    // A second open while this one holds the file fails at once.
    assert!(matches!(
        EmbeddedStore::open_existing(&path),
        Err(StoreError::InUse { .. })
    ));
    // New ids continue after the ones on file.
    store
        .commit_now(&Commit {
            edges: vec![edge("cache", [198, 18, 0, 4], 6379, 1)],
            acknowledged_at: at("2026-12-01T14:00:00Z"),
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(store.load_now().unwrap().edges.len(), 4);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn newer_formats_and_other_files_are_refused() {
    let path = scratch("format");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(FORMAT_KEY, FORMAT_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(
        EmbeddedStore::open_or_create(&path),
        Err(StoreError::NewerFormat { found, .. }) if found == FORMAT_VERSION + 1
    ));
    let other = path.with_file_name("other.redb");
    drop(Database::create(&other).unwrap());
    assert!(matches!(
        EmbeddedStore::open_existing(&other),
        Err(StoreError::NotAStore { .. })
    ));
    let text = path.with_file_name("text");
    std::fs::write(&text, "not a database at all").unwrap();
    assert!(EmbeddedStore::open_existing(&text).is_err());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
