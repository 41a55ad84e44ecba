//! The configuration file: its TOML schema, and validation into typed settings.
//!
//! Owns: [`Config`] and its parts (what the rest of precond reads), and [`load`] / [`parse`]
//! (file → `Config` or a [`ConfigError`] that names the line). Nothing here holds runtime state.
//!
//! Invariants of a validated [`Config`]:
//! - every route names an upstream that exists (held as an index), and at least one route exists;
//! - every address is a resolved socket address (no DNS at run time);
//! - durations and sizes are in range; no `Option` stands for "use a default" any more.
//! - unknown keys are errors, not silently ignored.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use crate::precondition::Policy;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listener and process settings.
    pub server: ServerSettings,
    /// Validator store bounds.
    pub store: StoreSettings,
    /// What edge answers disclose.
    pub edge: EdgeSettings,
    /// Upstream groups, referenced by index from routes.
    pub upstreams: Vec<Upstream>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
}

/// Listener and process settings.
#[derive(Clone, Debug)]
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
}

/// Validator store bounds.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    /// Most resources remembered.
    pub capacity: u64,
    /// How long a learned state is trusted after it was last learned.
    pub ttl: Duration,
}

/// What edge answers carry.
#[derive(Clone, Debug)]
pub struct EdgeSettings {
    /// Send the current `ETag`/`Last-Modified` (headers and problem body) with an edge 412.
    pub disclose_validators: bool,
    /// A rejected write whose declared body is at most this many bytes is read and discarded so
    /// the connection stays open; larger or chunked bodies close the connection instead.
    pub drain_limit: u64,
    /// Longest time spent draining such a body.
    pub drain_timeout: Duration,
}

/// One upstream group.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// Name routes refer to.
    pub name: String,
    /// Servers, balanced round-robin.
    pub servers: Vec<SocketAddr>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of each read from the upstream.
    pub read_timeout: Duration,
    /// Timeout of each write to the upstream.
    pub write_timeout: Duration,
    /// Idle pooled connections are closed after this long (keep it below the origin's keep-alive
    /// timeout so that no write lands on a connection the origin already closed).
    pub idle_timeout: Duration,
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

/// Settings of an `enforce` route (defaults on other routes, where they are unused).
#[derive(Clone, Debug)]
pub struct EnforceSettings {
    /// Probe method on a cache miss.
    pub probe: Probe,
    /// Methods that must carry a usable precondition (else 428).
    pub require: Vec<crate::precondition::Method>,
    /// Longest wait for another write to the same resource to finish (then 503).
    pub write_wait: Duration,
    /// Largest body hashed to synthesise an ETag; larger representations get none.
    pub synthesize_max_body: usize,
}

impl Default for EnforceSettings {
    fn default() -> Self {
        EnforceSettings {
            probe: Probe::Get,
            require: Vec::new(),
            write_wait: Duration::from_secs(5),
            synthesize_max_body: 1 << 20,
        }
    }
}

/// One route.
#[derive(Clone, Debug)]
pub struct Route {
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
    /// Enforce settings.
    pub enforce: EnforceSettings,
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
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A configuration error, located in the file when possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when loaded from one.
    pub file: Option<String>,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("config");
        match self.position {
            Some((line, col)) => write!(f, "{file}:{line}:{col}: {}", self.message),
            None => write!(f, "{file}: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.display().to_string()),
        position: None,
        message: format!("cannot read the file: {e}"),
    })?;
    parse(&text).map_err(|mut e| {
        e.file = Some(path.display().to_string());
        e
    })
}

/// Parses and validates configuration text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        ConfigError {
            file: None,
            position: e.span().map(|s| line_col(text, s.start)),
            message,
        }
    })?;
    Validator { text }.validate(raw)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    edge: RawEdge,
    #[serde(default, rename = "upstream")]
    upstreams: Vec<Spanned<RawUpstream>>,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: Vec<Spanned<String>>,
    #[serde(default = "default_threads")]
    threads: Spanned<i64>,
    #[serde(default = "default_grace_period")]
    grace_period: Spanned<String>,
    #[serde(default = "default_graceful_shutdown_timeout")]
    graceful_shutdown_timeout: Spanned<String>,
    metrics_listen: Option<Spanned<String>>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            threads: default_threads(),
            grace_period: default_grace_period(),
            graceful_shutdown_timeout: default_graceful_shutdown_timeout(),
            metrics_listen: None,
        }
    }
}

fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}
fn default_listen() -> Vec<Spanned<String>> {
    vec![unspanned("127.0.0.1:8080".into())]
}
fn default_threads() -> Spanned<i64> {
    unspanned(2)
}
fn default_grace_period() -> Spanned<String> {
    unspanned("5s".into())
}
fn default_graceful_shutdown_timeout() -> Spanned<String> {
    unspanned("10s".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default = "default_capacity")]
    capacity: Spanned<i64>,
    #[serde(default = "default_ttl")]
    ttl: Spanned<String>,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            capacity: default_capacity(),
            ttl: default_ttl(),
        }
    }
}
fn default_capacity() -> Spanned<i64> {
    unspanned(100_000)
}
fn default_ttl() -> Spanned<String> {
    unspanned("10m".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    #[serde(default = "yes")]
    disclose_validators: bool,
    #[serde(default = "default_drain_limit")]
    drain_limit: Spanned<i64>,
    #[serde(default = "default_drain_timeout")]
    drain_timeout: Spanned<String>,
}

impl Default for RawEdge {
    fn default() -> Self {
        RawEdge {
            disclose_validators: true,
            drain_limit: default_drain_limit(),
            drain_timeout: default_drain_timeout(),
        }
    }
}
fn yes() -> bool {
    true
}
fn default_drain_limit() -> Spanned<i64> {
    unspanned(64 * 1024)
}
fn default_drain_timeout() -> Spanned<String> {
    unspanned("2s".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: Spanned<String>,
    servers: Vec<Spanned<String>>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: Spanned<String>,
    #[serde(default = "default_io_timeout")]
    read_timeout: Spanned<String>,
    #[serde(default = "default_io_timeout")]
    write_timeout: Spanned<String>,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: Spanned<String>,
}
fn default_connect_timeout() -> Spanned<String> {
    unspanned("2s".into())
}
fn default_io_timeout() -> Spanned<String> {
    unspanned("30s".into())
}
fn default_idle_timeout() -> Spanned<String> {
    unspanned("4s".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<Spanned<String>>,
    #[serde(default = "default_prefix")]
    path_prefix: Spanned<String>,
    upstream: Spanned<String>,
    #[serde(default = "default_mode")]
    mode: Spanned<Mode>,
    #[serde(default)]
    policy: Option<Spanned<RawPolicy>>,
    probe: Option<Spanned<Probe>>,
    require: Option<Spanned<Vec<Spanned<String>>>>,
    write_wait: Option<Spanned<String>>,
    synthesize_max_body: Option<Spanned<i64>>,
}
fn default_prefix() -> Spanned<String> {
    unspanned("/".into())
}
fn default_mode() -> Spanned<Mode> {
    unspanned(Mode::Guard)
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawPolicy {
    Superseded,
    Mismatch,
}

// ---------------------------------------------------------------------------------------------
// Validation.

struct Validator<'t> {
    text: &'t str,
}

impl Validator<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            position: (span.end > 0).then(|| line_col(self.text, span.start)),
            message: message.into(),
        }
    }

    fn duration(&self, v: &Spanned<String>, what: &str) -> Result<Duration, ConfigError> {
        let d = humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
            self.err(
                v.span(),
                format!(
                    "{what}: {:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"10m\"",
                    v.get_ref()
                ),
            )
        })?;
        Ok(d)
    }

    fn positive(&self, v: &Spanned<i64>, what: &str, max: i64) -> Result<u64, ConfigError> {
        let n = *v.get_ref();
        if n < 1 || n > max {
            return Err(self.err(
                v.span(),
                format!("{what} must be between 1 and {max}, not {n}"),
            ));
        }
        Ok(n as u64)
    }

    fn addr(&self, v: &Spanned<String>, what: &str) -> Result<SocketAddr, ConfigError> {
        let s = v.get_ref().trim();
        let mut addrs = s.to_socket_addrs().map_err(|e| {
            self.err(
                v.span(),
                format!("{what}: {s:?} is not a host:port address ({e})"),
            )
        })?;
        addrs
            .next()
            .ok_or_else(|| self.err(v.span(), format!("{what}: {s:?} resolves to no address")))
    }

    fn enforce_settings(&self, r: &RawRoute, mode: Mode) -> Result<EnforceSettings, ConfigError> {
        let mut e = EnforceSettings::default();
        let only_enforce = |span: Range<usize>, key: &str| {
            self.err(span, format!("{key} applies only to mode = \"enforce\""))
        };
        if let Some(p) = &r.probe {
            if mode != Mode::Enforce {
                return Err(only_enforce(p.span(), "probe"));
            }
            e.probe = *p.get_ref();
        }
        if let Some(req) = &r.require {
            if mode != Mode::Enforce {
                return Err(only_enforce(req.span(), "require"));
            }
            for m in req.get_ref() {
                let method = crate::precondition::Method::from_bytes(m.get_ref().as_bytes());
                if !method.is_write() {
                    return Err(self.err(
                        m.span(),
                        format!("require lists {:?}: only PUT, PATCH, DELETE and POST can be required to be conditional", m.get_ref()),
                    ));
                }
                if !e.require.contains(&method) {
                    e.require.push(method);
                }
            }
        }
        if let Some(w) = &r.write_wait {
            if mode != Mode::Enforce {
                return Err(only_enforce(w.span(), "write_wait"));
            }
            e.write_wait = self.duration(w, "route.write_wait")?;
        }
        if let Some(n) = &r.synthesize_max_body {
            if mode != Mode::Enforce {
                return Err(only_enforce(n.span(), "synthesize_max_body"));
            }
            e.synthesize_max_body =
                self.positive(n, "route.synthesize_max_body", 64 << 20)? as usize;
        }
        Ok(e)
    }

    fn validate(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let s = &raw.server;
        if s.listen.is_empty() {
            return Err(self.err(0..0, "server.listen must name at least one address"));
        }
        let server = ServerSettings {
            listen: s
                .listen
                .iter()
                .map(|a| self.addr(a, "server.listen"))
                .collect::<Result<_, _>>()?,
            threads: self.positive(&s.threads, "server.threads", 256)? as usize,
            grace_period: self.duration(&s.grace_period, "server.grace_period")?,
            graceful_shutdown_timeout: self.duration(
                &s.graceful_shutdown_timeout,
                "server.graceful_shutdown_timeout",
            )?,
            metrics_listen: s
                .metrics_listen
                .as_ref()
                .map(|a| self.addr(a, "server.metrics_listen"))
                .transpose()?,
        };
        let ttl = self.duration(&raw.store.ttl, "store.ttl")?;
        if ttl.is_zero() {
            return Err(self.err(raw.store.ttl.span(), "store.ttl must be longer than 0s"));
        }
        let store = StoreSettings {
            capacity: self.positive(&raw.store.capacity, "store.capacity", i64::MAX)?,
            ttl,
        };
        let edge = EdgeSettings {
            disclose_validators: raw.edge.disclose_validators,
            drain_limit: if *raw.edge.drain_limit.get_ref() == 0 {
                0
            } else {
                self.positive(&raw.edge.drain_limit, "edge.drain_limit", 16 << 20)?
            },
            drain_timeout: self.duration(&raw.edge.drain_timeout, "edge.drain_timeout")?,
        };

        let mut upstreams: Vec<Upstream> = Vec::new();
        for u in &raw.upstreams {
            let span = u.span();
            let u = u.get_ref();
            let name = u.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(self.err(u.name.span(), "upstream.name must not be empty"));
            }
            if upstreams.iter().any(|x| x.name == name) {
                return Err(self.err(u.name.span(), format!("upstream {name:?} is defined twice")));
            }
            if u.servers.is_empty() {
                return Err(self.err(span, format!("upstream {name:?} has no servers")));
            }
            upstreams.push(Upstream {
                servers: u
                    .servers
                    .iter()
                    .map(|a| self.addr(a, "upstream.servers"))
                    .collect::<Result<_, _>>()?,
                connect_timeout: self.duration(&u.connect_timeout, "upstream.connect_timeout")?,
                read_timeout: self.duration(&u.read_timeout, "upstream.read_timeout")?,
                write_timeout: self.duration(&u.write_timeout, "upstream.write_timeout")?,
                idle_timeout: self.duration(&u.idle_timeout, "upstream.idle_timeout")?,
                name,
            });
        }

        if raw.routes.is_empty() {
            return Err(self.err(
                0..0,
                "no [[route]]: add at least one, e.g. path_prefix = \"/\"",
            ));
        }
        let mut routes = Vec::new();
        for r in &raw.routes {
            let r = r.get_ref();
            let up = r.upstream.get_ref().trim();
            let upstream = upstreams.iter().position(|u| u.name == up).ok_or_else(|| {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                self.err(
                    r.upstream.span(),
                    format!(
                        "route names upstream {up:?}, which is not defined (defined: {known:?})"
                    ),
                )
            })?;
            let prefix = r.path_prefix.get_ref().clone();
            if !prefix.starts_with('/') {
                return Err(self.err(
                    r.path_prefix.span(),
                    format!("path_prefix {prefix:?} must start with \"/\""),
                ));
            }
            let mode = *r.mode.get_ref();
            let enforce = self.enforce_settings(r, mode)?;
            let policy = match r.policy.as_ref().map(|p| (*p.get_ref(), p.span())) {
                None => Policy::Superseded,
                Some((_, span)) if mode != Mode::Guard => {
                    return Err(self.err(span, "policy applies only to mode = \"guard\""))
                }
                Some((RawPolicy::Superseded, _)) => Policy::Superseded,
                Some((RawPolicy::Mismatch, _)) => Policy::Mismatch,
            };
            let host = match &r.host {
                Some(h) if h.get_ref().trim().is_empty() || h.get_ref().contains('/') => {
                    return Err(self.err(
                        h.span(),
                        "host must be a host name such as \"api.example.com\"",
                    ))
                }
                Some(h) => Some(strip_port(h.get_ref().trim()).to_ascii_lowercase()),
                None => None,
            };
            routes.push(Route {
                host,
                path_prefix: prefix,
                upstream,
                mode,
                policy,
                enforce,
            });
        }
        Ok(Config {
            server,
            store,
            edge,
            upstreams,
            routes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[upstream]]
name = "api"
servers = ["127.0.0.1:9000"]

[[route]]
upstream = "api"
"#;

    #[test]
    fn minimal_file_gets_safe_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.routes[0].mode, Mode::Guard);
        assert_eq!(c.routes[0].policy, Policy::Superseded);
        assert_eq!(c.server.grace_period, Duration::from_secs(5));
        assert!(c.edge.disclose_validators);
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let text = format!("{MINIMAL}colour = \"red\"\n");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
    }

    #[test]
    fn undefined_upstream_names_the_line() {
        let text = MINIMAL.replace("upstream = \"api\"", "upstream = \"apx\"");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("\"apx\""), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(7), "{e}");
    }

    #[test]
    fn bad_duration_and_bad_address_are_located() {
        let text = MINIMAL.replace(
            "servers = [\"127.0.0.1:9000\"]",
            "servers = [\"127.0.0.1:9000\"]\nread_timeout = \"soon\"",
        );
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("read_timeout"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(5));
        let text = MINIMAL.replace("127.0.0.1:9000", "no-port");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
    }

    #[test]
    fn enforce_settings_are_validated() {
        let text = format!(
            "{MINIMAL}mode = \"enforce\"\nrequire = [\"PUT\", \"DELETE\"]\nprobe = \"head\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.routes[0].enforce.probe, Probe::Head);
        assert_eq!(c.routes[0].enforce.require.len(), 2);
        let text = format!("{MINIMAL}mode = \"enforce\"\nrequire = [\"GET\"]\n");
        assert!(parse(&text).unwrap_err().message.contains("GET"));
        let text = format!("{MINIMAL}require = [\"PUT\"]\n");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("only to mode = \"enforce\""), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(8));
    }

    #[test]
    fn route_selection_prefers_host_then_longest_prefix() {
        let text = r#"
[[upstream]]
name = "a"
servers = ["127.0.0.1:1"]
[[route]]
upstream = "a"
[[route]]
path_prefix = "/api"
upstream = "a"
mode = "pass"
[[route]]
host = "Example.com"
path_prefix = "/"
upstream = "a"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.route_for(None, "/api/x").unwrap().0, 1);
        assert_eq!(c.route_for(None, "/apix").unwrap().0, 0);
        assert_eq!(
            c.route_for(Some("example.com:8080"), "/api/x").unwrap().0,
            2
        );
        assert_eq!(c.route_for(Some("other"), "/").unwrap().0, 0);
    }
}
