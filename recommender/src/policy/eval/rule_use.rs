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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    fn policy(json: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn every_matching_rule_of_the_selecting_policies_is_reported() {
        let policies = [
            policy(serde_json::json!({
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                         "egress": [
                            {"to": [{"ipBlock": {"cidr": "198.18.0.0/16"}}], "ports": [{"port": 443}]},
                            {"to": [{"ipBlock": {"cidr": "198.18.0.1/32"}}]},
                            {"ports": [{"port": 53, "protocol": "UDP"}]}]}
            })),
            policy(serde_json::json!({
                "metadata": {"name": "all", "namespace": "shop"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                         "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}]}
            })),
            policy(serde_json::json!({
                "metadata": {"name": "other", "namespace": "shop"},
                "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Egress"],
                         "egress": [{}]}
            })),
        ];
        let set = PolicySet::new(&policies);
        assert_eq!(set.rule_ids().count(), 5);
        let web = Endpoint::pod("shop", "web-1", [("app", "web")]);
        let ip = |a: &str| Endpoint::Ip(a.parse().unwrap());
        let conn = Connection {
            from: web.clone(),
            to: ip("198.18.0.1"),
            port: 443,
            protocol: flow_model::Protocol::Tcp,
        };
        let mut hits = Vec::new();
        set.for_each_allowing_rule(Direction::Egress, &conn, |r| hits.push(r));
        let mut named: Vec<(String, usize)> = hits
            .iter()
            .map(|r| (set.policy_name(r.policy).to_owned(), r.rule))
            .collect();
        named.sort();
        assert_eq!(
            named,
            [
                ("shop/all".to_string(), 0),
                ("shop/web".to_string(), 0),
                ("shop/web".to_string(), 1)
            ]
        );
        // No ingress policy: nothing reported; a denied connection matches no rule.
        let mut none = Vec::new();
        set.for_each_allowing_rule(Direction::Ingress, &conn, |r| none.push(r));
        let denied = Connection {
            port: 80,
            to: ip("203.0.113.1"),
            ..conn
        };
        set.for_each_allowing_rule(Direction::Egress, &denied, |r| none.push(r));
        assert!(none.is_empty(), "{none:?}");
        assert!(!set.allows(&denied));
    }
}
