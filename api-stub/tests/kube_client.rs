//! The stub as kube-rs sees it: the client's typed calls, its watch decoder and the runtime's
//! watcher all work against it, and the raw JSON has the API server's shapes.

use api_stub::{resources, ApiStub, Fault, TokenUser};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::{json, Value};

async fn client(stub: &ApiStub) -> Client {
    let config = Config::new(stub.url().parse().unwrap());
    Client::try_from(config).unwrap()
}

fn pod(ns: &str, name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns,
           "labels": {"app": name}}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})
}

async fn raw_get(client: &Client, uri: &str) -> Value {
    let req = http_request(uri);
    serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap()
}

fn http_request(uri: &str) -> http::Request<Vec<u8>> {
    http::Request::get(uri).body(Vec::new()).unwrap()
}

#[tokio::test]
async fn lists_page_with_continue_from_a_snapshot_and_items_carry_no_kind() {
    let stub = ApiStub::start().await.unwrap();
    for i in 0..5 {
        stub.apply(pod("shop", &format!("web-{i}"), "node-a"));
    }
    let client = client(&stub).await;
    let first = raw_get(&client, "/api/v1/namespaces/shop/pods?limit=2").await;
    assert_eq!(first["kind"], "PodList");
    assert_eq!(first["apiVersion"], "v1");
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|i| i.get("kind").is_none() && i.get("apiVersion").is_none()));
    // A change between pages does not show in the later pages: they come from the first page's
    // snapshot, as the API server reads them at the first page's revision.
    stub.apply(pod("shop", "web-9", "node-a"));
    let token = first["metadata"]["continue"].as_str().unwrap();
    let second = raw_get(
        &client,
        &format!("/api/v1/namespaces/shop/pods?limit=2&continue={token}"),
    )
    .await;
    assert_eq!(second["metadata"]["resourceVersion"].as_str().unwrap(), rv);
    let token = second["metadata"]["continue"].as_str().unwrap();
    let third = raw_get(
        &client,
        &format!("/api/v1/namespaces/shop/pods?limit=2&continue={token}"),
    )
    .await;
    assert_eq!(third["items"].as_array().unwrap().len(), 1);
    assert!(third["metadata"].get("continue").is_none());

    // The typed client pages through all of them.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let page = pods.list(&ListParams::default().limit(4)).await.unwrap();
    assert_eq!(page.items.len(), 4);
    let rest = pods
        .list(
            &ListParams::default()
                .limit(4)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    let logged = stub.requests();
    assert!(logged
        .iter()
        .any(|r| r.param("continue").is_some() && r.param("limit") == Some("4")));
}

#[tokio::test]
async fn watches_stream_added_modified_deleted_and_bookmarks() {
    let stub = ApiStub::start().await.unwrap();
    let client = client(&stub).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    // With bookmarks allowed the stub sends one as soon as the watch is open.
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    stub.apply(pod("shop", "web-1", "node-a"));
    let mut modified = pod("shop", "web-1", "node-a");
    modified["metadata"]["labels"]["app"] = json!("changed");
    stub.apply(modified);
    stub.delete(&pod("shop", "web-1", "node-a"));
    stub.send_bookmarks();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(match events.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(p) => format!("ADDED {}", p.metadata.resource_version.unwrap()),
            WatchEvent::Modified(p) => format!("MODIFIED {}", p.metadata.labels.unwrap()["app"]),
            WatchEvent::Deleted(p) => format!("DELETED {}", p.metadata.name.unwrap()),
            WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
            WatchEvent::Error(e) => panic!("{e:?}"),
        });
    }
    let now = stub.resource_version();
    assert_eq!(
        seen,
        vec![
            format!("ADDED {}", now - 2),
            "MODIFIED changed".to_string(),
            "DELETED web-1".to_string(),
            format!("BOOKMARK {now}"),
        ]
    );

    // A watch from the old version replays what happened since.
    let replay: Vec<_> = pods
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(replay.len(), 4, "three changes and a bookmark");
    assert!(matches!(replay[3], WatchEvent::Bookmark(_)));
}

