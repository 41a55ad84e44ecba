//! The optional HTTP listener (`server.metrics_listen`) that serves the counters.
//!
//! Owns: [`MetricsApp`], a Pingora `ServeHttp` app answering every path with the Prometheus text
//! of [`Metrics::render`] and the store's size.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::store::Store;
use crate::telemetry::{Metrics, StoreGauges};

/// Serves [`Metrics::render`] on every path.
pub(super) struct MetricsApp {
    /// The counters.
    pub(super) metrics: Arc<Metrics>,
    /// The store, for its size.
    pub(super) store: Arc<Store>,
}

/// What the store reports to the metrics, now. A scrape is also the store's housekeeping: it
/// starts a [`Store::settle`] on tokio's blocking pool, and does not wait for it (finishing a
/// resize of a large index can take long; the listener keeps answering meanwhile).
pub(super) fn store_gauges(store: &Arc<Store>) -> StoreGauges {
    let settling = store.clone();
    tokio::task::spawn_blocking(move || settling.settle());
    let (evicted_size, evicted_expired) = store.evictions();
    StoreGauges {
        entries: store.len(),
        bytes: store.bytes(),
        evicted_size,
        evicted_expired,
        census_bytes: store.census().bytes(),
    }
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, _session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = self
            .metrics
            .render(store_gauges(&self.store), &[])
            .into_bytes();
        Response::builder()
            .status(200)
            .header("Content-Type", "text/plain; version=0.0.4")
            .header("Content-Length", body.len())
            .body(body)
            .expect("static response parts are valid")
    }
}
