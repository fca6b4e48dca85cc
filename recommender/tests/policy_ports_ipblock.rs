//! Ports, protocols, named ports, endPort and ipBlock, one table row per rule of the
//! networking.k8s.io/v1 API reference (NetworkPolicyPort, IPBlock, NetworkPolicyPeer.ipBlock) and of
//! the concepts page (https://kubernetes.io/docs/concepts/services-networking/network-policies/).

mod policy_support;

use policy_support::*;

/// `port` without `protocol`.
const WEB_EGRESS_PORT_53_NO_PROTOCOL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: 53}]
"#;

/// `protocol` without `port`.
const WEB_EGRESS_ALL_UDP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - ports: [{protocol: UDP}]
"#;

const WEB_EGRESS_SCTP_9000: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: 9000, protocol: SCTP}]
"#;

const WEB_EGRESS_RANGE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/24}}]
    ports: [{protocol: TCP, port: 32000, endPort: 32768}]
"#;

/// Named port `db` to any pod, plus a named port to the whole internet.
const WEB_EGRESS_NAMED_DB: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}}]
    ports: [{port: db}]
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
    ports: [{port: https}]
"#;

/// Named port `dns` without a protocol (so TCP), and `dns` with UDP.
const WEB_EGRESS_NAMED_DNS_TCP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}}]
    ports: [{port: dns}]
"#;

const WEB_EGRESS_NAMED_DNS_UDP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}}]
    ports: [{port: dns, protocol: UDP}]
"#;

/// Ingress named port: resolved on the policy's own (destination) pods.
const DB_INGRESS_NAMED_DB: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: postgres-ingress, namespace: db}
spec:
  podSelector: {matchLabels: {app: postgres}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: shop}}}]
    ports: [{port: db, protocol: TCP}]
"#;

const WEB_EGRESS_EXTERNAL_V4: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: 198.18.0.0/15
        except: [198.18.0.0/24]
"#;

const WEB_EGRESS_EXTERNAL_V6: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: 2001:db8::/32
        except: ["2001:db8:bad::/48"]
"#;

const WEB_EGRESS_POD_CIDR: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.244.2.0/24}}]
"#;

const WEB_EGRESS_HOST_32: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.18.0.10/32}}]
    ports: [{port: 443}]
"#;

const DB_INGRESS_FROM_CIDR: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: postgres-ingress, namespace: db}
spec:
  podSelector: {matchLabels: {app: postgres}}
  policyTypes: [Ingress]
  ingress:
  - from: [{ipBlock: {cidr: 10.244.1.0/24, except: [10.244.1.11/32]}}]
"#;

#[test]
#[rustfmt::skip] // one row per line: this is a table
fn protocols() {
    run_table(vec![
        // NetworkPolicyPort.protocol: "If not specified, this field defaults to TCP".
        row("port without protocol allows TCP", &[WEB_EGRESS_PORT_53_NO_PROTOCOL], web(), ext("198.18.0.53"), 53, TCP, ALLOW),
        row("port without protocol does not allow UDP", &[WEB_EGRESS_PORT_53_NO_PROTOCOL], web(), ext("198.18.0.53"), 53, UDP, DENY),
        row("port without protocol does not allow SCTP", &[WEB_EGRESS_PORT_53_NO_PROTOCOL], web(), ext("198.18.0.53"), 53, SCTP, DENY),
        // NetworkPolicyPort.port: "If this field is not provided, this matches all port names and
        // numbers" of the given protocol.
        row("protocol without port: every port of it", &[WEB_EGRESS_ALL_UDP], web(), ext("198.18.0.9"), 40000, UDP, ALLOW),
        row("protocol without port: not other protocols", &[WEB_EGRESS_ALL_UDP], web(), ext("198.18.0.9"), 40000, TCP, DENY),
        // SCTP is a valid protocol (GA since 1.20).
        row("SCTP port rule allows SCTP", &[WEB_EGRESS_SCTP_9000], web(), ext("198.18.0.9"), 9000, SCTP, ALLOW),
        row("SCTP port rule does not allow TCP", &[WEB_EGRESS_SCTP_9000], web(), ext("198.18.0.9"), 9000, TCP, DENY),
    ]);
}

#[test]
#[rustfmt::skip] // one row per line: this is a table
fn port_ranges() {
    run_table(vec![
        // endPort: "the range of ports from port to endPort ..., inclusive".
        row("endPort: below the range", &[WEB_EGRESS_RANGE], web(), ext("10.0.0.1"), 31999, TCP, DENY),
        row("endPort: first port", &[WEB_EGRESS_RANGE], web(), ext("10.0.0.1"), 32000, TCP, ALLOW),
        row("endPort: inside", &[WEB_EGRESS_RANGE], web(), ext("10.0.0.1"), 32100, TCP, ALLOW),
        row("endPort: last port", &[WEB_EGRESS_RANGE], web(), ext("10.0.0.1"), 32768, TCP, ALLOW),
        row("endPort: above the range", &[WEB_EGRESS_RANGE], web(), ext("10.0.0.1"), 32769, TCP, DENY),
        row("endPort: protocol still applies", &[WEB_EGRESS_RANGE], web(), ext("10.0.0.1"), 32100, UDP, DENY),
    ]);
}

