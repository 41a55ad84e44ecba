//! Counters of every edge decision, on the `prometheus` crate, and their exposition.
//!
//! Owns: [`Metrics`] (one [`Registry`] per proxy: counters, histograms and gauges, plus the
//! process collector), [`StoreGauges`] and [`UpstreamGauge`] (what the app hands over at scrape
//! time), [`SharedGuard`]. Serving them over HTTP is the app's business (`app::admin`).
//!
//! Invariants:
//! - Counters only increase. The store's eviction counts, read at scrape time, are carried over
//!   by their increase (under one lock, so concurrent scrapes cannot count one twice).
//! - Only label combinations that can occur are exposed: a labelled series appears when it is
//!   first counted (`precond_rejected_total{precondition, reason}`), or is created up front when
//!   every value of its label can occur (`precond_fence_bypassed_total{cause}`).
//! - Every label value is one of a fixed set decided by precond's code, or a name from the
//!   configuration (a route's prefix, an upstream's name): a client cannot add series.
//! - Names and units follow Prometheus conventions: `_total` counters, `_seconds` and `_bytes`.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};

use crate::precondition::{Field, Reason};

use super::observe::ObserveMetrics;
use super::registry::Builder;

/// Bucket bounds of request and origin durations, in seconds: 100 µs (an edge answer) to 10 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

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

/// Values read from elsewhere at scrape time.
struct Scraped {
    store_entries: IntGauge,
    store_bytes: IntGauge,
    census_bytes: IntGauge,
    evictions: IntCounterVec,
    upstream_servers: IntGaugeVec,
    /// Log lines dropped by [`super::noise`], carried over by their increase.
    log_lines_dropped: IntCounter,
    /// Serialises scrapes: eviction counts are carried over by their increase.
    lock: Mutex<()>,
}

