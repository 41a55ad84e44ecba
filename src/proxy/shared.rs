//! What every request handler of the proxy shares: settings, the store, the counters, the
//! upstreams, the connector for precond's own requests, and the write locks and fences.
//!
//! Owns: [`Shared`]. Built once per process by the app; read-only but for the interior state of
//! its parts (the store, the counters, the locks), each of which documents its own invariants.

use std::sync::Arc;

use pingora::connectors::http::Connector;

use crate::config::Config;
use crate::identity::{OwnedKey, PrincipalKey};
use crate::store::redis::Redis;
use crate::store::Store;
use crate::telemetry::{redact, Budget, Metrics, RateLimit};
use crate::upstream::Upstreams;

use super::guard::fence::Fences;
use super::headers::path_and_query;
use super::locks::KeyedLocks;

/// The state request handlers share.
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<Store>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) upstreams: Arc<Upstreams>,
    /// The shared store (`store.backend = "redis"`): serialises enforce writes across instances.
    pub(crate) redis: Option<Arc<Redis>>,
    /// Upstream connections for requests precond sends itself (`enforce` probes and reads).
    pub(crate) connector: Connector,
    /// `enforce`: one write lock per resource.
    pub(crate) locks: Arc<KeyedLocks<OwnedKey>>,
    /// `guard`: the in-flight write fences.
    pub(crate) fences: Fences,
    /// Per route: when its origin's weak tags under `policy = "mismatch"` were last warned about.
    pub(crate) weak_warned: Vec<RateLimit>,
    /// Per route: when writes forwarded past the fence were last logged.
    pub(crate) fence_warned: Vec<RateLimit>,
    /// Per route: the `precond::observe` log lines of the current second.
    pub(crate) observe_logged: Vec<Budget>,
    /// Keys derived from the deployment secret.
    pub(crate) keys: Keys,
}

/// Keys derived from the deployment secret (by the app, which reads it).
#[derive(Clone, Debug)]
pub struct Keys {
    /// MAC key of synthesised entity-tags.
    pub tag: [u8; 32],
    /// Key of principal hashes.
    pub principal: PrincipalKey,
    /// Key of the resource ids written to the shared store.
    pub shared: [u8; 32],
}

impl Shared {
    /// The request's target as logs and problem bodies show it: bounded, and with its query
    /// replaced by `?…` unless `log.log_query`.
    pub(crate) fn shown_target(&self, req: &pingora::http::RequestHeader) -> String {
        redact::target(path_and_query(req), self.config.log.log_query)
    }

    /// The shared state for a validated configuration.
    pub(crate) fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        upstreams: Arc<Upstreams>,
        redis: Option<Arc<Redis>>,
        keys: Keys,
    ) -> Shared {
        Shared {
            upstreams,
            redis,
            weak_warned: config.routes.iter().map(|_| RateLimit::default()).collect(),
            fence_warned: config.routes.iter().map(|_| RateLimit::default()).collect(),
            observe_logged: config.routes.iter().map(|_| Budget::default()).collect(),
            config,
            store,
            metrics,
            connector: Connector::new(None),
            locks: Arc::default(),
            fences: Fences::default(),
            keys,
        }
    }
}
