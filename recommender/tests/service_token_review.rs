//! ServiceAccount authentication against the API stub's TokenReview endpoint (`api-stub`, which
//! answers TokenReviews as the API server does: `authenticated`, `user`, `audiences`, and an
//! `error` for an unknown token or one issued for other audiences).
//!
//! - the authenticator alone: the agents' token for the audience is accepted; an unknown token,
//!   a token for another audience and another account's token are refused, each counted by
//!   reason; answers are cached (one review per token) and a failed review is neither accepted
//!   nor cached;
//! - `recommender serve --auth-service-account ... --auth-audience ...` with the stub as its
//!   cluster (kubeconfig): 200 for an agent, 401 and 403 for the others, and the metrics.

#[path = "service_support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use api_stub::{ApiStub, Fault, TokenUser};
use recommender::service::auth::Authenticator;
use recommender::service::metrics::{Metrics, Refusal};
use recommender::service::token_review::{ReviewPolicy, TokenReviewer};
use support::{web_record, Scratch, Server};

const AGENT: &str = "system:serviceaccount:egress-recommender:egress-agent";
const AUDIENCE: &str = "egress-recommender";

/// The tokens the stub knows: the agents', one for another audience, another account's.
fn tokens(stub: &ApiStub) {
    stub.allow_token(
        "agent-token",
        TokenUser::service_account("egress-recommender", "egress-agent", &[AUDIENCE]),
    );
    stub.allow_token(
        "agent-token-for-the-api",
        TokenUser::service_account(
            "egress-recommender",
            "egress-agent",
            &["https://kubernetes.default.svc"],
        ),
    );
    stub.allow_token(
        "other-account-token",
        TokenUser::service_account("shop", "web", &[AUDIENCE]),
    );
}

fn reviews(stub: &ApiStub) -> usize {
    stub.requests()
        .iter()
        .filter(|r| r.path == "/apis/authentication.k8s.io/v1/tokenreviews")
        .count()
}

fn auth_refused(metrics: &Metrics, reason: &str) -> u64 {
    metrics.auth_refused.with_label_values(&[reason]).get()
}

