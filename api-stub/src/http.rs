//! The HTTP face of the stub: one handler that parses the request path and dispatches on the verb.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::resource::{parse_path, Target};
use crate::select::Selector;
use crate::status::{self, ApiError};
use crate::store::WatchMsg;
use crate::{Fault, RequestRecord, Shared};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// What one request parsed to.
struct Call {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    body: Option<Value>,
}

impl Call {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("1" | "true"))
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: http_header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header(http_header::CONTENT_TYPE);
    let authorization = header(http_header::AUTHORIZATION);
    let raw = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let call = Call {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
        content_type: content_type.clone(),
        body: if raw.is_empty() {
            None
        } else {
            serde_json::from_slice(&raw).ok()
        },
    };
    let bad_body = !raw.is_empty() && call.body.is_none();
    let response = if bad_body {
        Err(status::bad_request("the request body is not JSON".into()))
    } else {
        dispatch(&shared, &call)
    };
    let (code, response) = match response {
        Ok(Reply::Json(code, value)) => (code, json_response(code, &value)),
        Ok(Reply::Stream(body)) => (200, stream_response(body)),
        Err(e) => (e.code, json_response(e.code, &e.body)),
    };
    shared
        .requests
        .lock()
        .expect("requests lock")
        .push(RequestRecord {
            method: call.method,
            path: call.path,
            query: call.query,
            content_type,
            authorization,
            body: call.body,
            status: code,
        });
    shared.request_seen.notify_waiters();
    response
}

mod http_header {
    pub use axum::http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
}

enum Reply {
    Json(u16, Value),
    Stream(Body),
}

fn json_response(code: u16, value: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(http_header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(value).expect("json")))
        .expect("response")
}

fn stream_response(body: Body) -> Response {
    Response::builder()
        .status(200)
        .header(http_header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("response")
}

fn take_fault(shared: &Shared, target: &Target, watch: bool) -> Option<Fault> {
    let mut faults = shared.faults.lock().expect("faults lock");
    let queue = faults.get_mut(&target.resource)?;
    let wanted = |f: &Fault| matches!(f, Fault::Status(_)) != watch;
    let at = queue.iter().position(wanted)?;
    queue.remove(at)
}

fn dispatch(shared: &Shared, call: &Call) -> Result<Reply, ApiError> {
    if call.path == "/version" {
        return Ok(Reply::Json(
            200,
            json!({"major": "1", "minor": "37", "gitVersion": "v1.37.0-api-stub", "platform": "linux/amd64"}),
        ));
    }
    let Some(target) = parse_path(&call.path) else {
        return Err(ApiError {
            code: 404,
            body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": "the server could not find the requested resource",
                         "reason": "NotFound", "details": {}, "code": 404}),
        });
    };
    let watch = call.method == "GET" && target.name.is_none() && call.flag("watch");
    match take_fault(shared, &target, watch) {
        Some(Fault::Status(code)) => return Err(status::injected(code)),
        Some(fault) if watch => {
            return Ok(Reply::Stream(watch_stream(
                shared,
                call,
                &target,
                Some(fault),
            )?))
        }
        _ => {}
    }
    if target.resource.plural == "tokenreviews" && target.resource.group == "authentication.k8s.io"
    {
        return token_review(shared, call);
    }
    if watch {
        return Ok(Reply::Stream(watch_stream(shared, call, &target, None)?));
    }
    let mut store = shared.store.lock().expect("stub store lock");
    let ns = target.namespace.as_deref();
    let status_only = target.subresource.as_deref() == Some("status");
    let body = || {
        call.body
            .clone()
            .ok_or_else(|| status::bad_request("the request has no body".into()))
    };
    match (call.method.as_str(), target.name.as_deref()) {
        ("GET", Some(name)) => store
            .get(&target.resource, ns, name)
            .map(|o| Reply::Json(200, o)),
        ("GET", None) => {
            let selector =
                Selector::parse(call.param("fieldSelector"), call.param("labelSelector"))?;
            let limit = call.param("limit").and_then(|l| l.parse().ok());
            let page = store.list(
                &target.resource,
                ns,
                &selector,
                limit,
                call.param("continue"),
            )?;
            let mut metadata = json!({ "resourceVersion": page.rv.to_string() });
            if let Some(token) = page.continue_token {
                metadata["continue"] = json!(token);
            }
            if let Some(remaining) = page.remaining {
                metadata["remainingItemCount"] = json!(remaining);
            }
            Ok(Reply::Json(
                200,
                json!({ "kind": page.kind, "apiVersion": page.api_version, "metadata": metadata, "items": page.items }),
            ))
        }
        ("POST", None) => {
            let object = body()?;
            if let (Some(path_ns), Some(obj_ns)) = (
                ns,
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str),
            ) {
                if path_ns != obj_ns {
                    return Err(status::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ));
                }
            }
            store
                .create(&target.resource, ns, object)
                .map(|o| Reply::Json(201, o))
        }
        ("PUT", Some(name)) => store
            .replace(&target.resource, ns, name, body()?, status_only)
            .map(|o| Reply::Json(200, o)),
        ("PATCH", Some(name)) => {
            let existed = store.get(&target.resource, ns, name).is_ok();
            let content_type = call.content_type.as_deref().unwrap_or("");
            store
                .patch(
                    &target.resource,
                    ns,
                    name,
                    content_type,
                    &body()?,
                    status_only,
                )
                .map(|o| Reply::Json(if existed { 200 } else { 201 }, o))
        }
        ("DELETE", Some(name)) => {
            let precondition = call
                .body
                .as_ref()
                .and_then(|b| b.pointer("/preconditions/resourceVersion"))
                .and_then(Value::as_str);
            store
                .delete(&target.resource, ns, name, precondition)
                .map(|o| Reply::Json(200, o))
        }
        (method, _) => Err(status::method_not_allowed(format!(
            "{method} is not supported on {} by the api stub",
            call.path
        ))),
    }
}

