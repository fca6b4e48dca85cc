//! How stored objects go on the wire: watch lines, the event a watch with selectors gets for a
//! change, list items without `kind`/`apiVersion`, continue tokens.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::status::{self, ApiError};
use crate::store::{Change, EventType, Watcher};

pub(crate) fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object })).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

pub(crate) fn sees(watcher: &Watcher, object: &Value) -> bool {
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    watcher.namespace.as_deref().is_none_or(|want| want == ns) && watcher.selector.matches(object)
}

/// The event `watcher` gets for `change`, as the API server computes it with selectors: an
/// object that starts matching is ADDED, one that stops matching is DELETED.
pub(crate) fn event_for(watcher: &Watcher, change: &Change) -> Option<Bytes> {
    if change.resource != watcher.resource {
        return None;
    }
    let now = !change.deleted && sees(watcher, &change.new);
    let before = change.old.as_ref().is_some_and(|o| sees(watcher, o));
    let kind = match (before, now, change.deleted) {
        (true, _, true) => EventType::Deleted,
        (false, true, _) => EventType::Added,
        (true, true, _) => EventType::Modified,
        (true, false, false) => EventType::Deleted,
        _ => return None,
    };
    Some(event_line(kind.as_str(), &change.new))
}

/// List items carry neither `kind` nor `apiVersion`: the List says them once.
pub(crate) fn strip_type(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    object
}

pub(crate) fn encode_continue(id: u64, rv: u64, start: &str) -> String {
    use base64::Engine;
    let token = json!({ "v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start}\u{0}"), "snapshot": id });
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

pub(crate) fn decode_continue(token: &str) -> Result<(u64, u64), ApiError> {
    use base64::Engine;
    let bad = || status::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let id = value
        .get("snapshot")
        .and_then(Value::as_u64)
        .ok_or_else(bad)?;
    let rv = value.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    Ok((id, rv))
}
