//! The HTTP API (`docs/architecture.md`, "HTTP API"): routes and handlers. Every `/v1/` endpoint needs the bearer
//! token; `/metrics`, `/readyz` and `/healthz` do not (scrapers and probes).
//!
//! | route | answers |
//! | --- | --- |
//! | `POST /v1/flows` | 200 `{"records":N,"duplicate":false}` once durable; 400 naming the first bad line; 401; 408; 413; 415; 503 (with `Retry-After`; on an HA follower also `Connection: close`) |
//! | `GET /v1/policies?...` | the YAML `recommend` prints, for the options of the query (400 for an unknown one) |
//! | `GET /v1/status` | JSON (`StatusReport`) |
//! | `GET /v1/unexpected` | monitor mode: the recent unexpected flows, JSON lines, oldest first (404 in learn mode) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /readyz` | 200 once the store is open and the cluster model loaded, else 503 |
//! | `GET /healthz` | 200 while the process serves |

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flow_model::batch::{BatchError, Encoding};
use http_body_util::{BodyExt, Limited};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::auth::{bearer, Authenticator};
use super::ingest;
use super::learning::{LearningState, Thresholds};
use super::metrics::{Metrics, Refusal};
use super::model::ModelCell;
use super::monitor::Monitor;
use super::query::options_from_query;
use super::state::State as Learned;
use super::status::StatusReport;
use super::writer::Submission;
use super::Limits;
use crate::export;
use crate::store::kubernetes::Leadership;

/// The peer of a connection, put in each request's extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// What every handler shares.
pub struct App {
    pub state: Arc<Learned>,
    pub metrics: Arc<Metrics>,
    pub model: Arc<ModelCell>,
    pub monitor: Option<Arc<Monitor>>,
    pub auth: Arc<dyn Authenticator>,
    pub writer: mpsc::Sender<Submission>,
    pub limits: Limits,
    pub thresholds: Thresholds,
    /// Batches decoded and resolved at once (CPU-bound work; one per core).
    pub cpu: Semaphore,
    /// With the HA store: whether this replica leads (only the leader takes batches).
    pub leadership: Option<Arc<Leadership>>,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/flows", post(post_flows))
        .route("/v1/policies", get(get_policies))
        .route("/v1/status", get(get_status))
        .route("/v1/unexpected", get(get_unexpected))
        .route("/metrics", get(get_metrics))
        .route("/readyz", get(get_readyz))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(app)
}

/// A JSON error body `{"error": ..., "line": N}`.
fn error(status: StatusCode, message: &str, line: Option<usize>) -> Response {
    let mut body = serde_json::json!({ "error": message });
    if let Some(line) = line {
        body["line"] = line.into();
    }
    let mut response = (status, format!("{body}\n")).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    response
}

fn refusal_status(reason: Refusal) -> StatusCode {
    match reason {
        Refusal::MissingToken | Refusal::InvalidToken => StatusCode::UNAUTHORIZED,
        Refusal::Forbidden => StatusCode::FORBIDDEN,
        Refusal::AuthUnavailable
        | Refusal::NotReady
        | Refusal::StoreFailed
        | Refusal::NotLeader => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::BadBatchId | Refusal::Malformed => StatusCode::BAD_REQUEST,
        Refusal::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Refusal::BodyTooLarge | Refusal::DecodedTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
    }
}

