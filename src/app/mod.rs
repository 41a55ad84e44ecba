//! Composition: builds the store, the proxy service and the metrics listener from a validated
//! [`Config`], and runs them.
//!
//! Owns: mapping our settings onto Pingora's `ServerConf`, wiring the services together, and
//! [`Running`], a proxy started on a background thread that stops when dropped (used by the demo
//! command and by the integration tests). The only module that knows every other one.
//!
//! Invariant: every listener address (data, admin, metrics) is bound by the time [`spawn`]
//! returns `Ok` ([`listening`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::proxy::http_proxy_service;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::sync::Notify;

mod admin;
mod inspect;
pub mod listening;
mod metrics_listener;
pub mod reload;
pub mod report;
pub mod secret;
pub mod tls;

use crate::config::{Backend, Config};
use crate::proxy::{Keys, LiveConfig, Precond};
use crate::store::redis::{Redis, RedisSettings};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::upstream::Upstreams;
pub use listening::OnBindFailure;
use listening::{Listening, ReportListening};
use metrics_listener::MetricsApp;
use reload::{Hangup, Reloader};

/// The shared runtime state of one precond process.
pub struct State {
    /// The shared store, when `store.backend = "redis"`.
    pub redis: Option<Arc<Redis>>,
    /// The upstream pools (servers and their health).
    pub upstreams: Arc<Upstreams>,
    /// The configuration the process started with.
    pub config: Arc<Config>,
    /// The configuration in force (swapped by reloads).
    pub live: Arc<LiveConfig>,
    /// Reloads the configuration file (`SIGHUP`, `POST /reload`).
    pub reloader: Arc<Reloader>,
    /// The validator store.
    pub store: Arc<Store>,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// Whether the listeners (data, admin, metrics) are bound and their services alive.
    pub listening: Arc<Listening>,
}

/// What `precond check` verifies beyond the file itself, as a start would: a configured secret
/// file and admin token file are readable and long enough, and every upstream server's host
/// name resolves.
pub fn preflight(config: &Config) -> std::io::Result<()> {
    if let crate::config::SecretSource::File(_) = config.secret {
        secret::read(&config.secret)?;
    }
    if let Some(path) = &config.admin.token_file {
        admin::read_token(path)?;
    }
    if let Some(t) = &config.server.tls {
        tls::Certificates::load(t).map_err(std::io::Error::other)?;
    }
    shared_store(config, &secret::derive(b"preflight: names are not used"))?;
    Upstreams::new(&config.upstreams).map(|_| ())
}

/// `rediss://`: rustls on ring is the provider (whatever another dependency may enable), and the
/// system's CA store is readable. redis-rs reads it on every TLS connect, `store.ca_file` or not,
/// and fails the connect on any error in it: better said at start (and by `precond check`) than
/// as a 503 for every enforce write.
fn tls_to_redis_is_possible() -> std::io::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let loaded = rustls_native_certs::load_native_certs();
    match loaded.errors.first() {
        None => Ok(()),
        Some(e) => Err(std::io::Error::other(format!(
            "store.url is rediss://, and the system's CA store cannot be read (the Redis client \
             reads it on every TLS connect, store.ca_file or not): {e}"
        ))),
    }
}

