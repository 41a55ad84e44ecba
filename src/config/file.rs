//! The configuration file as written: its TOML schema and the one copy of every default.
//!
//! Owns: the `Raw*` structs serde reads the file into (spans kept, for located errors) and the
//! `default_*` functions, which are the only place a default value is written. `config/defaults.toml`
//! lists every key at these values; a test keeps the two equal.
//!
//! Invariants: unknown keys are errors (`deny_unknown_fields`); keys that only apply to one mode
//! are `Option`s here, so that the validator can tell "absent" from "set to the default".

use serde::Deserialize;
use toml::Spanned;

use super::settings::{LogFormat, Mode, Probe, Scope};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) edge: RawEdge,
    #[serde(default)]
    pub(super) enforce: RawEnforce,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default, rename = "upstream")]
    pub(super) upstreams: Vec<Spanned<RawUpstream>>,
    #[serde(default, rename = "route")]
    pub(super) routes: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default = "default_listen")]
    pub(super) listen: Vec<Spanned<String>>,
    #[serde(default = "default_threads")]
    pub(super) threads: Spanned<i64>,
    #[serde(default = "default_grace_period")]
    pub(super) grace_period: Spanned<String>,
    #[serde(default = "default_graceful_shutdown_timeout")]
    pub(super) graceful_shutdown_timeout: Spanned<String>,
    pub(super) metrics_listen: Option<Spanned<String>>,
    #[serde(default = "default_upgrade_sock")]
    pub(super) upgrade_sock: Spanned<String>,
    /// HTTPS listeners (with `tls_cert` and `tls_key`).
    #[serde(default)]
    pub(super) tls_listen: Vec<Spanned<String>>,
    pub(super) tls_cert: Option<Spanned<String>>,
    pub(super) tls_key: Option<Spanned<String>>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            threads: default_threads(),
            grace_period: default_grace_period(),
            graceful_shutdown_timeout: default_graceful_shutdown_timeout(),
            metrics_listen: None,
            upgrade_sock: default_upgrade_sock(),
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

pub(super) fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}
pub(super) fn default_listen() -> Vec<Spanned<String>> {
    vec![unspanned("127.0.0.1:8080".into())]
}
pub(super) fn default_threads() -> Spanned<i64> {
    unspanned(2)
}
pub(super) fn default_grace_period() -> Spanned<String> {
    unspanned("5s".into())
}
pub(super) fn default_graceful_shutdown_timeout() -> Spanned<String> {
    unspanned("10s".into())
}
pub(super) fn default_upgrade_sock() -> Spanned<String> {
    unspanned("/run/precond/upgrade.sock".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default = "default_capacity")]
    pub(super) capacity: Spanned<i64>,
    #[serde(default = "default_ttl")]
    pub(super) ttl: Spanned<String>,
    #[serde(default = "default_max_key_bytes")]
    pub(super) max_key_bytes: Spanned<i64>,
    #[serde(default = "default_max_bytes")]
    pub(super) max_bytes: Spanned<RawSize>,
    #[serde(default = "default_census_max_bytes")]
    pub(super) census_max_bytes: Spanned<RawSize>,
    #[serde(default = "default_backend")]
    pub(super) backend: Spanned<String>,
    /// `redis` only.
    pub(super) url: Option<Spanned<String>>,
    /// `rediss://` only: the CAs the server's certificate must chain to.
    pub(super) ca_file: Option<Spanned<String>>,
    #[serde(default = "default_store_timeout")]
    pub(super) timeout: Spanned<String>,
    #[serde(default = "default_lease_ttl")]
    pub(super) lease_ttl: Spanned<String>,
}
pub(super) fn default_backend() -> Spanned<String> {
    unspanned("memory".into())
}
/// `store.timeout`: the longest wait for one call to the shared store.
pub(super) fn default_store_timeout() -> Spanned<String> {
    unspanned("50ms".into())
}
/// `store.lease_ttl`: an enforce write's lease on the shared store (renewed while it is held).
pub(super) fn default_lease_ttl() -> Spanned<String> {
    unspanned("5s".into())
}

/// A size: a number of bytes, or a string such as `"64MiB"`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

/// `store.max_bytes`: sized for a small sidecar (about 60,000 resources of one caller with short
/// tags).
pub(super) fn default_max_bytes() -> Spanned<RawSize> {
    unspanned(RawSize::Text("64MiB".into()))
}

/// `store.census_max_bytes`: the lost-update census of `observe` routes (about 100,000 callers'
/// last reads with short tags).
pub(super) fn default_census_max_bytes() -> Spanned<RawSize> {
    unspanned(RawSize::Text("16MiB".into()))
}

