//! Loading the cluster model from `kubectl get ... -o yaml|json` files.
//!
//! A file holds JSON or YAML; in it, a `List` (`kind: List`, or `PodList` & co. with `items`), a
//! single object, a bare array of objects, or several YAML documents separated by `---`. Objects of the kinds in
//! [`Cluster`] are deserialized with k8s-openapi; every other kind is skipped with a note, because
//! snapshot files routinely hold ConfigMaps, Secrets, CRDs and the like that do not matter here.
//! A file that does not parse, or an object of a kind we read that k8s-openapi rejects, is an
//! error: a silently half-read cluster would give silently wrong policies.

use std::path::{Path, PathBuf};

use k8s_openapi::{Metadata, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Cluster;
use crate::error::Error;

/// A cluster and the notes taken while loading it (objects skipped, and why).
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub cluster: Cluster,
    pub notes: Vec<String>,
}

impl Cluster {
    /// Loads every file into one cluster, in order. An object that appears twice (same kind,
    /// namespace and name) keeps its last version, so a later, fresher snapshot wins.
    pub fn load_files<P: AsRef<Path>>(paths: &[P]) -> Result<Loaded, Error> {
        let mut loaded = Loaded::default();
        for path in paths {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
            loaded.cluster.add_text(&text, path, &mut loaded.notes)?;
        }
        // Objects that cannot all be true at once, or that hold values no API server would
        // serve: named, never dropped silently.
        let mut odd = loaded.cluster.dedup();
        loaded.cluster.reindex();
        odd.extend(super::checks::check(&loaded.cluster));
        for note in &odd {
            tracing::warn!("{note}");
        }
        loaded.notes.extend(odd);
        Ok(loaded)
    }

    /// Adds the objects of one file's text; `path` names it in errors and notes. Notes are also
    /// logged (info for kinds we do not use, warn for known kinds in an apiVersion we do not read).
    pub fn add_text(
        &mut self,
        text: &str,
        path: &Path,
        notes: &mut Vec<String>,
    ) -> Result<(), Error> {
        let mut ctx = Ctx {
            path: path.to_owned(),
            document: 0,
            items: Vec::new(),
            notes,
        };
        // One reader for every input file: limits on depth and aliases, a BOM tolerated, JSON or
        // YAML, positions in errors.
        let (_, documents) = flow_model::documents::parse(text, &path.display().to_string())
            .map_err(|e| Error::Syntax {
                path: path.to_owned(),
                line: e.line,
                column: e.column,
                format: e.format.as_str(),
                message: e.problem.to_string(),
            })?;
        for document in documents {
            ctx.document = document.number;
            self.add_value(document.value, &mut ctx)?;
        }
        Ok(())
    }

