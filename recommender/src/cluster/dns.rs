//! The cluster DNS, defined once: resolution asks it which edges are DNS, synthesis what a policy
//! must allow for DNS (docs/architecture.md, "The cluster DNS").
//!
//! - A DNS Service is `kube-system/kube-dns` (the name kubeadm, kind, k3s and the managed clouds
//!   give it; CoreDNS keeps it for compatibility) or any Service labelled `k8s-app: kube-dns`
//!   (distributions that rename it, such as RKE2; NodeLocal DNSCache's `kube-dns-upstream` carries
//!   the label too). Traffic to any of them on a DNS port is DNS. *The* DNS Service, whose pods a
//!   policy allows, is `kube-system/kube-dns` when present, else the first labelled one by
//!   namespace/name.
//! - Its DNS ports are the Service ports named `dns` or `dns-tcp`, or numbered 53, over UDP or
//!   TCP; the DNS pods receive on their targetPorts (a named targetPort resolved on each pod). Any
//!   other port of the same pods (CoreDNS metrics on 9153) is an ordinary port of an ordinary
//!   workload.
//! - NodeLocal DNSCache runs as a hostNetwork DaemonSet whose `node-cache` container binds the
//!   addresses of its `-localip` argument on every node: 169.254.20.10 by default, and in
//!   kube-proxy iptables mode the kube-dns ClusterIP as well. Pods then send their queries to those
//!   addresses on port 53 and no Service translation happens, so only ipBlocks name them.
//!   169.254.20.10 on port 53 is taken as the cache even when the snapshot does not show its
//!   DaemonSet: it is the address the addon documents and nothing else uses it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use flow_model::Protocol;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service, ServicePort};

use super::pods::parse_protocol;
use super::services::{matches, qualified_name, selector};
use super::{is_host_network, target_port, Cluster};
use crate::policy::PodSelector;

/// `namespace/name` of the DNS Service by convention.
pub const DNS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");
/// The label distributions keep on a renamed DNS Service.
pub const DNS_SERVICE_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// The port DNS clients send to.
pub const DNS_PORT: u16 = 53;
/// The address NodeLocal DNSCache listens on unless told otherwise.
pub const NODE_LOCAL_DNS_DEFAULT: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 20, 10));

/// Whether `service` is a DNS Service (see the module comment).
pub fn is_cluster_dns(service: &Service) -> bool {
    let meta = &service.metadata;
    (meta.namespace.as_deref() == Some(DNS_SERVICE.0)
        && meta.name.as_deref() == Some(DNS_SERVICE.1))
        || meta
            .labels
            .as_ref()
            .and_then(|l| l.get(DNS_SERVICE_LABEL.0))
            .is_some_and(|v| v == DNS_SERVICE_LABEL.1)
}

/// Whether `port` of a DNS Service carries DNS: named `dns`/`dns-tcp`, or numbered 53, over UDP
/// or TCP.
pub fn is_dns_port(port: &ServicePort) -> bool {
    let protocol = parse_protocol(port.protocol.as_deref());
    matches!(protocol, Protocol::Udp | Protocol::Tcp)
        && (matches!(port.name.as_deref(), Some("dns" | "dns-tcp"))
            || port.port == i32::from(DNS_PORT))
}

/// The DNS Service as policies allow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsService {
    pub namespace: String,
    pub name: String,
    /// Its selector: the DNS pods. `None` for a Service without one.
    pub selector: Option<PodSelector>,
    /// The ports the DNS pods receive DNS on (the DNS ports' targetPorts), each over UDP and TCP:
    /// clients fall back to TCP for long answers.
    pub ports: BTreeSet<(Protocol, u16)>,
}

/// The cluster DNS of one cluster model: what a policy must allow for pods to resolve names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterDns {
    /// The DNS Service, when the snapshot has one.
    pub service: Option<DnsService>,
    /// The addresses NodeLocal DNSCache listens on, from its DaemonSet or pods (empty when the
    /// snapshot shows none).
    pub node_local: BTreeSet<IpAddr>,
}

impl ClusterDns {
    /// Whether `ip:port` is NodeLocal DNSCache: an address it binds (or the documented default),
    /// on the DNS port.
    pub fn is_node_local(&self, ip: IpAddr, port: u16) -> bool {
        port == DNS_PORT && (ip == NODE_LOCAL_DNS_DEFAULT || self.node_local.contains(&ip))
    }
}

/// The addresses of `-localip A,B` (or `-localip=A,B`) among a container's command and args.
fn localip_addresses(container: &Container) -> Vec<IpAddr> {
    let words: Vec<&str> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(String::as_str)
        .collect();
    let mut values = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let flag = word.trim_start_matches('-');
        if !word.starts_with('-') {
            continue;
        }
        if flag == "localip" {
            values.extend(words.get(i + 1).copied());
        } else if let Some(value) = flag.strip_prefix("localip=") {
            values.push(value);
        }
    }
    values
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// The NodeLocal DNSCache addresses a hostNetwork pod spec binds.
fn node_local_addresses(spec: &PodSpec) -> Vec<IpAddr> {
    if !spec.host_network.unwrap_or(false) {
        // Without hostNetwork (Cilium's local redirect setup) the cache is an ordinary pod that
        // the traffic reaches after translation; its `-localip` addresses are not destinations.
        return Vec::new();
    }
    spec.containers.iter().flat_map(localip_addresses).collect()
}

