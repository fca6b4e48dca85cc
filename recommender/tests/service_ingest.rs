//! `POST /v1/flows` against the real `recommender serve` on a real socket with a real redb store:
//! batches counted once, every kind of refusal, and slow clients that cannot starve others.

#[path = "service_support/mod.rs"]
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use recommender::store::EmbeddedStore;
use support::{web_record, Scratch, Server, TOKEN};

/// The total observed count of every edge in the store (read after the server stopped).
fn stored_count(scratch: &Scratch) -> u64 {
    let learned = EmbeddedStore::open_existing(&scratch.path("store.redb"))
        .unwrap()
        .load_now()
        .unwrap();
    learned.edges.iter().map(|e| e.observed.count).sum()
}

#[test]
fn a_batch_sent_twice_is_counted_once_also_across_a_restart() {
    let scratch = Scratch::new("twice");
    let server = Server::start(&scratch, &[]);
    let batch: Vec<_> = (1..=50)
        .map(|i| web_record(&format!("198.18.1.{i}"), 443, 3))
        .collect();
    let first = server.send(&batch, Some("node-a:1:1"));
    assert_eq!(first.status, 200, "{first:?}");
    assert!(
        first.body.contains(r#""duplicate":false"#),
        "{}",
        first.body
    );
    let again = server.send(&batch, Some("node-a:1:1"));
    assert_eq!(again.status, 200, "{again:?}");
    assert!(again.body.contains(r#""duplicate":true"#), "{}", again.body);
    // The same records under another id are new deltas: counted.
    assert_eq!(server.send(&batch[..10], Some("node-a:1:2")).status, 200);
    assert_eq!(
        server.metric("egress_recommender_ingest_records_total"),
        60.0
    );
    assert_eq!(
        server.metric(r#"egress_recommender_ingest_batches_total{result="duplicate"}"#),
        1.0
    );
    server.stop();
    assert_eq!(stored_count(&scratch), 50 * 3 + 10 * 3);

    // The ids are in the store: after a restart the resend is still a duplicate.
    let server = Server::start(&scratch, &[]);
    let resent = server.send(&batch, Some("node-a:1:1"));
    assert!(
        resent.body.contains(r#""duplicate":true"#),
        "{}",
        resent.body
    );
    // Two copies of one new batch racing in the same group: one is applied.
    let racing: Vec<_> = (0..2)
        .map(|_| {
            let (addr, batch) = (server.addr, batch.clone());
            std::thread::spawn(move || {
                let body = flow_model::batch::encode(&batch, flow_model::batch::Encoding::Identity);
                let auth = format!("Bearer {TOKEN}");
                support::request(
                    addr,
                    "POST",
                    "/v1/flows",
                    &[("Authorization", &auth), ("X-Batch-Id", "node-a:1:3")],
                    &body,
                )
            })
        })
        .collect();
    let answers: Vec<_> = racing.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(
        answers
            .iter()
            .filter(|a| a.body.contains(r#""duplicate":true"#))
            .count(),
        1,
        "{answers:?}"
    );
    server.stop();
    assert_eq!(stored_count(&scratch), 50 * 3 * 2 + 10 * 3);
}

#[test]
fn refusals_are_answered_counted_and_keep_nothing() {
    let scratch = Scratch::new("refused");
    let server = Server::start(
        &scratch,
        &[
            "--max-body-bytes",
            "200000",
            "--max-decoded-bytes",
            "1000000",
        ],
    );
    let records: Vec<_> = (1..=5)
        .map(|i| web_record(&format!("198.18.2.{i}"), 80, 1))
        .collect();
    let plain = flow_model::batch::encode(&records, flow_model::batch::Encoding::Identity);
    let auth = format!("Bearer {TOKEN}");

    let none = server.post(&plain, &[]);
    assert_eq!(none.status, 401, "{none:?}");
    assert!(none.headers.contains("www-authenticate: bearer"));
    let wrong = server.post(&plain, &[("Authorization", "Bearer test-token-0123456780")]);
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let basic = server.post(&plain, &[("Authorization", "Basic dXNlcjpwdw==")]);
    assert_eq!(basic.status, 401);

    // Line 4 is broken: a 400 naming it, and none of the batch is kept.
    let mut bad = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if i == 3 {
            bad.extend_from_slice(b"{\"node\":\"n\",\"source\":\n");
        }
        bad.extend_from_slice(r.to_json_line().as_bytes());
        bad.push(b'\n');
    }
    let malformed = server.post(&bad, &[("Authorization", &auth), ("X-Batch-Id", "bad-1")]);
    assert_eq!(malformed.status, 400, "{malformed:?}");
    assert!(malformed.body.contains(r#""line":4"#), "{}", malformed.body);
    assert!(malformed.body.contains("body:4:"), "{}", malformed.body);
    // A record that contradicts itself is refused the same way.
    let mut ends_before = records[0].clone();
    ends_before.last_seen = "2026-11-26T15:00:00Z".parse().unwrap();
    let body = flow_model::batch::encode(
        &[records[1].clone(), ends_before],
        flow_model::batch::Encoding::Gzip,
    );
    let invalid = server.post(
        &body,
        &[("Authorization", &auth), ("Content-Encoding", "gzip")],
    );
    assert_eq!(invalid.status, 400, "{invalid:?}");
    assert!(invalid.body.contains(r#""line":2"#), "{}", invalid.body);

    // Too large as sent.
    let big: Vec<_> = (0..2000)
        .map(|i| web_record(&format!("198.18.{}.{}", 3 + i / 250, i % 250), 80, 1))
        .collect();
    let big = flow_model::batch::encode(&big, flow_model::batch::Encoding::Identity);
    assert!(big.len() > 200_000);
    assert_eq!(server.post(&big, &[("Authorization", &auth)]).status, 413);

    // A gzip bomb: 64 MiB of blank lines in a few tens of KiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b'\n'; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&chunk).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 200_000);
    let bombed = server.post(
        &bomb,
        &[("Authorization", &auth), ("Content-Encoding", "gzip")],
    );
    assert_eq!(bombed.status, 413, "{bombed:?}");
    assert!(bombed.body.contains("decompressed"), "{}", bombed.body);

    let brotli = server.post(
        &plain,
        &[("Authorization", &auth), ("Content-Encoding", "br")],
    );
    assert_eq!(brotli.status, 415);
    let bad_id = server.post(&plain, &[("Authorization", &auth), ("X-Batch-Id", "a b")]);
    assert_eq!(bad_id.status, 400);

    for (reason, n) in [
        // Basic is not a bearer token: missing, like no header at all.
        ("missing_token", 2.0),
        ("invalid_token", 1.0),
        ("malformed", 2.0),
        ("body_too_large", 1.0),
        ("decoded_too_large", 1.0),
        ("unsupported_encoding", 1.0),
        ("bad_batch_id", 1.0),
    ] {
        let sample = format!(r#"egress_recommender_ingest_refused_total{{reason="{reason}"}}"#);
        assert_eq!(server.metric(&sample), n, "{sample}");
    }
    assert_eq!(
        server.metric("egress_recommender_ingest_records_total"),
        0.0
    );
    // The refused id was not remembered: the good batch under it is taken.
    let good = server.post(&plain, &[("Authorization", &auth), ("X-Batch-Id", "bad-1")]);
    assert!(good.body.contains(r#""duplicate":false"#), "{good:?}");
    // Reads need the token too.
    assert_eq!(
        support::request(server.addr, "GET", "/v1/status", &[], b"").status,
        401
    );
    server.stop();
    assert_eq!(stored_count(&scratch), 5);
}

#[test]
fn slow_clients_are_cut_off_and_others_are_served_meanwhile() {
    let scratch = Scratch::new("slow");
    let server = Server::start(
        &scratch,
        &["--header-timeout", "2s", "--body-timeout", "2s"],
    );
    // Slow loris: headers one byte at a time, never finished. Several of them.
    let lorises: Vec<_> = (0..8)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                let started = Instant::now();
                for byte in b"POST /v1/flows HTTP/1.1\r\nHost: x\r\nX-Slow: "
                    .iter()
                    .cycle()
                {
                    if stream.write_all(&[*byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    if started.elapsed() > Duration::from_secs(20) {
                        break;
                    }
                }
                started.elapsed()
            })
        })
        .collect();
    // A slow body: headers promptly, then a trickle.
    let addr = server.addr;
    let slow_body = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "POST /v1/flows HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            if stream.write_all(b"{").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        support::read_response(&mut stream)
    });
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile, everyone else is served.
    for i in 0..20 {
        let answer = server.send(
            &[web_record("198.18.9.9", 1000 + i, 1)],
            Some(&format!("ok-{i}")),
        );
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            support::request(server.addr, "GET", "/healthz", &[], b"").status,
            200
        );
    }
    for loris in lorises {
        let held = loris.join().unwrap();
        assert!(
            held < Duration::from_secs(15),
            "a slow-loris connection was held {held:?}"
        );
    }
    let answer = slow_body.join().unwrap();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(
        server.metric(r#"egress_recommender_ingest_refused_total{reason="body_timeout"}"#),
        1.0
    );
    assert_eq!(
        server.metric("egress_recommender_ingest_records_total"),
        20.0
    );
}
