//! The backends of a Service port: where kube-proxy (or any Service implementation) sends a
//! connection to ClusterIP:port, and on which port the backend receives it.
//!
//! Sources, first that has anything for the Service wins:
//! 1. its EndpointSlices (label `kubernetes.io/service-name`), the way kube-proxy reads them: the
//!    slice port whose name (and protocol) equals the Service port's carries the resolved number
//!    for the endpoints of that slice, which is how a named targetPort can differ per pod;
//! 2. its legacy Endpoints object (same name), subset by subset, the same way;
//! 3. the pods its `spec.selector` selects, with the targetPort resolved on each pod (for
//!    snapshots taken without EndpointSlices).
//!
//! Ready endpoints only, unless none is ready: then all of them (kube-proxy then falls back to
//! serving-but-terminating endpoints, and a flow that happened must have gone somewhere).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pods::parse_protocol;
use super::services::{matches, selector};
use super::{is_terminated, pod_ip_like, Cluster, IpOwner};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One backend of a Service port.
#[derive(Clone, Copy, Debug)]
pub struct Backend<'a> {
    pub ip: IpAddr,
    /// The port the backend receives on: the targetPort, resolved for this backend.
    pub port: u16,
    /// What the backend address is: a pod, a node/hostNetwork pod, or an address outside the
    /// snapshot (a selector-less Service pointing outside).
    pub owner: IpOwner<'a>,
}

/// The targetPort of `port` on `pod`: absent → the Service port; a number → that number; a name →
/// the pod's container port of that name and protocol (`None` when the pod has none, in which case
/// Kubernetes would not make the pod an endpoint either).
pub fn target_port(port: &ServicePort, pod: Option<&Pod>) -> Option<u16> {
    match &port.target_port {
        None => u16::try_from(port.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|n| *n != 0),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<u16>() {
                return Some(n);
            }
            let protocol = parse_protocol(port.protocol.as_deref());
            super::named_ports(pod?)
                .into_iter()
                .find(|p| &p.name == name && p.protocol == protocol)
                .map(|p| p.port)
        }
    }
}

/// One endpoint address as a source lists it, before readiness filtering.
struct Listed<'a> {
    ip: IpAddr,
    port: u16,
    target: Option<&'a ObjectReference>,
    ready: bool,
}

fn same_port_name(a: Option<&str>, b: Option<&str>) -> bool {
    a.unwrap_or_default() == b.unwrap_or_default()
}

