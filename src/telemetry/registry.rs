//! Registration of precond's metrics in a proxy's own [`Registry`] (one per proxy, so that
//! several proxies in one process, as in the tests, keep their counts apart).
//!
//! Owns: [`Builder`]. Invariant: a name is registered once per registry (a second registration
//! is a bug, which `expect` reports the first time any test builds the metrics).

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Registers metrics in one registry; a name registered twice is a bug, caught by every test
/// that builds [`Metrics`](super::Metrics).
pub(super) struct Builder<'r> {
    registry: &'r Registry,
    /// Every name registered, in order (for [`Metrics::names`](super::Metrics::names)).
    names: std::cell::RefCell<Vec<String>>,
}

impl<'r> Builder<'r> {
    /// Registers into `registry`.
    pub(super) fn new(registry: &'r Registry) -> Builder<'r> {
        Builder {
            registry,
            names: Default::default(),
        }
    }

    /// The names registered so far.
    pub(super) fn names(&self) -> Vec<String> {
        self.names.borrow().clone()
    }

    fn add<C: Collector + Clone + 'static>(&self, c: C) -> C {
        let mut names = self.names.borrow_mut();
        names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
        self.registry
            .register(Box::new(c.clone()))
            .expect("each metric is registered once, with a valid name");
        c
    }

    pub(super) fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric name"))
    }

    pub(super) fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name"))
    }

    pub(super) fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric name"))
    }

    pub(super) fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name"))
    }

    pub(super) fn histograms(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric name"))
    }
}
