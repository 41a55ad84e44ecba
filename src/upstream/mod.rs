//! Upstream pools: which server of an `[[upstream]]` a request goes to.
//!
//! Selection (`round_robin`, `consistent` by canonical resource, `random`, with weights), active
//! health checks and periodic re-resolution of host names all come from `pingora-load-balancing`;
//! this module maps the configuration onto it (`pool`), resolves servers (`discovery`) and
//! builds the checks (`health`) and the CAs of upstream TLS (`tls`). The proxy asks a [`Pool`] for a server and decides retries
//! itself (a request is retried on another server only when no connection could be made).
//!
//! Invariants: a pool never returns an unhealthy server, nor one the request already failed to
//! connect to; host names are resolved at start (a name that does not resolve stops the start)
//! and, later, a failed resolution keeps the last addresses.

mod discovery;
mod health;
mod pool;
mod tls;

pub use pool::Pool;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Upstream;

/// The background work of a set of pools (those built at start, or by a reload); stops it when
/// dropped (the pools it served were replaced).
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The health checks and re-resolution of the pools built at start (see
/// [`Upstreams::start_checks`]).
pub struct StartChecks {
    upstreams: Arc<Upstreams>,
    retired: tokio::sync::watch::Receiver<bool>,
}

#[async_trait]
impl BackgroundService for StartChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut retired = self.retired.clone();
        let (stop, watch) = tokio::sync::watch::channel(false);
        let either = async move {
            // A closed channel counts as a signal: the process or the reload that held it is gone.
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = retired.changed() => {}
            }
            let _ = stop.send(true);
        };
        futures::join!(either, self.upstreams.run_until(watch));
    }
}

/// The pools of every configured upstream, in file order (routes refer to them by index).
pub struct Upstreams {
    pools: Vec<Pool>,
}

impl Upstreams {
    /// Pools for `upstreams` (resolving host names now).
    pub fn new(upstreams: &[Upstream]) -> std::io::Result<Upstreams> {
        Ok(Upstreams {
            pools: upstreams.iter().map(Pool::new).collect::<Result<_, _>>()?,
        })
    }

    /// The pool of upstream `index`.
    pub fn pool(&self, index: usize) -> Option<&Pool> {
        self.pools.get(index)
    }

    /// Every pool, in file order.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// Whether any pool has background work (health checks, or host names to resolve again).
    fn has_background(&self) -> bool {
        self.pools.iter().any(Pool::has_background)
    }

    /// Runs the health checks and re-resolution of every pool until `stop` says so.
    async fn run_until(&self, stop: ShutdownWatch) {
        futures::future::join_all(self.pools.iter().map(|p| p.run_background(stop.clone()))).await;
    }

    /// The background work of the pools built at start, as a Pingora background service (`None`
    /// when no pool has any), and the handle that retires it: it runs until the process stops or
    /// the handle is dropped (a reload replaced these pools: no request uses them any more).
    pub fn start_checks(self: &Arc<Self>) -> (Option<StartChecks>, Background) {
        let (stop, retired) = tokio::sync::watch::channel(false);
        let checks = self.has_background().then(|| StartChecks {
            upstreams: self.clone(),
            retired,
        });
        (checks, Background { stop })
    }

    /// Runs the health checks and re-resolution of these pools on a thread of their own until
    /// the returned handle is dropped (pools a reload built).
    pub fn run_in_background(self: &Arc<Self>) -> std::io::Result<Background> {
        let (stop, watch) = tokio::sync::watch::channel(false);
        let pools = self.clone();
        std::thread::Builder::new()
            .name("precond-upstreams".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    tracing::error!("cannot start the upstream health checks of a reload");
                    return;
                };
                rt.block_on(pools.run_until(watch));
            })?;
        Ok(Background { stop })
    }

    /// Whether every upstream has at least one healthy server.
    pub fn ready(&self) -> bool {
        self.pools.iter().all(|p| p.health().0 > 0)
    }
}