impl Cluster {
    /// The backends a connection to `service`'s ClusterIP on `port` reaches, in the family of
    /// `family` (an IPv6 ClusterIP leads to IPv6 endpoints).
    pub fn backends(
        &self,
        service: &Service,
        port: &ServicePort,
        family: IpAddr,
    ) -> Vec<Backend<'_>> {
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let same_family = |ip: &IpAddr| ip.is_ipv4() == family.is_ipv4();
        let mut backends: Vec<Backend<'_>> = match self.listed_endpoints(service, Some(port)) {
            Some(listed) => {
                let any_ready = listed.iter().any(|l| l.ready && same_family(&l.ip));
                listed
                    .into_iter()
                    .filter(|l| same_family(&l.ip) && (l.ready || !any_ready))
                    .map(|l| Backend {
                        ip: l.ip,
                        port: l.port,
                        owner: self.owner_of_endpoint(namespace, l.target, l.ip),
                    })
                    .collect()
            }
            // No endpoint objects: select the pods ourselves.
            None => match selector(service) {
                Some(sel) => self
                    .pods
                    .iter()
                    .filter(|p| {
                        p.metadata.namespace.as_deref() == Some(namespace)
                            && !is_terminated(p)
                            && matches(sel, p.metadata.labels.as_ref())
                    })
                    .filter_map(|p| {
                        Some(Backend {
                            ip: pod_ip_like(p, family)?,
                            port: target_port(port, Some(p))?,
                            owner: self.owner_of_pod(p),
                        })
                    })
                    .collect(),
                None => Vec::new(),
            },
        };
        backends.sort_by_key(|b| (b.ip, b.port));
        backends.dedup_by_key(|b| (b.ip, b.port));
        backends
    }

    /// Every endpoint (address and port) of `service`, any port, any family, ready or not.
    pub fn endpoint_sockets(&self, service: &Service) -> Vec<(IpAddr, u16)> {
        self.listed_endpoints(service, None)
            .unwrap_or_default()
            .into_iter()
            .map(|l| (l.ip, l.port))
            .collect()
    }

    /// Every endpoint address of `service`, any port, any family, ready or not.
    pub fn endpoint_addresses(&self, service: &Service) -> Vec<IpAddr> {
        self.listed_endpoints(service, None)
            .unwrap_or_default()
            .into_iter()
            .map(|l| l.ip)
            .collect()
    }

    /// The endpoints the EndpointSlices, else the Endpoints, of `service` list for `port` (every
    /// port when `None`); `None` when the snapshot has neither object for the Service.
    fn listed_endpoints<'a>(
        &'a self,
        service: &Service,
        port: Option<&ServicePort>,
    ) -> Option<Vec<Listed<'a>>> {
        let namespace = service.metadata.namespace.as_deref();
        let name = service.metadata.name.as_deref();
        let wanted = |slice_port_name: Option<&str>, slice_protocol: Option<&str>| {
            port.is_none_or(|p| {
                same_port_name(slice_port_name, p.name.as_deref())
                    && parse_protocol(slice_protocol) == parse_protocol(p.protocol.as_deref())
            })
        };
        let indexed = self.indexed_slices_of(&(
            namespace.unwrap_or_default().to_string(),
            name.unwrap_or_default().to_string(),
        ));
        let slices: Vec<_> = match indexed {
            Some(slices) => slices,
            None => self
                .endpoint_slices
                .iter()
                .filter(|s| {
                    s.metadata.namespace.as_deref() == namespace
                        && s.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(SERVICE_NAME_LABEL))
                            .map(String::as_str)
                            == name
                })
                .collect(),
        };
        let mut out = Vec::new();
        if !slices.is_empty() {
            for slice in slices {
                let ports = slice.ports.iter().flatten();
                for number in ports
                    .filter(|p| wanted(p.name.as_deref(), p.protocol.as_deref()))
                    .filter_map(|p| u16::try_from(p.port?).ok())
                {
                    for endpoint in slice.endpoints.iter().flatten() {
                        let ready = endpoint
                            .conditions
                            .as_ref()
                            .and_then(|c| c.ready)
                            .unwrap_or(true);
                        for ip in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                            out.push(Listed {
                                ip,
                                port: number,
                                target: endpoint.target_ref.as_ref(),
                                ready,
                            });
                        }
                    }
                }
            }
            return Some(out);
        }
        let endpoints = self.endpoints.iter().find(|e| {
            e.metadata.namespace.as_deref() == namespace && e.metadata.name.as_deref() == name
        })?;
        for subset in endpoints.subsets.iter().flatten() {
            let ports = subset.ports.iter().flatten();
            for number in ports
                .filter(|p| wanted(p.name.as_deref(), p.protocol.as_deref()))
                .filter_map(|p| u16::try_from(p.port).ok())
            {
                let ready = subset.addresses.iter().flatten().map(|a| (a, true));
                let not_ready = subset
                    .not_ready_addresses
                    .iter()
                    .flatten()
                    .map(|a| (a, false));
                for (address, ready) in ready.chain(not_ready) {
                    if let Ok(ip) = address.ip.parse() {
                        out.push(Listed {
                            ip,
                            port: number,
                            target: address.target_ref.as_ref(),
                            ready,
                        });
                    }
                }
            }
        }
        Some(out)
    }

    /// The owner of an endpoint: its `targetRef` pod when the snapshot has it, else by address.
    fn owner_of_endpoint<'a>(
        &'a self,
        namespace: &str,
        target: Option<&ObjectReference>,
        ip: IpAddr,
    ) -> IpOwner<'a> {
        let pod = target
            .filter(|t| t.kind.as_deref() == Some("Pod"))
            .and_then(|t| {
                let ns = t.namespace.as_deref().unwrap_or(namespace);
                self.pod(ns, t.name.as_deref()?)
            })
            .filter(|p| !is_terminated(p));
        match pod {
            Some(pod) => self.owner_of_pod(pod),
            None => self.ip_owner(ip),
        }
    }
}