#[test]
#[rustfmt::skip] // one row per line: this is a table
fn named_ports() {
    run_table(vec![
        // NetworkPolicyPort.port: "a numerical or named port on a pod": the name is resolved on the
        // destination pod, so one name can mean different numbers on different pods.
        row("named port: number of this pod", &[WEB_EGRESS_NAMED_DB], web(), postgres(), 5432, TCP, ALLOW),
        row("named port: same name, other number on another pod", &[WEB_EGRESS_NAMED_DB], web(), postgres_alt(), 6432, TCP, ALLOW),
        row("named port: another pod's number does not count", &[WEB_EGRESS_NAMED_DB], web(), postgres(), 6432, TCP, DENY),
        row("named port: this pod's other number does not count", &[WEB_EGRESS_NAMED_DB], web(), postgres_alt(), 5432, TCP, DENY),
        row("named port: a pod without that name", &[WEB_EGRESS_NAMED_DB], web(), grafana(), 5432, TCP, DENY),
        // A named port is matched by name AND protocol (default TCP): coredns's `dns` is UDP.
        row("named port: protocol must match the container port", &[WEB_EGRESS_NAMED_DNS_TCP], web(), coredns(), 53, UDP, DENY),
        row("named port: default TCP does not find a UDP container port", &[WEB_EGRESS_NAMED_DNS_TCP], web(), coredns(), 53, TCP, DENY),
        row("named port: with the right protocol", &[WEB_EGRESS_NAMED_DNS_UDP], web(), coredns(), 53, UDP, ALLOW),
        // An address has no container ports: a named port never matches it.
        row("named port never matches an address", &[WEB_EGRESS_NAMED_DB], web(), ext("198.18.0.10"), 443, TCP, DENY),
        // In an ingress rule the destination is the policy's own pod.
        row("ingress named port on the policy's pod", &[DB_INGRESS_NAMED_DB], web(), postgres_alt(), 6432, TCP, ALLOW),
        row("ingress named port: other number denied", &[DB_INGRESS_NAMED_DB], web(), postgres_alt(), 5432, TCP, DENY),
    ]);
}

#[test]
#[rustfmt::skip] // one row per line: this is a table
fn ip_blocks() {
    run_table(vec![
        // IPBlock: the address is in cidr and not in any except; boundaries included.
        row("ipBlock: inside cidr, outside except", &[WEB_EGRESS_EXTERNAL_V4], web(), ext("198.18.1.0"), 443, TCP, ALLOW),
        row("ipBlock: first address of except", &[WEB_EGRESS_EXTERNAL_V4], web(), ext("198.18.0.0"), 443, TCP, DENY),
        row("ipBlock: last address of except", &[WEB_EGRESS_EXTERNAL_V4], web(), ext("198.18.0.255"), 443, TCP, DENY),
        row("ipBlock: last address of cidr", &[WEB_EGRESS_EXTERNAL_V4], web(), ext("198.19.255.255"), 443, TCP, ALLOW),
        row("ipBlock: just past the cidr", &[WEB_EGRESS_EXTERNAL_V4], web(), ext("198.20.0.0"), 443, TCP, DENY),
        row("ipBlock: v4 block does not admit v6", &[WEB_EGRESS_EXTERNAL_V4], web(), ext("2001:db8::1"), 443, TCP, DENY),
        row("ipBlock v6: inside", &[WEB_EGRESS_EXTERNAL_V6], web(), ext("2001:db8::10"), 443, TCP, ALLOW),
        row("ipBlock v6: in except", &[WEB_EGRESS_EXTERNAL_V6], web(), ext("2001:db8:bad::1"), 443, TCP, DENY),
        row("ipBlock v6: just past except", &[WEB_EGRESS_EXTERNAL_V6], web(), ext("2001:db8:bae::"), 443, TCP, ALLOW),
        row("ipBlock v6: outside", &[WEB_EGRESS_EXTERNAL_V6], web(), ext("2001:db9::1"), 443, TCP, DENY),
        row("ipBlock v6 block does not admit v4", &[WEB_EGRESS_EXTERNAL_V6], web(), ext("198.18.1.1"), 443, TCP, DENY),
        row("ipBlock /32: that address", &[WEB_EGRESS_HOST_32], web(), ext("198.18.0.10"), 443, TCP, ALLOW),
        row("ipBlock /32: the next one", &[WEB_EGRESS_HOST_32], web(), ext("198.18.0.11"), 443, TCP, DENY),
        // Pod IPs: implementation-defined per the concepts page; like most CNIs, we match them.
        row("ipBlock matches a pod by its IP", &[WEB_EGRESS_POD_CIDR], web(), postgres(), 5432, TCP, ALLOW),
        row("ipBlock cannot match a pod whose IP is unknown", &[WEB_EGRESS_POD_CIDR], web(), postgres_no_ip(), 5432, TCP, DENY),
        row("ipBlock on ingress matches a source pod's IP", &[DB_INGRESS_FROM_CIDR], web(), postgres(), 5432, TCP, ALLOW),
        row("ipBlock except on ingress excludes a source pod's IP", &[DB_INGRESS_FROM_CIDR], worker(), postgres(), 5432, TCP, DENY),
        row("ipBlock on ingress matches an external source", &[DB_INGRESS_FROM_CIDR], ext("10.244.1.200"), postgres(), 5432, TCP, ALLOW),
    ]);
}