impl Cluster {
    /// The DNS Services, *the* DNS Service first (see the module comment).
    fn dns_services(&self) -> Vec<&Service> {
        let mut services: Vec<&Service> =
            self.services.iter().filter(|s| is_cluster_dns(s)).collect();
        services.sort_by_key(|s| {
            let meta = &s.metadata;
            let conventional = meta.namespace.as_deref() == Some(DNS_SERVICE.0)
                && meta.name.as_deref() == Some(DNS_SERVICE.1);
            (!conventional, qualified_name(s))
        });
        services
    }

    /// The cluster DNS of this model (see the module comment).
    pub fn cluster_dns(&self) -> ClusterDns {
        let service = self.dns_services().first().map(|s| DnsService {
            namespace: s.metadata.namespace.clone().unwrap_or_default(),
            name: s.metadata.name.clone().unwrap_or_default(),
            selector: selector(s).map(|l| PodSelector::labels(l.clone())),
            ports: self.dns_target_ports(s),
        });
        let templates = self
            .daemon_sets
            .iter()
            .filter_map(|ds| ds.spec.template.spec.as_ref());
        let pods = self
            .pods
            .iter()
            .filter(|p| is_host_network(p))
            .filter_map(|p| p.spec.as_ref());
        let node_local = templates
            .chain(pods)
            .flat_map(node_local_addresses)
            .collect();
        ClusterDns {
            service,
            node_local,
        }
    }

    /// The ports the pods of DNS Service `service` receive DNS on, over UDP and TCP: each DNS
    /// port's targetPort, resolved per backend; the Service port when nothing resolves it (a named
    /// targetPort and no pods in the snapshot).
    fn dns_target_ports(&self, service: &Service) -> BTreeSet<(Protocol, u16)> {
        let mut numbers = BTreeSet::new();
        let families: [IpAddr; 2] = [
            Ipv4Addr::UNSPECIFIED.into(),
            std::net::Ipv6Addr::UNSPECIFIED.into(),
        ];
        for port in dns_ports(service) {
            let resolved: Vec<u16> = families
                .iter()
                .flat_map(|family| self.backends(service, port, *family))
                .map(|b| b.port)
                .chain(target_port(port, None))
                .collect();
            match resolved.is_empty() {
                false => numbers.extend(resolved),
                true => numbers.extend(u16::try_from(port.port).ok()),
            }
        }
        numbers
            .into_iter()
            .flat_map(|n| [(Protocol::Udp, n), (Protocol::Tcp, n)])
            .collect()
    }

    /// The DNS Service whose DNS port a connection to `pod` on `port` reaches: the pod is one of
    /// its backends (selected by it) and `port` a targetPort of one of its DNS ports on that pod.
    /// The protocol is not compared: the DNS ports are allowed over both.
    pub fn dns_service_of(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        port: u16,
    ) -> Option<&Service> {
        self.dns_services().into_iter().find(|s| {
            s.metadata.namespace == pod.metadata.namespace
                && selector(s).is_some_and(|sel| matches(sel, pod.metadata.labels.as_ref()))
                && dns_ports(s).any(|p| target_port(p, Some(pod)) == Some(port))
        })
    }
}

/// The DNS ports of `service`.
pub fn dns_ports(service: &Service) -> impl Iterator<Item = &ServicePort> {
    service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter(|p| is_dns_port(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(args: &[&str]) -> Container {
        Container {
            name: "node-cache".into(),
            args: Some(args.iter().map(|a| a.to_string()).collect()),
            ..Container::default()
        }
    }

    #[test]
    fn localip_arguments_in_every_spelling() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(
            localip_addresses(&container(&[
                "-localip",
                "169.254.20.10,10.96.0.10",
                "-conf",
                "/etc/Corefile"
            ])),
            [ip("169.254.20.10"), ip("10.96.0.10")]
        );
        assert_eq!(
            localip_addresses(&container(&["--localip=169.254.25.10"])),
            [ip("169.254.25.10")]
        );
        assert_eq!(
            localip_addresses(&container(&["-localip", "__PILLAR__LOCAL__DNS__,fd00::a"])),
            [ip("fd00::a")]
        );
        assert!(localip_addresses(&container(&["-conf", "169.254.20.10"])).is_empty());
    }

    #[test]
    fn dns_ports_by_name_or_number() {
        let port = |name: Option<&str>, number: i32, protocol: &str| ServicePort {
            name: name.map(Into::into),
            port: number,
            protocol: Some(protocol.into()),
            ..ServicePort::default()
        };
        assert!(is_dns_port(&port(Some("dns"), 5353, "UDP")));
        assert!(is_dns_port(&port(Some("dns-tcp"), 5353, "TCP")));
        assert!(is_dns_port(&port(None, 53, "UDP")));
        assert!(!is_dns_port(&port(Some("metrics"), 9153, "TCP")));
        assert!(!is_dns_port(&port(Some("dns"), 53, "SCTP")));
    }
}
