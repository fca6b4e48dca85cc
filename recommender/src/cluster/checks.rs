//! Objects of a loaded cluster that the API server would never have served: an address that is
//! not an address, a port out of range, a ClusterIP two Services claim. k8s-openapi reads them
//! (its fields are strings and `i32`s), and the lookups skip what they cannot use, so each one is
//! named in a note here rather than dropped silently.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cluster;

/// One note per odd value, in a stable order (by kind, then as loaded).
pub fn check(cluster: &Cluster) -> Vec<String> {
    let mut notes = Vec::new();
    services(cluster, &mut notes);
    pods(cluster, &mut notes);
    endpoint_slices(cluster, &mut notes);
    notes
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    match (&meta.namespace, &meta.name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.clone(),
        _ => "(unnamed)".to_owned(),
    }
}

fn port_in_range(port: i32) -> bool {
    (1..=65535).contains(&port)
}

fn services(cluster: &Cluster, notes: &mut Vec<String>) {
    let mut claimed: BTreeMap<IpAddr, String> = BTreeMap::new();
    for service in &cluster.services {
        let who = format!("Service {}", name(&service.metadata));
        let Some(spec) = &service.spec else { continue };
        let addresses = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter());
        let mut own: Vec<IpAddr> = Vec::new();
        for address in addresses {
            if address.is_empty() || address == "None" {
                continue;
            }
            match address.parse::<IpAddr>() {
                Ok(ip) => own.push(ip),
                Err(_) => notes.push(format!(
                    "{who}: ClusterIP {address:?} is not an address; it is ignored"
                )),
            }
        }
        own.sort();
        own.dedup();
        for ip in own {
            if let Some(first) = claimed.get(&ip) {
                notes.push(format!(
                    "{who} claims ClusterIP {ip}, which {first} holds already; traffic to it is resolved through {first}"
                ));
            } else {
                claimed.insert(ip, who.clone());
            }
        }
        for port in spec.ports.iter().flatten() {
            let label = port.name.as_deref().unwrap_or("");
            if !port_in_range(port.port) {
                notes.push(format!(
                    "{who}: port {label:?} has number {}, outside 1-65535; it is ignored",
                    port.port
                ));
            }
            if let Some(IntOrString::Int(target)) = port.target_port {
                if !port_in_range(target) {
                    notes.push(format!(
                        "{who}: port {label:?} has targetPort {target}, outside 1-65535"
                    ));
                }
            }
            if let Some(node_port) = port.node_port {
                if !port_in_range(node_port) {
                    notes.push(format!(
                        "{who}: port {label:?} has nodePort {node_port}, outside 1-65535"
                    ));
                }
            }
        }
    }
}

fn pods(cluster: &Cluster, notes: &mut Vec<String>) {
    for pod in &cluster.pods {
        let who = format!("Pod {}", name(&pod.metadata));
        if let Some(status) = &pod.status {
            let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
            let mut bad: Vec<&str> = listed
                .chain(status.pod_ip.as_deref())
                .filter(|ip| !ip.is_empty() && ip.parse::<IpAddr>().is_err())
                .collect();
            bad.dedup();
            for ip in bad {
                notes.push(format!(
                    "{who}: podIP {ip:?} is not an address; it is ignored"
                ));
            }
        }
        let Some(spec) = &pod.spec else { continue };
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter());
        for container in containers {
            for port in container.ports.iter().flatten() {
                if !port_in_range(port.container_port) {
                    notes.push(format!(
                        "{who}: container {} has containerPort {}, outside 1-65535; it is ignored",
                        container.name, port.container_port
                    ));
                }
                if let Some(host_port) = port.host_port {
                    // 0 is how some tools write "no host port".
                    if host_port != 0 && !port_in_range(host_port) {
                        notes.push(format!(
                            "{who}: container {} has hostPort {host_port}, outside 1-65535",
                            container.name
                        ));
                    }
                }
            }
        }
    }
}

fn endpoint_slices(cluster: &Cluster, notes: &mut Vec<String>) {
    for slice in &cluster.endpoint_slices {
        let who = format!("EndpointSlice {}", name(&slice.metadata));
        for port in slice.ports.iter().flatten() {
            if let Some(number) = port.port {
                if !port_in_range(number) {
                    notes.push(format!(
                        "{who}: port {:?} has number {number}, outside 1-65535; it is ignored",
                        port.name.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        let fqdn = slice.address_type == "FQDN";
        for endpoint in slice.endpoints.iter().flatten() {
            for address in &endpoint.addresses {
                if !fqdn && address.parse::<IpAddr>().is_err() {
                    notes.push(format!(
                        "{who}: endpoint address {address:?} is not an address; it is ignored"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn notes(text: &str) -> Vec<String> {
        let mut cluster = Cluster::default();
        let mut load_notes = Vec::new();
        cluster
            .add_text(text, Path::new("c.yaml"), &mut load_notes)
            .unwrap();
        check(&cluster)
    }

    fn has(notes: &[String], parts: &[&str]) {
        assert!(
            notes.iter().any(|n| parts.iter().all(|p| n.contains(p))),
            "{parts:?} not in {notes:#?}"
        );
    }

    #[test]
    fn a_cluster_ip_claimed_twice_is_named() {
        let n = notes(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: y}\nspec: {clusterIP: 10.96.0.5, clusterIPs: [10.96.0.5], ports: [{port: 80}]}\n",
        );
        assert_eq!(n.len(), 1, "{n:#?}");
        has(
            &n,
            &["Service y/b claims ClusterIP 10.96.0.5", "Service x/a"],
        );
    }

    #[test]
    fn bad_addresses_are_named() {
        let n = notes(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {containers: []}\nstatus: {podIP: 10.0.0.300, podIPs: [{ip: 10.0.0.300}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\nspec: {clusterIP: not-an-ip}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, namespace: x}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.999]}]\n",
        );
        assert_eq!(n.len(), 3, "{n:#?}");
        has(&n, &["Pod x/p", "podIP \"10.0.0.300\""]);
        has(&n, &["Service x/s", "\"not-an-ip\""]);
        has(&n, &["EndpointSlice x/s-1", "\"10.0.0.999\""]);
    }

    #[test]
    fn ports_out_of_range_are_named() {
        let n = notes(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\nspec: {ports: [{name: web, port: 70000, targetPort: 0, nodePort: -1}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {containers: [{name: c, ports: [{containerPort: 65536, hostPort: 99999}]}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, namespace: x}\naddressType: IPv4\nendpoints: []\nports: [{port: 0}]\n",
        );
        has(&n, &["Service x/s", "number 70000"]);
        has(&n, &["Service x/s", "targetPort 0"]);
        has(&n, &["Service x/s", "nodePort -1"]);
        has(&n, &["Pod x/p", "containerPort 65536"]);
        has(&n, &["Pod x/p", "hostPort 99999"]);
        has(&n, &["EndpointSlice x/s-1", "number 0"]);
        assert_eq!(n.len(), 6, "{n:#?}");
    }

    #[test]
    fn a_well_formed_cluster_has_no_notes() {
        let n = notes(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\nspec: {clusterIP: None, ports: [{port: 80, targetPort: web}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {containers: [{name: c, ports: [{containerPort: 80, hostPort: 0}]}]}\nstatus: {podIP: 10.0.0.3}\n",
        );
        assert!(n.is_empty(), "{n:#?}");
    }
}
