//! The typed settings the rest of precond reads: what a validated file means.
//!
//! Owns: [`Config`] and its parts, and route selection ([`Config::route_for`]). Plain data: no
//! defaults (those live in the file schema), no runtime state.
//!
//! Invariants of a validated [`Config`]:
//! - every route names an upstream that exists (held as an index), and at least one route exists;
//! - every address is a resolved socket address (no DNS at run time);
//! - durations and sizes are in range; no `Option` stands for "use a default" any more.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::identity::{PrincipalSource, RouteId};
pub use crate::precondition::Policy;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Listener and process settings.
    pub server: ServerSettings,
    /// Validator store bounds.
    pub store: StoreSettings,
    /// What edge answers disclose.
    pub edge: EdgeSettings,
    /// What logs (and problem bodies) repeat of requests.
    pub log: LogSettings,
    /// Where the deployment secret of synthesised tags and principals comes from.
    pub secret: SecretSource,
    /// The admin listener (health, readiness, metrics).
    pub admin: AdminSettings,
    /// Upstream groups, referenced by index from routes.
    pub upstreams: Vec<Upstream>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
}

/// The admin listener: `/healthz`, `/readyz`, `/metrics`, apart from the data port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where it listens (off when `None`).
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token `/metrics` requires (required off loopback).
    pub token_file: Option<std::path::PathBuf>,
}

/// Listener and process settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// Addresses the proxy listens on.
    pub listen: Vec<SocketAddr>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// On SIGTERM, how long to keep accepting before shutting down.
    pub grace_period: Duration,
    /// After the grace period, how long in-flight requests get to finish.
    pub graceful_shutdown_timeout: Duration,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The Unix socket a graceful upgrade hands the listeners over (`precond run --upgrade`).
    pub upgrade_sock: std::path::PathBuf,
    /// HTTPS listeners: addresses, certificate chain and key files (PEM).
    pub tls: Option<TlsListen>,
}

/// Validator store bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// Most resources remembered.
    pub capacity: u64,
    /// How long a learned state is trusted after it was last learned.
    pub ttl: Duration,
    /// Longest resource key (host, path and query) learned; longer ones are forwarded untouched
    /// on guard routes, and their writes refused (414) on enforce routes.
    pub max_key_bytes: usize,
    /// Most bytes of learned state (keys, tags, stored header fields, and a fixed estimate of
    /// each record's and partition's structures).
    pub max_bytes: u64,
    /// Most bytes of the lost-update census of `observe` routes (the tag each caller last read).
    pub census_max_bytes: u64,
    /// Where state several instances share lives.
    pub backend: Backend,
}

/// Where state several instances share lives (`store.backend`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Nothing is shared: each instance knows what it saw.
    Memory,
    /// Redis: `enforce` writes are serialised across instances by a lease there.
    Redis {
        /// `redis://host:port/db`, or `rediss://` (TLS).
        url: String,
        /// `rediss://` only: PEM file of the CAs the server's certificate must chain to (the
        /// system's roots without it).
        ca_file: Option<std::path::PathBuf>,
        /// Longest wait for one call.
        timeout: Duration,
        /// Lease lifetime (renewed every third of it while the write is in flight).
        lease_ttl: Duration,
    },
}

/// What edge answers carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeSettings {
    /// Send the current `ETag`/`Last-Modified` (headers and problem body) with an edge 412.
    pub disclose_validators: bool,
    /// A rejected write whose declared body is at most this many bytes is read and discarded so
    /// the connection stays open; larger or chunked bodies close the connection instead.
    pub drain_limit: u64,
    /// Longest time spent draining such a body.
    pub drain_timeout: Duration,
    /// After an edge answer that leaves a body unread (larger than `drain_limit`, or chunked),
    /// the longest time spent reading and discarding what the client still sends before the
    /// connection is closed (a lingering close: closing with unread bytes resets the connection,
    /// and a client still sending may then never read the answer). Zero: close at once.
    pub linger_timeout: Duration,
}

/// What logs (and problem bodies) repeat of requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Show query strings in logs and problem bodies (otherwise `?…`: they often carry tokens).
    pub log_query: bool,
    /// Log line format; `None`: text on a terminal, JSON otherwise.
    pub format: Option<LogFormat>,
    /// The lowest level logged (`RUST_LOG`, when set, overrides it).
    pub level: String,
    /// One access line per request (target `precond::access`).
    pub access_log: bool,
}

