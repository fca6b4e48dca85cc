//! A local stand-in for the Kubernetes API server, for tests: no API server can be installed on the
//! machines this project builds on, so the live-cluster code is tested against this.
//!
//! It speaks the API's real JSON over plain HTTP: objects under `/api/v1` and `/apis/GROUP/VERSION`
//! (any resource, built-in or custom), one global resourceVersion counter, lists as `KindList` with
//! `metadata.resourceVersion` and items without `kind`/`apiVersion`, `limit`/`continue` paging from a
//! consistent snapshot, watches as JSON lines (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR), streaming
//! lists (`sendInitialEvents`), `fieldSelector`/`labelSelector`, resourceVersion preconditions on
//! PUT/PATCH/DELETE answering 409 Conflict, 410 Gone (reason Expired) for history it has
//! forgotten, a TokenReview endpoint whose answers the test sets, faults on demand, and a log of
//! every request.
//!
//! What it does not do: authentication or authorization of its own callers, admission, defaulting
//! and validation against schemas, field management of server-side apply (applied as a merge
//! patch), strategic merge by list keys (lists are replaced), finalizers and graceful deletion,
//! `resourceVersionMatch` on lists (always the latest state), discovery, protobuf, HTTP/2, TLS.
//!
//! ```no_run
//! # async fn demo() {
//! let stub = api_stub::ApiStub::start().await.unwrap();
//! stub.apply(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
//!     "metadata": {"name": "web-1", "namespace": "shop"}, "spec": {"nodeName": "node-a"}}));
//! // point a client at stub.url(), or at the kubeconfig stub.write_kubeconfig(path) writes
//! # }
//! ```

mod http;
mod patch;
mod resource;
mod select;
mod status;
mod store;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::Notify;

pub use resource::{parse_path, Resource, Target};
pub use status::ApiError;

/// Something to go wrong on the next matching request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next watch sends this many events, then half of a line, then the connection breaks.
    BreakWatch { after_events: usize },
    /// The next watch answers 410 Gone (an ERROR event holding a Status with reason Expired), as
    /// the API server does for a resourceVersion older than it keeps.
    ExpireWatch,
    /// The next list, get or write answers this HTTP status with a Status body.
    Status(u16),
}

/// Who a token is, for the TokenReview endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenUser {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// The audiences the token was issued for; a review asking for none of them fails.
    pub audiences: Vec<String>,
}

