//! `recommender evaluate`: one connection, `allowed` or `denied` and why.
//!
//! `--to` a ClusterIP goes through its Service as the kernel would: one connection per backend on
//! its targetPort, allowed only when every backend is allowed (a client cannot choose its backend).

use std::net::IpAddr;

use flow_model::Protocol;
use k8s_openapi::api::core::v1::Pod;

use super::{inputs, print, EvaluateArgs};
use crate::cluster::{is_host_network, pod_ip_like, pod_ips, Cluster};
use crate::error::Error;
use crate::policy::{Connection, Endpoint, Evaluator, Judgement};
use crate::resolve::{connections_to, ip_endpoint, pod_endpoint};

/// `--from`/`--to`: a pod of the snapshot, or an address.
enum Party<'c> {
    Pod(&'c Pod),
    Ip(IpAddr),
}

fn party<'c>(cluster: &'c Cluster, flag: &str, value: &str) -> Result<Party<'c>, Error> {
    if let Some((namespace, name)) = value.split_once('/') {
        return cluster.pod(namespace, name).map(Party::Pod).ok_or_else(|| {
            Error::BadInput(format!("{flag} {value}: no such pod in the cluster files"))
        });
    }
    // An IPv4-mapped IPv6 address is the IPv4 address on the wire.
    value
        .parse::<IpAddr>()
        .map(|ip| Party::Ip(ip.to_canonical()))
        .map_err(|_| {
            Error::BadInput(format!(
                "{flag} {value}: neither NAMESPACE/POD nor an IP address"
            ))
        })
}

fn endpoint_of(
    cluster: &Cluster,
    pod: &Pod,
    family: IpAddr,
    flag: &str,
    value: &str,
) -> Result<Endpoint, Error> {
    if is_host_network(pod) && pod_ip_like(pod, family).is_none() {
        let family = if family.is_ipv6() { "IPv6" } else { "IPv4" };
        return Err(Error::BadInput(format!(
            "{flag} {value}: a hostNetwork pod without an {family} address"
        )));
    }
    Ok(pod_endpoint(cluster, pod, family))
}

pub(super) fn run(args: &EvaluateArgs) -> Result<i32, Error> {
    let cluster = inputs::cluster(&args.cluster)?;
    let policies = inputs::policies(&cluster, &args.policies)?;
    let protocol: Protocol = args
        .protocol
        .parse()
        .map_err(|e| Error::BadInput(format!("--protocol: {e}")))?;
    if args.port == 0 {
        return Err(Error::BadInput("--port 0: ports are 1-65535".into()));
    }
    let from = party(&cluster, "--from", &args.from)?;
    let to = party(&cluster, "--to", &args.to)?;
    // The address family of the connection: given by an address if there is one, else the
    // destination pod's first address (IPv4 before IPv6).
    let family = match (&from, &to) {
        (Party::Ip(ip), _) | (_, Party::Ip(ip)) => *ip,
        (Party::Pod(a), Party::Pod(b)) => pod_ips(b)
            .first()
            .or(pod_ips(a).first())
            .copied()
            .unwrap_or(IpAddr::from([0, 0, 0, 0])),
    };
    let from_endpoint = match from {
        Party::Pod(pod) => endpoint_of(&cluster, pod, family, "--from", &args.from)?,
        Party::Ip(ip) => ip_endpoint(&cluster, ip),
    };
    let (connections, service) = match to {
        Party::Pod(pod) => {
            let to = endpoint_of(&cluster, pod, family, "--to", &args.to)?;
            (
                vec![Connection {
                    from: from_endpoint,
                    to,
                    port: args.port,
                    protocol,
                }],
                None,
            )
        }
        Party::Ip(ip) => {
            let through = connections_to(&cluster, from_endpoint, ip, args.port, protocol);
            if through.connections.is_empty() {
                // A Service port that does not exist, or a Service without backends: nothing
                // would carry the connection, and nothing is there to judge.
                return Err(Error::BadInput(format!(
                    "--to {}: {}",
                    args.to,
                    through.notes.join("; ")
                )));
            }
            (through.connections, through.service)
        }
    };
    let evaluator = Evaluator::new(&policies)?;
    let judged = connections
        .iter()
        .map(|c| (c, evaluator.judge(c)))
        .collect::<Vec<_>>();
    let allowed = judged.iter().all(|(_, j)| j.allowed);
    print(&report(&judged, service.as_deref(), allowed))?;
    Ok(if allowed { 0 } else { 1 })
}

/// The answer: the evaluator's line for a direct connection; for a Service, a first line that
/// says which backends were denied, then one line per backend.
fn report(judged: &[(&Connection, Judgement)], service: Option<&str>, allowed: bool) -> String {
    let Some(service) = service else {
        return format!("{}\n", judged[0].1.reason);
    };
    let denied: Vec<String> = judged
        .iter()
        .filter(|(_, j)| !j.allowed)
        .map(|(c, _)| backend(c))
        .collect();
    let mut out = if allowed {
        format!(
            "allowed: through Service {service} to all {} backends\n",
            judged.len()
        )
    } else {
        format!(
            "denied: through Service {service}, {} of {} backends denied: {}\n",
            denied.len(),
            judged.len(),
            denied.join(", ")
        )
    };
    for (connection, judgement) in judged {
        out.push_str(&format!(
            "  backend {}: {}\n",
            backend(connection),
            judgement.reason
        ));
    }
    out
}

/// A backend as `namespace/pod (ip:port)` or `ip:port`.
fn backend(connection: &Connection) -> String {
    let port = connection.port;
    let address = |ip: &IpAddr| std::net::SocketAddr::new(*ip, port).to_string();
    match &connection.to {
        Endpoint::Pod {
            namespace,
            name,
            ip,
            ..
        } => match ip {
            Some(ip) => format!("{namespace}/{name} ({})", address(ip)),
            None => format!("{namespace}/{name} (port {port})"),
        },
        Endpoint::Ip(ip) => address(ip),
    }
}