/// `log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Where the deployment secret comes from (read by the app at start, and by `precond check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `[enforce] tag_secret_file`: a file's bytes (a trailing newline excluded).
    File(std::path::PathBuf),
    /// The `PRECOND_TAG_SECRET` environment variable, else a secret generated at start (with a
    /// warning: fine for one instance, wrong for several behind one balancer).
    EnvOrGenerated,
}

/// Whose truth a route's learned state is (see design.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads teach the caller's partition; a completed write retires every partition's tags,
    /// unless the origin marks the resource per-caller.
    Auto,
    /// One partition for every caller (an explicit opt-in for APIs whose answers never depend
    /// on the caller).
    Shared,
    /// Writes stay in the writer's partition too.
    Principal,
}

/// One upstream group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// Name routes refer to.
    pub name: String,
    /// Servers, as written (resolved by the upstream pool, not here).
    pub servers: Vec<Server>,
    /// How a request picks one of them.
    pub selection: Selection,
    /// Active health checking.
    pub health: HealthCheck,
    /// How often host names among `servers` are resolved again.
    pub resolve_interval: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of each read from the upstream.
    pub read_timeout: Duration,
    /// Timeout of each write to the upstream.
    pub write_timeout: Duration,
    /// Idle pooled connections are closed after this long (keep it below the origin's keep-alive
    /// timeout so that no write lands on a connection the origin already closed).
    pub idle_timeout: Duration,
    /// TLS to the servers, when on.
    pub tls: Option<UpstreamTls>,
}

/// The HTTPS listeners of `[server]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsListen {
    /// Addresses (`tls_listen`).
    pub listen: Vec<SocketAddr>,
    /// Certificate chain, leaf first (`tls_cert`, PEM).
    pub cert: std::path::PathBuf,
    /// Private key (`tls_key`, PEM).
    pub key: std::path::PathBuf,
}

/// TLS to an upstream's servers (`tls = true`): certificates are always verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent in SNI and verified against the certificate.
    pub sni: String,
    /// CAs to verify against (PEM); `None`: the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// One server of an upstream: `host:port`, where the host is an IP literal or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// IP literal (without brackets) or host name.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Relative share of the requests (1 unless set).
    pub weight: usize,
}

impl Server {
    /// The address when the host is an IP literal (no resolution needed).
    pub fn literal(&self) -> Option<SocketAddr> {
        self.host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How a request picks a server of its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// In turn, by weight.
    RoundRobin,
    /// Ketama consistent hashing of the canonical resource (host, path, query): every request
    /// for one resource reaches one server while the pool does not change.
    Consistent,
    /// At random, by weight.
    Random,
}

/// What an active health check sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthProbe {
    /// No checks: every server is always selectable.
    None,
    /// A TCP connection is established.
    Tcp,
    /// A `GET` of this path answers 2xx.
    Http {
        /// Path (and query) requested.
        path: String,
    },
}

/// Active health checking of an upstream's servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a check sends.
    pub probe: HealthProbe,
    /// Time between two checks of a server.
    pub interval: Duration,
    /// Connect (and, for `http`, answer) timeout of one check.
    pub timeout: Duration,
    /// Consecutive successes that bring an unhealthy server back.
    pub rise: usize,
    /// Consecutive failures that take a healthy server out.
    pub fall: usize,
}

/// What precond does on a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plain reverse proxy: learns nothing, decides nothing.
    Pass,
    /// Learns validators; refuses writes proven stale; forwards everything else.
    Guard,
    /// precond is the judge: evaluates every precondition itself, synthesises ETags, serialises
    /// writes per resource, may require preconditions (428).
    Enforce,
    /// Learns as `guard` does and forwards everything: records what `guard` would have refused,
    /// what the origin answered instead, and writes that overwrote a version their caller had
    /// not read (the lost-update census).
    Observe,
}

impl Mode {
    /// Its name in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pass => "pass",
            Mode::Guard => "guard",
            Mode::Enforce => "enforce",
            Mode::Observe => "observe",
        }
    }

    /// Whether the route learns like `guard` (and decides like it, or only records).
    pub fn guards(self) -> bool {
        matches!(self, Mode::Guard | Mode::Observe)
    }

    /// Whether its `strict_targets` refuses ambiguous targets (`pass` and `observe` forward them
    /// untouched).
    pub fn refuses_ambiguous(self) -> bool {
        matches!(self, Mode::Guard | Mode::Enforce)
    }
}

/// How an `enforce` route asks the origin for a resource's current validators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// GET: the body is read, so an ETag can be synthesised when the origin sends none.
    Get,
    /// HEAD: cheaper, but serves only origins that send their own validators.
    Head,
}