/// A refused `POST /v1/flows`: counted by reason, logged, answered.
fn refuse(app: &App, reason: Refusal, message: &str, line: Option<usize>) -> Response {
    app.metrics.refuse(reason);
    tracing::info!(reason = reason.as_str(), "batch refused: {message}");
    let mut response = error(refusal_status(reason), message, line);
    if reason == Refusal::NotLeader {
        // The agent's retry opens a new connection, which the Service may send to the holder.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The refusal of a follower (HA store): `None` when this replica may take batches.
fn not_leader(app: &App) -> Option<String> {
    let leadership = app.leadership.as_ref()?;
    if leadership.serving() {
        return None;
    }
    Some(match leadership.holder() {
        Some(holder) if holder == leadership.identity() => {
            "this replica holds the store's Lease but is still reading the store: retry".into()
        }
        Some(holder) => {
            format!("this replica does not hold the store's Lease ({holder} does): retry")
        }
        None => "no replica holds the store's Lease yet: retry".into(),
    })
}

async fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Refusal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    app.auth.authenticate(bearer(value)).await
}

/// What a client is told about a refused token.
fn token_refusal_message(reason: Refusal) -> &'static str {
    match reason {
        Refusal::MissingToken => "Authorization: Bearer <token> required",
        Refusal::AuthUnavailable => "tokens cannot be checked now",
        Refusal::Forbidden => "this token's account may not use this API",
        _ => "invalid token",
    }
}

/// The read endpoints' answer to a refused token (not counted as a refused batch).
fn unauthorized(reason: Refusal) -> Response {
    error(refusal_status(reason), token_refusal_message(reason), None)
}

async fn post_flows(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(reason) = authorize(&app, &parts.headers).await {
        return refuse(&app, reason, token_refusal_message(reason), None);
    }
    if let Some(why) = not_leader(&app) {
        return refuse(&app, Refusal::NotLeader, &why, None);
    }
    let id = match parts.headers.get(flow_model::BATCH_ID_HEADER) {
        None => None,
        Some(value) => match value.to_str() {
            Ok(id) => match flow_model::check_batch_id(id) {
                Ok(()) => Some(id.to_owned()),
                Err(why) => return refuse(&app, Refusal::BadBatchId, &why, None),
            },
            Err(_) => {
                return refuse(&app, Refusal::BadBatchId, "batch id is not ASCII", None);
            }
        },
    };
    if let Some(id) = &id {
        if app.state.is_acknowledged(id) {
            app.metrics.batches.with_label_values(&["duplicate"]).inc();
            return accepted(0, true);
        }
    }
    let content_encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"));
    let Some(encoding) = Encoding::from_header(content_encoding) else {
        return refuse(
            &app,
            Refusal::UnsupportedEncoding,
            &format!(
                "Content-Encoding {:?} is not supported (gzip or identity)",
                content_encoding.unwrap_or_default()
            ),
            None,
        );
    };
    let limit = app.limits.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return refuse(
            &app,
            Refusal::BodyTooLarge,
            &format!("body is larger than {limit} bytes"),
            None,
        );
    }
    let Some(cluster) = app.model.current() else {
        return refuse(
            &app,
            Refusal::NotReady,
            "the cluster model is not loaded yet",
            None,
        );
    };
    let body =
        match tokio::time::timeout(app.limits.body_timeout, Limited::new(body, limit).collect())
            .await
        {
            Err(_) => {
                return refuse(
                    &app,
                    Refusal::BodyTimeout,
                    &format!("body not received within {:?}", app.limits.body_timeout),
                    None,
                )
            }
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return refuse(
                    &app,
                    Refusal::BodyTooLarge,
                    &format!("body is larger than {limit} bytes"),
                    None,
                )
            }
            Ok(Err(e)) => {
                return refuse(
                    &app,
                    Refusal::Malformed,
                    &format!("cannot read the body: {e}"),
                    None,
                )
            }
            Ok(Ok(body)) => body.to_bytes(),
        };
    let decoded_limit = app.limits.max_decoded_bytes;
    let monitor = app.monitor.clone();
    let state = Arc::clone(&app.state);
    let prepared = {
        let _permit = app
            .cpu
            .acquire()
            .await
            .expect("the semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let records = flow_model::batch::decode(&body, encoding, decoded_limit, "body")?;
            Ok::<_, BatchError>(ingest::prepare(
                id,
                &records,
                &cluster,
                monitor.as_deref(),
                &state.interner,
            ))
        })
        .await
    };
    let prepared = match prepared {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(e @ BatchError::TooLarge { .. })) => {
            return refuse(&app, Refusal::DecodedTooLarge, &e.to_string(), None)
        }
        Ok(Err(e)) => return refuse(&app, Refusal::Malformed, &e.to_string(), e.line()),
        Err(e) => {
            tracing::error!("ingest task failed: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "ingest failed", None);
        }
    };
    let (reply, answer) = oneshot::channel();
    if app
        .writer
        .send(Submission {
            batch: prepared,
            reply,
        })
        .await
        .is_err()
    {
        return refuse(&app, Refusal::StoreFailed, "the service is stopping", None);
    }
    match answer.await {
        Ok(Ok(ack)) => accepted(ack.records, ack.duplicate),
        Ok(Err(e)) if matches!(*e, crate::store::StoreError::NotLeader { .. }) => {
            refuse(&app, Refusal::NotLeader, &format!("not stored: {e}"), None)
        }
        Ok(Err(e)) => refuse(
            &app,
            Refusal::StoreFailed,
            &format!("not stored: {e}"),
            None,
        ),
        Err(_) => refuse(&app, Refusal::StoreFailed, "the service is stopping", None),
    }
}

