//! `meta.k8s.io/v1` Status objects, the body of every error the API server answers, in the shape
//! it sends (`kind`/`apiVersion`, empty `metadata`, `status: Failure`, `message`, `reason`,
//! `details`, `code`).

use serde_json::{json, Value};

use crate::resource::Resource;

/// A failed request: the HTTP status and the Status object that goes with it.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
}

fn status(code: u16, reason: &str, message: String, details: Option<Value>) -> ApiError {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    ApiError { code, body }
}

fn details(resource: &Resource, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": resource.plural });
    if !resource.group.is_empty() {
        d["group"] = json!(resource.group);
    }
    d
}

pub fn not_found(resource: &Resource, name: &str) -> ApiError {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", resource.qualified()),
        Some(details(resource, name)),
    )
}

pub fn already_exists(resource: &Resource, name: &str) -> ApiError {
    status(
        409,
        "AlreadyExists",
        format!("{} \"{name}\" already exists", resource.qualified()),
        Some(details(resource, name)),
    )
}

/// A write whose `resourceVersion` precondition no longer holds.
pub fn conflict(resource: &Resource, name: &str) -> ApiError {
    status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please \
             apply your changes to the latest version and try again",
            resource.qualified()
        ),
        Some(details(resource, name)),
    )
}

/// A watch or a list continuation from a resourceVersion older than the kept history.
pub fn expired(message: String) -> ApiError {
    status(410, "Expired", message, None)
}

pub fn bad_request(message: String) -> ApiError {
    status(400, "BadRequest", message, None)
}

pub fn method_not_allowed(message: String) -> ApiError {
    status(405, "MethodNotAllowed", message, None)
}

pub fn unsupported_media_type(message: String) -> ApiError {
    status(415, "UnsupportedMediaType", message, None)
}

pub fn invalid(resource: &Resource, name: &str, message: String) -> ApiError {
    status(422, "Invalid", message, Some(details(resource, name)))
}

/// An error a test asked for (`Fault::Status`): 500 InternalError, 503 ServiceUnavailable, ...
pub fn injected(code: u16) -> ApiError {
    let reason = match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    };
    status(code, reason, format!("injected failure ({code})"), None)
}