/// Process-wide metrics of one proxy.
pub struct Metrics {
    registry: Registry,
    /// Requests forwarded to an upstream.
    pub forwarded: IntCounter,
    /// Requests answered 503 because no server of their upstream was healthy.
    pub upstream_unavailable: IntCounter,
    /// Attempts sent to another server after a connection could not be established.
    pub upstream_connect_retries: IntCounter,
    /// Enforce writes answered 503 because the shared store (Redis) did not answer in time.
    pub shared_store_unavailable: IntCounter,
    /// `observe` routes: would-be refusals, the origin's answers to them, the census.
    pub observe: ObserveMetrics,
    /// Guard decisions with a shared store, by [`SharedGuard`] outcome (only with Redis).
    shared_guard: IntCounterVec,
    /// Forwarded writes that carried a precondition the edge could not prove false.
    pub forwarded_conditional_writes: IntCounter,
    /// Requests with no matching route (404 at the edge).
    pub no_route: IntCounter,
    /// Upstream exchanges that failed (502/503/504 at the edge).
    pub upstream_failures: IntCounter,
    /// Upstream responses the store learned from.
    pub learned: IntCounter,
    /// 428 answers (enforce routes).
    pub required: IntCounter,
    /// Requests whose resource key is longer than `store.max_key_bytes` (never learned).
    pub key_too_long: IntCounter,
    /// Guard writes that waited at the in-flight fence for a write naming the same tag.
    pub fence_waits: IntCounter,
    /// Of those, refused once the write they waited for proved the tag replaced.
    pub fence_refused: IntCounter,
    /// Guard writes forwarded without waiting out the fence: `fence_wait` elapsed.
    pub fence_timeouts: IntCounter,
    /// Guard writes forwarded without waiting at the fence: `fence_waiters` reached.
    pub fence_full: IntCounter,
    /// Origin answers with a weak `ETag` on guard routes under `policy = "mismatch"` (where every
    /// weak `If-Match` is refused).
    pub weak_tags_under_mismatch: IntCounter,
    /// Writes forwarded and not answered yet (see [`InFlight`]).
    writes_in_flight: IntGauge,
    not_modified: IntCounterVec,
    rejected: IntCounterVec,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    lock_wait: HistogramVec,
    shared_store: HistogramVec,
    reloads: IntCounterVec,
    scraped: Scraped,
    names: Vec<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process collector is registered once");
        let b = Builder::new(&registry);
        let shared_guards = b.counters(
            "precond_shared_guard_decisions_total",
            "Guard writes decided with the shared store, by outcome.",
            &["outcome"],
        );
        let fence_bypassed = b.counters(
            "precond_fence_bypassed_total",
            "Guard writes forwarded without waiting out the fence.",
            &["cause"],
        );
        let scraped = Scraped {
            store_entries: b.gauge("precond_store_entries", "Resources in the validator store."),
            store_bytes: b.gauge(
                "precond_store_bytes",
                "Bytes of learned state, as store.max_bytes counts them.",
            ),
            census_bytes: b.gauge(
                "precond_census_bytes",
                "Bytes of the lost-update census, as store.census_max_bytes counts them.",
            ),
            evictions: b.counters(
                "precond_store_evictions_total",
                "Resources the store dropped: size (a bound was reached), expired (store.ttl).",
                &["cause"],
            ),
            upstream_servers: b.gauges(
                "precond_upstream_servers",
                "Servers of each upstream, by health.",
                &["upstream", "state"],
            ),
            log_lines_dropped: b.counter(
                "precond_log_lines_dropped_total",
                "Log lines not written: Pingora's listener errors past one a second.",
            ),
            lock: Mutex::new(()),
        };
        for cause in ["size", "expired"] {
            scraped.evictions.with_label_values(&[cause]);
        }
        Metrics {
            forwarded: b.counter(
                "precond_forwarded_total",
                "Requests forwarded to an upstream.",
            ),
            forwarded_conditional_writes: b.counter(
                "precond_forwarded_conditional_writes_total",
                "Forwarded writes whose precondition the edge could not prove false.",
            ),
            upstream_unavailable: b.counter(
                "precond_upstream_unavailable_total",
                "Requests answered 503 because no server of their upstream was healthy.",
            ),
            upstream_connect_retries: b.counter(
                "precond_upstream_connect_retries_total",
                "Attempts sent to another server after a connection could not be established.",
            ),
            shared_store_unavailable: b.counter(
                "precond_shared_store_unavailable_total",
                "Enforce writes answered 503 because the shared store did not answer in time.",
            ),
            no_route: b.counter(
                "precond_no_route_total",
                "Requests that matched no route.",
            ),
            upstream_failures: b.counter(
                "precond_upstream_failures_total",
                "Upstream exchanges that failed.",
            ),
            learned: b.counter(
                "precond_learned_total",
                "Upstream responses learned from.",
            ),
            required: b.counter(
                "precond_required_total",
                "Writes answered 428 at the edge (enforce routes).",
            ),
            key_too_long: b.counter(
                "precond_key_too_long_total",
                "Requests whose resource key exceeds store.max_key_bytes (forwarded, never learned).",
            ),
            fence_waits: b.counter(
                "precond_fence_waits_total",
                "Guard writes that waited for a write in flight naming the same tag.",
            ),
            fence_refused: b.counter(
                "precond_fence_refused_total",
                "Guard writes refused after waiting: the write they waited for replaced their tag.",
            ),
            weak_tags_under_mismatch: b.counter(
                "precond_weak_tags_under_mismatch_total",
                "Origin answers with a weak ETag on guard routes with policy mismatch.",
            ),
            shared_guard: shared_guards,
            fence_timeouts: fence_bypassed.with_label_values(&["timeout"]),
            fence_full: fence_bypassed.with_label_values(&["full"]),
            writes_in_flight: b.gauge(
                "precond_writes_in_flight",
                "Writes forwarded to an upstream and not answered yet.",
            ),
            not_modified: b.counters(
                "precond_not_modified_total",
                "Reads answered 304 at the edge.",
                &["precondition"],
            ),
            rejected: b.counters(
                "precond_rejected_total",
                "Writes answered 412 at the edge.",
                &["precondition", "reason"],
            ),
            requests: b.counters(
                "precond_requests_total",
                "Requests finished, by route (its path prefix; empty when none matched), mode and decision.",
                &["route", "mode", "decision"],
            ),
            request_duration: b.histograms(
                "precond_request_duration_seconds",
                "Time from a request's arrival to the end of its answer, by decision.",
                &["decision"],
                &DURATION_BUCKETS,
            ),
            upstream_duration: b.histograms(
                "precond_upstream_response_seconds",
                "Origin latency: from a request sent upstream to its response header, by upstream.",
                &["upstream"],
                &DURATION_BUCKETS,
            ),
            lock_wait: b.histograms(
                "precond_lock_wait_seconds",
                "Time writes waited: for enforce's per-resource write lock (write) and shared lease (lease), at guard's fence (fence).",
                &["lock"],
                &DURATION_BUCKETS,
            ),
            shared_store: b.histograms(
                "precond_shared_store_seconds",
                "Round trips to the shared store (Redis), by operation.",
                &["op"],
                &DURATION_BUCKETS,
            ),
            reloads: b.counters(
                "precond_config_reloads_total",
                "Configuration reloads, by result.",
                &["result"],
            ),
            observe: ObserveMetrics::new(&b),
            scraped,
            names: b.names(),
            registry,
        }
    }
}

