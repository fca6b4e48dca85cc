//! Leader election on a `coordination.k8s.io/v1` Lease (kube-rs has none built in), the way
//! client-go's leaderelection does it:
//!
//! - Every `retry_period` each replica reads the Lease. Absent: it creates it holding it
//!   (409 AlreadyExists: another replica was first). Held by itself: it renews `renewTime`
//!   with a replace on the resourceVersion it read (409 Conflict: someone else wrote it, so it
//!   lost the Lease). Held by another: it notes when it first saw that resourceVersion, and once
//!   `leaseDurationSeconds` pass by its own clock with no change (the holder stopped renewing),
//!   it takes the Lease over with a replace on that resourceVersion (409: another replica took it
//!   first). Times are measured on the observer's monotonic clock, never compared across
//!   machines' wall clocks.
//! - The holder counts itself leader only until `renew_deadline` (shorter than the Lease's
//!   duration) after the start of its last successful renewal: a leader that cannot renew stops
//!   writing before anyone else may take over ([`Leadership::may_write`], checked before every
//!   write of the store).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// The Lease and this replica's part in it.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// `holderIdentity`: the pod's name (or the host name).
    pub identity: String,
    /// `leaseDurationSeconds`: how long others wait for a silent holder.
    pub duration: Duration,
}

impl LeaseConfig {
    /// How long the holder counts itself leader after starting a successful renewal: two thirds
    /// of the Lease (client-go's 10s of 15s).
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// How often the Lease is read, renewed or tried.
    pub fn retry_period(&self) -> Duration {
        (self.duration / 5).max(Duration::from_millis(100))
    }
}

/// Whether this replica leads, shared by the election loop, the store (which refuses to write
/// without it) and the service (which answers ingest with 503 without it).
pub struct Leadership {
    identity: String,
    valid_until: Mutex<Option<Instant>>,
    /// Set by the service once it has read the store after winning (ingest waits for it).
    loaded: AtomicBool,
    role: watch::Sender<bool>,
    holder: Mutex<Option<String>>,
}

impl Leadership {
    pub fn new(identity: &str) -> Leadership {
        Leadership {
            identity: identity.to_owned(),
            valid_until: Mutex::new(None),
            loaded: AtomicBool::new(false),
            role: watch::channel(false).0,
            holder: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this replica holds the Lease now (within the renew deadline).
    pub fn may_write(&self) -> bool {
        self.valid_until
            .lock()
            .expect("lease lock")
            .is_some_and(|until| Instant::now() < until)
    }

    /// Whether ingest may be accepted: the Lease held and the store read since winning it.
    pub fn serving(&self) -> bool {
        self.loaded.load(Ordering::SeqCst) && self.may_write()
    }

    pub fn set_loaded(&self, loaded: bool) {
        self.loaded.store(loaded, Ordering::SeqCst);
    }

    /// Leader or not, as the election loop last decided; changes are sent to subscribers.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.role.subscribe()
    }

    /// The holder of the Lease as last read (for messages).
    pub fn holder(&self) -> Option<String> {
        self.holder.lock().expect("lease lock").clone()
    }

    fn held_from(&self, attempt_start: Instant, config: &LeaseConfig) {
        *self.valid_until.lock().expect("lease lock") =
            Some(attempt_start + config.renew_deadline());
        *self.holder.lock().expect("lease lock") = Some(self.identity.clone());
    }

    fn lost(&self, holder: Option<String>) {
        *self.valid_until.lock().expect("lease lock") = None;
        self.loaded.store(false, Ordering::SeqCst);
        *self.holder.lock().expect("lease lock") = holder;
    }

    /// Tells subscribers when the role changed (also when the deadline passed unnoticed).
    fn publish(&self) {
        let leader = self.may_write();
        if !leader {
            self.loaded.store(false, Ordering::SeqCst);
        }
        self.role.send_if_modified(|was| {
            let changed = *was != leader;
            *was = leader;
            changed
        });
    }
}

/// A Lease resourceVersion and when this replica first saw it.
struct Observed {
    resource_version: String,
    at: Instant,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

/// Runs the election until the task is dropped.
pub async fn run(api: Api<Lease>, config: LeaseConfig, leadership: std::sync::Arc<Leadership>) {
    let mut observed: Option<Observed> = None;
    loop {
        if let Err(e) = step(&api, &config, &leadership, &mut observed).await {
            tracing::warn!(lease = %config.name, "lease: {e}");
        }
        leadership.publish();
        tokio::time::sleep(config.retry_period()).await;
    }
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// One read and, where due, one write of the Lease.
async fn step(
    api: &Api<Lease>,
    config: &LeaseConfig,
    leadership: &Leadership,
    observed: &mut Option<Observed>,
) -> Result<(), kube::Error> {
    let started = Instant::now();
    let seconds = config.duration.as_secs().clamp(1, i32::MAX as u64) as i32;
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                tracing::info!(lease = %config.name, "lease created: this replica leads");
                leadership.held_from(started, config);
                Ok(())
            }
            Err(e) if is_conflict(&e) => {
                leadership.lost(None);
                Ok(())
            }
            Err(e) => Err(e),
        };
    };
    let rv = lease.metadata.resource_version.clone().unwrap_or_default();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    if holder.as_deref() == Some(config.identity.as_str()) {
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(seconds);
        return match api
            .replace(&config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                leadership.held_from(started, config);
                Ok(())
            }
            Err(e) if is_conflict(&e) => {
                tracing::warn!(lease = %config.name, "lease lost: another replica wrote it");
                leadership.lost(None);
                *observed = None;
                Ok(())
            }
            Err(e) => Err(e),
        };
    }
    // Held by another (or released): wait until it has been silent for its whole duration.
    if leadership.may_write() {
        tracing::warn!(lease = %config.name, holder = ?holder, "lease lost to another holder");
    }
    leadership.lost(holder.clone());
    let duration = spec
        .lease_duration_seconds
        .map_or(config.duration, |s| Duration::from_secs(s.max(0) as u64));
    let seen = match observed {
        Some(o) if o.resource_version == rv => o.at,
        _ => {
            *observed = Some(Observed {
                resource_version: rv,
                at: started,
            });
            started
        }
    };
    if holder.is_some() && seen.elapsed() < duration {
        return Ok(());
    }
    spec.holder_identity = Some(config.identity.clone());
    spec.lease_duration_seconds = Some(seconds);
    spec.acquire_time = Some(now());
    spec.renew_time = Some(now());
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => {
            tracing::info!(lease = %config.name, previous = ?holder, "lease taken over: this replica leads");
            leadership.held_from(started, config);
            Ok(())
        }
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up (on a clean stop), so that another replica need not wait for it to expire.
pub async fn release(api: &Api<Lease>, config: &LeaseConfig, leadership: &Leadership) {
    if !leadership.may_write() {
        return;
    }
    leadership.lost(None);
    leadership.publish();
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(lease = %config.name, "lease released"),
        Err(e) => tracing::warn!(lease = %config.name, "lease not released: {e}"),
    }
}
