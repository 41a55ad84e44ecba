//! precond: a reverse proxy that enforces HTTP conditional requests (RFC 9110 §13) at the edge.
//!
//! The library's surface, deliberately small (see `docs/architecture.md` for the whole map):
//! - [`app`]: build and run a proxy from a [`config::Config`] ([`app::spawn`] for a background
//!   one that stops when dropped);
//! - [`config`]: the configuration file, validated into typed settings;
//! - [`precondition`]: the pure RFC 9110 §13 logic (entity-tags, dates, evaluation, `guard`);
//! - [`identity`]: which resource a request names (the store's key);
//! - [`store`]: what precond has learned, and the decision fast path (for benchmarks);
//! - [`telemetry`]: the counters a running proxy keeps;
//! - [`demo`]: the bundled legacy origin of the quick start and the tests.
//!
//! The Pingora glue (`proxy`) is private: it is reached through [`app`].
//!
//! Everything that does I/O (`app`, `proxy`, `upstream`, `telemetry`, `demo`, and the store's
//! Redis backend) is behind the default `proxy` feature; without it the library is the pure core
//! (`precondition`, `identity`, `config`, `store`), which the fuzz targets build.
#![warn(missing_docs)]

#[cfg(feature = "proxy")]
pub mod app;
pub mod config;
#[cfg(feature = "proxy")]
pub mod demo;
pub mod identity;
pub mod precondition;
#[cfg(feature = "proxy")]
mod proxy;
pub mod store;
#[cfg(feature = "proxy")]
pub mod telemetry;
#[cfg(feature = "proxy")]
pub mod upstream;

#[cfg(feature = "proxy")]
pub use proxy::DECISION_HEADER;
