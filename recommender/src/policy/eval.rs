//! Isolation and rule evaluation over a compiled set of policies.
//!
//! Semantics (API reference, NetworkPolicySpec; concepts page "The two sorts of pod isolation"):
//! - a pod is isolated for a direction iff a policy in *its own* namespace selects it (`podSelector`,
//!   absent or `{}` = every pod of the namespace) and has that direction in its effective
//!   policyTypes. Effective policyTypes: as given when the list is non-empty; otherwise `Ingress`
//!   always plus `Egress` iff `spec.egress` is non-empty (the API server's defaulting:
//!   `len(spec.Egress) != 0`, so `egress: []` alone does not isolate egress);
//! - not isolated: allowed; isolated: allowed iff some rule of some selecting policy of that type
//!   allows it. Policies are additive: order is irrelevant and a policy can only add;
//! - a rule allows traffic iff (its peer list is absent/empty OR one peer matches) AND (its ports
//!   list is absent/empty OR one entry matches);
//! - a connection is allowed iff egress from `from` AND ingress to `to` are allowed, each direction
//!   allowed outright by the API's exceptions (the pod itself, its own node; see `exceptions`).
//!
//! Everything that depends only on the policies (selectors, CIDRs, ports, the namespace index) is
//! compiled once in [`PolicySet::new`]; [`PolicySet::allows`] then evaluates one connection without
//! allocating, which is what `verify` and monitor mode run per flow.

use std::collections::HashMap;

use foldhash::fast::RandomState as FastHash;
use std::ops::Range;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};

use super::exceptions::exemption;
use super::peers::Peer;
use super::ports::Ports;
use super::selectors::Selector;
use super::verdict::{Direction, DirectionVerdict, Verdict};
use super::{Connection, Endpoint};

mod rule_use;
pub use rule_use::RuleId;

/// One egress or ingress rule.
#[derive(Clone, Debug)]
struct Rule {
    /// Empty: all peers (for egress, every destination including outside the cluster).
    peers: Vec<Peer>,
    ports: Ports,
}

impl Rule {
    fn compile(
        peers: Option<&Vec<NetworkPolicyPeer>>,
        ports: Option<&Vec<NetworkPolicyPort>>,
        namespace: &str,
        context: &dyn std::fmt::Display,
        problems: &mut Vec<String>,
    ) -> Rule {
        Rule {
            peers: peers
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| {
                    Peer::compile(p, namespace, &format_args!("{context} peer {i}"), problems)
                })
                .collect(),
            ports: Ports::compile(ports, context, problems),
        }
    }

    /// `Some((peer index, port index))` when the rule allows traffic with `peer` as the other end
    /// and `dest` as the destination (for named ports).
    fn allows(
        &self,
        peer: &Endpoint,
        dest: &Endpoint,
        conn: &Connection,
    ) -> Option<(Option<usize>, Option<usize>)> {
        // Ports first: cheaper than selectors, and most rules of a recommendation pin ports.
        let port = self.ports.matching(conn.protocol, conn.port, dest)?;
        let peer = if self.peers.is_empty() {
            None
        } else {
            Some(self.peers.iter().position(|p| p.matches(peer))?)
        };
        Some((peer, port))
    }
}

#[derive(Clone, Debug)]
struct CompiledPolicy {
    /// `namespace/name`.
    id: String,
    pod_selector: Selector,
    /// `Some` iff the direction is in the effective policyTypes (possibly with no rules: deny all).
    egress: Option<Vec<Rule>>,
    ingress: Option<Vec<Rule>>,
}

impl CompiledPolicy {
    fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Egress => self.egress.as_deref(),
            Direction::Ingress => self.ingress.as_deref(),
        }
    }
}

/// The namespace a policy without `metadata.namespace` lives in. Files applied with kubectl land in
/// the context's namespace; the evaluator cannot know it and assumes `default`.
pub const DEFAULT_NAMESPACE: &str = "default";

