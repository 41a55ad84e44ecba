//! Validation: the file as written ([`file`](mod@super::file)) into typed settings ([`Config`]), or a
//! [`ConfigError`] that names the line and column of the offending value.
//!
//! Invariants: every error that concerns a value written in the file carries its position;
//! defaults come from `file` only; nothing here reads the environment or the network except the
//! resolution of `host:port` addresses.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use std::fmt;

use super::file::{self, RawFile, RawPolicy, RawRoute, RawSize};

/// `"256MiB"`, `"1 GB"`, `"4096"`: a size in bytes (`None` when malformed or too large).
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}
use super::settings::{
    strip_port, AdminSettings, Config, EdgeSettings, EnforceSettings, FenceSettings, LogSettings,
    Mode, Policy, Route, SecretSource, ServerSettings, StoreSettings, Upstream,
};
use crate::identity::{canonical_path, PrincipalSource, RouteId};

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

/// Line and column (1-based) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub(super) struct Validator<'t> {
    pub(super) text: &'t str,
}

impl Validator<'_> {
    pub(super) fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            position: (span.end > 0).then(|| line_col(self.text, span.start)),
            message: message.into(),
        }
    }

    pub(super) fn duration(
        &self,
        v: &Spanned<String>,
        what: &str,
    ) -> Result<Duration, ConfigError> {
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

    /// A size of at least `min` bytes: an integer, or a number with a unit (`B`, `KB`, `KiB`,
    /// `MB`, `MiB`, `GB`, `GiB`; decimal units are powers of 1000).
    fn size(&self, v: &Spanned<RawSize>, what: &str, min: u64) -> Result<u64, ConfigError> {
        let bad = |why: String| self.err(v.span(), format!("{what}: {why}"));
        let n = match v.get_ref() {
            RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| bad(format!("{n} is negative")))?,
            RawSize::Text(t) => parse_size(t).ok_or_else(|| {
                bad(format!(
                    "{t:?} is not a size; write e.g. 268435456, \"256MiB\" or \"1GB\""
                ))
            })?,
        };
        if n < min {
            return Err(bad(format!("{n} bytes is less than the minimum, {min}")));
        }
        Ok(n)
    }

    pub(super) fn positive(
        &self,
        v: &Spanned<i64>,
        what: &str,
        max: i64,
    ) -> Result<u64, ConfigError> {
        let n = *v.get_ref();
        if n < 1 || n > max {
            return Err(self.err(
                v.span(),
                format!("{what} must be between 1 and {max}, not {n}"),
            ));
        }
        Ok(n as u64)
    }

    pub(super) fn addr(&self, v: &Spanned<String>, what: &str) -> Result<SocketAddr, ConfigError> {
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
        // Keys that apply to enforce routes only: an error elsewhere, with the key's position.
        let only_enforce = |span: Range<usize>, key: &str| {
            self.err(span, format!("{key} applies only to mode = \"enforce\""))
        };
        if mode != Mode::Enforce {
            let spans = [
                ("probe", r.probe.as_ref().map(Spanned::span)),
                ("require", r.require.as_ref().map(Spanned::span)),
                ("write_wait", r.write_wait.as_ref().map(Spanned::span)),
                (
                    "write_body_timeout",
                    r.write_body_timeout.as_ref().map(Spanned::span),
                ),
                (
                    "synthesize_max_body",
                    r.synthesize_max_body.as_ref().map(Spanned::span),
                ),
            ];
            if let Some((key, Some(span))) = spans.into_iter().find(|(_, s)| s.is_some()) {
                return Err(only_enforce(span, key));
            }
        }
        let probe = r
            .probe
            .as_ref()
            .map_or_else(file::default_probe, |p| *p.get_ref());
        let listed = r
            .require
            .as_ref()
            .map_or_else(file::default_require, |l| l.get_ref().clone());
        let mut require = Vec::new();
        for m in &listed {
            let method = crate::precondition::Method::from_bytes(m.get_ref().as_bytes());
            if !method.is_write() {
                return Err(self.err(
                    m.span(),
                    format!("require lists {:?}: only PUT, PATCH, DELETE and POST can be required to be conditional", m.get_ref()),
                ));
            }
            if !require.contains(&method) {
                require.push(method);
            }
        }
        let write_wait = r
            .write_wait
            .clone()
            .unwrap_or_else(file::default_write_wait);
        let max_body = r
            .synthesize_max_body
            .clone()
            .unwrap_or_else(file::default_synthesize_max_body);
        Ok(EnforceSettings {
            probe,
            require,
            write_wait: self.duration(&write_wait, "route.write_wait")?,
            write_body_timeout: {
                let t = r
                    .write_body_timeout
                    .clone()
                    .unwrap_or_else(file::default_write_body_timeout);
                let d = self.duration(&t, "route.write_body_timeout")?;
                if d.is_zero() {
                    return Err(
                        self.err(t.span(), "route.write_body_timeout must be longer than 0s")
                    );
                }
                d
            },
            synthesize_max_body: self.positive(&max_body, "route.synthesize_max_body", 64 << 20)?
                as usize,
        })
    }

    fn fence_settings(&self, r: &RawRoute, mode: Mode) -> Result<FenceSettings, ConfigError> {
        for (key, span) in [
            ("fence_wait", r.fence_wait.as_ref().map(Spanned::span)),
            ("fence_waiters", r.fence_waiters.as_ref().map(Spanned::span)),
            (
                "uncertain_wait",
                r.uncertain_wait.as_ref().map(Spanned::span),
            ),
        ] {
            match span {
                Some(span) if mode != Mode::Guard => {
                    return Err(self.err(span, format!("{key} applies only to mode = \"guard\"")))
                }
                _ => {}
            }
        }
        let wait = r
            .fence_wait
            .clone()
            .unwrap_or_else(file::default_fence_wait);
        let waiters = r
            .fence_waiters
            .clone()
            .unwrap_or_else(file::default_fence_waiters);
        let wait_d = self.duration(&wait, "route.fence_wait")?;
        if wait_d > Duration::from_secs(60) {
            return Err(self.err(
                wait.span(),
                "route.fence_wait must be at most 60s: a write waits that long for another one",
            ));
        }
        let uncertain = r
            .uncertain_wait
            .clone()
            .unwrap_or_else(file::default_uncertain_wait);
        let uncertain_wait = self.duration(&uncertain, "route.uncertain_wait")?;
        if uncertain_wait > Duration::from_secs(60) {
            return Err(self.err(
                uncertain.span(),
                "route.uncertain_wait must be at most 60s: a write waits that long for another one",
            ));
        }
        Ok(FenceSettings {
            uncertain_wait,
            wait: wait_d,
            waiters: self.positive(&waiters, "route.fence_waiters", 4096)? as usize,
        })
    }

    pub(super) fn validate(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let s = &raw.server;
        if s.listen.is_empty() {
            return Err(self.err(0..0, "server.listen must name at least one address"));
        }
        self.distinct_listeners(&raw)?;
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
            upgrade_sock: {
                let p = std::path::PathBuf::from(s.upgrade_sock.get_ref());
                if !p.is_absolute() {
                    return Err(self.err(
                        s.upgrade_sock.span(),
                        "server.upgrade_sock must be an absolute path (a Unix socket the old and \
                         the new process agree on)",
                    ));
                }
                // sockaddr_un's sun_path holds 108 bytes with the terminating NUL.
                let len = s.upgrade_sock.get_ref().len();
                if len > 107 {
                    return Err(self.err(
                        s.upgrade_sock.span(),
                        format!(
                            "server.upgrade_sock is {len} bytes long: a Unix socket path may have \
                             at most 107"
                        ),
                    ));
                }
                p
            },
            tls: self.tls_listen(s)?,
        };
        let ttl = self.duration(&raw.store.ttl, "store.ttl")?;
        if ttl.is_zero() {
            return Err(self.err(raw.store.ttl.span(), "store.ttl must be longer than 0s"));
        }
        let store = StoreSettings {
            capacity: self.positive(&raw.store.capacity, "store.capacity", i64::MAX)?,
            ttl,
            max_key_bytes: {
                let n = self.positive(&raw.store.max_key_bytes, "store.max_key_bytes", 65_536)?;
                if n < 64 {
                    return Err(self.err(
                        raw.store.max_key_bytes.span(),
                        format!("store.max_key_bytes must be between 64 and 65536, not {n}"),
                    ));
                }
                n as usize
            },
            max_bytes: self.size(&raw.store.max_bytes, "store.max_bytes", 1 << 20)?,
            census_max_bytes: self.size(
                &raw.store.census_max_bytes,
                "store.census_max_bytes",
                64 << 10,
            )?,
            backend: self.backend(&raw.store)?,
        };
        let edge = EdgeSettings {
            disclose_validators: raw.edge.disclose_validators,
            drain_limit: if *raw.edge.drain_limit.get_ref() == 0 {
                0
            } else {
                self.positive(&raw.edge.drain_limit, "edge.drain_limit", 16 << 20)?
            },
            drain_timeout: self.duration(&raw.edge.drain_timeout, "edge.drain_timeout")?,
            linger_timeout: self.duration(&raw.edge.linger_timeout, "edge.linger_timeout")?,
        };

        let mut upstreams: Vec<Upstream> = Vec::new();
        for u in &raw.upstreams {
            let up = self.upstream(u)?;
            if upstreams.iter().any(|x| x.name == up.name) {
                return Err(self.err(
                    u.get_ref().name.span(),
                    format!("upstream {:?} is defined twice", up.name),
                ));
            }
            upstreams.push(up);
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
            // Requests are routed by their canonical path: a prefix must be canonical too.
            let prefix = match canonical_path(&prefix) {
                (p, None) => p.into_owned(),
                (_, Some(why)) => {
                    return Err(self.err(
                        r.path_prefix.span(),
                        format!("path_prefix {prefix:?} is ambiguous: {}", why.explain()),
                    ))
                }
            };
            let mode = *r.mode.get_ref();
            let enforce = self.enforce_settings(r, mode)?;
            let policy = match r.policy.as_ref() {
                Some(p) if !mode.guards() => {
                    return Err(self.err(
                        p.span(),
                        "policy applies only to mode = \"guard\" or \"observe\"",
                    ))
                }
                p => match p.map_or_else(file::default_policy, |p| *p.get_ref()) {
                    RawPolicy::Superseded => Policy::Superseded,
                    RawPolicy::Mismatch => Policy::Mismatch,
                },
            };
            let fence = self.fence_settings(r, mode)?;
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
            let mut principal = Vec::new();
            for p in r.principal.get_ref() {
                match PrincipalSource::parse(p.get_ref().trim()) {
                    Some(src) if !principal.contains(&src) => principal.push(src),
                    Some(_) => return Err(self.err(p.span(), format!("principal {:?} is listed twice", p.get_ref()))),
                    None => {
                        return Err(self.err(
                            p.span(),
                            format!(
                                "principal {:?} is not a header name (e.g. \"authorization\") or \"cookie:NAME\"",
                                p.get_ref()
                            ),
                        ))
                    }
                }
            }
            routes.push(Route {
                id: RouteId::of(host.as_deref(), &prefix),
                host,
                path_prefix: prefix,
                upstream,
                mode,
                policy,
                fence,
                enforce,
                strict_targets: r.strict_targets,
                trust_forwarded: r.trust_forwarded,
                principal,
                scope: *r.scope.get_ref(),
            });
        }
        let secret = match &raw.enforce.tag_secret_file {
            Some(f) if f.get_ref().trim().is_empty() => {
                return Err(self.err(f.span(), "tag_secret_file is empty: name a file"))
            }
            Some(f) => SecretSource::File(f.get_ref().trim().into()),
            None => SecretSource::EnvOrGenerated,
        };
        let admin = AdminSettings {
            listen: raw
                .admin
                .listen
                .as_ref()
                .map(|a| self.addr(a, "admin.listen"))
                .transpose()?,
            token_file: raw
                .admin
                .token_file
                .as_ref()
                .map(|f| std::path::PathBuf::from(f.get_ref().trim())),
        };
        if let (Some(addr), None, Some(a)) = (admin.listen, &admin.token_file, &raw.admin.listen) {
            if !addr.ip().is_loopback() {
                return Err(self.err(
                    a.span(),
                    format!("admin.listen = \"{addr}\" is not a loopback address: set admin.token_file (a file holding the bearer token that /metrics then requires), or listen on 127.0.0.1"),
                ));
            }
        }
        Ok(Config {
            admin,
            server,
            store,
            edge,
            log: LogSettings {
                log_query: raw.log.log_query,
                format: raw.log.format.as_ref().map(|f| *f.get_ref()),
                access_log: raw.log.access_log,
                level: match &raw.log.level {
                    None => "info".to_string(),
                    Some(v) => {
                        let l = v.get_ref().trim().to_ascii_lowercase();
                        if !["error", "warn", "info", "debug", "trace"].contains(&l.as_str()) {
                            return Err(self.err(
                                v.span(),
                                format!(
                                    "log.level must be error, warn, info, debug or trace, not {:?}",
                                    v.get_ref()
                                ),
                            ));
                        }
                        l
                    }
                },
            },
            secret,
            upstreams,
            routes,
        })
    }
}