async fn reviewer(stub: &ApiStub, metrics: &Arc<Metrics>) -> TokenReviewer {
    let config = kube::Config::new(stub.url().parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let policy = ReviewPolicy::new(BTreeSet::from([AGENT.to_owned()]), AUDIENCE.to_owned());
    TokenReviewer::new(client, policy, Arc::clone(metrics))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_agents_tokens_for_the_audience_are_accepted() {
    let stub = ApiStub::start().await.unwrap();
    tokens(&stub);
    let metrics = Arc::new(Metrics::new());
    let auth = reviewer(&stub, &metrics).await;

    assert_eq!(auth.authenticate(Some("agent-token")).await, Ok(()));
    assert_eq!(
        auth.authenticate(Some("unknown-token")).await,
        Err(Refusal::InvalidToken)
    );
    assert_eq!(
        auth.authenticate(Some("agent-token-for-the-api")).await,
        Err(Refusal::InvalidToken)
    );
    assert_eq!(
        auth.authenticate(Some("other-account-token")).await,
        Err(Refusal::Forbidden)
    );
    assert_eq!(auth.authenticate(None).await, Err(Refusal::MissingToken));
    assert_eq!(auth_refused(&metrics, "unauthenticated"), 2);
    assert_eq!(auth_refused(&metrics, "service_account"), 1);
    assert_eq!(auth_refused(&metrics, "missing_token"), 1);
    assert_eq!(auth_refused(&metrics, "review_failed"), 0);

    // What the reviewer asked: the token, with the audience.
    let asked = stub
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/tokenreviews"))
        .unwrap();
    assert_eq!(asked.method, "POST");
    let body = asked.body.unwrap();
    assert_eq!(body["spec"]["token"], "agent-token");
    assert_eq!(body["spec"]["audiences"], serde_json::json!([AUDIENCE]));

    // Every answer is cached: asking again reviews nothing, and refusals are still counted.
    assert_eq!(reviews(&stub), 4);
    assert_eq!(auth.cached(), 4);
    for _ in 0..3 {
        assert_eq!(auth.authenticate(Some("agent-token")).await, Ok(()));
        assert_eq!(
            auth.authenticate(Some("other-account-token")).await,
            Err(Refusal::Forbidden)
        );
    }
    assert_eq!(reviews(&stub), 4);
    assert_eq!(auth_refused(&metrics, "service_account"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_review_is_answered_unavailable_and_not_cached() {
    let stub = ApiStub::start().await.unwrap();
    tokens(&stub);
    let metrics = Arc::new(Metrics::new());
    let auth = reviewer(&stub, &metrics).await;
    stub.inject(api_stub::resources::tokenreviews(), Fault::Status(500));
    assert_eq!(
        auth.authenticate(Some("agent-token")).await,
        Err(Refusal::AuthUnavailable)
    );
    assert_eq!(auth_refused(&metrics, "review_failed"), 1);
    assert_eq!(auth.cached(), 0);
    // The API answers again: the same token is reviewed anew and accepted.
    assert_eq!(auth.authenticate(Some("agent-token")).await, Ok(()));
    assert_eq!(reviews(&stub), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_expire_and_the_cache_stays_bounded() {
    let stub = ApiStub::start().await.unwrap();
    tokens(&stub);
    let metrics = Arc::new(Metrics::new());
    let config = kube::Config::new(stub.url().parse().unwrap());
    let mut policy = ReviewPolicy::new(BTreeSet::from([AGENT.to_owned()]), AUDIENCE.to_owned());
    policy.max_cached = 2;
    policy.accepted_ttl = Duration::from_millis(200);
    let auth = TokenReviewer::new(
        kube::Client::try_from(config).unwrap(),
        policy,
        Arc::clone(&metrics),
    );
    for token in ["a", "b", "c", "d", "agent-token"] {
        let _ = auth.authenticate(Some(token)).await;
        assert!(auth.cached() <= 2);
    }
    assert_eq!(reviews(&stub), 5);
    // An accepted answer is asked again once it expires (a revoked account is refused then).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(auth.authenticate(Some("agent-token")).await, Ok(()));
    assert_eq!(reviews(&stub), 6);
}

#[test]
fn serve_accepts_the_agents_and_refuses_the_others() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stub = runtime.block_on(ApiStub::start()).unwrap();
    tokens(&stub);
    let scratch = Scratch::new("token-review");
    let kubeconfig = scratch.path("kubeconfig");
    stub.write_kubeconfig(&kubeconfig).unwrap();
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--store".into(),
        scratch.path("store.redb").display().to_string(),
        format!("--auth-service-account={AGENT}"),
        format!("--auth-audience={AUDIENCE}"),
    ];
    args.extend(support::cluster_args());
    let server = Server::launch(&args, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    let body = flow_model::batch::encode(
        &[web_record("10.0.2.10", 5432, 1)],
        flow_model::batch::Encoding::Identity,
    );
    let post = |token: &str| {
        let auth = format!("Bearer {token}");
        server
            .post(&body, &[("Authorization", auth.as_str())])
            .status
    };
    assert_eq!(post("agent-token"), 200, "{}", server.log());
    assert_eq!(post("unknown-token"), 401);
    assert_eq!(post("agent-token-for-the-api"), 401);
    assert_eq!(post("other-account-token"), 403);
    assert_eq!(post("agent-token"), 200);
    assert_eq!(
        server.metric("egress_recommender_auth_refused_total{reason=\"unauthenticated\"}"),
        2.0
    );
    assert_eq!(
        server.metric("egress_recommender_auth_refused_total{reason=\"service_account\"}"),
        1.0
    );
    assert_eq!(
        server.metric("egress_recommender_ingest_refused_total{reason=\"forbidden\"}"),
        1.0
    );
    // The read endpoints take the same tokens.
    let status = |token: &str| {
        let auth = format!("Bearer {token}");
        support::request(
            server.addr,
            "GET",
            "/v1/status",
            &[("Authorization", auth.as_str())],
            b"",
        )
        .status
    };
    assert_eq!(status("agent-token"), 200);
    assert_eq!(status("other-account-token"), 403);
    // One review per distinct token: the rest came from the cache.
    assert_eq!(reviews(&stub), 4);
    drop(server);
    drop(stub);
}
