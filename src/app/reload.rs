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
//!   (`precond_config_reloads_total{result="invalid"}`) and shown by `/readyz`.
//! - A valid file is swapped in atomically (`LiveConfig::swap`): requests that started before
//!   finish on the old configuration, requests that start after see the new one whole. The
//!   store, the locks, the fences and open connections are kept.
//! - Reloads are serialised: two at once (a signal and a request) cannot interleave.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::proxy::LiveConfig;
use crate::telemetry::Metrics;

/// What the last reload did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    /// Configurations put in force since the start (0: the one the process started with).
    pub generation: u64,
    /// `ok` or `invalid`; absent before the first reload.
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
    /// refused with a message saying so).
    pub fn new(path: Option<PathBuf>, live: Arc<LiveConfig>, metrics: Arc<Metrics>) -> Reloader {
        Reloader {
            path,
            live,
            metrics,
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
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.live.config();
        let checked = self.read().and_then(|new| {
            current.reloadable(&new)?;
            Ok(new)
        });
        status.at = Some(httpdate::fmt_http_date(SystemTime::now()));
        match checked {
            Ok(new) => {
                let outcome = if *current == new {
                    Reloaded::Unchanged
                } else {
                    let routes = new.routes.len();
                    self.live.swap(Arc::new(new));
                    status.generation += 1;
                    info!(
                        trigger = why,
                        generation = status.generation,
                        routes,
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
            Err(e) => {
                error!(trigger = why, error = %e, "configuration reload refused: the running configuration stays in force");
                self.metrics.reloaded("invalid");
                status.last = Some("invalid");
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
