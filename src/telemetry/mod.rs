//! What the proxy reports to: metrics (on the `prometheus` crate), log budgets and redaction.
//!
//! Owns: [`Metrics`], [`RateLimit`] for warnings a client or an origin can cause,
//! [`noise::ListenerNoise`] for the listeners' per-connection error lines, and
//! [`redact`] for client values repeated in logs and problem bodies. Imports neither the proxy nor the store: the proxy calls in with pure
//! types (a [`Field`](crate::precondition::Field), a [`Reason`](crate::precondition::Reason)),
//! and the app hands the store's size to [`Metrics::render`].

pub mod metrics;
pub mod noise;
pub mod observe;
pub mod ratelimit;
pub mod redact;
mod registry;
pub mod report;

pub use metrics::{InFlight, Metrics, SharedGuard, StoreGauges, UpstreamGauge, Wait};
pub use ratelimit::{Budget, RateLimit};
