//! The options of `recommend` as the query of `GET /v1/policies`, by the same names
//! (`?namespace=shop&namespace=pay&format=cilium&default-deny=true&cidr-prefix=24,56`), and back:
//! `export --server` sends its options this way.

use std::fmt::Write;

use crate::synth::{Format, InternetEgress, Options};

/// `--cidr-prefix V4[,V6]`: prefix lengths for IPv4 and, optionally, IPv6.
pub fn parse_cidr_prefix(value: &str) -> Result<(u8, Option<u8>), String> {
    let length = |s: &str, max: u8, family: &str| -> Result<u8, String> {
        match s.trim().parse::<u8>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!(
                "{s:?} is not an {family} prefix length (0 to {max})"
            )),
        }
    };
    match value.split_once(',') {
        None => Ok((length(value, 32, "IPv4")?, None)),
        Some((v4, v6)) => Ok((length(v4, 32, "IPv4")?, Some(length(v6, 128, "IPv6")?))),
    }
}

fn boolean(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{name}={value:?}: expected true or false")),
    }
}

fn number<T: std::str::FromStr>(name: &str, value: &str, max: u64) -> Result<T, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= max)
        .and_then(|n| n.to_string().parse().ok())
        .ok_or_else(|| format!("{name}={value:?}: expected a number from 0 to {max}"))
}

/// The options a query asks for (defaults for what it does not name). An unknown parameter is an
/// error, so that a misspelt option never silently gives other policies.
pub fn options_from_query(query: &str) -> Result<Options, String> {
    let mut options = Options::default();
    let (mut prefix, mut v4, mut v6) = (None, None, None);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim();
        match &*name {
            "namespace" | "n" => {
                if value.is_empty() {
                    return Err("namespace= needs a value".into());
                }
                options.namespaces.push(value.to_owned());
            }
            "format" => {
                options.format = value
                    .parse::<Format>()
                    .map_err(|e| format!("format: {e}"))?
            }
            "default-deny" => options.default_deny = boolean(&name, value)?,
            "with-ingress" => options.with_ingress = boolean(&name, value)?,
            "ingress-for-cluster-services" => {
                options.ingress_for_cluster_services = boolean(&name, value)?
            }
            "cidr-prefix" => {
                prefix = Some(parse_cidr_prefix(value).map_err(|e| format!("cidr-prefix: {e}"))?)
            }
            "cidr-prefix-v4" => v4 = Some(number::<u8>(&name, value, 32)?),
            "cidr-prefix-v6" => v6 = Some(number::<u8>(&name, value, 128)?),
            "max-external-peers" => {
                options.max_external_peers = Some(number::<usize>(&name, value, u32::MAX as u64)?)
            }
            "internet-egress" => {
                options.internet_egress = value
                    .parse::<InternetEgress>()
                    .map_err(|e| format!("internet-egress: {e}"))?
            }
            "cluster-cidr" => options.cluster_cidrs.push(
                value
                    .parse()
                    .map_err(|e| format!("cluster-cidr={value:?}: {e}"))?,
            ),
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    options.cidr_prefix_v4 = v4.or(prefix.map(|(v4, _)| v4));
    options.cidr_prefix_v6 = v6.or(prefix.and_then(|(_, v6)| v6));
    Ok(options)
}

/// The query that asks for `options` (only what differs from the defaults).
pub fn query_from_options(options: &Options) -> String {
    let defaults = Options::default();
    let mut query = form_urlencoded::Serializer::new(String::new());
    for ns in &options.namespaces {
        query.append_pair("namespace", ns);
    }
    if options.format != defaults.format {
        query.append_pair("format", options.format.as_str());
    }
    let mut flag = |name: &str, on: bool| {
        if on {
            query.append_pair(name, "true");
        }
    };
    flag("default-deny", options.default_deny);
    flag("with-ingress", options.with_ingress);
    flag(
        "ingress-for-cluster-services",
        options.ingress_for_cluster_services,
    );
    let mut number = String::new();
    if let Some(v4) = options.cidr_prefix_v4 {
        number.clear();
        let _ = write!(number, "{v4}");
        query.append_pair("cidr-prefix-v4", &number);
    }
    if let Some(v6) = options.cidr_prefix_v6 {
        number.clear();
        let _ = write!(number, "{v6}");
        query.append_pair("cidr-prefix-v6", &number);
    }
    if let Some(n) = options.max_external_peers {
        query.append_pair("max-external-peers", &n.to_string());
    }
    if options.internet_egress != defaults.internet_egress {
        query.append_pair("internet-egress", options.internet_egress.as_str());
    }
    for cidr in &options.cluster_cidrs {
        query.append_pair("cluster-cidr", &cidr.to_string());
    }
    query.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_round_trips() {
        let options = Options {
            namespaces: vec!["shop".into(), "pay ments".into()],
            default_deny: true,
            with_ingress: true,
            ingress_for_cluster_services: true,
            format: Format::Cilium,
            cidr_prefix_v4: Some(24),
            cidr_prefix_v6: Some(56),
            max_external_peers: Some(7),
            internet_egress: InternetEgress::Label,
            cluster_cidrs: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/48".parse().unwrap()],
        };
        assert_eq!(
            options_from_query(&query_from_options(&options)).unwrap(),
            options
        );
        assert_eq!(options_from_query("").unwrap(), Options::default());
        assert_eq!(query_from_options(&Options::default()), "");
    }

    #[test]
    fn cidr_prefix_takes_one_or_both_families() {
        assert_eq!(parse_cidr_prefix("24"), Ok((24, None)));
        assert_eq!(parse_cidr_prefix("24,56"), Ok((24, Some(56))));
        assert!(parse_cidr_prefix("33").is_err());
        assert!(parse_cidr_prefix("24,129").is_err());
        assert!(parse_cidr_prefix("x").is_err());
    }

    #[test]
    fn recommend_spellings_are_read() {
        let o = options_from_query("n=a&default-deny&cidr-prefix=24,56&cidr-prefix-v6=64").unwrap();
        assert_eq!(o.namespaces, ["a"]);
        assert!(o.default_deny);
        assert_eq!((o.cidr_prefix_v4, o.cidr_prefix_v6), (Some(24), Some(64)));
        assert!(options_from_query("defaultdeny=true")
            .unwrap_err()
            .contains("unknown parameter"));
        assert!(options_from_query("format=yaml").is_err());
        assert!(options_from_query("cidr-prefix-v4=33").is_err());
        assert!(options_from_query("with-ingress=maybe").is_err());
    }
}
