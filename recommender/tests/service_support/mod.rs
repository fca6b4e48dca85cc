//! Shared by the service tests (`#[path]`-included): the real `recommender serve` as a child
//! process on a real socket, a plain HTTP/1.1 client over `std::net::TcpStream`, and records.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_model::FlowRecord;

pub const TOKEN: &str = "test-token-0123456789";

/// A scratch directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "svc-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fixture cluster files as `--cluster` arguments.
pub fn cluster_args() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster");
    let mut args = vec!["--cluster".to_string()];
    for f in [
        "nodes.yaml",
        "kube-system.yaml",
        "default.yaml",
        "shop.yaml",
        "data.json",
    ] {
        args.push(dir.join(f).display().to_string());
    }
    args
}

pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// `recommender serve` running as a child process (killed when dropped).
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `serve --listen 127.0.0.1:0 --store STORE --token-file TOKEN` on the fixture cluster
    /// with `more` arguments, and waits until it listens.
    pub fn start(scratch: &Scratch, more: &[&str]) -> Server {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            scratch.path("store.redb").display().to_string(),
            "--token-file".into(),
            scratch.path("token").display().to_string(),
        ];
        args.extend(cluster_args());
        args.extend(more.iter().map(|s| s.to_string()));
        Server::launch(&args, &[])
    }

    /// Starts `recommender ARGS` with more environment variables, and waits until it listens.
    pub fn launch(args: &[String], envs: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_recommender"))
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the recommender binary runs");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("recommender: listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not start:\n{}", log.lock().unwrap());
            }
        };
        Server { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL, and wait for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "serve exited with {status}:\n{}",
            self.log()
        );
    }

    pub fn post(&self, body: &[u8], headers: &[(&str, &str)]) -> Response {
        request(self.addr, "POST", "/v1/flows", headers, body)
    }

    /// POSTs `records` as one batch with the token, gzip and `id`.
    pub fn send(&self, records: &[FlowRecord], id: Option<&str>) -> Response {
        let body = flow_model::batch::encode(records, flow_model::batch::Encoding::Gzip);
        let auth = format!("Bearer {TOKEN}");
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("Content-Encoding", "gzip"),
        ];
        if let Some(id) = id {
            headers.push(("X-Batch-Id", id));
        }
        self.post(&body, &headers)
    }

    pub fn get(&self, path: &str) -> Response {
        let auth = format!("Bearer {TOKEN}");
        request(
            self.addr,
            "GET",
            path,
            &[("Authorization", auth.as_str())],
            b"",
        )
    }

    /// The value of a metric sample (`name{labels}` exactly as exposed), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = request(self.addr, "GET", "/metrics", &[], b"").body;
        text.lines()
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().unwrap())
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// One HTTP/1.1 request on a new connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body).expect("an HTTP answer")
}

/// [`request`], `None` when the server is gone (refused, reset, no answer).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Response> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    // The server may answer (413) before it has read everything.
    let _ = stream.write_all(body);
    try_read_response(&mut stream)
}

pub fn read_response(stream: &mut TcpStream) -> Response {
    try_read_response(stream).expect("an HTTP answer")
}

fn try_read_response(stream: &mut TcpStream) -> Option<Response> {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Response {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    })
}

/// A record from a pod of the fixture cluster's `shop/web` to `ip:port/TCP`.
pub fn web_record(ip: &str, port: u16, count: u64) -> FlowRecord {
    let line = serde_json::json!({
        "node": "node-a",
        "source": {"kind": "pod", "namespace": "shop", "pod": "web-5d8f7c9b4-x2k4q",
                   "uid": "3b0e0000-0000-4000-8000-00000000x2k4",
                   "workload": {"kind": "Deployment", "name": "web"},
                   "labels": {"app": "web", "tier": "frontend", "pod-template-hash": "5d8f7c9b4"}},
        "destination": {"ip": ip, "port": port, "protocol": "TCP"},
        "first_seen": "2026-11-26T16:00:00Z", "last_seen": "2026-11-26T16:05:00Z",
        "count": count, "outcome": "established"
    });
    serde_json::from_value(line).unwrap()
}

/// The records of a fixture file.
pub fn fixture_records(path: &str) -> Vec<FlowRecord> {
    let file = std::fs::File::open(fixture(path)).unwrap();
    flow_model::read_records(BufReader::new(file), path).unwrap()
}

/// Runs the binary: (exit code, stdout, stderr).
pub fn run(args: &[String]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_recommender"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub fn arg(p: &Path) -> String {
    p.display().to_string()
}