fn accepted(records: usize, duplicate: bool) -> Response {
    let body = serde_json::json!({ "records": records, "duplicate": duplicate });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

async fn get_policies(State(app): State<Arc<App>>, request: Request) -> Response {
    if let Err(reason) = authorize(&app, request.headers()).await {
        return unauthorized(reason);
    }
    let options = match options_from_query(request.uri().query().unwrap_or("")) {
        Ok(options) => options,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why, None),
    };
    let Some(cluster) = app.model.current() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster model is not loaded yet",
            None,
        );
    };
    let state = Arc::clone(&app.state);
    let rendered = tokio::task::spawn_blocking(move || {
        export::render(&cluster, &state.flows(), &state.uncovered(), &options)
    })
    .await;
    match rendered {
        Ok(yaml) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/yaml")],
            yaml,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), None),
    }
}

async fn get_status(State(app): State<Arc<App>>, request: Request) -> Response {
    if let Err(reason) = authorize(&app, request.headers()).await {
        return unauthorized(reason);
    }
    let report = StatusReport::new(
        &app.state.edges(),
        &app.state.uncovered(),
        &app.thresholds,
        if app.monitor.is_some() {
            "monitor"
        } else {
            "learn"
        },
        app.monitor.as_deref(),
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{}\n", serde_json::to_string(&report).expect("serializes")),
    )
        .into_response()
}

async fn get_unexpected(State(app): State<Arc<App>>, request: Request) -> Response {
    if let Err(reason) = authorize(&app, request.headers()).await {
        return unauthorized(reason);
    }
    let Some(monitor) = &app.monitor else {
        return error(
            StatusCode::NOT_FOUND,
            "monitor mode is off (serve --mode monitor)",
            None,
        );
    };
    let mut out = String::new();
    for u in monitor.recent() {
        out.push_str(&serde_json::to_string(&u).expect("serializes"));
        out.push('\n');
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, flow_model::batch::CONTENT_TYPE)],
        Body::from(out),
    )
        .into_response()
}

async fn get_metrics(State(app): State<Arc<App>>) -> Response {
    let report = StatusReport::new(
        &app.state.edges(),
        &Default::default(),
        &app.thresholds,
        "",
        None,
    );
    for state in LearningState::ALL {
        app.metrics
            .workloads
            .with_label_values(&[state.as_str()])
            .set(report.count(state) as i64);
    }
    app.metrics.edges.set(app.state.edges.len() as i64);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn get_readyz(State(app): State<Arc<App>>) -> Response {
    if app.model.is_loaded() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster model not loaded\n",
        )
            .into_response()
    }
}
