//! precond: a reverse proxy that enforces HTTP conditional requests (RFC 9110 §13) at the edge.
pub mod config;
pub mod demo;
pub mod enforce;
pub mod fastpath;
pub mod fetch;
pub mod locks;
pub mod metrics;
pub mod precondition;
pub mod problem;
pub mod proxy;
pub mod server;
pub mod store;
pub mod summary;
