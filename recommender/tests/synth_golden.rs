//! Golden tests: the whole pipeline (load → resolve → recommend → render) on realistic clusters.
//!
//! Each case is a directory `tests/golden/<case>/` with `cluster.yaml` (kubectl-style objects) and
//! `flows.jsonl` (FlowRecords), and one expected file per variant:
//! `expected.yaml` (defaults), `expected-strict.yaml` (`--default-deny --with-ingress`),
//! `expected-cilium.yaml` (`--format cilium`), `expected-label.yaml` (internet egress by pod label
//! past `--max-external-peers 32`, with default deny). `UPDATE_GOLDEN=1 cargo test --test synth_golden`
//! rewrites them. Every variant is also checked to be independent of input order, every
//! NetworkPolicy variant is validated against the 1.37 schema, and the evaluator must allow every
//! observed connection under it (what `verify` checks).

mod synth_common;

use std::path::{Path, PathBuf};

use flow_model::FlowRecord;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use recommender::cluster::Cluster;
use recommender::policy::PolicySet;
use recommender::resolve::{connections_for, merge_edges, merge_records, resolve_all};
use recommender::synth::{recommend, render, Format, InternetEgress, Options};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("cluster.yaml").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no golden cases under {}", root.display());
    dirs
}

fn variants() -> Vec<(&'static str, Options)> {
    vec![
        ("expected.yaml", Options::default()),
        (
            "expected-strict.yaml",
            Options {
                default_deny: true,
                with_ingress: true,
                ..Options::default()
            },
        ),
        (
            "expected-cilium.yaml",
            Options {
                format: Format::Cilium,
                ..Options::default()
            },
        ),
        (
            "expected-label.yaml",
            Options {
                internet_egress: InternetEgress::Label,
                max_external_peers: Some(32),
                default_deny: true,
                ..Options::default()
            },
        ),
    ]
}

fn load(dir: &Path) -> (Cluster, Vec<FlowRecord>) {
    let cluster = Cluster::load_files(&[dir.join("cluster.yaml")])
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .cluster;
    let file = std::fs::File::open(dir.join("flows.jsonl")).unwrap();
    let records = flow_model::read_records(std::io::BufReader::new(file), "flows.jsonl").unwrap();
    (cluster, records)
}

/// What `recommend` does: records merged by key, resolved, merged by edge, synthesized.
fn pipeline(cluster: &Cluster, records: Vec<FlowRecord>, options: &Options) -> String {
    let records = merge_records(records);
    let resolution = resolve_all(cluster, &records);
    if std::env::var_os("GOLDEN_NOTES").is_some() {
        eprintln!("{:#?}", resolution.notes);
    }
    render(&recommend(cluster, &merge_edges(resolution.flows), options))
}

/// Each record cut in two deltas, as an agent reports a flow across two polls (or two agents'
/// spools deliver it): the counts, outcomes and names split between them, the interval too.
fn split(records: &[FlowRecord]) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    for r in records {
        let mut a = r.clone();
        let mut b = r.clone();
        a.count = r.count / 2;
        b.count = r.count - a.count;
        a.outcomes.established = r.outcomes.established / 2;
        b.outcomes.established = r.outcomes.established - a.outcomes.established;
        a.last_seen = r.first_seen;
        b.first_seen = r.first_seen;
        let half = r.destination.dns_names.len() / 2;
        a.destination.dns_names = r.destination.dns_names[..half].to_vec();
        b.destination.dns_names = r.destination.dns_names[half..].to_vec();
        if a.check().is_ok() {
            out.push(a);
        }
        out.push(b);
    }
    out
}

/// A deterministic permutation (xorshift), different per seed.
fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut out = items.to_vec();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in (1..out.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.swap(i, (state % (i as u64 + 1)) as usize);
    }
    out
}

fn verify(cluster: &Cluster, records: &[FlowRecord], yaml: &str, label: &str) {
    let policies: Vec<NetworkPolicy> = serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            (!v.is_null()).then(|| serde_yaml::from_value(v).unwrap())
        })
        .collect();
    let set = PolicySet::new(&policies);
    assert!(set.problems().is_empty(), "{label}: {:?}", set.problems());
    let mut checked = 0;
    for record in records {
        for conn in connections_for(cluster, record).connections {
            assert!(
                set.allows(&conn),
                "{label}: the recommendation denies an observed connection: {conn:?}\n{yaml}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{label}: no connection checked");
}

/// `cluster` with the internet-egress label on the pods of every workload that an
/// `allow-internet-egress` policy says needs it.
fn labelled(cluster: &Cluster, yaml: &str) -> Cluster {
    let mut needs = std::collections::BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        let ns = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(list) =
            v["metadata"]["annotations"]["egress-recommender.io/needs-label"].as_str()
        {
            for w in serde_json::from_str::<Vec<String>>(list).unwrap() {
                needs.insert((ns.clone(), w));
            }
        }
    }
    let mut out = cluster.clone();
    for pod in &mut out.pods {
        let w = cluster.workload_of(pod);
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        if needs.contains(&(ns, format!("{}/{}", w.kind, w.name))) {
            pod.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("networking/allow-internet-egress".into(), "true".into());
        }
    }
    out
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for dir in cases() {
        let (cluster, records) = load(&dir);
        for (file, options) in variants() {
            let label = format!("{}/{file}", dir.file_name().unwrap().to_string_lossy());
            let yaml = pipeline(&cluster, records.clone(), &options);
            for seed in 1..4 {
                assert_eq!(
                    pipeline(&cluster, shuffled(&records, seed), &options),
                    yaml,
                    "{label}: output depends on input order"
                );
            }
            // The service's store keeps edges, the CLI reads records: the cut must not matter.
            assert_eq!(
                pipeline(&cluster, shuffled(&split(&records), 7), &options),
                yaml,
                "{label}: output depends on how the traffic was cut into records"
            );
            let flows = resolve_all(&cluster, &merge_records(records.clone())).flows;
            assert_eq!(
                render(&recommend(&cluster, &flows, &options)),
                yaml,
                "{label}: resolved flows and merged edges give different policies"
            );
            let path = dir.join(file);
            if update {
                std::fs::write(&path, &yaml).unwrap();
            } else {
                let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                    panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display())
                });
                assert_eq!(
                    yaml, expected,
                    "{label} differs from the golden file (UPDATE_GOLDEN=1 rewrites it)"
                );
            }
            if options.format == Format::Networkpolicy {
                synth_common::validate(&yaml, &label);
                if options.internet_egress == InternetEgress::Cidr {
                    verify(&cluster, &records, &yaml, &label);
                } else {
                    // The label pattern works once the user labels the pods it names.
                    verify(&labelled(&cluster, &yaml), &records, &yaml, &label);
                }
            }
        }
    }
}