/// Settings of an `enforce` route (the file's defaults on other routes, where they are unused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnforceSettings {
    /// Probe method on a cache miss.
    pub probe: Probe,
    /// Methods that must carry a usable precondition (else 428).
    pub require: Vec<crate::precondition::Method>,
    /// Longest wait for another write to the same resource to finish (then 503).
    pub write_wait: Duration,
    /// Longest time a write holding the resource's lock may take to upload its body (from the
    /// moment it got the lock); past it the write is aborted (408) and the lock released.
    pub write_body_timeout: Duration,
    /// Largest body hashed to synthesise an ETag; larger representations get none.
    pub synthesize_max_body: usize,
}

/// The in-flight write fence of a `guard` route (the file's defaults on other routes, where they
/// are unused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceSettings {
    /// Longest wait of a write for the answer to a write in flight naming the same tag (then it
    /// is forwarded); zero turns the fence off.
    pub wait: Duration,
    /// Most writes waiting at one fence; more are forwarded without waiting.
    pub waiters: usize,
    /// While a resource's current state is unknown, how long conditional writes wait for the
    /// one write in flight (single-flight); zero turns it off.
    pub uncertain_wait: Duration,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Stable identity in resource keys (from `host` and `path_prefix`, not the file order).
    pub id: RouteId,
    /// Host to match (lower case, no port); `None` matches any host.
    pub host: Option<String>,
    /// Path prefix to match, on a segment boundary.
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Mode.
    pub mode: Mode,
    /// Guard policy.
    pub policy: Policy,
    /// Guard's in-flight write fence.
    pub fence: FenceSettings,
    /// Enforce settings.
    pub enforce: EnforceSettings,
    /// Answer 400 to targets whose canonical form depends on the origin (guard and enforce).
    pub strict_targets: bool,
    /// Keep client-sent forwarding headers (`Forwarded`, `X-Forwarded-*`, `X-Original-URL`,
    /// `X-Rewrite-URL`) instead of replacing them with precond's own.
    pub trust_forwarded: bool,
    /// What identifies a caller (in order; hashed, with the deployment secret, into a principal).
    pub principal: Vec<PrincipalSource>,
    /// Whose truth learned state is.
    pub scope: Scope,
}

impl Route {
    /// Whether `path` falls under this route's prefix (`/api` matches `/api` and `/api/x`, not
    /// `/apix`).
    pub fn matches_path(&self, path: &str) -> bool {
        let p = self.path_prefix.as_str();
        path.starts_with(p)
            && (p.ends_with('/') || path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
    }
}

impl Config {
    /// How long the shared store (`store.backend = "redis"`) keeps a resource's state: at least
    /// `store.ttl`, and longer than the longest enforce write bound plus the lease (a dead
    /// holder's `quiet` must outlive the state that records it). `None` without Redis.
    pub fn shared_state_ttl(&self) -> Option<Duration> {
        let Backend::Redis { lease_ttl, .. } = &self.store.backend else {
            return None;
        };
        let longest = self
            .routes
            .iter()
            .filter(|r| r.mode == Mode::Enforce)
            .map(|r| self.enforce_write_bound(r))
            .max()
            .unwrap_or_default();
        Some(self.store.ttl.max(longest + *lease_ttl))
    }

    /// How long an enforce write on `route` may be in flight at the origin once precond forwards
    /// it, by precond's own timeouts: its body upload (`write_body_timeout`), a connection
    /// attempt to each server of the upstream, one write and one read timeout. (A read timeout
    /// restarts with each byte read, so an origin trickling its answer can exceed it: a bound on
    /// precond's patience, not on the origin.)
    pub fn enforce_write_bound(&self, route: &Route) -> Duration {
        let up = &self.upstreams[route.upstream];
        route.enforce.write_body_timeout
            + up.connect_timeout * up.servers.len().max(1) as u32
            + up.write_timeout
            + up.read_timeout
    }

    /// The route for a request: among routes whose host matches (or have none), a route with a
    /// host beats one without, then the longest path prefix wins, then file order.
    pub fn route_for(&self, host: Option<&str>, path: &str) -> Option<(usize, &Route)> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| match &r.host {
                Some(h) => host.is_some_and(|x| x.eq_ignore_ascii_case(h)),
                None => true,
            })
            .filter(|(_, r)| r.matches_path(path))
            .max_by_key(|(i, r)| (r.host.is_some(), r.path_prefix.len(), usize::MAX - i))
    }
}

/// `host:port` → `host` (IPv6 literals keep their brackets).
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}