    fn add_value(&mut self, mut value: Value, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        if value.is_null() {
            // An empty document (a trailing `---`, a file of comments).
            return Ok(());
        }
        if let Value::Array(items) = value {
            // A bare array of objects (`jq .items`).
            for (index, item) in items.into_iter().enumerate() {
                ctx.items.push(index);
                let result = self.add_value(item, ctx);
                ctx.items.pop();
                result?;
            }
            return Ok(());
        }
        let Some(kind) = value.get("kind").and_then(Value::as_str).map(str::to_owned) else {
            return Err(ctx.object_error(
                &value,
                "(no kind)",
                "not a Kubernetes object: no `kind`",
            ));
        };
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
            let items = match value.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => items,
                Some(Value::Null) | None => Vec::new(),
                Some(_) => return Err(ctx.object_error(&value, &kind, "`items` is not a list")),
            };
            // The API's own `PodList` omits kind/apiVersion on items (kubectl adds them): take
            // them from the list.
            let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
            for (index, mut item) in items.into_iter().enumerate() {
                if let (Some(item_kind), Value::Object(fields)) = (item_kind, &mut item) {
                    fields
                        .entry("kind")
                        .or_insert_with(|| Value::from(item_kind));
                    fields
                        .entry("apiVersion")
                        .or_insert_with(|| Value::from(api_version.as_str()));
                }
                ctx.items.push(index);
                let result = self.add_value(item, ctx);
                ctx.items.pop();
                result?;
            }
            return Ok(());
        }
        match kind.as_str() {
            "Namespace" => {
                if let Some(ns) =
                    ctx.read::<k8s_openapi::api::core::v1::Namespace>(value, &api_version)?
                {
                    let name = ns.metadata.name.clone().unwrap_or_default();
                    self.namespaces.insert(name, ns);
                }
            }
            "Pod" => push(&mut self.pods, ctx.read(value, &api_version)?),
            "Service" => push(&mut self.services, ctx.read(value, &api_version)?),
            "EndpointSlice" => push(&mut self.endpoint_slices, ctx.read(value, &api_version)?),
            "Endpoints" => push(&mut self.endpoints, ctx.read(value, &api_version)?),
            "Node" => push(&mut self.nodes, ctx.read(value, &api_version)?),
            "Deployment" => push(&mut self.deployments, ctx.read(value, &api_version)?),
            "ReplicaSet" => push(&mut self.replica_sets, ctx.read(value, &api_version)?),
            "StatefulSet" => push(&mut self.stateful_sets, ctx.read(value, &api_version)?),
            "DaemonSet" => push(&mut self.daemon_sets, ctx.read(value, &api_version)?),
            "Job" => push(&mut self.jobs, ctx.read(value, &api_version)?),
            "CronJob" => push(&mut self.cron_jobs, ctx.read(value, &api_version)?),
            "NetworkPolicy" => push(&mut self.network_policies, ctx.read(value, &api_version)?),
            _ => ctx.note(
                false,
                format!(
                    "skipped {api_version} {kind} {}: not used by the recommender",
                    name_of(&value)
                ),
            ),
        }
        Ok(())
    }

    /// Keeps the last of objects with the same namespace/name (per kind); a note names each
    /// object read more than once. Unnamed objects are all kept (a note named them on loading).
    fn dedup(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        dedup_last(&mut self.pods, &mut notes);
        dedup_last(&mut self.services, &mut notes);
        dedup_last(&mut self.endpoint_slices, &mut notes);
        dedup_last(&mut self.endpoints, &mut notes);
        dedup_last(&mut self.nodes, &mut notes);
        dedup_last(&mut self.deployments, &mut notes);
        dedup_last(&mut self.replica_sets, &mut notes);
        dedup_last(&mut self.stateful_sets, &mut notes);
        dedup_last(&mut self.daemon_sets, &mut notes);
        dedup_last(&mut self.jobs, &mut notes);
        dedup_last(&mut self.cron_jobs, &mut notes);
        dedup_last(&mut self.network_policies, &mut notes);
        notes
    }
}

fn push<T>(list: &mut Vec<T>, object: Option<T>) {
    list.extend(object);
}

fn dedup_last<T>(list: &mut Vec<T>, notes: &mut Vec<String>)
where
    T: Resource + Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    let mut seen = std::collections::HashMap::new();
    let mut kept: Vec<T> = Vec::with_capacity(list.len());
    for object in list.drain(..).rev() {
        let meta = object.metadata();
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            kept.push(object);
            continue;
        };
        let times = seen.entry((meta.namespace.clone(), name)).or_insert(0usize);
        *times += 1;
        if *times == 1 {
            kept.push(object);
        }
    }
    kept.reverse();
    *list = kept;
    let mut repeated: Vec<_> = seen.into_iter().filter(|(_, n)| *n > 1).collect();
    repeated.sort();
    for ((namespace, name), times) in repeated {
        let name = match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        };
        notes.push(format!(
            "{} {name} was read {times} times; the last one read is kept",
            T::KIND
        ));
    }
}

