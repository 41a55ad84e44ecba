//! Counters of every edge decision, and their Prometheus text rendering.
//!
//! Owns: [`Metrics`] (lock-free atomic counters with a fixed label set). Serving them over HTTP is
//! the app's business (`app::metrics_listener`).
//!
//! Invariants:
//! - Counters only increase.
//! - Every (precondition, reason) pair has its own counter by construction: slots are indexed by
//!   the exhaustive [`Field::index`] and [`Reason::index`], so a new reason cannot be counted as
//!   another one.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::precondition::{Field, Reason};

use super::observe::ObserveMetrics;

const FIELDS: usize = Field::ALL.len();
const REASONS: usize = Reason::ALL.len();

/// The counter slot of a (field, reason) pair.
const fn index(field: Field, reason: Reason) -> usize {
    field.index() * REASONS + reason.index()
}

/// What the store reports (handed over by the app: telemetry does not import the store).
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreGauges {
    /// Resources held.
    pub entries: u64,
    /// Bytes held, as `store.max_bytes` counts them.
    pub bytes: u64,
    /// Resources dropped because a bound was reached.
    pub evicted_size: u64,
    /// Resources dropped because they expired.
    pub evicted_expired: u64,
    /// Bytes of the lost-update census (`observe` routes).
    pub census_bytes: u64,
}

/// The health of one upstream's servers (handed over by the app).
#[derive(Clone, Debug)]
pub struct UpstreamGauge<'a> {
    /// The upstream's name.
    pub name: &'a str,
    /// Servers in the selection (healthy, or not checked).
    pub healthy: usize,
    /// Servers known (resolved).
    pub servers: usize,
}

/// `precond_upstream_servers{upstream, state}`: servers per upstream, healthy and unhealthy.
pub fn render_upstreams(gauges: &[UpstreamGauge<'_>]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP precond_upstream_servers Servers of each upstream, by health.\n# TYPE precond_upstream_servers gauge"
    );
    for g in gauges {
        let name = label(g.name);
        let _ = writeln!(
            out,
            "precond_upstream_servers{{upstream=\"{name}\",state=\"healthy\"}} {}",
            g.healthy
        );
        let _ = writeln!(
            out,
            "precond_upstream_servers{{upstream=\"{name}\",state=\"unhealthy\"}} {}",
            g.servers.saturating_sub(g.healthy)
        );
    }
    out
}

/// A label value, escaped as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How a `guard` write was decided with a shared store (`store.backend = "redis"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedGuard {
    /// The local store's refusal, confirmed by the shared facts.
    Confirmed,
    /// Refused on shared facts the local store did not hold (learned through another instance).
    Refused,
    /// The local store would have refused; the shared facts do not prove it: forwarded.
    Overruled,
    /// Redis did not answer: forwarded.
    Unavailable,
}

impl SharedGuard {
    /// Every outcome, in counter order.
    pub const ALL: [SharedGuard; 4] = [
        SharedGuard::Confirmed,
        SharedGuard::Refused,
        SharedGuard::Overruled,
        SharedGuard::Unavailable,
    ];

    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            SharedGuard::Confirmed => "confirmed",
            SharedGuard::Refused => "refused",
            SharedGuard::Overruled => "overruled",
            SharedGuard::Unavailable => "unavailable",
        }
    }
}

