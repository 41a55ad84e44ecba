//! Rate limits for log lines a client (or an origin) can cause: one warning per period, not one
//! per request.
//!
//! Owns: [`RateLimit`], a lock-free "at most once per period" gate, and [`Budget`], "at most
//! n per second".
//!
//! Invariant: [`RateLimit::ready`] returns `true` at most once per period, whatever the number of
//! threads asking (one compare-and-swap decides).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A gate that opens at most once per period.
#[derive(Debug)]
pub struct RateLimit {
    origin: Instant,
    /// Milliseconds since `origin` of the last opening, plus one (0: never opened).
    last: AtomicU64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl RateLimit {
    /// Whether the caller may log now: `true` the first time, then at most once per `period`.
    pub fn ready(&self, period: Duration) -> bool {
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < period.as_millis() as u64 {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// At most a number of openings per second (lock-free; a second's count may be off by the
/// number of threads racing at its start).
#[derive(Debug)]
pub struct Budget {
    origin: Instant,
    /// The second (since `origin`) being counted.
    second: AtomicU64,
    used: AtomicU64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            origin: Instant::now(),
            second: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }
}

impl Budget {
    /// Whether one more may go this second (`per_second` at most).
    pub fn take(&self, per_second: u64) -> bool {
        let now = self.origin.elapsed().as_secs();
        let second = self.second.load(Ordering::Relaxed);
        if second != now
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(1, Ordering::Relaxed) < per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_its_number_per_second() {
        let b = Budget::default();
        let allowed = (0..1000).filter(|_| b.take(100)).count();
        assert!((100..=200).contains(&allowed), "{allowed}");
    }

    #[test]
    fn opens_once_per_period_across_threads() {
        let gate = std::sync::Arc::new(RateLimit::default());
        let opened: usize = (0..8)
            .map(|_| {
                let g = gate.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| g.ready(Duration::from_secs(3600)))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(opened, 1);
        assert!(gate.ready(Duration::ZERO), "a zero period always opens");
    }
}
