//! Upstream selection: which server of an `[[upstream]]` a request goes to, and with which
//! timeouts. The room for upstream pools (health checks, consistent selection).
//!
//! Owns: [`Upstreams`], one `pingora-load-balancing` balancer per configured upstream (today
//! round-robin over the configured servers), and [`Upstreams::peer_for`].
//!
//! Invariant: every peer carries the upstream's connect, read, write and idle timeouts.

use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::*;

use crate::config::Upstream;

/// The balancers of every configured upstream, in file order (routes refer to them by index).
pub(crate) struct Upstreams {
    balancers: Vec<(Upstream, LoadBalancer<RoundRobin>)>,
}

impl Upstreams {
    /// Balancers for `upstreams`.
    pub(crate) fn new(upstreams: &[Upstream]) -> std::io::Result<Upstreams> {
        let balancers = upstreams
            .iter()
            .map(|u| {
                let lb = LoadBalancer::try_from_iter(u.servers.iter().copied())?;
                Ok((u.clone(), lb))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Upstreams { balancers })
    }

    /// A peer of upstream `index`, chosen round-robin, with the upstream's timeouts.
    pub(crate) fn peer_for(&self, index: usize) -> Result<HttpPeer> {
        let (up, lb) = self.balancers.get(index).ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "route names no such upstream")
        })?;
        let backend = lb.select(b"", 256).ok_or_else(|| {
            Error::explain(
                ErrorType::HTTPStatus(503),
                format!("upstream {:?} has no server available", up.name),
            )
        })?;
        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.read_timeout = Some(up.read_timeout);
        peer.options.write_timeout = Some(up.write_timeout);
        peer.options.idle_timeout = Some(up.idle_timeout);
        Ok(peer)
    }
}