/// Process-wide counters.
pub struct Metrics {
    /// Requests forwarded to an upstream.
    pub forwarded: AtomicU64,
    /// Requests answered 503 because no server of their upstream was healthy.
    pub upstream_unavailable: AtomicU64,
    /// Attempts sent to another server after a connection could not be established.
    pub upstream_connect_retries: AtomicU64,
    /// Enforce writes answered 503 because the shared store (Redis) did not answer in time.
    pub shared_store_unavailable: AtomicU64,
    /// `observe` routes: would-be refusals, the origin's answers to them, the census.
    pub observe: ObserveMetrics,
    /// Guard decisions with a shared store, by [`SharedGuard`] outcome.
    shared_guard: [AtomicU64; SharedGuard::ALL.len()],
    /// Forwarded writes that carried a precondition the edge could not prove false.
    pub forwarded_conditional_writes: AtomicU64,
    /// Requests with no matching route (404 at the edge).
    pub no_route: AtomicU64,
    /// Upstream exchanges that failed (502/503/504 at the edge).
    pub upstream_failures: AtomicU64,
    /// Upstream responses the store learned from.
    pub learned: AtomicU64,
    /// 428 answers (enforce routes).
    pub required: AtomicU64,
    /// Requests whose resource key is longer than `store.max_key_bytes` (never learned).
    pub key_too_long: AtomicU64,
    /// Guard writes that waited at the in-flight fence for a write naming the same tag.
    pub fence_waits: AtomicU64,
    /// Of those, refused once the write they waited for proved the tag replaced.
    pub fence_refused: AtomicU64,
    /// Guard writes forwarded without waiting out the fence: `fence_wait` elapsed.
    pub fence_timeouts: AtomicU64,
    /// Guard writes forwarded without waiting at the fence: `fence_waiters` reached.
    pub fence_full: AtomicU64,
    /// Origin answers with a weak `ETag` on guard routes under `policy = "mismatch"` (where every
    /// weak `If-Match` is refused).
    pub weak_tags_under_mismatch: AtomicU64,
    not_modified: [AtomicU64; FIELDS],
    rejected: [AtomicU64; FIELDS * REASONS],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            forwarded: AtomicU64::new(0),
            upstream_unavailable: AtomicU64::new(0),
            upstream_connect_retries: AtomicU64::new(0),
            shared_store_unavailable: AtomicU64::new(0),
            observe: ObserveMetrics::default(),
            shared_guard: std::array::from_fn(|_| AtomicU64::new(0)),
            forwarded_conditional_writes: AtomicU64::new(0),
            no_route: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            learned: AtomicU64::new(0),
            required: AtomicU64::new(0),
            key_too_long: AtomicU64::new(0),
            fence_waits: AtomicU64::new(0),
            fence_refused: AtomicU64::new(0),
            fence_timeouts: AtomicU64::new(0),
            fence_full: AtomicU64::new(0),
            weak_tags_under_mismatch: AtomicU64::new(0),
            not_modified: std::array::from_fn(|_| AtomicU64::new(0)),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Metrics {
    /// Counts an edge 412.
    pub fn reject(&self, field: Field, reason: Reason) {
        self.rejected[index(field, reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an edge 304.
    pub fn not_modified(&self, field: Field) {
        self.not_modified[field.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a guard decision made with a shared store.
    pub fn shared_guard(&self, outcome: SharedGuard) {
        self.shared_guard[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Guard decisions made with a shared store, with this outcome.
    pub fn shared_guarded(&self, outcome: SharedGuard) -> u64 {
        self.shared_guard[outcome as usize].load(Ordering::Relaxed)
    }

    /// Edge 412s counted for one field and reason.
    pub fn rejected(&self, field: Field, reason: Reason) -> u64 {
        self.rejected[index(field, reason)].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format.
    pub fn render(&self, store: StoreGauges) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            "precond_forwarded_total",
            "Requests forwarded to an upstream.",
            &self.forwarded,
        );
        counter(
            "precond_forwarded_conditional_writes_total",
            "Forwarded writes whose precondition the edge could not prove false.",
            &self.forwarded_conditional_writes,
        );
        counter(
            "precond_upstream_unavailable_total",
            "Requests answered 503 because no server of their upstream was healthy.",
            &self.upstream_unavailable,
        );
        counter(
            "precond_upstream_connect_retries_total",
            "Attempts sent to another server after a connection could not be established.",
            &self.upstream_connect_retries,
        );
        counter(
            "precond_shared_store_unavailable_total",
            "Enforce writes answered 503 because the shared store did not answer in time.",
            &self.shared_store_unavailable,
        );
        counter(
            "precond_no_route_total",
            "Requests that matched no route.",
            &self.no_route,
        );
        counter(
            "precond_upstream_failures_total",
            "Upstream exchanges that failed.",
            &self.upstream_failures,
        );
        counter(
            "precond_learned_total",
            "Upstream responses learned from.",
            &self.learned,
        );
        counter(
            "precond_required_total",
            "Writes answered 428 at the edge (enforce routes).",
            &self.required,
        );
        counter(
            "precond_key_too_long_total",
            "Requests whose resource key exceeds store.max_key_bytes (forwarded, never learned).",
            &self.key_too_long,
        );
        counter(
            "precond_fence_waits_total",
            "Guard writes that waited for a write in flight naming the same tag.",
            &self.fence_waits,
        );
        counter(
            "precond_fence_refused_total",
            "Guard writes refused after waiting: the write they waited for replaced their tag.",
            &self.fence_refused,
        );
        counter(
            "precond_weak_tags_under_mismatch_total",
            "Origin answers with a weak ETag on guard routes with policy mismatch.",
            &self.weak_tags_under_mismatch,
        );
        let _ = writeln!(
            out,
            "# HELP precond_shared_guard_decisions_total Guard writes decided with the shared store, by outcome.\n# TYPE precond_shared_guard_decisions_total counter"
        );
        for o in SharedGuard::ALL {
            let _ = writeln!(
                out,
                "precond_shared_guard_decisions_total{{outcome=\"{}\"}} {}",
                o.name(),
                self.shared_guard[o as usize].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP precond_fence_bypassed_total Guard writes forwarded without waiting out the fence.\n# TYPE precond_fence_bypassed_total counter"
        );
        for (cause, v) in [
            ("timeout", &self.fence_timeouts),
            ("full", &self.fence_full),
        ] {
            let _ = writeln!(
                out,
                "precond_fence_bypassed_total{{cause=\"{cause}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP precond_not_modified_total Reads answered 304 at the edge.\n# TYPE precond_not_modified_total counter"
        );
        for (f, v) in Field::ALL.iter().zip(&self.not_modified) {
            let _ = writeln!(
                out,
                "precond_not_modified_total{{precondition=\"{}\"}} {}",
                f.header_name(),
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP precond_rejected_total Writes answered 412 at the edge.\n# TYPE precond_rejected_total counter"
        );
        for f in Field::ALL {
            for r in Reason::ALL {
                let v = self.rejected(f, r);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "precond_rejected_total{{precondition=\"{}\",reason=\"{}\"}} {v}",
                        f.header_name(),
                        r.code()
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP precond_store_entries Resources in the validator store.\n# TYPE precond_store_entries gauge\nprecond_store_entries {}",
            store.entries
        );
        let _ = writeln!(
            out,
            "# HELP precond_store_bytes Bytes of learned state, as store.max_bytes counts them.\n# TYPE precond_store_bytes gauge\nprecond_store_bytes {}",
            store.bytes
        );
        let _ = writeln!(
            out,
            "# HELP precond_store_evictions_total Resources the store dropped: size (a bound was reached), expired (store.ttl).\n# TYPE precond_store_evictions_total counter\nprecond_store_evictions_total{{cause=\"size\"}} {}\nprecond_store_evictions_total{{cause=\"expired\"}} {}",
            store.evicted_size, store.evicted_expired
        );
        self.observe.render(&mut out, store.census_bytes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_and_reason_pair_has_its_own_counter() {
        let m = Metrics::default();
        let mut n = 0;
        for f in Field::ALL {
            for r in Reason::ALL {
                assert_eq!(m.rejected(f, r), 0, "{f:?} {r:?} counted before its turn");
                m.reject(f, r);
                n += 1;
                assert_eq!(m.rejected(f, r), 1, "{f:?} {r:?}");
            }
        }
        assert_eq!(n, m.rejected.len(), "one slot per pair, none unused");
        let text = m.render(StoreGauges::default());
        for f in Field::ALL {
            for r in Reason::ALL {
                let line = format!(
                    "precond_rejected_total{{precondition=\"{}\",reason=\"{}\"}} 1",
                    f.header_name(),
                    r.code()
                );
                assert!(text.contains(&line), "{line}");
            }
        }
    }

    #[test]
    fn indexes_follow_the_order_of_all() {
        for (i, f) in Field::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