fn compile(np: &NetworkPolicy, problems: &mut Vec<String>) -> CompiledPolicy {
    let namespace = np
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(DEFAULT_NAMESPACE);
    let name = np.metadata.name.as_deref().unwrap_or("<unnamed>");
    let id = format!("{namespace}/{name}");
    let no_spec = Default::default();
    let spec = np.spec.as_ref().unwrap_or(&no_spec);
    let pod_selector = match &spec.pod_selector {
        // Absent podSelector defaults to the empty selector: every pod in the namespace.
        None => Selector::everything(),
        Some(s) => Selector::compile(s, &format_args!("{id} podSelector"), problems),
    };
    let (mut has_ingress, mut has_egress) = (false, false);
    match spec.policy_types.as_deref() {
        None | Some([]) => {
            has_ingress = true;
            has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        }
        Some(types) => {
            for t in types {
                match t.as_str() {
                    "Ingress" => has_ingress = true,
                    "Egress" => has_egress = true,
                    other => problems.push(format!("{id}: unknown policyType {other:?} (ignored)")),
                }
            }
        }
    }
    let egress = has_egress.then(|| {
        spec.egress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                // Formatted only if a problem is reported: compiling ten thousand policies
                // must not format a context per rule, peer and port.
                Rule::compile(
                    r.to.as_ref(),
                    r.ports.as_ref(),
                    namespace,
                    &format_args!("{id} egress rule {i}"),
                    problems,
                )
            })
            .collect()
    });
    let ingress = has_ingress.then(|| {
        spec.ingress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                // Formatted only if a problem is reported: compiling ten thousand policies
                // must not format a context per rule, peer and port.
                Rule::compile(
                    r.from.as_ref(),
                    r.ports.as_ref(),
                    namespace,
                    &format_args!("{id} ingress rule {i}"),
                    problems,
                )
            })
            .collect()
    });
    CompiledPolicy {
        id,
        pod_selector,
        egress,
        ingress,
    }
}

/// What one direction came to, by index into the set (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    NotIsolated,
    Allowed {
        policy: usize,
        rule: usize,
        peer: Option<usize>,
        port: Option<usize>,
    },
    Denied,
}

/// The policies of one namespace, indexed so that [`PolicySet::allows`] need not try every
/// podSelector: a recommendation has one policy per workload, often hundreds in a namespace, and
/// only the one or two that select the pod matter.
#[derive(Clone, Debug, Default)]
struct NamespaceIndex {
    /// All of them, a contiguous slice of the sorted `policies` (for explanations, in order).
    all: Range<usize>,
    /// Policies whose podSelector requires some label, by that label's key and value: a pod
    /// without the label cannot be selected by them.
    by_label: HashMap<String, HashMap<String, Vec<usize>, FastHash>, FastHash>,
    /// The others (`{}`, expressions only): always candidates.
    unkeyed: Vec<usize>,
}

/// A set of NetworkPolicies compiled for repeated evaluation. Build it once, evaluate many flows.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// Sorted by `namespace/name`, so that verdicts do not depend on the input order.
    policies: Vec<CompiledPolicy>,
    by_namespace: HashMap<String, NamespaceIndex, FastHash>,
    problems: Vec<String>,
}

impl PolicySet {
    /// Compiles `policies`. Never fails: whatever the API server would have rejected matches
    /// nothing and is listed in [`problems`](Self::problems), which callers taking user input
    /// should report (and may treat as bad input).
    pub fn new(policies: &[NetworkPolicy]) -> PolicySet {
        let mut problems = Vec::new();
        let mut keyed: Vec<(String, CompiledPolicy)> = policies
            .iter()
            .map(|np| {
                let ns = np
                    .metadata
                    .namespace
                    .as_deref()
                    .unwrap_or(DEFAULT_NAMESPACE);
                (ns.to_string(), compile(np, &mut problems))
            })
            .collect();
        keyed.sort_by(|a, b| (&a.0, &a.1.id).cmp(&(&b.0, &b.1.id)));
        for pair in keyed.windows(2) {
            if pair[0].1.id == pair[1].1.id {
                problems.push(format!(
                    "{}: defined more than once (all copies apply)",
                    pair[0].1.id
                ));
            }
        }
        let mut by_namespace: HashMap<String, NamespaceIndex, FastHash> = HashMap::default();
        for (i, (ns, policy)) in keyed.iter().enumerate() {
            let index = by_namespace.entry(ns.clone()).or_insert(NamespaceIndex {
                all: i..i,
                ..Default::default()
            });
            index.all.end = i + 1;
            match policy.pod_selector.required_label() {
                Some((key, value)) => index
                    .by_label
                    .entry(key.to_string())
                    .or_default()
                    .entry(value.to_string())
                    .or_default()
                    .push(i),
                None => index.unkeyed.push(i),
            }
        }
        PolicySet {
            policies: keyed.into_iter().map(|(_, p)| p).collect(),
            by_namespace,
            problems,
        }
    }

    /// Invalid parts of the input (each made to match nothing), one message each.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Whether `conn` is allowed; the same answer as `evaluate(conn).allowed`, without allocating
    /// and trying only the policies whose required label the pod carries.
    pub fn allows(&self, conn: &Connection) -> bool {
        [Direction::Egress, Direction::Ingress]
            .into_iter()
            .all(|d| exemption(d, conn).is_some() || self.direction_allows(d, conn))
    }

