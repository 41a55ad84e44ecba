//! Live reload: `SIGHUP` and the admin listener's `POST /reload` re-read the configuration file,
//! validate it, and put it in force without a restart.
//!
//! Owns: [`Reloader`] (one per process started from a file) and `Hangup`, the background
//! service that turns `SIGHUP` into a reload.
//!
//! Invariants:
//! - All or nothing: a file that does not parse or validate, or that changes what a running
//!   process cannot change ([`Config::reloadable`]), leaves the running configuration in force;
//!   the error (`FILE:LINE:COL` for the file's own mistakes) is logged, counted
//!   (`precond_config_reloads_total{result="invalid"|"refused"}`), answered to `POST /reload`;
//!   `/readyz` shows the outcome (never the error text: it needs no token).
//! - A valid file is swapped in atomically (`LiveConfig::swap`): requests that started before
//!   finish on the old configuration, requests that start after see the new one whole. Open
//!   connections, locks and fences are kept; so is the store, unless the new routes key or
//!   decide requests differently ([`Config::same_resources`]): then it is forgotten before the
//!   swap, and enforce requests of the new configuration wait for the old one's writes.
//! - Reloads are serialised: two at once (a signal and a request) cannot interleave.
//! - The HTTPS certificate files are re-read on every reload ([`Certificates::reload`]); a pair
//!   that does not load fails the reload (`invalid`) and keeps the one presented.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::proxy::LiveConfig;
use crate::store::Store;
use crate::upstream::{Background, Upstreams};

use super::tls::Certificates;
use crate::telemetry::Metrics;

/// What the last reload did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    /// Configurations put in force since the start (0: the one the process started with).
    pub generation: u64,
    /// `ok`, `invalid` (the file does not parse or validate) or `refused` (it changes what only
    /// a restart can); absent before the first reload.
    pub last: Option<&'static str>,
    /// When (HTTP-date).
    pub at: Option<String>,
    /// Why the last reload was refused.
    pub error: Option<String>,
}

/// Re-reads the configuration file and swaps it in.
pub struct Reloader {
    path: Option<PathBuf>,
    live: Arc<LiveConfig>,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    /// The HTTPS listeners' certificate, re-read on every reload.
    certs: Option<Arc<Certificates>>,
    /// Retires the health checks of the pools in use when dropped: those built at start, then
    /// those the last reload built (replaced pools are no longer checked).
    background: Mutex<Option<Background>>,
    /// Held for a whole reload (serialises them).
    reloading: Mutex<()>,
    /// Held only to read or write the status (`/readyz` never waits for a reload).
    status: Mutex<Status>,
}

/// The outcome of a successful reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The file differed: the new configuration is in force.
    Swapped,
    /// The file is what is already in force.
    Unchanged,
}

impl Reloader {
    /// A reloader of `path` (`None`: the process was not started from a file, and reloads are
    /// refused with a message saying so); `start_checks` retires the health checks of the pools
    /// built at start, once a reload replaces them.
    pub fn new(
        path: Option<PathBuf>,
        live: Arc<LiveConfig>,
        metrics: Arc<Metrics>,
        store: Arc<Store>,
        certs: Option<Arc<Certificates>>,
        start_checks: Background,
    ) -> Reloader {
        Reloader {
            path,
            live,
            metrics,
            store,
            certs,
            background: Mutex::new(Some(start_checks)),
            reloading: Mutex::new(()),
            status: Mutex::new(Status::default()),
        }
    }

    /// What the last reload did.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads, validates and (when it differs) puts the file in force. `why` names the trigger
    /// in the log (`SIGHUP`, `POST /reload`).
    pub fn reload(&self, why: &str) -> Result<Reloaded, String> {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.live.config();
        // `invalid`: the file does not parse or validate; `refused`: it changes what only a
        // restart can.
        let checked = self
            .read()
            .map_err(|e| ("invalid", e))
            .and_then(|new| {
                current.reloadable(&new).map_err(|e| ("refused", e))?;
                Ok(new)
            })
            .and_then(|new| {
                // Changed upstreams get new pools (their servers resolved now: a name that does
                // not resolve, or a CA file that does not load, refuses the file).
                let pools = (new.upstreams != current.upstreams)
                    .then(|| Upstreams::new(&new.upstreams).map(Arc::new))
                    .transpose()
                    .map_err(|e| ("invalid", e.to_string()))?;
                Ok((new, pools))
            })
            .and_then(|checked| {
                // Last, so that a refused file changes nothing: the certificate files are re-read
                // whether or not the configuration changed (a renewed certificate keeps its
                // paths); a pair that does not load keeps the one presented.
                if let Some(certs) = &self.certs {
                    certs.reload().map_err(|e| ("invalid", e))?;
                }
                Ok(checked)
            });
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.at = Some(httpdate::fmt_http_date(SystemTime::now()));
        match checked {
            Ok((new, pools)) => {
                let outcome = if *current == new {
                    Reloaded::Unchanged
                } else {
                    let routes = new.routes.len();
                    let same = current.same_resources(&new);
                    if !same {
                        // Before the swap: no request of the new configuration may decide on
                        // what the old routes learned.
                        self.store.forget_all();
                    }
                    let upstreams = match &pools {
                        Some(p) => p.clone(),
                        None => self.live.upstreams(),
                    };
                    self.live.swap(Arc::new(new), upstreams, same);
                    if let Some(p) = pools {
                        // The replaced pools' checks stop (their handle is dropped here).
                        let running = p.run_in_background().map_err(|e| {
                            error!(error = %e, "cannot run the new upstreams' health checks");
                        });
                        *self.background.lock().unwrap_or_else(|e| e.into_inner()) = running.ok();
                    }
                    status.generation += 1;
                    info!(
                        trigger = why,
                        generation = status.generation,
                        routes,
                        store_forgotten = !same,
                        "configuration reloaded: new requests use it"
                    );
                    Reloaded::Swapped
                };
                if outcome == Reloaded::Unchanged {
                    info!(trigger = why, "configuration reloaded: unchanged");
                }
                self.metrics.reloaded("ok");
                status.last = Some("ok");
                status.error = None;
                Ok(outcome)
            }
            Err((result, e)) => {
                error!(trigger = why, error = %e, "configuration reload refused: the running configuration stays in force");
                self.metrics.reloaded(result);
                status.last = Some(result);
                status.error = Some(e.clone());
                Err(e)
            }
        }
    }

    fn read(&self) -> Result<Config, String> {
        let path = self.path.as_ref().ok_or_else(|| {
            "this process was not started from a configuration file (precond run --config \
             FILE): there is nothing to re-read"
                .to_string()
        })?;
        config::load(path).map_err(|e| e.to_string())
    }
}

/// Reloads on every `SIGHUP` until the server shuts down.
pub(super) struct Hangup(pub(super) Arc<Reloader>);

#[async_trait]
impl BackgroundService for Hangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP: reload with POST /reload on the admin listener");
                return;
            }
        };
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    let _ = self.0.reload("SIGHUP");
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