/// `namespace/name`, `name` or `(unnamed)`, from raw metadata (before deserialization, so that an
/// object k8s-openapi rejects can still be named).
fn name_of(value: &Value) -> String {
    let meta = value.get("metadata");
    let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
    match (field("namespace"), field("name")) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_owned(),
        _ => "(unnamed)".to_owned(),
    }
}

/// Where in the input we are, for errors and notes.
struct Ctx<'n> {
    path: PathBuf,
    /// 1-based document number in the file.
    document: usize,
    /// Item indexes of the (possibly nested) Lists we are in.
    items: Vec<usize>,
    notes: &'n mut Vec<String>,
}

impl Ctx<'_> {
    fn location(&self) -> String {
        let mut location = format!("document {}", self.document);
        for item in &self.items {
            location.push_str(&format!(", item {item}"));
        }
        location
    }

    fn object_error(&self, value: &Value, kind: &str, message: impl Into<String>) -> Error {
        Error::Object {
            path: self.path.clone(),
            location: self.location(),
            kind: kind.to_owned(),
            name: name_of(value),
            message: message.into(),
        }
    }

    fn note(&mut self, warn: bool, what: String) {
        let note = format!("{}: {}: {what}", self.path.display(), self.location());
        if warn {
            tracing::warn!("{note}");
        } else {
            tracing::info!("{note}");
        }
        self.notes.push(note);
    }

    /// Deserializes an object of a kind we read. Another apiVersion of that kind (say
    /// `extensions/v1beta1` Deployments from an ancient dump) is skipped with a warning rather than
    /// misread.
    fn read<T: Resource + DeserializeOwned>(
        &mut self,
        value: Value,
        api_version: &str,
    ) -> Result<Option<T>, Error> {
        if api_version != T::API_VERSION {
            self.note(
                true,
                format!(
                    "skipped {api_version} {} {}: only {} is read",
                    T::KIND,
                    name_of(&value),
                    T::API_VERSION
                ),
            );
            return Ok(None);
        }
        let name = name_of(&value);
        let meta = value.get("metadata").filter(|m| m.is_object());
        if meta.is_none() {
            self.note(
                true,
                format!(
                    "{} without metadata: read, but nothing can name it",
                    T::KIND
                ),
            );
        } else if meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            self.note(
                true,
                format!(
                    "{} without metadata.name: read, but nothing can name it",
                    T::KIND
                ),
            );
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| Error::Object {
                path: self.path.clone(),
                location: self.location(),
                kind: T::KIND.to_owned(),
                name,
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, Error> {
        let mut loaded = Loaded::default();
        loaded
            .cluster
            .add_text(text, Path::new("snap.yaml"), &mut loaded.notes)?;
        let duplicates = loaded.cluster.dedup();
        loaded.cluster.reindex();
        loaded.notes.extend(duplicates);
        Ok(loaded)
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: ns}\nspec: {containers: [{name: c, image: i}]}\n";

    #[test]
    fn kubectl_list_with_kinds() {
        let text = format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}\n- apiVersion: v1\n  kind: Service\n  metadata: {{name: s, namespace: ns}}\n",
            "{apiVersion: v1, kind: Pod, metadata: {name: a, namespace: ns}, spec: {containers: []}}"
        );
        let l = load(&text).unwrap();
        assert_eq!(l.cluster.pods.len(), 1);
        assert_eq!(l.cluster.services.len(), 1);
        assert!(l.notes.is_empty());
    }

    #[test]
    fn api_typed_list_items_without_kind() {
        let text = r#"{"apiVersion":"v1","kind":"PodList","metadata":{},"items":[
            {"metadata":{"name":"a","namespace":"ns"},"spec":{"containers":[]}},
            {"metadata":{"name":"b","namespace":"ns"},"spec":{"containers":[]}}]}"#;
        let l = load(text).unwrap();
        assert_eq!(l.cluster.pods.len(), 2);
    }

    #[test]
    fn multi_document_yaml_and_empty_documents() {
        let text = format!(
            "---\n{POD}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns, labels: {{team: a}}}}\n---\n# nothing\n"
        );
        let l = load(&text).unwrap();
        assert_eq!(l.cluster.pods.len(), 1);
        assert_eq!(
            l.cluster.namespaces["ns"].metadata.labels.as_ref().unwrap()["team"],
            "a"
        );
    }

    #[test]
    fn bare_json_array() {
        let l = load(
            r#"[{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}},
                         {"apiVersion":"v1","kind":"Node","metadata":{"name":"n2"}}]"#,
        )
        .unwrap();
        assert_eq!(l.cluster.nodes.len(), 2);
    }

    #[test]
    fn single_json_object() {
        let l = load(r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}"#).unwrap();
        assert_eq!(l.cluster.nodes.len(), 1);
    }

    #[test]
    fn unknown_kind_and_old_api_version_are_noted() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: ns}\n---\napiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: d, namespace: ns}\n";
        let l = load(text).unwrap();
        assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
        assert!(
            l.notes[0].contains("snap.yaml: document 1: skipped v1 ConfigMap ns/cm"),
            "{}",
            l.notes[0]
        );
        assert!(
            l.notes[1].contains("document 2") && l.notes[1].contains("only apps/v1"),
            "{}",
            l.notes[1]
        );
        assert!(l.cluster.deployments.is_empty());
    }

    #[test]
    fn bad_yaml_names_line_and_column() {
        let text = format!("{POD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: [\n");
        let e = load(&text).unwrap_err().to_string();
        assert!(e.starts_with("snap.yaml:"), "{e}");
        let Error::Syntax { line, .. } = load(&text).unwrap_err() else {
            panic!()
        };
        assert!(line >= 7, "{e}");
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let e = load("{\"kind\": \"Pod\",\n \"apiVersion\": }")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("snap.yaml:2:"), "{e}");
    }

    #[test]
    fn rejected_object_is_named() {
        let text = format!(
            "{POD}---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata: {{name: s-abc, namespace: ns}}\n  addressType: IPv4\n  endpoints: [{{addresses: 10.0.0.1}}]\n"
        );
        let e = load(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("snap.yaml: document 2, item 0: EndpointSlice ns/s-abc: "),
            "{e}"
        );
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn document_without_kind_is_an_error() {
        let e = load("foo: bar\n").unwrap_err().to_string();
        assert!(e.contains("document 1") && e.contains("no `kind`"), "{e}");
    }

    #[test]
    fn duplicates_keep_the_last() {
        let second = POD.replace("image: i", "image: j");
        let l = load(&format!("{POD}---\n{second}")).unwrap();
        assert_eq!(l.cluster.pods.len(), 1);
        let image = l.cluster.pods[0].spec.as_ref().unwrap().containers[0]
            .image
            .clone();
        assert_eq!(image.as_deref(), Some("j"));
        assert_eq!(
            l.notes,
            ["Pod ns/a was read 2 times; the last one read is kept"]
        );
    }

    #[test]
    fn objects_without_metadata_or_name_are_named_and_kept() {
        let text = "apiVersion: v1\nkind: Pod\nspec: {containers: []}\n---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: ns}\nspec: {containers: []}\n---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: ns, name: ''}\nspec: {containers: []}\n";
        let l = load(text).unwrap();
        assert_eq!(l.cluster.pods.len(), 3, "unnamed objects are not merged");
        assert_eq!(l.notes.len(), 3, "{:?}", l.notes);
        assert!(
            l.notes[0].contains("document 1: Pod without metadata:"),
            "{}",
            l.notes[0]
        );
        assert!(
            l.notes[1].contains("document 2: Pod without metadata.name"),
            "{}",
            l.notes[1]
        );
        assert!(l.notes[2].contains("document 3"), "{}", l.notes[2]);
    }

    #[test]
    fn missing_file_is_named() {
        let e = Cluster::load_files(&["/nonexistent/c.yaml"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/c.yaml: cannot read:"), "{e}");
    }
}
