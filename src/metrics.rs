//! Counters of every edge decision, and their Prometheus text rendering.
//!
//! Owns: [`Metrics`] (lock-free atomic counters with a fixed label set) and [`MetricsApp`], the
//! optional HTTP endpoint (`server.metrics_listen`) that serves them.
//!
//! Invariant: counters only increase; one request increments exactly one of `forwarded`,
//! `rejected` (by field and reason) or `local` (no route, upstream unavailable).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::precondition::{Field, Reason};
use crate::problem::reason_code;

const FIELDS: [Field; 4] = [
    Field::IfMatch,
    Field::IfUnmodifiedSince,
    Field::IfNoneMatch,
    Field::IfModifiedSince,
];
const REASONS: [Reason; 9] = [
    Reason::Malformed,
    Reason::NoMatch,
    Reason::WeakOnly,
    Reason::Superseded,
    Reason::ResourceAbsent,
    Reason::ResourceExists,
    Reason::TagMatches,
    Reason::ModifiedSince,
    Reason::NotModifiedSince,
];

fn index(field: Field, reason: Reason) -> usize {
    let f = FIELDS.iter().position(|x| *x == field).unwrap_or(0);
    let r = REASONS.iter().position(|x| *x == reason).unwrap_or(0);
    f * REASONS.len() + r
}

/// Process-wide counters.
pub struct Metrics {
    /// Requests forwarded to an upstream.
    pub forwarded: AtomicU64,
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
    not_modified: [AtomicU64; FIELDS.len()],
    rejected: [AtomicU64; FIELDS.len() * REASONS.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            forwarded: AtomicU64::new(0),
            forwarded_conditional_writes: AtomicU64::new(0),
            no_route: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            learned: AtomicU64::new(0),
            required: AtomicU64::new(0),
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
        let i = FIELDS.iter().position(|x| *x == field).unwrap_or(0);
        self.not_modified[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Edge 412s counted for one field and reason.
    pub fn rejected(&self, field: Field, reason: Reason) -> u64 {
        self.rejected[index(field, reason)].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format.
    pub fn render(&self, store_entries: u64) -> String {
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
        let _ = writeln!(
            out,
            "# HELP precond_not_modified_total Reads answered 304 at the edge.\n# TYPE precond_not_modified_total counter"
        );
        for (f, v) in FIELDS.iter().zip(&self.not_modified) {
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
        for f in FIELDS {
            for r in REASONS {
                let v = self.rejected(f, r);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "precond_rejected_total{{precondition=\"{}\",reason=\"{}\"}} {v}",
                        f.header_name(),
                        reason_code(r)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP precond_store_entries Resources in the validator store.\n# TYPE precond_store_entries gauge\nprecond_store_entries {store_entries}"
        );
        out
    }
}

/// Serves [`Metrics::render`] on every path.
pub struct MetricsApp {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The store, for its size.
    pub store: Arc<crate::store::Store>,
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, _session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = self.metrics.render(self.store.len()).into_bytes();
        Response::builder()
            .status(200)
            .header("Content-Type", "text/plain; version=0.0.4")
            .header("Content-Length", body.len())
            .body(body)
            .expect("static response parts are valid")
    }
}