/// `store.max_key_bytes`: longer keys (host, path and query) are forwarded and never learned.
pub(super) fn default_max_key_bytes() -> Spanned<i64> {
    unspanned(2048)
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            capacity: default_capacity(),
            ttl: default_ttl(),
            max_key_bytes: default_max_key_bytes(),
            max_bytes: default_max_bytes(),
            census_max_bytes: default_census_max_bytes(),
            backend: default_backend(),
            url: None,
            ca_file: None,
            timeout: default_store_timeout(),
            lease_ttl: default_lease_ttl(),
        }
    }
}
pub(super) fn default_capacity() -> Spanned<i64> {
    unspanned(100_000)
}
pub(super) fn default_ttl() -> Spanned<String> {
    unspanned("10m".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEdge {
    #[serde(default = "yes")]
    pub(super) disclose_validators: bool,
    #[serde(default = "default_drain_limit")]
    pub(super) drain_limit: Spanned<i64>,
    #[serde(default = "default_drain_timeout")]
    pub(super) drain_timeout: Spanned<String>,
    #[serde(default = "default_linger_timeout")]
    pub(super) linger_timeout: Spanned<String>,
}

impl Default for RawEdge {
    fn default() -> Self {
        RawEdge {
            disclose_validators: true,
            drain_limit: default_drain_limit(),
            drain_timeout: default_drain_timeout(),
            linger_timeout: default_linger_timeout(),
        }
    }
}
pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_drain_limit() -> Spanned<i64> {
    unspanned(64 * 1024)
}
pub(super) fn default_drain_timeout() -> Spanned<String> {
    unspanned("2s".into())
}
pub(super) fn default_linger_timeout() -> Spanned<String> {
    unspanned("2s".into())
}

/// `[enforce]`: settings shared by every enforce route (no default: without a file, the secret
/// comes from `PRECOND_TAG_SECRET` or is generated at start).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnforce {
    pub(super) tag_secret_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    /// `log_query`: query strings in logs and problem bodies (they often carry tokens).
    #[serde(default)]
    pub(super) log_query: bool,
    /// `format`: `json` or `text` (default: text on a terminal, JSON otherwise).
    pub(super) format: Option<Spanned<LogFormat>>,
    /// `level`: `info` when absent.
    pub(super) level: Option<Spanned<String>>,
    /// `access_log`: one line per request (off by default).
    #[serde(default)]
    pub(super) access_log: bool,
}

/// `[admin]`: off unless `listen` is set.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: Spanned<String>,
    /// `"host:port"` strings or `{ addr = "host:port", weight = N }` tables (read by hand so
    /// that a mistake gets a precise message).
    pub(super) servers: Vec<Spanned<toml::Value>>,
    #[serde(default = "default_connect_timeout")]
    pub(super) connect_timeout: Spanned<String>,
    #[serde(default = "default_io_timeout")]
    pub(super) read_timeout: Spanned<String>,
    #[serde(default = "default_io_timeout")]
    pub(super) write_timeout: Spanned<String>,
    #[serde(default = "default_idle_timeout")]
    pub(super) idle_timeout: Spanned<String>,
    #[serde(default = "default_selection")]
    pub(super) selection: Spanned<String>,
    #[serde(default = "default_health_check")]
    pub(super) health_check: Spanned<String>,
    #[serde(default = "default_health_check_interval")]
    pub(super) health_check_interval: Spanned<String>,
    /// `http` only (default `/`).
    pub(super) health_check_path: Option<Spanned<String>>,
    #[serde(default = "default_health_check_timeout")]
    pub(super) health_check_timeout: Spanned<String>,
    #[serde(default = "default_health_check_rise")]
    pub(super) health_check_rise: Spanned<i64>,
    #[serde(default = "default_health_check_fall")]
    pub(super) health_check_fall: Spanned<i64>,
    #[serde(default = "default_resolve_interval")]
    pub(super) resolve_interval: Spanned<String>,
    /// Connect to the servers over TLS (verified).
    #[serde(default = "default_false")]
    pub(super) tls: Spanned<bool>,
    /// TLS only: the name sent (SNI) and verified; default: the first server's host name.
    pub(super) sni: Option<Spanned<String>>,
    /// TLS only: PEM file of the CAs the servers' certificates are verified against; default:
    /// the system's roots.
    pub(super) ca_file: Option<Spanned<String>>,
}
pub(super) fn default_false() -> Spanned<bool> {
    unspanned(false)
}
pub(super) fn default_selection() -> Spanned<String> {
    unspanned("round_robin".into())
}
pub(super) fn default_health_check() -> Spanned<String> {
    unspanned("none".into())
}
pub(super) fn default_health_check_interval() -> Spanned<String> {
    unspanned("5s".into())
}
pub(super) fn default_health_check_timeout() -> Spanned<String> {
    unspanned("1s".into())
}
/// Consecutive successful checks that bring a server back.
pub(super) fn default_health_check_rise() -> Spanned<i64> {
    unspanned(1)
}
/// Consecutive failed checks that take a server out.
pub(super) fn default_health_check_fall() -> Spanned<i64> {
    unspanned(2)
}
pub(super) fn default_resolve_interval() -> Spanned<String> {
    unspanned("30s".into())
}
pub(super) fn default_connect_timeout() -> Spanned<String> {
    unspanned("2s".into())
}
pub(super) fn default_io_timeout() -> Spanned<String> {
    unspanned("30s".into())
}
pub(super) fn default_idle_timeout() -> Spanned<String> {
    unspanned("4s".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) host: Option<Spanned<String>>,
    #[serde(default = "default_prefix")]
    pub(super) path_prefix: Spanned<String>,
    pub(super) upstream: Spanned<String>,
    #[serde(default = "default_mode")]
    pub(super) mode: Spanned<Mode>,
    #[serde(default)]
    pub(super) policy: Option<Spanned<RawPolicy>>,
    pub(super) fence_wait: Option<Spanned<String>>,
    pub(super) fence_waiters: Option<Spanned<i64>>,
    pub(super) uncertain_wait: Option<Spanned<String>>,
    pub(super) probe: Option<Spanned<Probe>>,
    pub(super) require: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) write_wait: Option<Spanned<String>>,
    pub(super) write_body_timeout: Option<Spanned<String>>,
    pub(super) synthesize_max_body: Option<Spanned<i64>>,
    #[serde(default = "default_strict_targets")]
    pub(super) strict_targets: bool,
    #[serde(default)]
    pub(super) trust_forwarded: bool,
    #[serde(default = "default_principal")]
    pub(super) principal: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "default_scope")]
    pub(super) scope: Spanned<Scope>,
}
/// `principal`: what identifies a caller (header names, or `cookie:NAME`).
pub(super) fn default_principal() -> Spanned<Vec<Spanned<String>>> {
    unspanned(vec![
        unspanned("authorization".into()),
        unspanned("cookie".into()),
    ])
}
/// `scope`: partitions per principal, writes retire every partition's tags.
pub(super) fn default_scope() -> Spanned<Scope> {
    unspanned(Scope::Auto)
}
pub(super) fn default_prefix() -> Spanned<String> {
    unspanned("/".into())
}
/// `strict_targets`: ambiguous targets (`//`, `%2F`, non-UTF-8 escapes) get 400 on guard and
/// enforce routes. (`trust_forwarded` defaults to `false`, serde's default for `bool`.)
pub(super) fn default_strict_targets() -> bool {
    true
}
pub(super) fn default_mode() -> Spanned<Mode> {
    unspanned(Mode::Guard)
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawPolicy {
    Superseded,
    Mismatch,
}

// Defaults of the keys that apply to one mode only (absent keys are `None` in `RawRoute`).

/// `policy` (guard routes).
pub(super) fn default_policy() -> RawPolicy {
    RawPolicy::Superseded
}
/// `fence_wait` (guard routes): longer than most origins take to answer a write, short enough
/// that a stuck write does not stall its followers for long.
pub(super) fn default_fence_wait() -> Spanned<String> {
    unspanned("3s".into())
}
/// `uncertain_wait` (guard routes): about one origin round trip of a slow write.
pub(super) fn default_uncertain_wait() -> Spanned<String> {
    unspanned("1s".into())
}
/// `fence_waiters` (guard routes).
pub(super) fn default_fence_waiters() -> Spanned<i64> {
    unspanned(64)
}
/// `probe` (enforce routes).
pub(super) fn default_probe() -> Probe {
    Probe::Get
}
/// `require` (enforce routes): no method must carry a precondition.
pub(super) fn default_require() -> Vec<Spanned<String>> {
    Vec::new()
}
/// `write_body_timeout` (enforce routes): shorter than `write_wait`, so that a write waiting
/// behind a slow upload gets its turn.
pub(super) fn default_write_body_timeout() -> Spanned<String> {
    unspanned("3s".into())
}
/// `write_wait` (enforce routes).
pub(super) fn default_write_wait() -> Spanned<String> {
    unspanned("5s".into())
}
/// `synthesize_max_body` (enforce routes): 1 MiB.
pub(super) fn default_synthesize_max_body() -> Spanned<i64> {
    unspanned(1 << 20)
}