#[tokio::test]
async fn bookmark_and_event_lines_have_the_api_servers_shape() {
    let stub = ApiStub::start().await.unwrap();
    let client = client(&stub).await;
    stub.apply(pod("shop", "web-1", "node-a"));
    let text = client
        .request_text(http_request(
            "/api/v1/pods?watch=1&resourceVersion=1000&allowWatchBookmarks=true&timeoutSeconds=1",
        ))
        .await
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[0]["object"]["kind"], "Pod");
    assert_eq!(lines[0]["object"]["apiVersion"], "v1");
    assert_eq!(
        lines[1],
        json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
        "metadata": {"resourceVersion": stub.resource_version().to_string()}}})
    );
}

#[tokio::test]
async fn too_old_versions_answer_410_expired() {
    let stub = ApiStub::start().await.unwrap();
    let client = client(&stub).await;
    for i in 0..3 {
        stub.apply(pod("shop", &format!("web-{i}"), "node-a"));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let page = pods.list(&ListParams::default().limit(1)).await.unwrap();
    let old = page.metadata.resource_version.clone().unwrap();
    stub.apply(pod("shop", "web-9", "node-a"));
    stub.compact();
    let mut events = pods
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(
        events.try_next().await.unwrap().is_none(),
        "the stream ends after the error"
    );
    let token = page.metadata.continue_.unwrap();
    match pods
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
    // The injected form: the next watch answers 410 whatever its version.
    stub.inject(resources::pods(), Fault::ExpireWatch);
    let now = stub.resource_version().to_string();
    let mut events = pods
        .watch(&WatchParams::default(), &now)
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(events.try_next().await.unwrap().unwrap(), WatchEvent::Error(s) if s.code == 410)
    );
}

#[tokio::test]
async fn stale_writes_answer_409_conflict() {
    let stub = ApiStub::start().await.unwrap();
    let client = client(&stub).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let created = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod("shop", "web-1", "n")).unwrap(),
        )
        .await
        .unwrap();
    let stale = created.clone();
    let mut fresh = created.clone();
    fresh
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "2".into());
    let updated = pods
        .replace("web-1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    let conflict = |r: Result<Pod, kube::Error>| match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    };
    assert_eq!(
        conflict(pods.replace("web-1", &PostParams::default(), &stale).await),
        (409, "Conflict".to_string())
    );
    let patch = json!({"metadata": {"resourceVersion": created.metadata.resource_version, "labels": {"v": "3"}}});
    assert_eq!(
        conflict(
            pods.patch("web-1", &PatchParams::default(), &Patch::Merge(&patch))
                .await
        ),
        (409, "Conflict".to_string())
    );
    assert_eq!(
        conflict(pods.create(&PostParams::default(), &stale).await),
        (409, "AlreadyExists".to_string())
    );
    // A patch without a version applies; so does one with the current version.
    let patch = json!({"metadata": {"resourceVersion": updated.metadata.resource_version, "labels": {"v": "3"}}});
    let patched = pods
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["v"], "3");
    assert_eq!(
        conflict(pods.get("nope").await),
        (404, "NotFound".to_string())
    );
}

