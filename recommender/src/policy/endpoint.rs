//! Building [`Endpoint`]s and [`Connection`]s by hand (tests, the CLI); `resolve` builds them from
//! the cluster model.

use std::collections::BTreeMap;
use std::net::IpAddr;

use flow_model::Protocol;

use super::selectors::NAMESPACE_NAME_LABEL;
use super::{Connection, Endpoint, NamedPort};

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
        let namespace_labels =
            BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), namespace.clone())]);
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
            node_ips: Vec::new(),
        }
    }

    /// Adds an address of the pod's node (no effect on [`Endpoint::Ip`]).
    pub fn with_node_ip(mut self, addr: IpAddr) -> Endpoint {
        if let Endpoint::Pod { node_ips, .. } = &mut self {
            node_ips.push(addr);
        }
        self
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
