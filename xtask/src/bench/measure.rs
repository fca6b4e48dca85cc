//! What the benchmark reads off processes, and how it combines noisy runs.
//!
//! The build machines are shared and noisy, so every comparison is A-B-A: a bare run before and
//! after each run with the agent (or the peer), the ratio taken against the mean of the two, and
//! the median ratio over the rounds reported. A slow phase of the machine then affects both sides
//! of one ratio instead of one side of the whole comparison.

use std::path::Path;

/// The median of `values` (the mean of the two middle ones for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// One A-B-A ratio: `b` against the mean of the bare runs around it.
pub fn ratio(before: f64, b: f64, after: f64) -> f64 {
    b / ((before + after) / 2.0)
}

/// CPU time of every thread of `pid` so far, in ns (`/proc/<pid>/task/*/schedstat`, whose first
/// field is ns on the CPU; the tick-based `stat` fields are too coarse for an idle agent).
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Peak resident set of `pid` so far, in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_field(format!("/proc/{pid}/status"), "VmHWM:").unwrap_or(0)
}

fn status_field(path: impl AsRef<Path>, name: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 1.0]), 1.0);
        assert_eq!(ratio(100.0, 99.0, 98.0), 1.0);
    }

    #[test]
    fn this_process_has_cpu_time_and_a_resident_set() {
        let me = std::process::id();
        let start = cpu_ns(me);
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(30) {}
        assert!(cpu_ns(me) > start);
        assert!(peak_rss_kib(me) > 0);
    }
}