#[tokio::test]
async fn field_selectors_filter_lists_and_watches() {
    let stub = ApiStub::start().await.unwrap();
    let client = client(&stub).await;
    stub.apply(pod("a", "on-a", "node-a"));
    stub.apply(pod("b", "on-b", "node-b"));
    let pods: Api<Pod> = Api::all(client.clone());
    let listed = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    let names: Vec<_> = listed
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, vec!["on-a"]);
    let rv = listed.metadata.resource_version.unwrap();
    let mut events = pods
        .watch(&WatchParams::default().fields("spec.nodeName=node-a"), &rv)
        .await
        .unwrap()
        .boxed();
    stub.apply(pod("b", "later-b", "node-b"));
    stub.apply(pod("a", "later-a", "node-a"));
    assert!(matches!(
        events.try_next().await.unwrap().unwrap(),
        WatchEvent::Bookmark(_)
    ));
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(p) => assert_eq!(p.metadata.name.as_deref(), Some("later-a")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_broken_watch_fails_mid_line_and_the_watcher_resumes() {
    let stub = ApiStub::start().await.unwrap();
    let client = client(&stub).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    stub.apply(pod("shop", "web-0", "n"));
    let rv = stub.resource_version().to_string();
    stub.inject(resources::pods(), Fault::BreakWatch { after_events: 1 });
    stub.apply(pod("shop", "web-1", "n"));
    let mut events = pods
        .watch(&WatchParams::default(), "1000")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        events.next().await,
        Some(Ok(WatchEvent::Added(_)))
    ));
    let broken = events.next().await;
    // kube's line decoder ends the stream at the broken connection (with an error or not); the
    // half line never becomes an event.
    assert!(
        matches!(broken, None | Some(Err(_))),
        "half a line then a broken connection: {broken:?}"
    );
    let _ = rv;

    // The runtime's watcher survives a stream broken right away and resumes from where it was.
    let mut stream = watcher(pods.clone(), watcher::Config::default().page_size(1)).boxed();
    let mut names = std::collections::BTreeSet::new();
    stub.inject(resources::pods(), Fault::BreakWatch { after_events: 0 });
    let mut applied = false;
    let mut deleted = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitApply(p) | watcher::Event::Apply(p)) => {
                names.insert(p.metadata.name.unwrap());
            }
            Ok(watcher::Event::Delete(p)) => {
                names.remove(&p.metadata.name.unwrap());
            }
            Ok(watcher::Event::InitDone) if !applied => {
                applied = true;
                stub.apply(pod("shop", "web-2", "n"));
            }
            _ => {}
        }
        if names.contains("web-2") && !deleted {
            deleted = true;
            stub.delete(&pod("shop", "web-0", "n"));
        }
        if deleted && names.len() == 2 {
            break;
        }
    }
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["web-1", "web-2"]
    );
    let watches = stub.requests().into_iter().filter(|r| r.is_watch()).count();
    assert!(
        watches >= 3,
        "the raw watch, the broken one and the one after: {watches}"
    );
}

#[tokio::test]
async fn token_reviews_answer_as_the_test_configured() {
    let stub = ApiStub::start().await.unwrap();
    stub.allow_token(
        "good",
        TokenUser::service_account("egress", "agent", &["egress-recommender"]),
    );
    let client = client(&stub).await;
    let reviews: Api<TokenReview> = Api::all(client);
    let review = |token: &str, aud: &[&str]| TokenReview {
        spec: TokenReviewSpec {
            token: token.into(),
            audiences: Some(aud.iter().map(|a| a.to_string()).collect()),
        },
        ..Default::default()
    };
    let ok = reviews
        .create(
            &PostParams::default(),
            &review("good", &["egress-recommender"]),
        )
        .await
        .unwrap();
    let status = ok.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(
        status.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:egress:agent")
    );
    for (token, aud) in [("bad", "egress-recommender"), ("good", "other")] {
        let refused = reviews
            .create(&PostParams::default(), &review(token, &[aud]))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_ne!(refused.authenticated, Some(true));
        assert!(refused.error.is_some());
    }
    // (kube's client retries 503s by itself, so the failure injected here is a 500.)
    stub.inject(resources::tokenreviews(), Fault::Status(500));
    let failed = reviews
        .create(&PostParams::default(), &review("good", &[]))
        .await;
    assert!(
        matches!(&failed, Err(kube::Error::Api(s)) if s.code == 500),
        "{failed:?}"
    );
}
