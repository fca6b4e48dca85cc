//! Services: by ClusterIP, their ports, and the two special ones (cluster DNS, the apiserver).

use std::collections::BTreeMap;
use std::net::IpAddr;

use flow_model::Protocol;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};

use super::pods::{parse_protocol, AddressMatcher};
use super::Cluster;

/// The Service's ClusterIPs (`spec.clusterIPs`, both families, and `spec.clusterIP`), parsed.
/// Headless Services (`None`) and ExternalName Services have none.
pub fn cluster_ips(service: &Service) -> Vec<IpAddr> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(spec.cluster_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// Addresses besides the ClusterIPs that Service implementations (kube-proxy and the like)
/// translate to the Service's backends for in-cluster clients: `spec.externalIPs`, and the
/// load-balancer ingress IPs, except those with `ipMode: Proxy`, whose traffic really goes through
/// the load balancer.
pub fn external_addresses(service: &Service) -> Vec<IpAddr> {
    let external = service
        .spec
        .iter()
        .flat_map(|s| s.external_ips.iter().flatten())
        .map(String::as_str);
    let balanced = service
        .status
        .iter()
        .flat_map(|s| s.load_balancer.iter())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|i| i.ip.as_deref());
    external
        .chain(balanced)
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// The port of `service` that a client reaches as `port`/`protocol` on its ClusterIP.
pub fn service_port(service: &Service, port: u16, protocol: Protocol) -> Option<&ServicePort> {
    service
        .spec
        .as_ref()?
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port) && parse_protocol(p.protocol.as_deref()) == protocol)
}

/// The cluster DNS Service: `kube-dns` in `kube-system` (the name CoreDNS keeps for compatibility),
/// or any Service labelled `k8s-app: kube-dns` (distributions that rename it).
pub fn is_cluster_dns(service: &Service) -> bool {
    let meta = &service.metadata;
    (meta.namespace.as_deref() == Some("kube-system") && meta.name.as_deref() == Some("kube-dns"))
        || meta
            .labels
            .as_ref()
            .and_then(|l| l.get("k8s-app"))
            .is_some_and(|v| v == "kube-dns")
}

/// The `kubernetes` Service in `default`, whose endpoints are the API server's addresses.
pub fn is_apiserver_service(service: &Service) -> bool {
    service.metadata.namespace.as_deref() == Some("default")
        && service.metadata.name.as_deref() == Some("kubernetes")
}

/// The Service's `spec.selector`, when it has a non-empty one.
pub fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// `namespace/name` of a Service.
pub fn qualified_name(service: &Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether `labels` satisfy every `key: value` of `selector`.
pub(crate) fn matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

impl Cluster {
    /// The Service with `ip` among its ClusterIPs.
    pub fn service_by_cluster_ip(&self, ip: IpAddr) -> Option<&Service> {
        let matcher = AddressMatcher::new(ip);
        self.services.iter().find(|s| {
            s.spec.as_ref().is_some_and(|spec| {
                let listed = spec.cluster_ips.iter().flatten().map(String::as_str);
                listed
                    .chain(spec.cluster_ip.as_deref())
                    .any(|a| matcher.matches(a))
            })
        })
    }

    /// The Service (and its port) that a connection to `ip:port/protocol` goes through, if any:
    /// - a ClusterIP is always a Service's; a port it does not have is an error (the traffic
    ///   reached nothing: kube-proxy drops or rejects it);
    /// - an external or load-balancer address ([`external_addresses`]) counts only with a port
    ///   the Service has, because such an address is often also a node's (k3s ServiceLB, MetalLB
    ///   in layer 2 mode), and the node's own ports are not the Service's.
    pub fn service_route(
        &self,
        ip: IpAddr,
        port: u16,
        protocol: Protocol,
    ) -> Result<Option<(&Service, &ServicePort)>, String> {
        if let Some(service) = self.service_by_cluster_ip(ip) {
            return match service_port(service, port, protocol) {
                Some(service_port) => Ok(Some((service, service_port))),
                None => Err(format!(
                    "Service {} has no port {port}/{protocol}",
                    qualified_name(service)
                )),
            };
        }
        Ok(self
            .services
            .iter()
            .filter(|s| external_addresses(s).contains(&ip))
            .find_map(|s| Some((s, service_port(s, port, protocol)?))))
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
    }

    /// The cluster DNS Service whose selector selects `pod`, if `pod` is a cluster DNS pod.
    pub fn cluster_dns_service_of(&self, pod: &Pod) -> Option<&Service> {
        self.services.iter().find(|s| {
            is_cluster_dns(s)
                && s.metadata.namespace == pod.metadata.namespace
                && selector(s).is_some_and(|sel| matches(sel, pod.metadata.labels.as_ref()))
        })
    }

    /// The API server's addresses: the endpoints of `default/kubernetes`, both families.
    pub fn apiserver_addresses(&self) -> Vec<IpAddr> {
        let Some(service) = self.service("default", "kubernetes") else {
            return Vec::new();
        };
        let mut ips = self.endpoint_addresses(service);
        ips.sort();
        ips.dedup();
        ips
    }
}
