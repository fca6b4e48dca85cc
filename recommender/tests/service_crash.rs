//! The real service killed with SIGKILL while senders stream batches at it, then restarted on the
//! same store: every batch acknowledged before the kill is there, and the senders' resends (what
//! agents' spools do) are each counted once.

#[path = "service_support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flow_model::FlowRecord;
use recommender::resolve::Peer;
use recommender::store::EmbeddedStore;
use support::{web_record, Scratch, Server};

const SENDERS: usize = 4;
const RECORDS_PER_BATCH: u16 = 100;

/// Batch `b`: one external address of its own, `RECORDS_PER_BATCH` ports, count 1 each.
fn batch(b: u32) -> Vec<FlowRecord> {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + b);
    (0..RECORDS_PER_BATCH)
        .map(|p| web_record(&ip.to_string(), 1000 + p, 1))
        .collect()
}

/// Per external address (= batch), the observed count of each of its edges, from the store.
fn stored(scratch: &Scratch) -> BTreeMap<u32, Vec<u64>> {
    let learned = EmbeddedStore::open_existing(&scratch.path("store.redb"))
        .unwrap()
        .load_now()
        .unwrap();
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 1));
    let mut out: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for edge in learned.edges {
        if let Peer::External {
            ip: std::net::IpAddr::V4(ip),
            ..
        } = &*edge.peer
        {
            out.entry(u32::from(*ip) - base)
                .or_default()
                .push(edge.observed.count);
        }
    }
    out
}

#[test]
fn sigkill_mid_stream_loses_nothing_acknowledged_and_resends_count_once() {
    let scratch = Scratch::new("crash");
    let server = Server::start(&scratch, &[]);
    let acked: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let attempted: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS as u32)
        .map(|s| {
            let (acked, attempted, stop, addr) = (
                Arc::clone(&acked),
                Arc::clone(&attempted),
                Arc::clone(&stop),
                server.addr,
            );
            std::thread::spawn(move || {
                let auth = format!("Bearer {}", support::TOKEN);
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let b = i * SENDERS as u32 + s;
                    attempted.lock().unwrap().insert(b);
                    let body =
                        flow_model::batch::encode(&batch(b), flow_model::batch::Encoding::Gzip);
                    let id = format!("sender-{s}:{b}");
                    let answer = support::try_request(
                        addr,
                        "POST",
                        "/v1/flows",
                        &[
                            ("Authorization", &auth),
                            ("Content-Encoding", "gzip"),
                            ("X-Batch-Id", &id),
                        ],
                        &body,
                    );
                    match answer {
                        Some(a) if a.status == 200 => {
                            acked.lock().unwrap().insert(b);
                        }
                        // The server is gone: this batch stays unacknowledged, as in a spool.
                        _ => break,
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    while acked.lock().unwrap().len() < 40 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        acked.len() >= 40,
        "only {} batches acknowledged",
        acked.len()
    );

    // Restarted: everything acknowledged is there, whole.
    let server = Server::start(&scratch, &[]);
    server.stop();
    let after_restart = stored(&scratch);
    for b in &acked {
        let counts = after_restart
            .get(b)
            .unwrap_or_else(|| panic!("acknowledged batch {b} lost"));
        assert_eq!(
            counts.len(),
            RECORDS_PER_BATCH as usize,
            "batch {b} partly lost"
        );
        assert!(counts.iter().all(|c| *c == 1), "batch {b}: {counts:?}");
    }
    // Nothing half-applied: a batch is there whole or not at all.
    for (b, counts) in &after_restart {
        assert_eq!(
            counts.len(),
            RECORDS_PER_BATCH as usize,
            "batch {b} half-applied"
        );
    }
    let committed_unacked = after_restart.keys().filter(|b| !acked.contains(b)).count();

    // The senders' spools deliver everything they attempted again, under the same ids.
    let server = Server::start(&scratch, &[]);
    let mut duplicates = 0;
    for b in &attempted {
        let id = format!("sender-{}:{b}", b % SENDERS as u32);
        let answer = server.send(&batch(*b), Some(&id));
        assert_eq!(answer.status, 200, "{answer:?}");
        let duplicate = answer.body.contains(r#""duplicate":true"#);
        if acked.contains(b) {
            assert!(duplicate, "acknowledged batch {b} was counted again");
        }
        duplicates += usize::from(duplicate);
    }
    server.stop();
    let last = stored(&scratch);
    assert_eq!(last.keys().copied().collect::<BTreeSet<_>>(), attempted);
    for (b, counts) in &last {
        assert!(
            counts.len() == RECORDS_PER_BATCH as usize && counts.iter().all(|c| *c == 1),
            "batch {b} not counted exactly once: {counts:?}"
        );
    }
    eprintln!(
        "crash: {} batches ({} records) sent before the kill, {} acknowledged, {} in flight at SIGKILL \
         ({} of them durable though unacknowledged); after restart {} of {} acknowledged recovered; \
         resent {} ({} recognised as duplicates); every batch counted once ({} edges, each count 1)",
        attempted.len(),
        attempted.len() * RECORDS_PER_BATCH as usize,
        acked.len(),
        attempted.len() - acked.len(),
        committed_unacked,
        acked.iter().filter(|b| after_restart.contains_key(b)).count(),
        acked.len(),
        attempted.len(),
        duplicates,
        last.values().map(Vec::len).sum::<usize>(),
    );
}