/// Reads `store.ca_file` (PEM certificates).
fn read_store_ca(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let pem = std::fs::read(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("store.ca_file {}: {e}", path.display()))
    })?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(std::io::Error::other(format!(
            "store.ca_file {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(pem)
}

/// The shared store of `store.backend = "redis"` (nothing is connected yet: the first call
/// connects). Several instances must name resources alike, so a secret they share is required.
fn shared_store(config: &Config, keys: &Keys) -> std::io::Result<Option<Arc<Redis>>> {
    let Backend::Redis {
        url,
        ca_file,
        timeout,
        lease_ttl,
    } = &config.store.backend
    else {
        return Ok(None);
    };
    if !secret::is_configured(&config.secret) {
        return Err(std::io::Error::other(format!(
            "store.backend = \"redis\" needs the deployment secret every instance shares: set \
             [enforce] tag_secret_file or {}",
            secret::SECRET_ENV
        )));
    }
    // A resource's state must outlive the longest write bound (a dead holder's `quiet`), or a
    // holder after it would not wait it out (a reload may not lengthen it: `Config::reloadable`).
    let ca = ca_file.as_deref().map(read_store_ca).transpose()?;
    if url.starts_with("rediss://") {
        tls_to_redis_is_possible()?;
    }
    let settings = RedisSettings {
        url: url.clone(),
        ca,
        timeout: *timeout,
        lease_ttl: *lease_ttl,
        state_ttl: config.shared_state_ttl().unwrap_or(config.store.ttl),
    };
    Redis::new(settings, keys.shared)
        .map(Some)
        .map_err(std::io::Error::other)
}

/// Builds the Pingora server (not started yet) and the state it shares, for a configuration
/// that was not read from a file (reloads are refused).
/// A listener that cannot be bound (or a listening service that fails) is recorded in
/// [`State::listening`], and with [`OnBindFailure::Exit`] ends the process.
pub fn build(config: Config, on_bind_failure: OnBindFailure) -> std::io::Result<(Server, State)> {
    build_from(config, None, false, on_bind_failure)
}

/// [`build`] for a configuration read from `path`: `SIGHUP` and `POST /reload` re-read it.
/// With `upgrade`, the listeners are taken over from the running process that hands them over
/// on `SIGQUIT` (Pingora's graceful upgrade, over `server.upgrade_sock`). Signals are
/// process-wide: one server per process should be built this way. A data address that cannot be
/// bound (Pingora retries one in use for about 30 s) ends the process with status 1.
pub fn build_from_file(
    config: Config,
    path: PathBuf,
    upgrade: bool,
) -> std::io::Result<(Server, State)> {
    build_from(config, Some(path), upgrade, OnBindFailure::Exit)
}

fn build_from(
    config: Config,
    path: Option<PathBuf>,
    upgrade: bool,
    on_bind_failure: OnBindFailure,
) -> std::io::Result<(Server, State)> {
    let conf = ServerConf {
        threads: config.server.threads,
        upgrade_sock: config.server.upgrade_sock.display().to_string(),
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    upgrade_socket_is_private(&config.server.upgrade_sock, upgrade)?;

    let config = Arc::new(config);
    let store = Arc::new(
        Store::bounded(
            config.store.capacity,
            config.store.max_bytes,
            config.store.ttl,
        )
        .with_census_bytes(config.store.census_max_bytes),
    );
    let metrics = Arc::new(Metrics::default());
    let keys = secret::load(&config.secret)?;
    let redis = shared_store(&config, &keys)?;
    if let Some(redis) = &redis {
        let m = metrics.clone();
        redis.time_round_trips(Box::new(move |op, took| {
            m.shared_store_round_trip(op, took)
        }));
    }
    let upstreams = Arc::new(Upstreams::new(&config.upstreams)?);
    // Each pool has its servers already (resolved above). Their health checks and re-resolution
    // run as a background service until a reload replaces these pools (the reloader holds the
    // handle that retires it) or the process stops.
    let (checks, start_checks) = upstreams.start_checks();
    // (Nothing waits for it: it reports ready at once, the servers being known already.)
    if let Some(c) = checks {
        server.add_service(background_service("precond upstream checks", c));
    }
    let live = Arc::new(LiveConfig::new(config.clone(), upstreams.clone()));
    let certs = config
        .server
        .tls
        .as_ref()
        .map(tls::Certificates::load)
        .transpose()
        .map_err(std::io::Error::other)?;
    let reloader = Arc::new(Reloader::new(
        path.clone(),
        live.clone(),
        metrics.clone(),
        store.clone(),
        certs.clone(),
        start_checks,
    ));
    if path.is_some() {
        server.add_service(background_service(
            "precond reload on SIGHUP",
            Hangup(reloader.clone()),
        ));
    }
    let proxy = Precond::new(
        live.clone(),
        store.clone(),
        metrics.clone(),
        redis.clone(),
        keys,
    );
    let mut service = http_proxy_service(&server.configuration, proxy);
    for addr in &config.server.listen {
        service.add_tcp(&addr.to_string());
    }
    if let (Some(t), Some(certs)) = (&config.server.tls, &certs) {
        for addr in &t.listen {
            service.add_tls_with_settings(&addr.to_string(), None, tls::listener_settings(certs)?);
        }
    }
    let listening = Arc::new(Listening::default());
    server.add_service(ReportListening::new(
        service,
        listening.clone(),
        on_bind_failure,
    ));
    if let Some(addr) = config.server.metrics_listen {
        let mut m = Service::new(
            "precond metrics".to_string(),
            MetricsApp {
                metrics: metrics.clone(),
                store: store.clone(),
            },
        );
        m.add_tcp(&addr.to_string());
        server.add_service(ReportListening::new(m, listening.clone(), on_bind_failure));
    }
    if let Some(addr) = config.admin.listen {
        let token = config
            .admin
            .token_file
            .as_deref()
            .map(admin::read_token)
            .transpose()?;
        let mut a = Service::new(
            "precond admin".to_string(),
            admin::AdminApp {
                live: live.clone(),
                reloader: reloader.clone(),
                metrics: metrics.clone(),
                store: store.clone(),
                listening: listening.clone(),
                token,
            },
        );
        a.add_tcp(&addr.to_string());
        server.add_service(ReportListening::new(a, listening.clone(), on_bind_failure));
    }
    // Last, once everything that can fail has: with `upgrade`, this takes the listeners over
    // from the running process (which then stops accepting), so nothing may fail after it.
    server.bootstrap();
    Ok((
        server,
        State {
            redis,
            upstreams,
            config,
            live,
            reloader,
            store,
            metrics,
            listening,
        },
    ))
}

/// The upgrade socket's directory must not be open to other users: on SIGQUIT the running
/// process sends its listening sockets to whatever listens there, and the new process accepts
/// sockets from whoever connects first. With `upgrade` an accessible directory is refused; at
/// any start one that others can write to is warned about.
fn upgrade_socket_is_private(sock: &std::path::Path, upgrade: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(dir) = sock.parent() else {
        return Ok(());
    };
    let Ok(meta) = std::fs::metadata(dir) else {
        if upgrade {
            return Err(std::io::Error::other(format!(
                "server.upgrade_sock: its directory {} does not exist",
                dir.display()
            )));
        }
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if upgrade && mode & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "server.upgrade_sock: its directory {} is open to other users (mode {mode:o}); \
             make it 0700, owned by precond's user (systemd: RuntimeDirectoryMode=0700)",
            dir.display()
        )));
    }
    if mode & 0o022 != 0 {
        tracing::warn!(
            directory = %dir.display(),
            mode = %format_args!("{mode:o}"),
            "server.upgrade_sock's directory is writable by other users: a graceful upgrade \
             could hand the listeners to them; use a directory of mode 0700"
        );
    }
    Ok(())
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

/// Starts a proxy on a background thread and waits until its listeners are bound (an error when
/// one cannot be, e.g. an address in use: Pingora retries that for about 30 s).
pub fn spawn(config: Config) -> std::io::Result<Running> {
    let addr = *config
        .server
        .listen
        .first()
        .ok_or_else(|| std::io::Error::other("no listen address"))?;
    let (server, state) = build(config, OnBindFailure::Report)?;
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
    let listening = running.state.listening.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !listening.is_listening() {
        if let Some(why) = listening.failure() {
            return Err(std::io::Error::other(why.to_string()));
        }
        if Instant::now() > deadline || running.thread.as_ref().is_none_or(|t| t.is_finished()) {
            return Err(std::io::Error::other(format!(
                "proxy did not start listening on {addr}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(running)
}
