//! When to try a batch again: exponential backoff with full jitter, capped, and never sooner than
//! the service asked with `Retry-After`.
//!
//! Full jitter (a uniformly random wait between zero and the exponential bound) spreads the agents
//! of a whole cluster after a recommender outage, so that they do not come back in lockstep.

use std::time::Duration;

use http::HeaderValue;

/// A `Retry-After` longer than this is taken as this: a misconfigured service must not park the
/// agents for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The bound after `failures` consecutive failures (1 or more): base × 2^(failures−1), capped.
    pub fn bound(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }

    /// The wait before the next attempt: a uniform draw in [0, bound], or `retry_after` if the
    /// service asked for longer.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let bound = self.bound(failures);
        let jittered = Duration::from_nanos(fastrand::u64(..=bound.as_nanos() as u64));
        match retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), relative to `now`.
pub fn parse_retry_after(value: &HeaderValue, now: jiff::Timestamp) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is an RFC 2822 date.
    let at = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
    let wait = at.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_to_the_cap_with_full_jitter() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        assert_eq!(b.bound(1), Duration::from_millis(100));
        assert_eq!(b.bound(4), Duration::from_millis(800));
        assert_eq!(b.bound(5), Duration::from_millis(1600));
        assert_eq!(b.bound(6), Duration::from_secs(2));
        assert_eq!(b.bound(u32::MAX), Duration::from_secs(2));
        let draws: Vec<_> = (0..200).map(|_| b.delay(3, None)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(400)));
        // Jitter: not all the same, and some well below the bound.
        assert!(draws.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(200)));
        // Retry-After is a floor, capped.
        assert!(b.delay(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now: jiff::Timestamp = "1994-11-06T08:49:30Z".parse().unwrap();
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            parse_retry_after(&v("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(&v("Sun, 06 Nov 1994 08:49:37 GMT"), now),
            Some(Duration::from_secs(7))
        );
        // A date in the past: retry now.
        assert_eq!(
            parse_retry_after(&v("Sun, 06 Nov 1994 08:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&v("soon"), now), None);
        assert_eq!(parse_retry_after(&v("-5"), now), None);
    }
}
