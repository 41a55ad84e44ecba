//! One upstream's pool: its servers behind a `pingora-load-balancing` balancer of the configured
//! selection, the health of each server, and the peer (with the upstream's timeouts) a request is
//! sent to.
//!
//! Owns: [`Pool`]. Invariants: [`Pool::select`] returns only a server that is healthy (or not
//! checked) and that the request has not already failed to connect to; every peer carries the
//! upstream's connect, read, write and idle timeouts, and, with `tls = true`, its SNI name and
//! CAs; certificates are always verified (chain and host name: Pingora's defaults, never
//! turned off here).

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;

use crate::config::{HealthProbe, Selection, Upstream};

use super::discovery::Resolver;
use super::health;
use super::tls::{read_cas, trust_key, Cas};

/// Candidates examined per selection (Ketama walks its ring past unhealthy or tried servers).
const MAX_ITERATIONS: usize = 256;

/// The balancer of one selection kind.
enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
    Random(Arc<LoadBalancer<Random>>),
}

/// One upstream's servers and how requests are spread over them.
pub struct Pool {
    settings: Upstream,
    /// `tls = true` with a `ca_file`: its CAs.
    cas: Option<Cas>,
    /// The group key of its TLS peers: [`trust_key`] of `cas`.
    trust: u64,
    balancer: Balancer,
    /// Whether a background service must run (health checks, or host names to resolve again).
    background: bool,
}

/// Builds the balancer of one selection kind.
fn balancer<S>(
    u: &Upstream,
    resolver: Resolver,
    cas: Option<&Cas>,
) -> std::io::Result<LoadBalancer<S>>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    let names = resolver.has_names();
    let mut lb = LoadBalancer::<S>::from_backends(Backends::new(Box::new(resolver)));
    // The first discovery returns the addresses resolved at start, without waiting.
    lb.update()
        .now_or_never()
        .ok_or_else(|| std::io::Error::other("initial discovery did not complete"))?
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let host = u.servers.first().map(|s| s.to_string()).unwrap_or_default();
    let tls = u.tls.as_ref().map(|t| (t.sni.as_str(), cas.cloned()));
    if let Some(check) = health::checker(&u.name, &host, &u.health, tls) {
        lb.set_health_check(check);
        lb.health_check_frequency = Some(u.health.interval);
        lb.parallel_health_check = true;
    }
    lb.update_frequency = names.then_some(u.resolve_interval);
    Ok(lb)
}

/// The first acceptable backend of `lb` for `key`.
fn pick<S>(lb: &LoadBalancer<S>, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let b = lb.select_with(key, MAX_ITERATIONS, |b, healthy| {
        healthy && !inet(b).is_some_and(|a| tried.contains(&a))
    })?;
    inet(&b)
}

fn inet(b: &Backend) -> Option<SocketAddr> {
    match b.addr {
        PeerAddr::Inet(a) => Some(a),
        _ => None,
    }
}

/// Servers of `lb`: (healthy, all).
fn count<S>(lb: &LoadBalancer<S>) -> (usize, usize)
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let all = lb.backends().get_backend();
    let healthy = all.iter().filter(|b| lb.backends().ready(b)).count();
    (healthy, all.len())
}

impl Pool {
    /// The pool of upstream `u`: resolves its host names now (an error names the server).
    pub fn new(u: &Upstream) -> std::io::Result<Pool> {
        let cas = u
            .tls
            .as_ref()
            .and_then(|t| t.ca_file.as_deref())
            .map(read_cas)
            .transpose()?;
        let resolver = Resolver::new(&u.name, &u.servers)?;
        let background = resolver.has_names() || u.health.probe != HealthProbe::None;
        let c = cas.as_ref();
        let balancer = match u.selection {
            Selection::RoundRobin => Balancer::RoundRobin(Arc::new(balancer(u, resolver, c)?)),
            Selection::Consistent => Balancer::Consistent(Arc::new(balancer(u, resolver, c)?)),
            Selection::Random => Balancer::Random(Arc::new(balancer(u, resolver, c)?)),
        };
        Ok(Pool {
            trust: trust_key(cas.as_ref()),
            cas,
            settings: u.clone(),
            balancer,
            background,
        })
    }

    /// The upstream's settings.
    pub fn settings(&self) -> &Upstream {
        &self.settings
    }

    /// Whether selection depends on the request's resource (`selection = "consistent"`).
    pub fn keyed(&self) -> bool {
        self.settings.selection == Selection::Consistent
    }

    /// A healthy server for a request whose resource is `key` (ignored unless [`Self::keyed`]),
    /// other than those in `tried`; `None` when there is none.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        match &self.balancer {
            Balancer::RoundRobin(lb) => pick(lb, key, tried),
            Balancer::Consistent(lb) => pick(lb, key, tried),
            Balancer::Random(lb) => pick(lb, key, tried),
        }
    }

    /// Servers: (healthy, all).
    pub fn health(&self) -> (usize, usize) {
        match &self.balancer {
            Balancer::RoundRobin(lb) => count(lb),
            Balancer::Consistent(lb) => count(lb),
            Balancer::Random(lb) => count(lb),
        }
    }

    /// Seconds a client told "no server is healthy" should wait: one health-check interval
    /// (rounded up, at least 1).
    pub fn retry_after(&self) -> u64 {
        self.settings
            .health
            .interval
            .as_millis()
            .div_ceil(1000)
            .max(1) as u64
    }

    /// The peer for `addr`, with the upstream's timeouts (and TLS: SNI, CAs, verification).
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let u = &self.settings;
        let mut peer = match &u.tls {
            Some(t) => {
                let mut p = HttpPeer::new(addr, true, t.sni.clone());
                p.options.verify_cert = true;
                p.options.verify_hostname = true;
                p.options.ca = self.cas.clone();
                p.group_key = self.trust;
                p
            }
            None => HttpPeer::new(addr, false, String::new()),
        };
        peer.options.connection_timeout = Some(u.connect_timeout);
        peer.options.read_timeout = Some(u.read_timeout);
        peer.options.write_timeout = Some(u.write_timeout);
        peer.options.idle_timeout = Some(u.idle_timeout);
        peer
    }

    /// Whether this pool has background work: health checks, or host names to resolve again.
    pub fn has_background(&self) -> bool {
        self.background
    }

    /// Runs health checks and re-resolution until `shutdown` says so (nothing without
    /// background work).
    pub async fn run_background(&self, shutdown: pingora::server::ShutdownWatch) {
        use pingora::services::background::BackgroundService;
        if !self.background {
            return;
        }
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.start(shutdown).await,
            Balancer::Consistent(lb) => lb.start(shutdown).await,
            Balancer::Random(lb) => lb.start(shutdown).await,
        }
    }
}
