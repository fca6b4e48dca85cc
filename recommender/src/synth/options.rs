//! What `recommend` (and `export`) can be asked for.

/// Output format of `recommend`/`export`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// networking.k8s.io/v1 NetworkPolicy.
    #[default]
    Networkpolicy,
    /// cilium.io/v2 CiliumNetworkPolicy, with `toFQDNs` for external names.
    Cilium,
}

/// How a workload that reached more than `max_external_peers` external addresses gets internet
/// egress (only when a cap is set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InternetEgress {
    /// ipBlock 0.0.0.0/0 and ::/0 except the cluster's pod and Service ranges, on the observed ports.
    #[default]
    Cidr,
    /// A per-namespace policy for pods labelled `networking/allow-internet-egress: "true"`.
    Label,
}

/// The names front ends accept (`--format`, `?format=`) and show.
macro_rules! named {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every accepted name, in the order of the variants.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(format!(
                        "{s:?} is not one of {}",
                        Self::NAMES.join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named!(Format { Networkpolicy => "networkpolicy", Cilium => "cilium" });
named!(InternetEgress { Cidr => "cidr", Label => "label" });

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
    /// Above this many distinct external addresses, a workload gets the internet-egress pattern
    /// (in the address families it was seen using), with a warning. `None` (the default): never;
    /// every observed address is its own ipBlock.
    pub max_external_peers: Option<usize>,
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
            max_external_peers: None,
            internet_egress: InternetEgress::Cidr,
            cluster_cidrs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in Format::NAMES {
            assert_eq!(name.parse::<Format>().unwrap().as_str(), *name);
        }
        for name in InternetEgress::NAMES {
            assert_eq!(name.parse::<InternetEgress>().unwrap().to_string(), *name);
        }
        assert!("yaml"
            .parse::<Format>()
            .unwrap_err()
            .contains("networkpolicy, cilium"));
    }
}
