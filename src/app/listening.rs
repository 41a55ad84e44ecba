//! Whether the data listeners are bound: what `/readyz` and [`super::spawn`] wait for.
//!
//! Pingora binds a service's listeners when the service starts, after the admin listener may
//! already answer, and retries an address in use for about 30 s before it gives up (with a
//! panic in the service's task: the process would go on without a data port). So the proxy
//! service is wrapped in [`ReportListening`]: it watches Pingora's table of listening sockets
//! (where every bound or inherited listener is recorded) until each data address is in it, and
//! notices the service failing before that.
//!
//! Owns: [`Listening`] (the state) and [`ReportListening`] (the wrapper).
//!
//! Invariants: [`Listening::is_listening`] is true only once every data address (plain and TLS)
//! is bound, and never again false; a service that fails before then is reported as failed (the
//! binary then exits non-zero: it cannot serve), never as listening.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ListenFds, RuntimeOpts, ShutdownWatch};
use pingora::services::{Service, ServiceReadyNotifier, ServiceWithDependents};

/// How often the table of listening sockets is looked at while binding.
const POLL: Duration = Duration::from_millis(10);

const BINDING: u8 = 0;
const LISTENING: u8 = 1;
const FAILED: u8 = 2;

/// The data listeners' state, shared with the admin listener.
#[derive(Debug, Default)]
pub struct Listening {
    state: AtomicU8,
    failure: OnceLock<String>,
}

impl Listening {
    /// Every data address is bound.
    pub fn is_listening(&self) -> bool {
        self.state.load(Ordering::Acquire) == LISTENING
    }

    /// Why the data listeners could not be bound, once that is known.
    pub fn failure(&self) -> Option<&str> {
        (self.state.load(Ordering::Acquire) == FAILED)
            .then(|| self.failure.get().map(String::as_str))
            .flatten()
    }

    fn listening(&self) {
        let _ =
            self.state
                .compare_exchange(BINDING, LISTENING, Ordering::AcqRel, Ordering::Acquire);
    }

    fn failed(&self, why: String) {
        let _ = self.failure.set(why);
        let _ = self
            .state
            .compare_exchange(BINDING, FAILED, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// What to do when the data listeners cannot be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBindFailure {
    /// Exit the process with status 1 (the `run` command: a supervisor restarts it).
    Exit,
    /// Record it in [`Listening`] only (an embedding caller, such as [`super::spawn`], reports
    /// it).
    Report,
}

/// A listening service that reports to [`Listening`] when all its addresses are bound, and
/// signals Pingora's readiness (what services depending on it wait for) only then.
pub struct ReportListening<S> {
    inner: Option<S>,
    name: String,
    addresses: Vec<String>,
    listening: Arc<Listening>,
    on_failure: OnBindFailure,
}

impl<S: Service + 'static> ReportListening<S> {
    /// Wraps `inner`, whose listen addresses must all be configured already.
    pub fn new(inner: S, listening: Arc<Listening>, on_failure: OnBindFailure) -> Self {
        ReportListening {
            name: inner.name().to_string(),
            addresses: inner.listen_addresses().unwrap_or_default(),
            inner: Some(inner),
            listening,
            on_failure,
        }
    }
}

/// Every address in `addresses` has a socket in `fds`.
fn all_bound(fds: &ListenFds, addresses: &[String]) -> bool {
    let table = fds.lock();
    addresses.iter().all(|a| table.get(a).is_some())
}

#[async_trait]
impl<S: Service + 'static> ServiceWithDependents for ReportListening<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        let watch = fds.clone();
        // On its own task, so that a panic (Pingora's answer to a bind that keeps failing) is
        // seen here as an error rather than ending this task silently.
        let mut serving = tokio::spawn(async move {
            Service::start_service(&mut inner, fds, shutdown, listeners_per_fd).await
        });
        let outcome = loop {
            if watch.as_ref().is_none_or(|f| all_bound(f, &self.addresses)) {
                self.listening.listening();
                ready.notify_ready();
                break serving.await;
            }
            tokio::select! {
                r = &mut serving => break r,
                () = tokio::time::sleep(POLL) => {}
            }
        };
        if self.listening.is_listening() {
            if let Err(e) = outcome {
                tracing::error!(service = %self.name, error = %e, "the data service failed");
            }
            return;
        }
        let why = match outcome {
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let text = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".to_string());
                format!(
                    "could not listen on {}: {text} (is another process using it?)",
                    self.addresses.join(", ")
                )
            }
            _ => format!("stopped before listening on {}", self.addresses.join(", ")),
        };
        tracing::error!(service = %self.name, "{why}");
        self.listening.failed(why.clone());
        if self.on_failure == OnBindFailure::Exit {
            eprintln!("precond: cannot serve: {why}");
            std::process::exit(1);
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.inner.as_ref().and_then(Service::threads)
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner
            .as_ref()
            .and_then(|s| s.runtime_opts_override(global))
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.addresses.clone())
    }
}
