//! What the proxy reports to: counters today (and, with the operations work, the decision log).
//!
//! Owns: [`Metrics`], [`RateLimit`] for warnings a client or an origin can cause, and
//! [`redact`] for client values repeated in logs and problem bodies. Imports neither the proxy nor the store: the proxy calls in with pure
//! types (a [`Field`](crate::precondition::Field), a [`Reason`](crate::precondition::Reason)),
//! and the app hands the store's size to [`Metrics::render`].

pub mod metrics;
pub mod observe;
pub mod ratelimit;
pub mod redact;
pub mod report;

pub use metrics::{render_upstreams, Metrics, SharedGuard, StoreGauges, UpstreamGauge};
pub use ratelimit::{Budget, RateLimit};
