//! Composition: builds the store, the proxy service and the metrics listener from a validated
//! [`Config`], and runs them.
//!
//! Owns: mapping our settings onto Pingora's `ServerConf`, wiring the services together, and
//! [`Running`], a proxy started on a background thread that stops when dropped (used by the demo
//! command and by the integration tests). The only module that knows every other one.
//!
//! Invariant: every listener address is bound by the time [`spawn`] returns `Ok`.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::proxy::http_proxy_service;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::sync::Notify;

mod metrics_listener;
pub mod secret;

use crate::config::Config;
use crate::proxy::Precond;
use crate::store::Store;
use crate::telemetry::Metrics;
use metrics_listener::MetricsApp;

/// The shared runtime state of one precond process.
pub struct State {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The validator store.
    pub store: Arc<Store>,
    /// The counters.
    pub metrics: Arc<Metrics>,
}

/// Builds the Pingora server (not started yet) and the state it shares.
pub fn build(config: Config) -> std::io::Result<(Server, State)> {
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let config = Arc::new(config);
    let store = Arc::new(Store::bounded(
        config.store.capacity,
        config.store.max_bytes,
        config.store.ttl,
    ));
    let metrics = Arc::new(Metrics::default());
    let keys = secret::load(&config.secret)?;
    let proxy = Precond::new(config.clone(), store.clone(), metrics.clone(), keys)?;
    let mut service = http_proxy_service(&server.configuration, proxy);
    for addr in &config.server.listen {
        service.add_tcp(&addr.to_string());
    }
    server.add_service(service);
    if let Some(addr) = config.server.metrics_listen {
        let mut m = Service::new(
            "precond metrics".to_string(),
            MetricsApp {
                metrics: metrics.clone(),
                store: store.clone(),
            },
        );
        m.add_tcp(&addr.to_string());
        server.add_service(m);
    }
    Ok((
        server,
        State {
            config,
            store,
            metrics,
        },
    ))
}

struct NotifyShutdown(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for NotifyShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

/// A proxy running on a background thread; dropping it stops the proxy.
pub struct Running {
    /// The first listener address.
    pub addr: SocketAddr,
    /// The shared state (store and counters), for inspection.
    pub state: State,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a proxy on a background thread and waits until its first listener accepts connections.
pub fn spawn(config: Config) -> std::io::Result<Running> {
    let addr = *config
        .server
        .listen
        .first()
        .ok_or_else(|| std::io::Error::other("no listen address"))?;
    let (server, state) = build(config)?;
    let stop = Arc::new(Notify::new());
    let signal = NotifyShutdown(stop.clone());
    let thread = std::thread::Builder::new()
        .name("precond-server".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(signal),
            })
        })?;
    let running = Running {
        addr,
        state,
        stop,
        thread: Some(thread),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "proxy did not start listening on {addr}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(running)
}
