//! The shared store on Redis (`[store] backend = "redis"`): what several precond instances must
//! agree on, kept where they all see it.
//!
//! It carries `enforce`'s write serialisation across instances: a per-resource lease, a
//! fencing counter that orders its holders, and the snapshot of the resource's validators the
//! last holder established (files: [`lease`] the lease's life, `scripts` the Lua scripts,
//! [`snapshot`] the snapshot's encoding); and `guard`'s shared facts: which tags a completed
//! write proved replaced, which were shown current, and when ([`facts`], with its own coherency
//! argument: a stale local store cannot cause a false 412 there either).
//!
//! Coherency of `enforce` (why a stale local store cannot cause a wrong answer): on an enforce
//! route with this backend, a write is decided only on state read from Redis *under the lease* or on a
//! probe of the origin made under it, never on the local store. The lease is exclusive, so no
//! other instance writes the resource meanwhile; a snapshot is trusted only when the holder
//! before published it (the state's fence is the new holder's number minus one): a holder that
//! died, timed out or whose write's outcome is unknown breaks that chain, and the next holder
//! probes the origin.
//!
//! Invariants:
//! - Every Redis call is bounded by `store.timeout`; an error or a timeout is a
//!   [`SharedError`]: never an enforce write decided without the lease, and a guard write
//!   forwarded.
//! - Keys of one resource share one hash tag (`precond:{id}:…`), so the scripts work on Redis
//!   Cluster; `id` is a keyed hash of the resource key (no URL is written to Redis).
//! - The connection is made on first use and remade on its own after a failure (redis-rs
//!   `ConnectionManager`); a failed first connection is retried at the next call.

pub mod facts;
pub mod lease;
mod scripts;
pub mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::Sha256;
use tracing::warn;

use crate::identity::ResourceKey;

pub use facts::{lesson, Facts, Lesson, MAX_ASKED};
pub use lease::{Lease, Resource};
pub use snapshot::Snapshot;

/// Redis could not be asked (unreachable, too slow, or an error reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedError(pub String);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shared store: {}", self.0)
    }
}

/// How the shared store is reached and how long its leases live.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://host:port/db`, or `rediss://` (TLS).
    pub url: String,
    /// `rediss://`: the PEM text of the CAs the server's certificate must chain to (the
    /// system's roots without it).
    pub ca: Option<Vec<u8>>,
    /// Longest wait for one Redis call (connecting included).
    pub timeout: Duration,
    /// Lease lifetime; a live holder renews it every third of it.
    pub lease_ttl: Duration,
    /// How long a resource's published state is kept without a holder.
    pub state_ttl: Duration,
}

/// A duration as Redis takes it (milliseconds, at least 1).
fn ms(d: Duration) -> Vec<u8> {
    d.as_millis().max(1).to_string().into_bytes()
}

/// The scripts, parsed once.
struct Scripts {
    acquire: redis::Script,
    renew: redis::Script,
    publish: redis::Script,
    release: redis::Script,
    peek: redis::Script,
    mark: redis::Script,
    judge: redis::Script,
    teach: redis::Script,
}

/// A connection to the shared store.
pub struct Redis {
    client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    settings: RedisSettings,
    /// Keys the resource ids (derived from the deployment secret, shared by every instance).
    names: [u8; 32],
    scripts: Scripts,
    /// Calls that failed or timed out.
    errors: AtomicU64,
    /// When a failure was last logged (seconds since the epoch): at most one line a second.
    warned: AtomicU64,
    /// Told the duration of every script call (the app wires it to the metrics).
    timed: OnceLock<RoundTrips>,
}

/// What is told of each round trip: the call's name (a fixed word) and its duration.
pub type RoundTrips = Box<dyn Fn(&'static str, Duration) + Send + Sync>;

impl Redis {
    /// A client for `settings` (the URL is parsed now; nothing is connected yet).
    pub fn new(settings: RedisSettings, names: [u8; 32]) -> Result<Arc<Redis>, String> {
        let client = match &settings.ca {
            Some(pem) => redis::Client::build_with_tls(
                settings.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(settings.url.as_str()),
        }
        // Not the URL itself: it may hold a password.
        .map_err(|e| format!("store.url: {e}"))?;
        Ok(Arc::new(Redis {
            client,
            conn: tokio::sync::OnceCell::new(),
            settings,
            names,
            scripts: Scripts {
                acquire: redis::Script::new(scripts::ACQUIRE),
                renew: redis::Script::new(scripts::RENEW),
                publish: redis::Script::new(scripts::PUBLISH),
                release: redis::Script::new(scripts::RELEASE),
                peek: redis::Script::new(scripts::PEEK),
                mark: redis::Script::new(scripts::MARK),
                judge: redis::Script::new(scripts::JUDGE),
                teach: redis::Script::new(scripts::TEACH),
            },
            errors: AtomicU64::new(0),
            warned: AtomicU64::new(0),
            timed: OnceLock::new(),
        }))
    }

    /// Tells `f` the duration of every script call from now on (once; later calls are ignored).
    pub fn time_round_trips(&self, f: RoundTrips) {
        let _ = self.timed.set(f);
    }

    /// Calls that failed or timed out so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The settings.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// The Redis id of a resource: a keyed hash of its key, hex.
    pub fn resource_id(&self, key: &ResourceKey<'_>) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.names).expect("any key length");
        mac.update(&key.route.0.to_le_bytes());
        mac.update(key.host.to_ascii_lowercase().as_bytes());
        mac.update(&[0]);
        mac.update(key.path.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Counts and (at most once a second) logs a failure.
    fn failed(&self, what: &str, e: &str) -> SharedError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.warned.swap(now, Ordering::Relaxed) != now {
            warn!(error = %e, call = what, "shared store (Redis) unavailable");
        }
        SharedError(format!("{what}: {e}"))
    }

    /// The connection, made on first use.
    async fn connection(&self) -> Result<ConnectionManager, SharedError> {
        let t = self.settings.timeout;
        let made = tokio::time::timeout(
            t,
            self.conn.get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(t)
                    .set_response_timeout(t)
                    .set_number_of_retries(2)
                    .set_max_delay(200);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            }),
        )
        .await;
        match made {
            Ok(Ok(c)) => Ok(c.clone()),
            Ok(Err(e)) => Err(self.failed("connect", &e.to_string())),
            Err(_) => Err(self.failed("connect", "timed out")),
        }
    }

    /// Runs `script` with `keys` and `args`, bounded by the timeout.
    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        script: &redis::Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, SharedError> {
        let started = Instant::now();
        let result = self.call(what, script, keys, args).await;
        if let Some(timed) = self.timed.get() {
            timed(what, started.elapsed());
        }
        result
    }

    /// [`Redis::run`] untimed.
    async fn call<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        script: &redis::Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, SharedError> {
        let mut conn = self.connection().await?;
        let mut call = script.prepare_invoke();
        for k in keys {
            call.key(*k);
        }
        for a in args {
            call.arg(*a);
        }
        match tokio::time::timeout(self.settings.timeout, call.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(what, &e.to_string())),
            Err(_) => Err(self.failed(what, "timed out")),
        }
    }
}
