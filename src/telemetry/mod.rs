//! What the proxy reports to: counters today (and, with the operations work, the decision log).
//!
//! Owns: [`Metrics`]. Imports neither the proxy nor the store: the proxy calls in with pure
//! types (a [`Field`](crate::precondition::Field), a [`Reason`](crate::precondition::Reason)),
//! and the app hands the store's size to [`Metrics::render`].

pub mod metrics;

pub use metrics::Metrics;
