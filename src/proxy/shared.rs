//! What every request handler of the proxy shares: settings, the store, the counters, the
//! upstreams, the connector for precond's own requests, and the write locks and fences.
//!
//! Owns: [`Shared`], and [`LiveConfig`], the configuration in force (swapped whole by a reload)
//! with the per-route state that goes with it ([`Routes`]). Built once per process by the app;
//! read-only but for the interior state of its parts (the store, the counters, the locks, the
//! live configuration), each of which documents its own invariants.
//!
//! Invariants:
//! - A request reads one [`Routes`] snapshot from start to end (it is kept in its context): a
//!   route index never refers to another configuration's route list. The store, the locks and
//!   the fences outlive reloads (their keys name routes by [`RouteId`], never by position).
//! - Every write is counted in the generation it started under until it ends; an `enforce`
//!   write waits for the writes of earlier generations before it is judged
//!   ([`Routes::earlier_writes_done`]), so that a reload (a mode or a key changed) never lets
//!   an enforce write be forwarded beside a write the new configuration's locks do not see.
//!
//! [`RouteId`]: crate::identity::RouteId

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::connectors::http::Connector;
use tokio::sync::Notify;

use crate::config::Config;
use crate::identity::{OwnedKey, PrincipalKey};
use crate::store::redis::Redis;
use crate::store::Store;
use crate::telemetry::{redact, Budget, Metrics, RateLimit};
use crate::upstream::Upstreams;

use super::guard::fence::Fences;
use super::headers::path_and_query;
use super::locks::KeyedLocks;

/// The writes in flight under one configuration (one generation of [`LiveConfig`]).
#[derive(Debug, Default)]
pub(crate) struct Generation {
    writes: AtomicU64,
    drained: Notify,
}

/// A write counted in its generation until dropped (it lives in the request's context).
#[derive(Debug)]
pub(crate) struct GenerationWrite(Arc<Generation>);

impl Drop for GenerationWrite {
    fn drop(&mut self) {
        if self.0.writes.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// A configuration in force and the per-route state that lives as long as it.
pub struct Routes {
    /// The configuration.
    pub config: Arc<Config>,
    /// Per route: when its origin's weak tags under `policy = "mismatch"` were last warned about.
    pub(crate) weak_warned: Vec<RateLimit>,
    /// Per route: when writes forwarded past the fence were last logged.
    pub(crate) fence_warned: Vec<RateLimit>,
    /// Per route: the `precond::observe` log lines of the current second.
    pub(crate) observe_logged: Vec<Budget>,
    /// Per route: its `route` label in the metrics (host and path prefix, as the file says).
    pub(crate) labels: Vec<String>,
    /// Writes started under this configuration and not finished.
    generation: Arc<Generation>,
    /// Earlier configurations that still had writes in flight when this one was put in force.
    earlier: Vec<Arc<Generation>>,
}

impl Routes {
    fn new(config: Arc<Config>, earlier: Vec<Arc<Generation>>) -> Routes {
        Routes {
            generation: Arc::default(),
            earlier,
            labels: config
                .routes
                .iter()
                .map(|r| format!("{}{}", r.host.as_deref().unwrap_or(""), r.path_prefix))
                .collect(),
            weak_warned: config.routes.iter().map(|_| RateLimit::default()).collect(),
            fence_warned: config.routes.iter().map(|_| RateLimit::default()).collect(),
            observe_logged: config.routes.iter().map(|_| Budget::default()).collect(),
            config,
        }
    }

    /// Counts a write (any method but GET, HEAD, OPTIONS, on any route) under this
    /// configuration until the returned guard is dropped.
    pub(crate) fn write_started(&self) -> GenerationWrite {
        self.generation.writes.fetch_add(1, Ordering::AcqRel);
        GenerationWrite(self.generation.clone())
    }

    /// Waits until every write started under an earlier configuration that keyed or decided
    /// requests differently has finished, or `until`; `false` when time ran out. An `enforce`
    /// request waits so before it reads or judges anything: such a write is not serialised by
    /// this configuration's locks, and the state it leaves was never learned.
    pub(crate) async fn earlier_writes_done(&self, until: std::time::Instant) -> bool {
        for g in &self.earlier {
            loop {
                let drained = g.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if g.writes.load(Ordering::Acquire) == 0 {
                    break;
                }
                if tokio::time::timeout_at(until.into(), drained)
                    .await
                    .is_err()
                {
                    return false;
                }
            }
        }
        true
    }
}

/// The configuration in force, swapped atomically by a reload (`arc-swap`: readers never wait).
pub struct LiveConfig(ArcSwap<Routes>);

impl LiveConfig {
    /// `config` in force.
    pub fn new(config: Arc<Config>) -> LiveConfig {
        LiveConfig(ArcSwap::from_pointee(Routes::new(config, Vec::new())))
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.0.load().config.clone()
    }

    /// The configuration in force now, with its per-route state (a request keeps it to its end).
    pub fn routes(&self) -> Arc<Routes> {
        self.0.load_full()
    }

    /// Puts `config` in force for the requests that start from now on (requests in progress
    /// finish on the one they started with). The caller has checked it with
    /// [`Config::reloadable`]. When the new routes key or decide requests differently
    /// (`!same_resources`), `enforce` requests of the new configuration wait for the writes in
    /// flight under the old one (and those it was still waiting for).
    pub fn swap(&self, config: Arc<Config>, same_resources: bool) {
        let old = self.0.load();
        let busy = |g: &&Arc<Generation>| g.writes.load(Ordering::Acquire) > 0;
        let earlier = old
            .earlier
            .iter()
            .chain((!same_resources).then_some(&old.generation))
            .filter(busy)
            .cloned()
            .collect();
        self.0.store(Arc::new(Routes::new(config, earlier)));
    }
}

/// The state request handlers share.
pub(crate) struct Shared {
    /// The configuration in force (reloadable).
    pub(crate) live: Arc<LiveConfig>,
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
        redact::target(path_and_query(req), self.config().log.log_query)
    }

    /// The configuration in force now, for the settings a reload cannot change (`[edge]`,
    /// `[store]`, `[log]` but `access_log`: see `Config::reloadable`), which are therefore the
    /// same in every snapshot. A request's routes come from the snapshot in its context.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.live.config()
    }

    /// The shared state for a validated configuration.
    pub(crate) fn new(
        live: Arc<LiveConfig>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        upstreams: Arc<Upstreams>,
        redis: Option<Arc<Redis>>,
        keys: Keys,
    ) -> Shared {
        Shared {
            upstreams,
            redis,
            live,
            store,
            metrics,
            connector: Connector::new(None),
            locks: Arc::default(),
            fences: Fences::default(),
            keys,
        }
    }
}
