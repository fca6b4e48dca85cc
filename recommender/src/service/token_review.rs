//! Authentication in a cluster: agents present their projected ServiceAccount token (issued for
//! an audience, `egress-recommender` in `deploy/`), and [`TokenReviewer`] asks the API server
//! whose it is (`authentication.k8s.io/v1` TokenReview, with that audience). It accepts a token
//! only when the API server authenticated it, for the audience, as one of the accepted
//! ServiceAccounts (`system:serviceaccount:NS:NAME`).
//!
//! Answers are cached for a short time (accepted: `accepted_ttl`, refused: `refused_ttl`), so an
//! agent that sends a batch every few seconds costs one review a minute, not one per batch; the
//! cache is bounded (`max_cached` tokens; past it the entry that expires first goes). A token
//! revoked while cached is still accepted until its entry expires, as with the API server's own
//! webhook token cache. A review that fails (API unreachable, 5xx, missing RBAC) is not cached and
//! is answered 503, so that agents retry. Every refusal is counted by reason in
//! `egress_recommender_auth_refused_total`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use super::auth::{Authenticator, MAX_TOKEN_LEN};
use super::metrics::{AuthRefusal, Metrics, Refusal};
use crate::store::BoxFuture;

/// What the reviewer accepts, and how long it remembers answers.
#[derive(Clone, Debug)]
pub struct ReviewPolicy {
    /// Accepted usernames: `system:serviceaccount:NS:NAME` ([`service_account_user`]).
    pub accepted_users: BTreeSet<String>,
    /// The audience the tokens must have been issued for.
    pub audience: String,
    pub accepted_ttl: Duration,
    pub refused_ttl: Duration,
    pub max_cached: usize,
}

impl ReviewPolicy {
    pub fn new(accepted_users: BTreeSet<String>, audience: String) -> ReviewPolicy {
        ReviewPolicy {
            accepted_users,
            audience,
            accepted_ttl: Duration::from_secs(60),
            refused_ttl: Duration::from_secs(10),
            max_cached: 4096,
        }
    }
}

/// `system:serviceaccount:NS:NAME` checked: both parts DNS labels/subdomains as Kubernetes names
/// them. The error says what is wrong.
pub fn service_account_user(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [system, account, namespace, name] = parts.as_slice() else {
        return Err(format!(
            "{text:?} is not system:serviceaccount:NAMESPACE:NAME"
        ));
    };
    if *system != "system" || *account != "serviceaccount" {
        return Err(format!(
            "{text:?} is not system:serviceaccount:NAMESPACE:NAME"
        ));
    }
    let valid = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if !valid(namespace, 63) || namespace.contains('.') {
        return Err(format!("{text:?}: {namespace:?} is not a namespace name"));
    }
    if !valid(name, 253) {
        return Err(format!("{text:?}: {name:?} is not a ServiceAccount name"));
    }
    Ok(text.to_owned())
}

/// A review's answer, as cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Refused(AuthRefusal),
}

/// Why a review could not be made (not cached: the next request asks again).
#[derive(Debug, thiserror::Error)]
#[error("TokenReview failed: {0}")]
pub struct ReviewFailed(#[from] kube::Error);

/// Bounded cache of verdicts by token.
#[derive(Default)]
struct Cache {
    entries: HashMap<String, (Verdict, Instant)>,
}

impl Cache {
    fn get(&mut self, token: &str, now: Instant) -> Option<Verdict> {
        match self.entries.get(token) {
            Some((verdict, expires)) if *expires > now => Some(*verdict),
            Some(_) => {
                self.entries.remove(token);
                None
            }
            None => None,
        }
    }

    fn insert(
        &mut self,
        token: &str,
        verdict: Verdict,
        expires: Instant,
        max: usize,
        now: Instant,
    ) {
        if max == 0 {
            return;
        }
        if self.entries.len() >= max && !self.entries.contains_key(token) {
            self.entries.retain(|_, (_, e)| *e > now);
            if self.entries.len() >= max {
                let first = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(k, _)| k.clone());
                if let Some(first) = first {
                    self.entries.remove(&first);
                }
            }
        }
        self.entries.insert(token.to_owned(), (verdict, expires));
    }
}

