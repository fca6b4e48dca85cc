//! The NetworkPolicy evaluator (full networking.k8s.io/v1 semantics).
//!
//! The evaluator knows nothing of files or flows: callers describe one connection as two
//! [`Endpoint`]s, a port and a protocol, after any Service translation (NetworkPolicy is enforced
//! after DNAT, so a ClusterIP never reaches here).
//!
//! Main entry: [`PolicySet`], compiled once from the policies; [`PolicySet::allows`] judges one
//! connection without allocating (for `verify` and monitor mode), [`PolicySet::evaluate`] returns a
//! [`Verdict`] that says why. [`evaluate`] is a one-shot wrapper.
//!
//! One file per job: [`selectors`] (label selectors), [`peers`] (to/from peers and ipBlock),
//! [`ports`] (ports, endPort, named ports), [`eval`] (policyTypes, isolation, rules),
//! [`verdict`] (the answer and its wording).

pub mod eval;
pub mod peers;
pub mod ports;
pub mod selectors;
pub mod verdict;

pub use eval::{evaluate, PolicySet};
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

impl Endpoint {
    /// A pod with the given labels and no IP or container ports; the namespace gets its
    /// `kubernetes.io/metadata.name` label. Extend with [`Endpoint::with_ip`] and
    /// [`Endpoint::with_port`].
    pub fn pod(
        namespace: impl Into<String>,
        name: impl Into<String>,
        labels: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Endpoint {
        let namespace = namespace.into();
        let namespace_labels = BTreeMap::from([(
            selectors::NAMESPACE_NAME_LABEL.to_string(),
            namespace.clone(),
        )]);
        Endpoint::Pod {
            namespace,
            name: name.into(),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            namespace_labels,
            ip: None,
            ports: Vec::new(),
        }
    }

    /// Sets a pod's IP (no effect on [`Endpoint::Ip`]).
    pub fn with_ip(mut self, addr: IpAddr) -> Endpoint {
        if let Endpoint::Pod { ip, .. } = &mut self {
            *ip = Some(addr);
        }
        self
    }

    /// Adds a namespace label to a pod (no effect on [`Endpoint::Ip`]).
    pub fn with_namespace_label(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Endpoint {
        if let Endpoint::Pod {
            namespace_labels, ..
        } = &mut self
        {
            namespace_labels.insert(key.into(), value.into());
        }
        self
    }

    /// Adds a named container port to a pod (no effect on [`Endpoint::Ip`]).
    pub fn with_port(mut self, name: impl Into<String>, port: u16, protocol: Protocol) -> Endpoint {
        if let Endpoint::Pod { ports, .. } = &mut self {
            ports.push(NamedPort {
                name: name.into(),
                port,
                protocol,
            });
        }
        self
    }

    /// `namespace/name` for a pod, the address for an IP: how messages name an endpoint.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Pod {
                namespace, name, ..
            } => format!("{namespace}/{name}"),
            Endpoint::Ip(ip) => ip.to_string(),
        }
    }

    /// The address ipBlock peers match: a pod's IP if known, or the address itself.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Endpoint::Pod { ip, .. } => *ip,
            Endpoint::Ip(ip) => Some(*ip),
        }
    }

    /// The pod's namespace; `None` for an address.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Endpoint::Pod { namespace, .. } => Some(namespace),
            Endpoint::Ip(_) => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Pod {
                namespace, name, ..
            } => write!(f, "{namespace}/{name}"),
            Endpoint::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Connection {
    pub fn new(from: Endpoint, to: Endpoint, port: u16, protocol: Protocol) -> Connection {
        Connection {
            from,
            to,
            port,
            protocol,
        }
    }
}
