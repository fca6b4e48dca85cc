//! Synthesis of least-privilege egress policies from resolved flows.

/// Output format of `recommend`/`export`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// networking.k8s.io/v1 NetworkPolicy.
    #[default]
    Networkpolicy,
    /// cilium.io/v2 CiliumNetworkPolicy, with `toFQDNs` for external names.
    Cilium,
}

/// How a workload that reached more than `max_external_peers` external addresses gets internet egress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InternetEgress {
    /// ipBlock 0.0.0.0/0 and ::/0 except the cluster's pod and Service ranges, on the observed ports.
    #[default]
    Cidr,
    /// A per-namespace policy for pods labelled `networking/allow-internet-egress: "true"`.
    Label,
}

/// What `recommend` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Only these namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Add a per-namespace `default-deny-all-egress` that allows DNS to the cluster DNS pods only.
    pub default_deny: bool,
    /// Add the complementary ingress policies for in-cluster destinations.
    pub with_ingress: bool,
    /// Also add ingress policies for shared cluster services (cluster DNS) when `with_ingress`.
    pub ingress_for_cluster_services: bool,
    pub format: Format,
    /// Widen external IPv4 / IPv6 addresses to these prefix lengths (deliberate, user-asked widening).
    pub cidr_prefix_v4: Option<u8>,
    pub cidr_prefix_v6: Option<u8>,
    /// Above this many distinct external addresses, a workload gets the internet-egress pattern.
    pub max_external_peers: usize,
    pub internet_egress: InternetEgress,
    /// Pod and Service ranges excluded from internet egress; derived from the cluster when empty.
    pub cluster_cidrs: Vec<ipnet::IpNet>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespaces: Vec::new(),
            default_deny: false,
            with_ingress: false,
            ingress_for_cluster_services: false,
            format: Format::Networkpolicy,
            cidr_prefix_v4: None,
            cidr_prefix_v6: None,
            max_external_peers: 32,
            internet_egress: InternetEgress::Cidr,
            cluster_cidrs: Vec::new(),
        }
    }
}
