//! Services: by ClusterIP, their ports, and the apiserver (the cluster DNS is `dns`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use flow_model::Protocol;
use k8s_openapi::api::core::v1::{Service, ServicePort};

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
        if let Some(found) = self.indexed_service_by_ip(ip) {
            return found;
        }
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
        if let Some(found) = self.indexed_service(&(namespace.to_string(), name.to_string())) {
            return found;
        }
        self.services.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
    }

    /// The API server's endpoints (address and port): those of `default/kubernetes`, both
    /// families. A connection to one of these addresses on another port (the kubelet on a control
    /// plane node) is not a connection to the API server.
    pub fn apiserver_endpoints(&self) -> Vec<(IpAddr, u16)> {
        let Some(service) = self.service("default", "kubernetes") else {
            return Vec::new();
        };
        let mut sockets = self.endpoint_sockets(service);
        sockets.sort();
        sockets.dedup();
        sockets
    }

    /// The Service with a NodePort `port`/`protocol` (types NodePort and LoadBalancer allocate
    /// them), with that port.
    pub fn node_port_service(
        &self,
        port: u16,
        protocol: Protocol,
    ) -> Option<(&Service, &ServicePort)> {
        self.services.iter().find_map(|s| {
            let p = s.spec.as_ref()?.ports.iter().flatten().find(|p| {
                p.node_port == Some(i32::from(port))
                    && parse_protocol(p.protocol.as_deref()) == protocol
            })?;
            Some((s, p))
        })
    }

    /// The Services that make `pod` reachable from outside the cluster: of type LoadBalancer or
    /// NodePort, or with external IPs, whose selector selects it.
    pub fn exposing_services(&self, pod: &k8s_openapi::api::core::v1::Pod) -> Vec<&Service> {
        self.services
            .iter()
            .filter(|s| {
                let Some(spec) = &s.spec else { return false };
                let exposed = matches!(spec.type_.as_deref(), Some("LoadBalancer" | "NodePort"))
                    || spec
                        .external_ips
                        .as_ref()
                        .is_some_and(|ips| !ips.is_empty());
                exposed
                    && s.metadata.namespace == pod.metadata.namespace
                    && selector(s).is_some_and(|sel| matches(sel, pod.metadata.labels.as_ref()))
            })
            .collect()
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
