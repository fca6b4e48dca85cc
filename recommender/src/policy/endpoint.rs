//! Building [`Endpoint`]s and [`Connection`]s: by hand (tests, the CLI) or from a k8s `Pod`.

use crate::cluster;
use std::collections::BTreeMap;
use std::net::IpAddr;

use flow_model::Protocol;
use k8s_openapi::api::core::v1::Pod;

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

impl Endpoint {
    /// The endpoint a k8s `Pod` is for a connection of one address family (`ipv6`).
    ///
    /// - a hostNetwork pod shares its node's address and network namespace: policies neither
    ///   select nor isolate it, so it is an [`Endpoint::Ip`] (`None` if it has no address of that
    ///   family);
    /// - otherwise a pod with its labels, `namespace_labels` (the name label is implied anyway), the
    ///   `status.podIPs` entry of that family, and the named ports of its containers and of its
    ///   sidecars (init containers with `restartPolicy: Always`, which keep running and serve).
    ///   Container ports without a name cannot be referenced by name and are left out.
    pub fn from_pod(
        pod: &Pod,
        namespace_labels: &BTreeMap<String, String>,
        ipv6: bool,
    ) -> Option<Endpoint> {
        let ip = cluster::pod_ips(pod)
            .into_iter()
            .find(|ip| ip.is_ipv6() == ipv6);
        if cluster::is_host_network(pod) {
            return ip.map(Endpoint::Ip);
        }
        let ports = cluster::named_ports(pod);
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut namespace_labels = namespace_labels.clone();
        namespace_labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.clone());
        Some(Endpoint::Pod {
            namespace,
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            namespace_labels,
            ip,
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pod_takes_labels_family_ip_and_named_ports() {
        let pod: Pod = serde_yaml::from_str(
            r#"
metadata: {name: dns-0, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  containers:
  - name: coredns
    ports:
    - {name: dns, containerPort: 53, protocol: UDP}
    - {name: dns-tcp, containerPort: 53}
    - {containerPort: 8080}
  initContainers:
  - {name: setup, ports: [{name: setup, containerPort: 1}]}
  - {name: proxy, restartPolicy: Always, ports: [{name: proxy, containerPort: 15001}]}
status:
  podIP: 10.244.0.10
  podIPs: [{ip: 10.244.0.10}, {ip: "fd00::10"}]
"#,
        )
        .unwrap();
        let e = Endpoint::from_pod(&pod, &BTreeMap::new(), false).unwrap();
        let Endpoint::Pod {
            namespace,
            labels,
            namespace_labels,
            ip,
            ports,
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(namespace, "kube-system");
        assert_eq!(labels["k8s-app"], "kube-dns");
        assert_eq!(namespace_labels[NAMESPACE_NAME_LABEL], "kube-system");
        assert_eq!(*ip, Some("10.244.0.10".parse().unwrap()));
        let names: Vec<_> = ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.protocol))
            .collect();
        assert_eq!(
            names,
            [
                ("dns", 53, Protocol::Udp),
                ("dns-tcp", 53, Protocol::Tcp),
                ("proxy", 15001, Protocol::Tcp)
            ]
        );
        let v6 = Endpoint::from_pod(&pod, &BTreeMap::new(), true).unwrap();
        assert_eq!(v6.ip(), Some("fd00::10".parse().unwrap()));
    }

    #[test]
    fn host_network_pods_are_addresses() {
        let pod: Pod = serde_yaml::from_str(
            r#"
metadata: {name: n, namespace: kube-system}
spec: {hostNetwork: true, containers: []}
status: {podIP: 192.168.0.5}
"#,
        )
        .unwrap();
        assert_eq!(
            Endpoint::from_pod(&pod, &BTreeMap::new(), false),
            Some(Endpoint::Ip("192.168.0.5".parse().unwrap()))
        );
        assert_eq!(Endpoint::from_pod(&pod, &BTreeMap::new(), true), None);
    }
}
