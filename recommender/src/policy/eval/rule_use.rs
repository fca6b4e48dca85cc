//! Which rules of a [`PolicySet`] allow a connection: monitor mode counts, per baseline rule, the
//! flows it allowed, so that rules no flow ever used (possibly too wide) can be listed.
//!
//! Additive to the verdict: [`PolicySet::allows`] and [`PolicySet::evaluate`] say *whether* a
//! connection is allowed (with every exception the evaluator knows); this says *which rules*
//! match it, without allocating. Policies are additive, so a connection can match several rules;
//! each of them is reported, since each would allow it alone. Callers that count "flows a rule
//! allowed" ask only for connections the verdict allows.

use super::{Connection, Direction, Endpoint, PolicySet};

/// One rule of a compiled [`PolicySet`]: `spec.egress[rule]` or `spec.ingress[rule]` of the
/// policy at index `policy` (see [`PolicySet::policy_name`]). Valid only for the set it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId {
    pub policy: usize,
    pub direction: Direction,
    pub rule: usize,
}

impl PolicySet {
    /// `namespace/name` of the policy at `index` (policies are sorted by that name).
    pub fn policy_name(&self, index: usize) -> &str {
        &self.policies[index].id
    }

    /// Every rule of every policy, in (policy, egress rules, ingress rules) order.
    pub fn rule_ids(&self) -> impl Iterator<Item = RuleId> + '_ {
        self.policies.iter().enumerate().flat_map(|(policy, p)| {
            [Direction::Egress, Direction::Ingress]
                .into_iter()
                .flat_map(move |direction| {
                    (0..p.rules(direction).map_or(0, <[_]>::len)).map(move |rule| RuleId {
                        policy,
                        direction,
                        rule,
                    })
                })
        })
    }

    /// Calls `each` with every rule, of the policies that select the subject of `direction` (the
    /// source for egress, the destination for ingress), that matches `conn`; without allocating.
    /// Whether the connection is allowed is [`PolicySet::allows`]'s answer, not this.
    pub fn for_each_allowing_rule(
        &self,
        direction: Direction,
        conn: &Connection,
        mut each: impl FnMut(RuleId),
    ) {
        let (subject, other) = match direction {
            Direction::Egress => (&conn.from, &conn.to),
            Direction::Ingress => (&conn.to, &conn.from),
        };
        let Endpoint::Pod {
            namespace, labels, ..
        } = subject
        else {
            return;
        };
        let Some(index) = self.by_namespace.get(namespace.as_str()) else {
            return;
        };
        let mut visit = |policy: usize| {
            let compiled = &self.policies[policy];
            let Some(rules) = compiled.rules(direction) else {
                return;
            };
            if !compiled.pod_selector.matches(labels) {
                return;
            }
            for (rule, r) in rules.iter().enumerate() {
                if r.allows(other, &conn.to, conn).is_some() {
                    each(RuleId {
                        policy,
                        direction,
                        rule,
                    });
                }
            }
        };
        // The same candidates `allows` tries: a policy requiring a label the pod lacks cannot
        // select it. Every policy is in exactly one of the two lists.
        for &policy in &index.unkeyed {
            visit(policy);
        }
        for (key, by_value) in &index.by_label {
            if let Some(ids) = labels.get(key).and_then(|v| by_value.get(v.as_str())) {
                for &policy in ids {
                    visit(policy);
                }
            }
        }
    }
}
