//! The PATCH flavours the API server accepts, applied to a stored object.

use serde_json::Value;

use crate::status::{bad_request, unsupported_media_type, ApiError};

/// Applies `patch` (of the given content type) to `target`.
///
/// Strategic merge patches and server-side apply are applied as JSON merge patches: lists are
/// replaced whole rather than merged by key, and field ownership is not tracked.
pub fn apply(target: &mut Value, content_type: &str, patch: &Value) -> Result<(), ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/apply-patch+yaml"
        | "application/apply-patch+cbor" => {
            merge(target, patch);
            Ok(())
        }
        "application/json-patch+json" => json_patch(target, patch),
        other => Err(unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/apply-patch+yaml (got {other:?})"
        ))),
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902 with the operations clients use on objects: add, remove, replace, test.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| bad_request("a JSON patch must be an array of operations".into()))?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match kind {
            "test" => {
                if target.pointer(path) != Some(&value) {
                    return Err(crate::status::invalid(
                        &crate::resource::Resource::new("", "", ""),
                        "",
                        format!("the server rejected our request due to an error in our request: test of {path} failed"),
                    ));
                }
            }
            "replace" => {
                let slot = target
                    .pointer_mut(path)
                    .ok_or_else(|| bad_request(format!("replace: no value at {path}")))?;
                *slot = value;
            }
            "add" | "remove" => {
                let (parent, last) = path
                    .rsplit_once('/')
                    .ok_or_else(|| bad_request(format!("bad JSON pointer {path:?}")))?;
                let last = last.replace("~1", "/").replace("~0", "~");
                let parent = target
                    .pointer_mut(parent)
                    .ok_or_else(|| bad_request(format!("{kind}: no parent at {path}")))?;
                match (parent, kind) {
                    (Value::Object(map), "add") => {
                        map.insert(last, value);
                    }
                    (Value::Object(map), _) => {
                        map.remove(&last);
                    }
                    (Value::Array(items), "add") => {
                        let at = if last == "-" {
                            items.len()
                        } else {
                            last.parse().unwrap_or(usize::MAX)
                        };
                        if at > items.len() {
                            return Err(bad_request(format!("add: index out of range at {path}")));
                        }
                        items.insert(at, value);
                    }
                    (Value::Array(items), _) => {
                        let at: usize = last.parse().unwrap_or(usize::MAX);
                        if at >= items.len() {
                            return Err(bad_request(format!(
                                "remove: index out of range at {path}"
                            )));
                        }
                        items.remove(at);
                    }
                    _ => {
                        return Err(bad_request(format!(
                            "{kind}: parent of {path} is not a container"
                        )))
                    }
                }
            }
            other => {
                return Err(bad_request(format!(
                    "unsupported JSON patch operation {other:?}"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patches() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        apply(
            &mut obj,
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"x": [3]}}),
        )
        .unwrap();
        assert_eq!(
            obj,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [3]}})
        );
        let ops = json!([{"op": "test", "path": "/spec/x/0", "value": 3},
                         {"op": "add", "path": "/spec/x/-", "value": 4},
                         {"op": "replace", "path": "/metadata/labels/b", "value": "9"},
                         {"op": "remove", "path": "/metadata/labels/c"}]);
        apply(&mut obj, "application/json-patch+json", &ops).unwrap();
        assert_eq!(
            obj,
            json!({"metadata": {"labels": {"b": "9"}}, "spec": {"x": [3, 4]}})
        );
        let failing = json!([{"op": "test", "path": "/spec/x/0", "value": 7}]);
        assert_eq!(
            apply(&mut obj, "application/json-patch+json", &failing)
                .unwrap_err()
                .code,
            422
        );
        assert_eq!(
            apply(&mut obj, "text/plain", &json!({})).unwrap_err().code,
            415
        );
    }
}
