//! Kernel timestamps (CLOCK_BOOTTIME ns) → wall-clock time.
//!
//! The kernel programs stamp flows with `bpf_ktime_get_boot_ns`, which keeps counting through
//! suspend and never jumps. Wall time is that plus the current distance between the two clocks,
//! re-read at every poll so that NTP adjustments are followed.

use jiff::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootClock {
    /// `CLOCK_REALTIME − CLOCK_BOOTTIME`, in nanoseconds.
    offset_ns: i128,
}

impl BootClock {
    /// Reads both clocks now.
    pub fn now() -> Self {
        let boot = read_clock(libc::CLOCK_BOOTTIME);
        let real = read_clock(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - boot,
        }
    }

    /// A clock with a fixed offset (for tests and replays).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// The wall-clock time of a `CLOCK_BOOTTIME` timestamp; the Unix epoch if out of range.
    pub fn to_timestamp(&self, boot_ns: u64) -> Timestamp {
        Timestamp::from_nanosecond(i128::from(boot_ns) + self.offset_ns)
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// `CLOCK_BOOTTIME` now, in nanoseconds.
    pub fn boot_now_ns() -> u64 {
        u64::try_from(read_clock(libc::CLOCK_BOOTTIME)).unwrap_or(0)
    }
}

fn read_clock(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clock ids exist on every Linux the agent
    // supports, and on failure `ts` stays zero.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_with_the_offset() {
        let c = BootClock::with_offset(1_700_000_000_000_000_000);
        assert_eq!(
            c.to_timestamp(5_000_000_000).to_string(),
            "2023-11-14T22:13:25Z"
        );
        assert_eq!(
            BootClock::with_offset(i128::MAX / 2).to_timestamp(1),
            Timestamp::UNIX_EPOCH
        );
    }

    #[test]
    fn real_clocks_give_now() {
        let c = BootClock::now();
        let t = c.to_timestamp(BootClock::boot_now_ns());
        let drift = (Timestamp::now().as_nanosecond() - t.as_nanosecond()).abs();
        assert!(drift < 5_000_000_000, "{drift}");
    }
}