/// Which wait a [`Metrics::waited`] time is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// `enforce`: the per-resource write lock.
    WriteLock,
    /// `enforce` with a shared store: the resource's lease in Redis.
    Lease,
    /// `guard`: the in-flight fence.
    Fence,
}

/// A forwarded write not answered yet: counted in `precond_writes_in_flight` until dropped.
#[derive(Debug)]
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Counts an edge 412.
    pub fn reject(&self, field: Field, reason: Reason) {
        self.rejected
            .with_label_values(&[field.header_name(), reason.code()])
            .inc();
    }

    /// Counts an edge 304.
    pub fn not_modified(&self, field: Field) {
        self.not_modified
            .with_label_values(&[field.header_name()])
            .inc();
    }

    /// Counts a guard decision made with a shared store.
    pub fn shared_guard(&self, outcome: SharedGuard) {
        self.shared_guard.with_label_values(&[outcome.name()]).inc();
    }

    /// Guard decisions made with a shared store, with this outcome.
    pub fn shared_guarded(&self, outcome: SharedGuard) -> u64 {
        self.shared_guard
            .get_metric_with_label_values(&[outcome.name()])
            .map_or(0, |c| c.get())
    }

    /// Edge 412s counted for one field and reason.
    pub fn rejected(&self, field: Field, reason: Reason) -> u64 {
        self.rejected
            .get_metric_with_label_values(&[field.header_name(), reason.code()])
            .map_or(0, |c| c.get())
    }

    /// Counts a finished request: its route's prefix and mode (empty and `none` when no route
    /// matched), its decision (a fixed word of precond's), and how long it took.
    pub fn request(&self, route: &str, mode: &str, decision: &str, took: Duration) {
        self.requests
            .with_label_values(&[route, mode, decision])
            .inc();
        self.request_duration
            .with_label_values(&[decision])
            .observe(took.as_secs_f64());
    }

    /// Records an origin's latency (request sent to response header).
    pub fn upstream_responded(&self, upstream: &str, took: Duration) {
        self.upstream_duration
            .with_label_values(&[upstream])
            .observe(took.as_secs_f64());
    }

    /// Records how long a write waited.
    pub fn waited(&self, wait: Wait, took: Duration) {
        let lock = match wait {
            Wait::WriteLock => "write",
            Wait::Lease => "lease",
            Wait::Fence => "fence",
        };
        self.lock_wait
            .with_label_values(&[lock])
            .observe(took.as_secs_f64());
    }

    /// Records a round trip to the shared store (`op` is a fixed word of precond's).
    pub fn shared_store_round_trip(&self, op: &str, took: Duration) {
        self.shared_store
            .with_label_values(&[op])
            .observe(took.as_secs_f64());
    }

    /// Counts a configuration reload (`result`: `ok`, `invalid` or `refused`).
    pub fn reloaded(&self, result: &str) {
        self.reloads.with_label_values(&[result]).inc();
    }

    /// Configuration reloads counted with `result`.
    pub fn reloads(&self, result: &str) -> u64 {
        self.reloads
            .get_metric_with_label_values(&[result])
            .map_or(0, |c| c.get())
    }

    /// A write forwarded: counted in flight until the returned guard is dropped.
    pub fn write_in_flight(&self) -> InFlight {
        self.writes_in_flight.inc();
        InFlight(self.writes_in_flight.clone())
    }

    /// The name of every metric precond registers (labelled ones included, even before their
    /// first series).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The Prometheus text exposition of every metric, with the store's and the upstreams'
    /// values as of now.
    pub fn render(&self, store: StoreGauges, upstreams: &[UpstreamGauge<'_>]) -> String {
        let s = &self.scraped;
        {
            let _scrape = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.store_entries.set(clamp(store.entries));
            s.store_bytes.set(clamp(store.bytes));
            s.census_bytes.set(clamp(store.census_bytes));
            for (cause, now) in [
                ("size", store.evicted_size),
                ("expired", store.evicted_expired),
            ] {
                let c = s.evictions.with_label_values(&[cause]);
                c.inc_by(now.saturating_sub(c.get()));
            }
            let dropped = &s.log_lines_dropped;
            dropped.inc_by(super::noise::dropped().saturating_sub(dropped.get()));
            for g in upstreams {
                let unhealthy = g.servers.saturating_sub(g.healthy);
                for (state, n) in [("healthy", g.healthy), ("unhealthy", unhealthy)] {
                    s.upstream_servers
                        .with_label_values(&[g.name, state])
                        .set(clamp(n as u64));
                }
            }
        }
        let mut out = Vec::new();
        // Encoding into memory fails only on an invalid metric, which registration refused.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A count as a gauge value.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_and_reason_pair_has_its_own_counter() {
        let m = Metrics::default();
        for f in Field::ALL {
            for r in Reason::ALL {
                assert_eq!(m.rejected(f, r), 0, "{f:?} {r:?} counted before its turn");
                m.reject(f, r);
                assert_eq!(m.rejected(f, r), 1, "{f:?} {r:?}");
            }
        }
        let text = m.render(StoreGauges::default(), &[]);
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
    fn only_series_that_occurred_are_exposed() {
        let m = Metrics::default();
        m.not_modified(Field::IfNoneMatch);
        let text = m.render(StoreGauges::default(), &[]);
        assert!(text.contains("precond_not_modified_total{precondition=\"If-None-Match\"} 1"));
        assert!(!text.contains("precond_not_modified_total{precondition=\"If-Match\"}"));
        assert!(!text.contains("precond_rejected_total{"), "{text}");
        // Nor the shared store's, without one.
        assert!(
            !text.contains("precond_shared_guard_decisions_total"),
            "{text}"
        );
    }

    #[test]
    fn scraped_counters_carry_the_increase_only() {
        let m = Metrics::default();
        let gauges = |size| StoreGauges {
            evicted_size: size,
            entries: 7,
            ..StoreGauges::default()
        };
        m.render(gauges(3), &[]);
        let text = m.render(gauges(5), &[]);
        assert!(
            text.contains("precond_store_evictions_total{cause=\"size\"} 5"),
            "{text}"
        );
        assert!(text.contains("precond_store_entries 7"), "{text}");
        let up = [UpstreamGauge {
            name: "api",
            healthy: 1,
            servers: 3,
        }];
        let text = m.render(gauges(5), &up);
        assert!(
            text.contains("precond_store_evictions_total{cause=\"size\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("precond_upstream_servers{state=\"unhealthy\",upstream=\"api\"} 2"),
            "{text}"
        );
    }

    /// The shipped dashboard asks only for metrics precond has.
    #[test]
    fn the_dashboard_names_only_registered_metrics() {
        let m = Metrics::default();
        let dashboard = include_str!("../../deploy/grafana-dashboard.json");
        let mut used = 0;
        for (i, _) in dashboard.match_indices("precond_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                m.names().iter().any(|n| n == base || n == &name),
                "the dashboard uses {name}, which precond does not register"
            );
            used += 1;
        }
        assert!(used >= 10, "{used}");
    }

    #[test]
    fn in_flight_writes_are_counted_until_dropped() {
        let m = Metrics::default();
        let a = m.write_in_flight();
        let b = m.write_in_flight();
        assert_eq!(m.writes_in_flight.get(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.writes_in_flight.get(), 0);
    }
}