    /// Whether `direction` allows `conn`, by any allowing rule (in no particular order, unlike
    /// [`outcome`](Self::outcome), which finds the first one for explanations).
    fn direction_allows(&self, direction: Direction, conn: &Connection) -> bool {
        let (subject, other) = match direction {
            Direction::Egress => (&conn.from, &conn.to),
            Direction::Ingress => (&conn.to, &conn.from),
        };
        let Endpoint::Pod {
            namespace, labels, ..
        } = subject
        else {
            return true;
        };
        let Some(index) = self.by_namespace.get(namespace.as_str()) else {
            return true;
        };
        let mut isolated = false;
        // True when policy `i` selects the subject and one of its rules allows the connection.
        let mut allows = |i: usize| {
            let policy = &self.policies[i];
            let Some(rules) = policy.rules(direction) else {
                return false;
            };
            if !policy.pod_selector.matches(labels) {
                return false;
            }
            isolated = true;
            rules
                .iter()
                .any(|r| r.allows(other, &conn.to, conn).is_some())
        };
        if index.unkeyed.iter().any(|&i| allows(i)) {
            return true;
        }
        for (key, by_value) in &index.by_label {
            let candidates = labels.get(key).and_then(|v| by_value.get(v.as_str()));
            if candidates.is_some_and(|ids| ids.iter().any(|&i| allows(i))) {
                return true;
            }
        }
        !isolated
    }

    /// The verdict for `conn`, with the reason for each direction.
    pub fn evaluate(&self, conn: &Connection) -> Verdict {
        let egress = self.direction_verdict(Direction::Egress, conn);
        let ingress = self.direction_verdict(Direction::Ingress, conn);
        Verdict {
            allowed: egress.is_allowed() && ingress.is_allowed(),
            egress,
            ingress,
            from: conn.from.describe(),
            to: conn.to.describe(),
            protocol: conn.protocol,
            port: conn.port,
            from_is_pod: matches!(conn.from, Endpoint::Pod { .. }),
            to_is_pod: matches!(conn.to, Endpoint::Pod { .. }),
        }
    }

    /// `namespace/name` of the policies that isolate `endpoint` for `direction`, sorted (empty for
    /// an [`Endpoint::Ip`] or a pod no such policy selects).
    pub fn isolating(&self, endpoint: &Endpoint, direction: Direction) -> Vec<&str> {
        self.selecting(endpoint, direction)
            .map(|i| self.policies[i].id.as_str())
            .collect()
    }

    /// Indices of the policies in `endpoint`'s namespace that select it and have `direction`.
    fn selecting<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        direction: Direction,
    ) -> impl Iterator<Item = usize> + 'a {
        let (range, labels) = match endpoint {
            Endpoint::Pod {
                namespace, labels, ..
            } => (
                self.by_namespace
                    .get(namespace.as_str())
                    .map(|ix| ix.all.clone()),
                Some(labels),
            ),
            // No policy isolates an address that is not a pod.
            Endpoint::Ip(_) => (None, None),
        };
        range.into_iter().flatten().filter(move |&i| {
            let p = &self.policies[i];
            p.rules(direction).is_some() && labels.is_some_and(|l| p.pod_selector.matches(l))
        })
    }

    fn outcome(&self, direction: Direction, conn: &Connection) -> Outcome {
        // Egress is judged at `from` against the destination; ingress at `to` against the source.
        // Named ports always resolve on the destination, `to`, in both directions.
        let (subject, other) = match direction {
            Direction::Egress => (&conn.from, &conn.to),
            Direction::Ingress => (&conn.to, &conn.from),
        };
        let mut isolated = false;
        for i in self.selecting(subject, direction) {
            isolated = true;
            let rules = self.policies[i].rules(direction).unwrap_or_default();
            for (r, rule) in rules.iter().enumerate() {
                if let Some((peer, port)) = rule.allows(other, &conn.to, conn) {
                    return Outcome::Allowed {
                        policy: i,
                        rule: r,
                        peer,
                        port,
                    };
                }
            }
        }
        if isolated {
            Outcome::Denied
        } else {
            Outcome::NotIsolated
        }
    }

    fn direction_verdict(&self, direction: Direction, conn: &Connection) -> DirectionVerdict {
        if let Some(exempt) = exemption(direction, conn) {
            return DirectionVerdict::Exempt(exempt);
        }
        match self.outcome(direction, conn) {
            Outcome::NotIsolated => DirectionVerdict::NotIsolated,
            Outcome::Allowed {
                policy,
                rule,
                peer,
                port,
            } => DirectionVerdict::AllowedBy {
                policy: self.policies[policy].id.clone(),
                rule,
                peer,
                port,
            },
            Outcome::Denied => {
                let subject = match direction {
                    Direction::Egress => &conn.from,
                    Direction::Ingress => &conn.to,
                };
                DirectionVerdict::DeniedBy {
                    policies: self
                        .isolating(subject, direction)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                }
            }
        }
    }
}

/// Evaluates one connection against `policies`: a thin wrapper over [`PolicySet`], which callers
/// evaluating more than one connection should build once and keep.
pub fn evaluate(policies: &[NetworkPolicy], conn: &Connection) -> Verdict {
    PolicySet::new(policies).evaluate(conn)
}
