//! Whether the listeners are bound and their services alive: what `/readyz` and
//! [`super::spawn`] wait for.
//!
//! Pingora binds a service's listeners when the service starts, after the admin listener may
//! already answer, and retries an address in use for about 30 s before it gives up (with a
//! panic in the service's task: the process would go on without that port). So each listening
//! service (the proxy, the admin and the metrics listener) is wrapped in [`ReportListening`]: it
//! watches Pingora's table of listening sockets (where every bound or inherited listener is
//! recorded) until each of its addresses is in it, and notices the service failing, before or
//! after that.
//!
//! Owns: [`Listening`] (the state every wrapped service reports to) and [`ReportListening`].
//!
//! Invariants: [`Listening::is_listening`] is true only while every wrapped service has all its
//! addresses bound and none has failed; a failure (a bind that never succeeds, a panic) is
//! recorded for good, and with [`OnBindFailure::Exit`] ends the process with status 1 unless it is
//! already stopping: a proxy that cannot serve its ports says so, it does not linger.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ListenFds, RuntimeOpts, ShutdownWatch};
use pingora::services::{Service, ServiceReadyNotifier, ServiceWithDependents};

/// How often the table of listening sockets is looked at while binding.
const POLL: Duration = Duration::from_millis(10);

/// The listening services' state, shared with the admin listener.
#[derive(Debug, Default)]
pub struct Listening {
    /// Wrapped services whose addresses are not all bound yet.
    pending: AtomicUsize,
    /// The first failure of a wrapped service.
    failure: OnceLock<String>,
}

impl Listening {
    /// Every wrapped service has its addresses bound, and none has failed.
    pub fn is_listening(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0 && self.failure.get().is_none()
    }

    /// Why a wrapped service could not listen or stopped serving, once that happened.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    fn expect(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    fn bound(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    fn failed(&self, why: String) {
        let _ = self.failure.set(why);
    }
}

/// What to do when a wrapped service cannot bind its addresses, or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBindFailure {
    /// Exit the process with status 1 (`precond run` and `precond demo`: a supervisor restarts
    /// it).
    Exit,
    /// Record it in [`Listening`] only (an embedding caller, such as [`super::spawn`], reports
    /// it).
    Report,
}

/// A listening service that reports to [`Listening`] when all its addresses are bound (and
/// signals Pingora's readiness, what services depending on it wait for, only then), and when it
/// fails.
pub struct ReportListening<S> {
    inner: Option<S>,
    name: String,
    addresses: Vec<String>,
    listening: Arc<Listening>,
    on_failure: OnBindFailure,
}

impl<S: Service + 'static> ReportListening<S> {
    /// Wraps `inner`, whose listen addresses must all be configured already: `listening` is not
    /// listening until they are bound.
    pub fn new(inner: S, listening: Arc<Listening>, on_failure: OnBindFailure) -> Self {
        listening.expect();
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
        let stopping = shutdown.clone();
        // On its own task, so that a panic (Pingora's answer to a bind that keeps failing) is
        // seen here as an error rather than ending this task silently.
        let mut serving = tokio::spawn(async move {
            Service::start_service(&mut inner, fds, shutdown, listeners_per_fd).await
        });
        let mut bound = false;
        let outcome = loop {
            if watch.as_ref().is_none_or(|f| all_bound(f, &self.addresses)) {
                bound = true;
                self.listening.bound();
                ready.notify_ready();
                break serving.await;
            }
            tokio::select! {
                r = &mut serving => break r,
                () = tokio::time::sleep(POLL) => {}
            }
        };
        let stopping = *stopping.borrow();
        let addresses = self.addresses.join(", ");
        let why = match outcome {
            Ok(()) if bound || stopping => return,
            Ok(()) => format!("stopped before listening on {addresses}"),
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let text = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".to_string());
                let hint = if text.contains("in use") {
                    " (is another process listening there?)"
                } else {
                    ""
                };
                if bound {
                    format!("the service on {addresses} failed: {text}")
                } else {
                    format!("could not listen on {addresses}: {text}{hint}")
                }
            }
            Err(_) if stopping => return,
            Err(e) => format!("the service on {addresses} ended: {e}"),
        };
        tracing::error!(service = %self.name, "{why}");
        self.listening.failed(why.clone());
        if self.on_failure == OnBindFailure::Exit && !stopping {
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