/// The [`Authenticator`] of a service in a cluster (see the module comment).
pub struct TokenReviewer {
    reviews: Api<TokenReview>,
    policy: ReviewPolicy,
    cache: Mutex<Cache>,
    metrics: Arc<Metrics>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, policy: ReviewPolicy, metrics: Arc<Metrics>) -> TokenReviewer {
        TokenReviewer {
            reviews: Api::all(client),
            policy,
            cache: Mutex::new(Cache::default()),
            metrics,
        }
    }

    /// How many answers are cached now.
    pub fn cached(&self) -> usize {
        self.cache.lock().expect("review cache lock").entries.len()
    }

    /// Asks the API server about `token` and judges the answer.
    async fn review(&self, token: &str) -> Result<Verdict, ReviewFailed> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.policy.audience.clone()]),
            },
            ..Default::default()
        };
        let answer = self.reviews.create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            // The API server's reason (an expired or unknown token, or one for another audience)
            // is not the client's to see; it goes to the log at debug level.
            tracing::debug!(
                error = status.error.as_deref().unwrap_or(""),
                "token not authenticated"
            );
            return Ok(Verdict::Refused(AuthRefusal::Unauthenticated));
        }
        // A client that asks for audiences must check that one came back (TokenReviewStatus).
        let audiences = status.audiences.unwrap_or_default();
        if !audiences.contains(&self.policy.audience) {
            return Ok(Verdict::Refused(AuthRefusal::Audience));
        }
        let user = status.user.and_then(|u| u.username).unwrap_or_default();
        if !self.policy.accepted_users.contains(&user) {
            tracing::info!(user, "token of an account that may not use the API");
            return Ok(Verdict::Refused(AuthRefusal::ServiceAccount));
        }
        Ok(Verdict::Accepted)
    }

    async fn check(&self, token: Option<&str>) -> Result<(), Refusal> {
        let Some(token) = token else {
            self.metrics.refuse_auth(AuthRefusal::MissingToken);
            return Err(Refusal::MissingToken);
        };
        if token.len() > MAX_TOKEN_LEN {
            self.metrics.refuse_auth(AuthRefusal::Unauthenticated);
            return Err(Refusal::InvalidToken);
        }
        let cached = self
            .cache
            .lock()
            .expect("review cache lock")
            .get(token, Instant::now());
        let verdict = match cached {
            Some(verdict) => verdict,
            None => match self.review(token).await {
                Ok(verdict) => {
                    let ttl = match verdict {
                        Verdict::Accepted => self.policy.accepted_ttl,
                        Verdict::Refused(_) => self.policy.refused_ttl,
                    };
                    let now = Instant::now();
                    self.cache.lock().expect("review cache lock").insert(
                        token,
                        verdict,
                        now + ttl,
                        self.policy.max_cached,
                        now,
                    );
                    verdict
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    self.metrics.refuse_auth(AuthRefusal::ReviewFailed);
                    return Err(Refusal::AuthUnavailable);
                }
            },
        };
        match verdict {
            Verdict::Accepted => Ok(()),
            Verdict::Refused(reason) => {
                self.metrics.refuse_auth(reason);
                Err(match reason {
                    AuthRefusal::ServiceAccount => Refusal::Forbidden,
                    _ => Refusal::InvalidToken,
                })
            }
        }
    }
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(&'a self, token: Option<&'a str>) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(self.check(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_users() {
        assert!(
            service_account_user("system:serviceaccount:egress-recommender:egress-agent").is_ok()
        );
        for bad in [
            "egress-agent",
            "system:serviceaccount:ns",
            "system:serviceaccounts:ns:name",
            "system:serviceaccount:Ns:name",
            "system:serviceaccount:a.b:name",
            "system:serviceaccount:ns:-name",
            "system:serviceaccount:ns:name:extra",
            "system:serviceaccount::name",
        ] {
            assert!(service_account_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cache_expires_entries_and_stays_bounded() {
        let mut cache = Cache::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        cache.insert("a", Verdict::Accepted, later, 2, now);
        cache.insert(
            "b",
            Verdict::Refused(AuthRefusal::Unauthenticated),
            now + Duration::from_secs(10),
            2,
            now,
        );
        assert_eq!(cache.get("a", now), Some(Verdict::Accepted));
        // Full: the entry that expires first ("b") makes room.
        cache.insert("c", Verdict::Accepted, later, 2, now);
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.get("b", now), None);
        assert_eq!(cache.get("c", now), Some(Verdict::Accepted));
        // An expired entry is gone.
        assert_eq!(cache.get("a", later), None);
        assert!(!cache.entries.contains_key("a"));
    }
}
