//! Stable, DNS-1123-valid policy names.
//!
//! `<workload>-egress` (and `<workload>-ingress` for the complementary ingress policies). When two
//! workloads of different kinds share a name in one namespace, or a name would collide with one of
//! the namespace-wide policies, every contender gets its kind inside the name
//! (`<workload>-<kind>-egress`), so the result does not depend on input order. Names stay within
//! 63 characters, the label limit, even though NetworkPolicy names may be DNS-1123 subdomains up to
//! 253: tools and CNIs (Cilium, Calico) copy policy names into labels. A longer name is truncated
//! and suffixed with a hash of the full name, which keeps it stable and unique.

use std::collections::{BTreeMap, BTreeSet};

use flow_model::WorkloadRef;

/// The longest name we produce.
pub const MAX_NAME: usize = 63;

/// Names of the namespace-wide policies; workload policies never take them.
pub const DEFAULT_DENY: &str = "default-deny-all-egress";
pub const INTERNET_EGRESS: &str = "allow-internet-egress";
const RESERVED: [&str; 2] = [DEFAULT_DENY, INTERNET_EGRESS];

/// FNV-1a, 64 bit: tiny, stable across platforms and releases (unlike `DefaultHasher`).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Lowercases and replaces anything outside `[a-z0-9.-]` with `-`, then trims non-alphanumerics
/// at both ends, so that any workload name (already DNS-1123 in practice) yields a valid name.
fn sanitize(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect();
    // `.` next to `-` or `.` is not a valid subdomain either.
    let mut out = String::with_capacity(mapped.len());
    for c in mapped.chars() {
        let prev = out.chars().last();
        if c == '.' && matches!(prev, Some('.' | '-')) {
            continue;
        }
        if c == '-' && prev == Some('.') {
            out.pop();
        }
        out.push(c);
    }
    out.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// Fits `name` (already sanitized) into [`MAX_NAME`]: unchanged when short enough, otherwise a
/// prefix, `-`, and 8 hex digits of the full name's hash.
pub fn fit(name: &str) -> String {
    if name.len() <= MAX_NAME && !name.is_empty() {
        return name.to_owned();
    }
    let hash = format!("{:08x}", fnv1a(name.as_bytes()) as u32);
    let keep = MAX_NAME - 1 - hash.len();
    let prefix: &str = &name[..keep.min(name.len())];
    let prefix = prefix.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if prefix.is_empty() {
        format!("p-{hash}")
    } else {
        format!("{prefix}-{hash}")
    }
}

/// A policy name from parts joined by `-`.
pub fn policy_name(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .map(|p| sanitize(p))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    fit(&joined)
}

/// Names for the workloads of one namespace, each with `suffix` (`egress`, `ingress`).
pub fn workload_names<'a>(
    workloads: impl IntoIterator<Item = &'a WorkloadRef>,
    suffix: &str,
) -> BTreeMap<WorkloadRef, String> {
    let workloads: BTreeSet<&WorkloadRef> = workloads.into_iter().collect();
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for w in &workloads {
        *by_name.entry(w.name.as_str()).or_default() += 1;
    }
    let mut out = BTreeMap::new();
    for w in workloads {
        let plain = policy_name(&[&w.name, suffix]);
        let clash = by_name[w.name.as_str()] > 1 || RESERVED.contains(&plain.as_str());
        let name = if clash {
            policy_name(&[&w.name, &w.kind, suffix])
        } else {
            plain
        };
        out.insert(w.clone(), name);
    }
    out
}

/// True when `name` is a valid DNS-1123 subdomain of at most [`MAX_NAME`] characters.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(kind: &str, name: &str) -> WorkloadRef {
        WorkloadRef {
            kind: kind.into(),
            name: name.into(),
        }
    }

    #[test]
    fn plain_names() {
        let names = workload_names([&w("Deployment", "web"), &w("StatefulSet", "db")], "egress");
        assert_eq!(names[&w("Deployment", "web")], "web-egress");
        assert_eq!(names[&w("StatefulSet", "db")], "db-egress");
    }

    #[test]
    fn kinds_disambiguate_shared_names() {
        let names = workload_names(
            [&w("Deployment", "web"), &w("StatefulSet", "web")],
            "egress",
        );
        assert_eq!(names[&w("Deployment", "web")], "web-deployment-egress");
        assert_eq!(names[&w("StatefulSet", "web")], "web-statefulset-egress");
    }

    #[test]
    fn reserved_names_are_avoided() {
        let names = workload_names([&w("Job", "default-deny-all")], "egress");
        assert_eq!(
            names[&w("Job", "default-deny-all")],
            "default-deny-all-job-egress"
        );
    }

    #[test]
    fn long_names_are_truncated_with_a_stable_hash() {
        let long = "a".repeat(80);
        let one = policy_name(&[&long, "egress"]);
        assert_eq!(one.len(), MAX_NAME);
        assert!(is_valid(&one), "{one}");
        assert_eq!(one, policy_name(&[&long, "egress"]));
        let other = policy_name(&[&format!("{long}b"), "egress"]);
        assert_ne!(one, other);
        assert_eq!(one[..54], other[..54]);
    }

    #[test]
    fn odd_characters_are_sanitized() {
        assert_eq!(policy_name(&["My_App.", "egress"]), "my-app-egress");
        assert_eq!(policy_name(&["a..b.-c", "egress"]), "a.b-c-egress");
        assert!(is_valid(&policy_name(&["-.-", "egress"])));
        assert!(!is_valid("Web"));
        assert!(!is_valid("web-"));
    }
}
