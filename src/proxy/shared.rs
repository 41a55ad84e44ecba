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

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

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

/// The writes in flight under one configuration (one generation of [`LiveConfig`]), by
/// resource (a hash of the canonical host and path, which every spelling and every route of a
/// resource share).
#[derive(Debug, Default)]
pub(crate) struct Generation {
    writes: Mutex<HashMap<u64, u32>>,
    drained: Notify,
}

impl Generation {
    fn writes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u32>> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn busy(&self) -> bool {
        !self.writes().is_empty()
    }

    fn writing(&self, resource: u64) -> bool {
        self.writes().contains_key(&resource)
    }
}

/// A write counted in its generation until dropped (it lives in the request's context).
#[derive(Debug)]
pub(crate) struct GenerationWrite {
    generation: Arc<Generation>,
    resource: u64,
}

impl Drop for GenerationWrite {
    fn drop(&mut self) {
        {
            let mut writes = self.generation.writes();
            if let Some(n) = writes.get_mut(&self.resource) {
                *n -= 1;
                if *n == 0 {
                    writes.remove(&self.resource);
                }
            }
        }
        self.generation.drained.notify_waiters();
    }
}

/// A configuration in force and the per-route state that lives as long as it.
pub struct Routes {
    /// The configuration.
    pub config: Arc<Config>,
    /// Its upstream pools (indexed like `config.upstreams`).
    pub upstreams: Arc<Upstreams>,
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
    fn new(
        config: Arc<Config>,
        upstreams: Arc<Upstreams>,
        earlier: Vec<Arc<Generation>>,
    ) -> Routes {
        Routes {
            upstreams,
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

    /// Counts a write to `resource` (a method that may change state, on any route) under this
    /// configuration until the returned guard is dropped.
    pub(crate) fn write_started(&self, resource: u64) -> GenerationWrite {
        *self.generation.writes().entry(resource).or_default() += 1;
        GenerationWrite {
            generation: self.generation.clone(),
            resource,
        }
    }

    /// Waits until every write to `resource` started under an earlier configuration that keyed
    /// or decided requests differently has finished, or `until`; `false` when time ran out. An
    /// `enforce` request waits so before it reads or judges anything: such a write is not
    /// serialised by this configuration's locks, and the state it leaves was never learned.
    /// Only the same resource waits: a slow write elsewhere delays nobody else.
    pub(crate) async fn earlier_writes_done(
        &self,
        resource: u64,
        until: std::time::Instant,
    ) -> bool {
        for g in &self.earlier {
            loop {
                let drained = g.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if !g.writing(resource) {
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
    /// `config` in force, with the pools of its upstreams.
    pub fn new(config: Arc<Config>, upstreams: Arc<Upstreams>) -> LiveConfig {
        LiveConfig(ArcSwap::from_pointee(Routes::new(
            config,
            upstreams,
            Vec::new(),
        )))
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.0.load().config.clone()
    }

    /// The upstream pools in force now.
    pub fn upstreams(&self) -> Arc<Upstreams> {
        self.0.load().upstreams.clone()
    }

    /// Whether `routes` is the snapshot in force (no reference count taken).
    pub(crate) fn is_current(&self, routes: &Arc<Routes>) -> bool {
        Arc::ptr_eq(&self.0.load(), routes)
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
    pub fn swap(&self, config: Arc<Config>, upstreams: Arc<Upstreams>, same_resources: bool) {
        let old = self.0.load();
        // The outgoing generation is kept even with no write counted yet: a request that took
        // its snapshot may count one right after (see `Shared::started_under`); older ones are
        // kept while they have writes in flight.
        let earlier = old
            .earlier
            .iter()
            .filter(|g| g.busy())
            .chain((!same_resources).then_some(&old.generation))
            .cloned()
            .collect();
        self.0
            .store(Arc::new(Routes::new(config, upstreams, earlier)));
    }
}

/// The state request handlers share.
pub(crate) struct Shared {
    /// The configuration in force (reloadable).
    pub(crate) live: Arc<LiveConfig>,
    pub(crate) store: Arc<Store>,
    pub(crate) metrics: Arc<Metrics>,
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
    /// Hashes a resource for the reload generations' write counts (seeded per process).
    resources: foldhash::fast::RandomState,
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

    /// The resource a request names, for the generations' write counts: its canonical host and
    /// path (the query aside, so that counting errs towards waiting).
    pub(crate) fn resource_hash(&self, host: Option<&str>, path: &str) -> u64 {
        self.resources.hash_one((host, path))
    }

    /// The configuration a request runs under, and (for a write) its count in that
    /// configuration's generation: taken so that a reload cannot slip between the two (the
    /// count is made, then the snapshot is checked to be still the one in force; if a reload
    /// came in between, the count is dropped and taken again under the new one).
    /// `live` is the snapshot the request's context took: a read keeps it as it is, a write's is
    /// replaced when a reload came in between.
    pub(crate) fn started_under(
        &self,
        live: &mut Arc<Routes>,
        resource: u64,
        write: bool,
    ) -> Option<GenerationWrite> {
        if !write {
            return None;
        }
        loop {
            let counted = live.write_started(resource);
            if self.live.is_current(live) {
                return Some(counted);
            }
            *live = self.live.routes();
        }
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
        redis: Option<Arc<Redis>>,
        keys: Keys,
    ) -> Shared {
        Shared {
            redis,
            live,
            store,
            metrics,
            connector: Connector::new(None),
            locks: Arc::default(),
            fences: Fences::default(),
            keys,
            resources: foldhash::fast::RandomState::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn config(mode: &str) -> Arc<Config> {
        let text = format!(
            "[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:9\"]\n\n[[route]]\nupstream = \"a\"\nmode = \"{mode}\"\n"
        );
        Arc::new(crate::config::parse(&text).unwrap())
    }

    fn pools(c: &Config) -> Arc<Upstreams> {
        Arc::new(Upstreams::new(&c.upstreams).unwrap())
    }

    fn swap(live: &LiveConfig, mode: &str, same: bool) {
        let c = config(mode);
        let p = pools(&c);
        live.swap(c, p, same);
    }

    fn live(mode: &str) -> LiveConfig {
        let c = config(mode);
        let p = pools(&c);
        LiveConfig::new(c, p)
    }

    #[tokio::test]
    async fn after_a_reload_only_the_same_resource_waits_for_the_old_writes() {
        let live = live("pass");
        let old = live.routes();
        let write = old.write_started(1);
        swap(&live, "enforce", false);
        let new = live.routes();
        let soon = || Instant::now() + Duration::from_millis(50);
        assert!(
            new.earlier_writes_done(2, soon()).await,
            "another resource goes at once"
        );
        assert!(
            !new.earlier_writes_done(1, soon()).await,
            "the same one waits"
        );
        let waiter = tokio::spawn({
            let new = new.clone();
            async move {
                new.earlier_writes_done(1, Instant::now() + Duration::from_secs(5))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(write);
        assert!(waiter.await.unwrap(), "woken when the old write ends");
        // A reload that keys and decides alike carries no new wait.
        let w = new.write_started(3);
        swap(&live, "enforce", true);
        assert!(live.routes().earlier_writes_done(3, soon()).await);
        drop(w);
    }

    #[test]
    fn the_outgoing_generation_is_kept_even_before_its_first_write() {
        let live = live("pass");
        let old = live.routes();
        swap(&live, "enforce", false);
        // A request that took the old snapshot counts its write only now.
        let _w = old.write_started(7);
        assert!(live.routes().earlier.iter().any(|g| g.writing(7)));
        // One more reload keeps it while the write is in flight.
        swap(&live, "guard", false);
        assert!(live.routes().earlier.iter().any(|g| g.writing(7)));
    }
}
