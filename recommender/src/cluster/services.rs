//! Services: by ClusterIP, their ports, and the two special ones (cluster DNS, the apiserver).

use std::collections::BTreeMap;
use std::net::IpAddr;

use flow_model::Protocol;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};

use super::pods::parse_protocol;
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
        self.services.iter().find(|s| cluster_ips(s).contains(&ip))
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
