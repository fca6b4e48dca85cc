//! The pipeline with the API as its pod source: records of pods not yet known are held, named when
//! the pod arrives, and reported unnamed (counted) past `--pod-wait`, when the hold is full, or at
//! exit.

use super::*;
use crate::cgroup::resolver::CgroupResolver;
use crate::pods::PodInfo;
use crate::pods_api::ApiPods;
use flow_model::WorkloadRef;
use std::os::unix::fs::MetadataExt;

const LATE: &str = "0d1f4a8c-7a36-4b5e-9a3e-2f6c1b9d8e7a";
const NEVER: &str = "9f8e7d6c-5b4a-4321-8fed-cba987654321";
const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    _tmp: tempfile::TempDir,
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    pods: tokio::sync::watch::Sender<PodIndex>,
    late: u64,
    never: u64,
}

fn fixture(max_held: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let cgroup = |uid: &str| {
        let dir = tmp
            .path()
            .join(format!("kubepods/burstable/pod{uid}/c0ffee"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::metadata(&dir).unwrap().ino()
    };
    let (late, never) = (cgroup(LATE), cgroup(NEVER));
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = tokio::sync::watch::channel(PodIndex::default());
    let pipeline = Pipeline::new(
        "node-a".into(),
        IdentityCache::new(CgroupResolver::new(tmp.path().to_owned(), Duration::ZERO)),
        PodSource::Api(ApiPods::new(rx)),
        DnsCache::new(Duration::from_secs(600), 100),
        Arc::clone(&metrics),
    )
    .with_pod_wait(WAIT, max_held);
    Fixture {
        _tmp: tmp,
        pipeline,
        metrics,
        pods: tx,
        late,
        never,
    }
}

fn late_pod() -> PodIndex {
    let info = PodInfo {
        uid: LATE.into(),
        namespace: "shop".into(),
        name: "web-5d8f7c9b4-x2k4q".into(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
        workload: WorkloadRef {
            kind: "Deployment".into(),
            name: "web".into(),
        },
        host_network: false,
        static_uid: None,
    };
    Arc::new([(LATE.to_owned(), Arc::new(info))].into())
}

fn flow(cgroup_id: u64, port: u16, count: u64) -> (FlowKey, FlowValue) {
    let key = super::tests::key(cgroup_id, [198, 18, 0, 10], port);
    let value = FlowValue {
        first_seen_ns: 1_000,
        last_seen_ns: 2_000,
        count,
        ..Default::default()
    };
    (key, value)
}

fn metric(f: &Fixture, series: &str) -> u64 {
    let text = f.metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn summary(records: &[FlowRecord]) -> Vec<(Option<String>, u16, u64)> {
    records
        .iter()
        .map(|r| (r.source.pod.clone(), r.destination.port, r.count))
        .collect()
}

#[test]
fn a_pod_that_appears_after_its_flow_is_named_and_one_that_never_does_is_counted() {
    let mut f = fixture(MAX_HELD);
    let clock = BootClock::with_offset(1_700_000_000_000_000_000);
    let t0 = Instant::now();
    f.pipeline
        .handle_event(KernelEvent::NewFlow(flow(f.late, 443, 1).0), t0);
    let table = [flow(f.late, 443, 2), flow(f.never, 80, 1)];
    assert!(f.pipeline.poll(&table, None, &clock, t0).is_empty());
    assert_eq!(metric(&f, "egress_agent_flows_held"), 2);

    // The watch brings the late pod; more of its traffic meanwhile.
    f.pods.send(late_pod()).unwrap();
    let table = [flow(f.late, 443, 5), flow(f.never, 80, 1)];
    let t1 = t0 + Duration::from_secs(5);
    let records = f.pipeline.poll(&table, None, &clock, t1);
    assert_eq!(
        summary(&records),
        [
            (Some("web-5d8f7c9b4-x2k4q".into()), 443, 2),
            (Some("web-5d8f7c9b4-x2k4q".into()), 443, 3),
        ],
        "the held record first, then the new one, both named"
    );
    let named = &records[0].source;
    assert_eq!(named.namespace.as_deref(), Some("shop"));
    assert_eq!(named.workload.as_ref().unwrap().name, "web");
    assert_eq!(named.container_id.as_deref(), Some("c0ffee"));
    assert_eq!(metric(&f, "egress_agent_flows_held"), 1);

    // The other pod never shows up: its record goes out unnamed once it has waited long enough.
    let records = f.pipeline.poll(&table, None, &clock, t0 + WAIT);
    assert_eq!(summary(&records), [(None, 80, 1)]);
    assert_eq!(records[0].source.uid.as_deref(), Some(NEVER));
    assert_eq!(
        metric(&f, "egress_agent_flows_unnamed_total{reason=\"timeout\"}"),
        1
    );
    assert_eq!(metric(&f, "egress_agent_flows_held"), 0);
    assert!(f.pipeline.finish().is_empty());
}

#[test]
fn the_hold_is_bounded_and_emptied_at_exit() {
    let mut f = fixture(2);
    let clock = BootClock::with_offset(1_700_000_000_000_000_000);
    let now = Instant::now();
    let table = [flow(f.never, 1, 1), flow(f.never, 2, 1), flow(f.late, 3, 1)];
    let records = f.pipeline.poll(&table, None, &clock, now);
    assert_eq!(summary(&records), [(None, 1, 1)], "the oldest made room");
    assert_eq!(
        metric(&f, "egress_agent_flows_unnamed_total{reason=\"hold_full\"}"),
        1
    );
    // At exit the rest goes out, named where the pod is known by then.
    f.pods.send(late_pod()).unwrap();
    let records = f.pipeline.finish();
    assert_eq!(
        summary(&records),
        [(None, 2, 1), (Some("web-5d8f7c9b4-x2k4q".into()), 3, 1)]
    );
    assert_eq!(
        metric(&f, "egress_agent_flows_unnamed_total{reason=\"shutdown\"}"),
        1
    );
}

#[test]
fn without_the_api_nothing_waits_and_unnamed_pods_are_counted() {
    let mut f = fixture(MAX_HELD);
    f.pipeline.pods = PodSource::None;
    let clock = BootClock::with_offset(1_700_000_000_000_000_000);
    let records = f
        .pipeline
        .poll(&[flow(f.late, 443, 1)], None, &clock, Instant::now());
    assert_eq!(summary(&records), [(None, 443, 1)]);
    assert_eq!(
        metric(
            &f,
            "egress_agent_flows_unnamed_total{reason=\"not_listed\"}"
        ),
        1
    );
}

#[test]
fn with_no_wait_the_api_s_unknown_pods_go_out_at_once() {
    let f = fixture(MAX_HELD);
    let mut f = Fixture {
        pipeline: f.pipeline.with_pod_wait(Duration::ZERO, MAX_HELD),
        ..f
    };
    let clock = BootClock::with_offset(1_700_000_000_000_000_000);
    let records = f
        .pipeline
        .poll(&[flow(f.never, 443, 1)], None, &clock, Instant::now());
    assert_eq!(summary(&records), [(None, 443, 1)]);
    assert_eq!(metric(&f, "egress_agent_flows_held"), 0);
    assert_eq!(
        metric(
            &f,
            "egress_agent_flows_unnamed_total{reason=\"not_listed\"}"
        ),
        1
    );
}
