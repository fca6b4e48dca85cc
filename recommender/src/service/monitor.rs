//! Monitor mode: every ingested flow judged against a baseline (policy files, or the
//! recommendation frozen when monitoring started) with the project's evaluator, compiled once.
//! A flow that the baseline denies is *unexpected*: counted in
//! `egress_recommender_unexpected_egress_total{namespace,workload}`, logged with full detail and
//! kept in a bounded list of recent ones (`GET /v1/unexpected`). Per baseline rule, the flows it
//! allowed are counted, so that status can list the rules no flow has used (possibly too wide).
//!
//! Judging happens at ingest, against the cluster model the flow is resolved with; what it found
//! takes effect only once the batch is durable and not a duplicate (the writer applies it).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use flow_model::{FlowRecord, WorkloadRef};
use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};

use super::metrics::Metrics;
use crate::policy::{Direction, Evaluator, InvalidPolicies, RuleId};
use crate::resolve::{describe, Resolver, SourceWorkload};

/// Where the baseline came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineSource {
    /// `--baseline` files.
    Files,
    /// The recommendation for what was learned when monitoring started.
    Frozen,
}

/// One flow the baseline denies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unexpected {
    /// When the service judged it.
    pub detected_at: Timestamp,
    pub namespace: String,
    pub workload: Option<WorkloadRef>,
    /// The Service the flow went through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The evaluator's explanation for the first denied connection.
    pub reason: String,
    pub record: FlowRecord,
}

/// A baseline rule as status names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleName {
    /// `namespace/name`.
    pub policy: String,
    pub direction: String,
    /// Index into `spec.egress` or `spec.ingress`.
    pub rule: usize,
}

/// What judging one batch found; applied by the writer once the batch is durable.
#[derive(Debug, Default)]
pub struct Judged {
    pub unexpected: Vec<Unexpected>,
    /// By rule ordinal: flows it allowed.
    pub rule_hits: HashMap<usize, u64>,
}

pub struct Monitor {
    evaluator: Evaluator,
    pub source: BaselineSource,
    rules: Vec<RuleId>,
    rule_index: HashMap<RuleId, usize>,
    hits: Vec<AtomicU64>,
    recent: Mutex<VecDeque<Unexpected>>,
    recent_max: usize,
    total: AtomicU64,
}

impl Monitor {
    pub fn new(
        policies: &[NetworkPolicy],
        source: BaselineSource,
        recent_max: usize,
    ) -> Result<Monitor, InvalidPolicies> {
        let evaluator = Evaluator::new(policies)?;
        let rules: Vec<RuleId> = evaluator.policy_set().rule_ids().collect();
        let rule_index = rules.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        let hits = rules.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Monitor {
            evaluator,
            source,
            rules,
            rule_index,
            hits,
            recent: Mutex::new(VecDeque::with_capacity(recent_max.min(4096))),
            recent_max,
            total: AtomicU64::new(0),
        })
    }

    pub fn policies(&self) -> usize {
        self.evaluator.policy_set().len()
    }

    pub fn rules(&self) -> usize {
        self.rules.len()
    }

    /// Judges one pod record (resolved by `resolver`; `source` is its workload when it resolved).
    pub fn judge(
        &self,
        resolver: &mut Resolver<'_>,
        record: &FlowRecord,
        source: Option<&SourceWorkload>,
        out: &mut Judged,
    ) {
        let connections = resolver.connections_for(record);
        let set = self.evaluator.policy_set();
        let mut denied = None;
        for connection in &connections.connections {
            if !self.evaluator.allows(connection) {
                denied = Some(connection);
                break;
            }
        }
        match denied {
            None => {
                for connection in &connections.connections {
                    for direction in [Direction::Egress, Direction::Ingress] {
                        set.for_each_allowing_rule(direction, connection, |rule| {
                            if let Some(&i) = self.rule_index.get(&rule) {
                                *out.rule_hits.entry(i).or_default() += 1;
                            }
                        });
                    }
                }
            }
            Some(connection) => {
                let judgement = self.evaluator.judge(connection);
                let (namespace, workload) = match source {
                    Some(s) => (s.namespace.clone(), Some(s.workload.clone())),
                    None => (
                        record.source.namespace.clone().unwrap_or_default(),
                        record.source.workload.clone(),
                    ),
                };
                out.unexpected.push(Unexpected {
                    detected_at: Timestamp::now(),
                    namespace,
                    workload,
                    service: connections.service.clone(),
                    reason: judgement.reason,
                    record: record.clone(),
                });
            }
        }
    }

    /// Makes a durable batch's findings count.
    pub fn apply(&self, judged: Judged, metrics: &Metrics) {
        for (rule, n) in judged.rule_hits {
            self.hits[rule].fetch_add(n, Ordering::Relaxed);
        }
        if judged.unexpected.is_empty() {
            return;
        }
        self.total
            .fetch_add(judged.unexpected.len() as u64, Ordering::Relaxed);
        let mut recent = self.recent.lock().expect("recent lock");
        for u in judged.unexpected {
            let workload = workload_label(u.workload.as_ref());
            metrics
                .unexpected
                .with_label_values(&[u.namespace.as_str(), workload])
                .inc();
            metrics
                .unexpected_connections
                .with_label_values(&[u.namespace.as_str(), workload])
                .inc_by(u.record.count);
            tracing::warn!(
                flow = %describe(&u.record),
                node = %u.record.node,
                namespace = %u.namespace,
                workload = workload,
                service = u.service.as_deref().unwrap_or(""),
                count = u.record.count,
                first_seen = %u.record.first_seen,
                last_seen = %u.record.last_seen,
                dns_names = ?u.record.destination.dns_names,
                "unexpected egress: {}",
                u.reason
            );
            if recent.len() == self.recent_max {
                recent.pop_front();
            }
            if self.recent_max > 0 {
                recent.push_back(u);
            }
        }
    }

    /// The recent unexpected flows, oldest first.
    pub fn recent(&self) -> Vec<Unexpected> {
        self.recent
            .lock()
            .expect("recent lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Unexpected flows since the service started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The baseline rules no flow has used since the service started.
    pub fn unused_rules(&self) -> Vec<RuleName> {
        let set = self.evaluator.policy_set();
        self.rules
            .iter()
            .zip(&self.hits)
            .filter(|(_, hits)| hits.load(Ordering::Relaxed) == 0)
            .map(|(rule, _)| RuleName {
                policy: set.policy_name(rule.policy).to_owned(),
                direction: rule.direction.as_str().to_owned(),
                rule: rule.rule,
            })
            .collect()
    }
}

/// The `workload` label: the workload's name; empty for a bare pod, whose name is a pod name
/// (labels stay bounded: no pod names, IPs or ports).
pub fn workload_label(workload: Option<&WorkloadRef>) -> &str {
    match workload {
        Some(w) if w.kind != "Pod" => &w.name,
        _ => "",
    }
}
