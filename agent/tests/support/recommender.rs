//! A stand-in for the recommender's ingest (`POST /v1/flows`), built strictly to the HTTP contract
//! (`docs/architecture.md`, "Service"; summed up in `agent/README.md`): bearer token, JSON lines (gzip allowed),
//! `x-batch-id`, 2xx only for a batch it keeps, a batch id seen before acknowledged again and not
//! kept twice, a 4xx naming the first bad line for a bad body. On top, what a test needs: a script
//! of answers for the next requests (any status, `Retry-After`, no answer at all, or an
//! acknowledgement lost after the batch was kept), a records-per-batch limit answered with 413, a
//! port whose records it calls malformed (400), being down and coming back on the same port, and a
//! log of every request.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use flow_model::batch::{self, Encoding};
use flow_model::{check_batch_id, FlowRecord, BATCH_ID_HEADER};

/// An answer the test imposes on one request, before any check.
#[derive(Clone, Debug)]
pub enum Scripted {
    Status(u16, Option<&'static str>),
    /// Accept the request and never answer.
    Hang,
    /// Keep a good batch, then answer this status: an acknowledgement lost on the way.
    KeepAndAnswer(u16),
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub id: String,
    pub status: u16,
    pub at: Instant,
    pub authorization: String,
}

#[derive(Default)]
pub struct Ingest {
    pub token: Mutex<String>,
    pub max_records: Mutex<Option<usize>>,
    pub refuse_port: Mutex<Option<u16>>,
    pub script: Mutex<VecDeque<Scripted>>,
    /// Batches kept, by id (each once).
    pub batches: Mutex<BTreeMap<String, Vec<FlowRecord>>>,
    pub log: Mutex<Vec<Seen>>,
}

pub struct Recommender {
    pub addr: SocketAddr,
    pub ingest: Arc<Ingest>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Recommender {
    /// Serves on a free loopback port, accepting `token`.
    pub async fn start(token: &str) -> Recommender {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ingest = Arc::new(Ingest::default());
        *ingest.token.lock().unwrap() = token.to_owned();
        let mut r = Recommender {
            addr,
            ingest,
            server: None,
        };
        r.serve(listener);
        r
    }

    /// A server that is down now: its port is reserved for [`Recommender::up`].
    pub async fn down_at_first(token: &str) -> Recommender {
        let mut r = Recommender::start(token).await;
        r.down().await;
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn router(ingest: Arc<Ingest>) -> Router {
        Router::new()
            .route("/v1/flows", post(ingest_batch))
            .with_state(ingest)
    }

    /// Closes the port and every connection (a crash, as the agent sees it).
    pub async fn down(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Serves again on the same port.
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Recommender::router(Arc::clone(&self.ingest));
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.ingest.script.lock().unwrap().extend(answers);
    }

    /// Every record of every batch kept, each batch once.
    pub fn received(&self) -> Vec<FlowRecord> {
        self.ingest
            .batches
            .lock()
            .unwrap()
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    pub fn batch_ids(&self) -> Vec<String> {
        self.ingest
            .batches
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    pub fn log(&self) -> Vec<Seen> {
        self.ingest.log.lock().unwrap().clone()
    }
}

async fn ingest_batch(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header(BATCH_ID_HEADER);
    let (status, response) = decide(&ingest, &headers, &id, &body);
    ingest.log.lock().unwrap().push(Seen {
        id,
        status,
        at: Instant::now(),
        authorization: header("authorization"),
    });
    match response {
        Some(response) => response,
        None => std::future::pending().await,
    }
}

/// The status and the answer; `None` for no answer at all.
fn decide(ingest: &Ingest, headers: &HeaderMap, id: &str, body: &[u8]) -> (u16, Option<Response>) {
    let answer = |status: u16, text: String| {
        let code = StatusCode::from_u16(status).unwrap();
        (status, Some((code, text).into_response()))
    };
    // A lost acknowledgement waits for a batch that is kept; other answers are given at once.
    let front = ingest.script.lock().unwrap().front().cloned();
    match front {
        Some(Scripted::Hang) => {
            ingest.script.lock().unwrap().pop_front();
            return (0, None);
        }
        Some(Scripted::Status(status, retry_after)) => {
            ingest.script.lock().unwrap().pop_front();
            let code = StatusCode::from_u16(status).unwrap();
            let mut response = (code, "scripted\n").into_response();
            if let Some(wait) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", wait.parse().unwrap());
            }
            return (status, Some(response));
        }
        Some(Scripted::KeepAndAnswer(_)) | None => {}
    }
    let expected = format!("Bearer {}", ingest.token.lock().unwrap());
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    if authorization != Some(expected.as_str()) {
        return answer(401, "missing or wrong bearer token\n".into());
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    if content_type != Some(batch::CONTENT_TYPE) {
        return answer(
            415,
            format!("content-type must be {}\n", batch::CONTENT_TYPE),
        );
    }
    if let Err(e) = check_batch_id(id) {
        return answer(400, format!("x-batch-id: {e}\n"));
    }
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok());
    let Some(encoding) = Encoding::from_header(encoding) else {
        return answer(415, "unknown content-encoding\n".into());
    };
    let records = match batch::decode(body, encoding, 64 << 20, "body") {
        Ok(records) => records,
        Err(e) => return answer(400, format!("{e}\n")),
    };
    if let Some(max) = *ingest.max_records.lock().unwrap() {
        if records.len() > max {
            return answer(413, format!("at most {max} records per batch\n"));
        }
    }
    if let Some(port) = *ingest.refuse_port.lock().unwrap() {
        if let Some(line) = records.iter().position(|r| r.destination.port == port) {
            return answer(
                400,
                format!("body:{}:1: port {port} is refused\n", line + 1),
            );
        }
    }
    // A batch id seen before is acknowledged again and not kept twice.
    ingest
        .batches
        .lock()
        .unwrap()
        .entry(id.to_owned())
        .or_insert(records);
    if let Some(Scripted::KeepAndAnswer(status)) = front {
        ingest.script.lock().unwrap().pop_front();
        return answer(status, "the acknowledgement is lost\n".into());
    }
    answer(200, "ok\n".into())
}
