//! Server discovery: the addresses of an upstream's servers, from the configured `host:port`
//! list. IP literals are taken as they are; host names are resolved once at start (blocking, so
//! that a typo stops the start with a clear message) and again every `resolve_interval`
//! (asynchronously, by the load balancer's background service).
//!
//! Owns: [`Resolver`], a `pingora-load-balancing` [`ServiceDiscovery`].
//!
//! Invariants: a name that fails to resolve later keeps the addresses it had (a DNS outage never
//! empties a pool); every address of a name is a server of its own, with the name's weight.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use tracing::warn;

use crate::config::Server;

/// The discovery of one upstream.
pub(super) struct Resolver {
    upstream: String,
    servers: Vec<Server>,
    /// Per server (same order): the addresses last resolved.
    last: Mutex<Vec<Vec<SocketAddr>>>,
    /// The first discovery returns what the start-up resolution found, without a lookup.
    fresh: AtomicBool,
}

impl Resolver {
    /// Resolves every server now (blocking). Fails when a name resolves to no address.
    pub(super) fn new(upstream: &str, servers: &[Server]) -> std::io::Result<Resolver> {
        let mut last = Vec::with_capacity(servers.len());
        for s in servers {
            let addrs = match s.literal() {
                Some(a) => vec![a],
                None => {
                    let found: Vec<SocketAddr> = (s.host.as_str(), s.port)
                        .to_socket_addrs()
                        .map_err(|e| {
                            std::io::Error::other(format!(
                                "upstream {upstream:?}: server {s} does not resolve ({e})"
                            ))
                        })?
                        .collect();
                    if found.is_empty() {
                        return Err(std::io::Error::other(format!(
                            "upstream {upstream:?}: server {s} resolves to no address"
                        )));
                    }
                    found
                }
            };
            last.push(addrs);
        }
        Ok(Resolver {
            upstream: upstream.to_string(),
            servers: servers.to_vec(),
            last: Mutex::new(last),
            fresh: AtomicBool::new(true),
        })
    }

    /// Whether any server is a host name (and so worth resolving again).
    pub(super) fn has_names(&self) -> bool {
        self.servers.iter().any(|s| s.literal().is_none())
    }

    /// The backends for the addresses now known.
    fn backends(&self, last: &[Vec<SocketAddr>]) -> BTreeSet<Backend> {
        let mut out = BTreeSet::new();
        for (s, addrs) in self.servers.iter().zip(last) {
            for a in addrs {
                out.insert(Backend {
                    addr: PeerAddr::Inet(*a),
                    weight: s.weight,
                    ext: http::Extensions::new(),
                });
            }
        }
        out
    }
}

#[async_trait]
impl ServiceDiscovery for Resolver {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        if !self.fresh.swap(false, Ordering::Relaxed) {
            for (i, s) in self.servers.iter().enumerate() {
                if s.literal().is_some() {
                    continue;
                }
                match tokio::net::lookup_host((s.host.as_str(), s.port)).await {
                    Ok(found) => {
                        let found: Vec<SocketAddr> = found.collect();
                        if found.is_empty() {
                            warn!(upstream = %self.upstream, server = %s, "server resolves to no address; keeping the last addresses");
                        } else {
                            self.last.lock().unwrap_or_else(|p| p.into_inner())[i] = found;
                        }
                    }
                    Err(e) => {
                        warn!(upstream = %self.upstream, server = %s, error = %e, "server does not resolve; keeping the last addresses");
                    }
                }
            }
        }
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok((self.backends(&last), HashMap::new()))
    }
}
