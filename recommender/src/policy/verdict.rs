//! The evaluator's answer and its one-line explanation.

use std::fmt;

use flow_model::Protocol;

use super::exceptions::Exemption;

/// Which side of a connection a policy governs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Traffic leaving the `from` pod (`spec.egress`, rules' `to`).
    Egress,
    /// Traffic entering the `to` pod (`spec.ingress`, rules' `from`).
    Ingress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome for one direction of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectionVerdict {
    /// No policy with this direction in its policyTypes selects the pod, or this end is an
    /// [`Endpoint::Ip`](super::Endpoint::Ip), which no policy can isolate: allowed.
    NotIsolated,
    /// The pod is isolated and this rule allows the traffic. Policies are visited in (namespace,
    /// name) order and rules in list order, so the first allowing rule is reported whatever the
    /// order of the input.
    AllowedBy {
        /// `namespace/name` of the policy.
        policy: String,
        /// Index into `spec.egress` or `spec.ingress` (0-based, as in `spec.egress[2]`).
        rule: usize,
        /// Index into the rule's `to`/`from`; `None` when that list is absent or empty (all peers).
        peer: Option<usize>,
        /// Index into the rule's `ports`; `None` when that list is absent or empty (all ports).
        port: Option<usize>,
    },
    /// The pod is isolated by these policies (`namespace/name`, sorted) and none of their rules
    /// allows the traffic.
    DeniedBy { policies: Vec<String> },
    /// Allowed whatever the policies say: the API's exceptions (the pod itself, its own node).
    Exempt(Exemption),
}

impl DirectionVerdict {
    pub fn is_allowed(&self) -> bool {
        !matches!(self, DirectionVerdict::DeniedBy { .. })
    }
}

/// Whether a connection is allowed, and why.
///
/// `Display` gives one line whose first word is `allowed` or `denied`, e.g.
/// `allowed: egress allowed by shop/web-egress rule 2 peer 0; ingress: db/postgres-0 not isolated` or
/// `denied: egress of shop/web is isolated by shop/default-deny-all-egress, shop/web-egress and no
/// rule allows TCP 5432 to db/postgres-0; ingress: db/postgres-0 not isolated`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `egress.is_allowed() && ingress.is_allowed()`.
    pub allowed: bool,
    /// Egress from `from`.
    pub egress: DirectionVerdict,
    /// Ingress to `to`.
    pub ingress: DirectionVerdict,
    /// [`Endpoint::describe`](super::Endpoint::describe) of the connection's ends.
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    pub port: u16,
    /// Whether each end is a pod, for wording ("not isolated" versus "not a pod").
    pub(crate) from_is_pod: bool,
    pub(crate) to_is_pod: bool,
}

impl Verdict {
    /// The verdict for `direction`.
    pub fn direction(&self, direction: Direction) -> &DirectionVerdict {
        match direction {
            Direction::Egress => &self.egress,
            Direction::Ingress => &self.ingress,
        }
    }

    fn write_direction(&self, f: &mut fmt::Formatter<'_>, direction: Direction) -> fmt::Result {
        let (subject, subject_is_pod, other, to_or_from) = match direction {
            Direction::Egress => (&self.from, self.from_is_pod, &self.to, "to"),
            Direction::Ingress => (&self.to, self.to_is_pod, &self.from, "from"),
        };
        match self.direction(direction) {
            DirectionVerdict::NotIsolated if subject_is_pod => {
                write!(f, "{direction}: {subject} not isolated")
            }
            DirectionVerdict::NotIsolated => {
                write!(f, "{direction}: {subject} is not a pod, never isolated")
            }
            DirectionVerdict::AllowedBy {
                policy, rule, peer, ..
            } => {
                write!(f, "{direction} allowed by {policy} rule {rule}")?;
                if let Some(peer) = peer {
                    write!(f, " peer {peer}")?;
                }
                Ok(())
            }
            DirectionVerdict::Exempt(Exemption::Itself) => {
                write!(
                    f,
                    "{direction}: {subject} to itself ({})",
                    Exemption::Itself
                )
            }
            DirectionVerdict::Exempt(Exemption::OwnNode) => {
                let node = if direction == Direction::Egress {
                    &self.to
                } else {
                    &self.from
                };
                write!(
                    f,
                    "{direction}: {node} is the node of {subject} ({})",
                    Exemption::OwnNode
                )
            }
            DirectionVerdict::DeniedBy { policies } => {
                write!(f, "{direction} of {subject} is isolated by ")?;
                for (i, p) in policies.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(p)?;
                }
                write!(
                    f,
                    " and no rule allows {} {} {to_or_from} {other}",
                    self.protocol, self.port
                )
            }
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.allowed {
            "allowed: "
        } else {
            "denied: "
        })?;
        // The reason for a denial comes first; the other direction follows for context.
        let order = if !self.ingress.is_allowed() && self.egress.is_allowed() {
            [Direction::Ingress, Direction::Egress]
        } else {
            [Direction::Egress, Direction::Ingress]
        };
        self.write_direction(f, order[0])?;
        f.write_str("; ")?;
        self.write_direction(f, order[1])
    }
}