/// `?watch=1`: replays from `resourceVersion` (or lists the current state as ADDED events when
/// there is none, or for `sendInitialEvents=true`), then streams changes until `timeoutSeconds`.
fn watch_stream(
    shared: &Shared,
    call: &Call,
    target: &Target,
    fault: Option<Fault>,
) -> Result<Body, ApiError> {
    let selector = Selector::parse(call.param("fieldSelector"), call.param("labelSelector"))?;
    let from = match call.param("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| status::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let timeout = call
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let mut break_after = None;
    let rx = {
        let mut store = shared.store.lock().expect("stub store lock");
        match fault {
            Some(Fault::ExpireWatch) => {
                let err = status::expired(format!(
                    "too old resource version: {} ({})",
                    from.unwrap_or(0),
                    store.resource_version()
                ));
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": err.body}))
                    .expect("json");
                line.push(b'\n');
                let _ = tx.send(WatchMsg::Line(Bytes::from(line)));
                rx
            }
            other => {
                if let Some(Fault::BreakWatch { after_events }) = other {
                    break_after = Some(after_events);
                }
                store.watch(
                    &target.resource,
                    target.namespace.clone(),
                    selector,
                    from,
                    call.flag("allowWatchBookmarks"),
                    call.flag("sendInitialEvents"),
                )
            }
        }
    };
    let state = WatchState {
        rx,
        sent: 0,
        break_after,
        phase: Phase::Running,
        deadline: Box::pin(tokio::time::sleep(std::time::Duration::from_secs(timeout))),
    };
    Ok(Body::from_stream(futures_util::stream::unfold(
        state, next_chunk,
    )))
}

#[derive(PartialEq)]
enum Phase {
    Running,
    Broken,
    Done,
}

struct WatchState {
    rx: tokio::sync::mpsc::UnboundedReceiver<WatchMsg>,
    sent: usize,
    break_after: Option<usize>,
    phase: Phase,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// Half of a watch line, as a connection cut in the middle of one leaves it.
const HALF_LINE: &[u8] = b"{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Po";

async fn next_chunk(mut st: WatchState) -> Option<(Result<Bytes, std::io::Error>, WatchState)> {
    match st.phase {
        Phase::Done => None,
        Phase::Broken => {
            // Let the half line reach the client before the connection goes: a body error makes
            // hyper drop the connection with whatever it has not yet written.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            st.phase = Phase::Done;
            Some((
                Err(std::io::Error::other("watch broken by the api stub")),
                st,
            ))
        }
        Phase::Running => {
            if st.break_after == Some(st.sent) {
                st.phase = Phase::Broken;
                return Some((Ok(Bytes::from_static(HALF_LINE)), st));
            }
            tokio::select! {
                msg = st.rx.recv() => match msg {
                    Some(WatchMsg::Line(line)) => {
                        st.sent += 1;
                        Some((Ok(line), st))
                    }
                    Some(WatchMsg::Break) => {
                        st.phase = Phase::Broken;
                        Some((Ok(Bytes::from_static(HALF_LINE)), st))
                    }
                    None => None,
                },
                _ = &mut st.deadline => None,
            }
        }
    }
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: authenticated only for a token the test
/// allowed, and only when the review's audiences (if any) meet the token's.
fn token_review(shared: &Shared, call: &Call) -> Result<Reply, ApiError> {
    if call.method != "POST" {
        return Err(status::method_not_allowed(
            "tokenreviews can only be created".into(),
        ));
    }
    let review = call
        .body
        .clone()
        .ok_or_else(|| status::bad_request("the request has no body".into()))?;
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("");
    let wanted: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let user = shared
        .tokens
        .lock()
        .expect("tokens lock")
        .get(token)
        .cloned();
    let status = match user {
        None => json!({ "user": {}, "error": "[invalid bearer token, token lookup failed]" }),
        Some(user) => {
            let audiences: Vec<&String> = if wanted.is_empty() {
                user.audiences.iter().collect()
            } else {
                wanted
                    .iter()
                    .filter(|a| user.audiences.contains(a))
                    .collect()
            };
            if !wanted.is_empty() && audiences.is_empty() {
                json!({ "user": {}, "error": "[invalid bearer token, token audiences is invalid for the target audiences]" })
            } else {
                json!({
                    "authenticated": true,
                    "user": { "username": user.username, "uid": user.uid, "groups": user.groups },
                    "audiences": audiences,
                })
            }
        }
    };
    let mut spec = json!({ "token": token });
    if !wanted.is_empty() {
        spec["audiences"] = json!(wanted);
    }
    Ok(Reply::Json(
        201,
        json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": { "creationTimestamp": null },
            "spec": spec,
            "status": status,
        }),
    ))
}
