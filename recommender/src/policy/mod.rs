//! The NetworkPolicy evaluator (full networking.k8s.io/v1 semantics).
//!
//! The evaluator knows nothing of files or flows: callers describe one connection as two
//! [`Endpoint`]s, a port and a protocol, after any Service translation (NetworkPolicy is enforced
//! after DNAT, so a ClusterIP never reaches here).
//!
//! Main entry: [`Evaluator`], the policies checked (input the API server would reject is an error)
//! and compiled once into a [`PolicySet`]; [`Evaluator::allows`] judges one connection without
//! allocating (monitor mode), [`Evaluator::judge`] says why (`verify`, `evaluate`). [`evaluate`] is a
//! one-shot wrapper.
//!
//! Where the API leaves room, this evaluator decides (and the tests pin down):
//! - ipBlock also matches pod IPs (implementation-defined upstream; most CNIs do), see [`peers`];
//! - an IPv4-mapped IPv6 address is matched as the IPv4 address the kernel sends to;
//! - input the API server would reject (bad operator, CIDR, port range, peer mix) matches nothing
//!   and is listed in [`PolicySet::problems`] for callers to report as bad input;
//! - a policy without `metadata.namespace` is taken to live in `default`;
//! - the API's two exceptions hold before any policy ([`exceptions`]): a pod can always reach
//!   itself, and traffic between a pod and its own node is always allowed;
//! - not modelled: loopback, which never reaches policy (resolution leaves it out).
//!
//! One file per job: [`endpoint`] (building endpoints by hand; `resolve` builds them from the
//! cluster model), [`selectors`] (label selectors), [`peers`] (to/from peers and ipBlock), [`ports`]
//! (ports, endPort, named ports), [`eval`] (policyTypes, isolation, rules), [`verdict`] (the answer
//! and its wording), [`evaluator`] (checked, compiled once). The evaluator depends on nothing else
//! in this crate.

pub mod endpoint;
pub mod eval;
pub mod evaluator;
pub mod exceptions;
pub mod peers;
pub mod ports;
pub mod selectors;
pub mod verdict;

pub use eval::{evaluate, PolicySet, RuleId};
pub use evaluator::{Evaluator, InvalidPolicies, Judgement};
pub use exceptions::Exemption;
pub use selectors::PodSelector;
pub use verdict::{Direction, DirectionVerdict, Verdict};

use std::collections::BTreeMap;
use std::net::IpAddr;

use flow_model::Protocol;

/// A container port of a pod, for named-port resolution.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// One end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A pod (not hostNetwork): selectable by labels, isolatable by policies in its namespace.
    Pod {
        namespace: String,
        name: String,
        labels: BTreeMap<String, String>,
        /// The namespace's labels, including `kubernetes.io/metadata.name`.
        namespace_labels: BTreeMap<String, String>,
        /// The pod's IP for this connection's family, matched by ipBlock peers.
        ip: Option<IpAddr>,
        /// The pod's container ports, for named ports in rules that select this pod as destination.
        ports: Vec<NamedPort>,
        /// The addresses of the node the pod runs on: traffic between a pod and its own node is
        /// always allowed ([`exceptions`]). Empty when unknown.
        node_ips: Vec<IpAddr>,
    },
    /// An address that is not a (non-hostNetwork) pod: nodes, hostNetwork pods, the outside world.
    /// Only ipBlock peers match it and no policy isolates it.
    Ip(IpAddr),
}

/// One connection to judge: `from` opens it to `to` on `port`/`protocol` (post-DNAT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub from: Endpoint,
    pub to: Endpoint,
    pub port: u16,
    pub protocol: Protocol,
}