impl TokenUser {
    /// A ServiceAccount's token, with the groups the API server gives one.
    pub fn service_account(namespace: &str, name: &str, audiences: &[&str]) -> TokenUser {
        TokenUser {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: format!("sa-uid-{namespace}-{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// One request as the stub saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// Query parameters, decoded.
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: Option<Value>,
    /// The HTTP status answered (200 for a watch that started, whatever came later).
    pub status: u16,
}

impl RequestRecord {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("1" | "true"))
    }
}

pub(crate) struct Shared {
    pub store: Mutex<store::Store>,
    pub faults: Mutex<HashMap<Resource, VecDeque<Fault>>>,
    pub tokens: Mutex<HashMap<String, TokenUser>>,
    pub requests: Mutex<Vec<RequestRecord>>,
    pub request_seen: Notify,
}

/// A running stub; it stops when dropped.
pub struct ApiStub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ApiStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ApiStub {
    /// Starts serving on a free loopback port (call from within a tokio runtime).
    pub async fn start() -> std::io::Result<ApiStub> {
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::default()),
            faults: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            request_seen: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = http::router(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("api stub stopped: {e}");
            }
        });
        Ok(ApiStub {
            addr,
            shared,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the server URL a client is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose current context talks to this stub (no credentials: it checks none).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stub\n  cluster:\n    server: {url}\n\
             users:\n- name: stub\n  user: {{}}\ncontexts:\n- name: stub\n  context:\n    cluster: stub\n    \
             user: stub\n    namespace: default\ncurrent-context: stub\npreferences: {{}}\n",
            url = self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    fn store(&self) -> std::sync::MutexGuard<'_, store::Store> {
        self.shared.store.lock().expect("stub store lock")
    }

    /// Names the kind of a custom resource (its List kind is `KIND` + `List`).
    pub fn register_kind(&self, resource: Resource, kind: &str, namespaced: bool) {
        self.store().register_kind(resource, kind, namespaced);
    }

    /// Creates the object, or replaces it when it exists, as a controller or `kubectl apply`
    /// would; watches see ADDED or MODIFIED. Returns the stored object.
    ///
    /// Panics when the object names no known resource (register custom kinds first): this is a
    /// test's own setup going wrong.
    pub fn apply(&self, object: Value) -> Value {
        let (resource, namespace, name) = self.locate(&object);
        let mut store = self.store();
        match store.get(&resource, namespace.as_deref(), &name) {
            Ok(_) => {
                let mut object = object;
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("resourceVersion");
                }
                store.replace(&resource, namespace.as_deref(), &name, object, false)
            }
            Err(_) => store.create(&resource, namespace.as_deref(), object),
        }
        .unwrap_or_else(|e| panic!("api stub: applying {name}: {}", e.body))
    }

    /// Deletes the object `object` names (only apiVersion, kind and metadata are read); watches see
    /// DELETED. Returns whether it existed.
    pub fn delete(&self, object: &Value) -> bool {
        let (resource, namespace, name) = self.locate(object);
        self.store()
            .delete(&resource, namespace.as_deref(), &name, None)
            .is_ok()
    }

    fn locate(&self, object: &Value) -> (Resource, Option<String>, String) {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let resource = self
            .store()
            .resource_for(api_version, kind)
            .unwrap_or_else(|| {
                panic!("api stub: no resource for {api_version} {kind}; register_kind it")
            });
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("api stub: object without metadata.name"))
            .to_string();
        (resource, namespace, name)
    }

    /// The stored objects of one resource, as a GET would return them.
    pub fn objects(&self, resource: &Resource) -> Vec<Value> {
        self.store().objects(resource)
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store().resource_version()
    }

    /// Arms a fault for the next matching request on `resource`; faults are used in order.
    pub fn inject(&self, resource: Resource, fault: Fault) {
        self.shared
            .faults
            .lock()
            .expect("faults lock")
            .entry(resource)
            .or_default()
            .push_back(fault);
    }

    /// Breaks every open watch of `resource` (all resources with `None`) in the middle of a line.
    pub fn break_watches(&self, resource: Option<&Resource>) {
        self.store().break_watches(resource);
    }

    /// Forgets the change history, as etcd compaction does: watches and list continuations from
    /// an older resourceVersion answer 410 Gone.
    pub fn compact(&self) {
        self.store().compact();
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch that allows bookmarks.
    pub fn send_bookmarks(&self) {
        self.store().send_bookmarks();
    }

    /// How many watches of `resource` are open now.
    pub fn open_watches(&self, resource: &Resource) -> usize {
        self.store().open_watches(resource)
    }

    /// Makes the TokenReview endpoint authenticate `token` as `user`; unknown tokens are refused.
    pub fn allow_token(&self, token: &str, user: TokenUser) {
        self.shared
            .tokens
            .lock()
            .expect("tokens lock")
            .insert(token.to_string(), user);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// Waits until some request satisfies `pred` and returns it (tests bound the wait
    /// themselves if they want to).
    pub async fn wait_for_request(&self, pred: impl Fn(&RequestRecord) -> bool) -> RequestRecord {
        loop {
            let notified = self.shared.request_seen.notified();
            if let Some(found) = self.requests().into_iter().find(|r| pred(r)) {
                return found;
            }
            notified.await;
        }
    }

    /// Waits until `count` watches of `resource` are open.
    pub async fn wait_for_watches(&self, resource: &Resource, count: usize) {
        loop {
            let notified = self.shared.request_seen.notified();
            if self.open_watches(resource) >= count {
                return;
            }
            notified.await;
        }
    }
}

/// The resources this project's code reads, for tests to name.
pub mod resources {
    use crate::Resource;

    pub fn pods() -> Resource {
        Resource::new("", "v1", "pods")
    }
    pub fn services() -> Resource {
        Resource::new("", "v1", "services")
    }
    pub fn namespaces() -> Resource {
        Resource::new("", "v1", "namespaces")
    }
    pub fn nodes() -> Resource {
        Resource::new("", "v1", "nodes")
    }
    pub fn endpointslices() -> Resource {
        Resource::new("discovery.k8s.io", "v1", "endpointslices")
    }
    pub fn networkpolicies() -> Resource {
        Resource::new("networking.k8s.io", "v1", "networkpolicies")
    }
    pub fn leases() -> Resource {
        Resource::new("coordination.k8s.io", "v1", "leases")
    }
    pub fn tokenreviews() -> Resource {
        Resource::new("authentication.k8s.io", "v1", "tokenreviews")
    }
    pub fn apps(plural: &str) -> Resource {
        Resource::new("apps", "v1", plural)
    }
    pub fn batch(plural: &str) -> Resource {
        Resource::new("batch", "v1", plural)
    }
}
