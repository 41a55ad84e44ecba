//! Which server a request is sent to: the glue between the proxy's phases and the upstream pools
//! (`crate::upstream`).
//!
//! Owns: the selection key (the canonical resource: host, path and query, so that every
//! spelling of one resource reaches one server under `selection = "consistent"`), the choice of
//! a server for a request and for an `enforce` probe, and the retry rule.
//!
//! Invariants: a request is sent to another server only when the connection to the first could
//! not be established (nothing was sent), and never to a server it already failed to connect
//! to; when no server is healthy the request fails with a 503 that names the upstream.

use std::net::SocketAddr;

use pingora::http::RequestHeader;
use pingora::prelude::*;

use crate::identity::{canonical_host, canonical_path, canonical_query};
use crate::upstream::Pool;

use super::ctx::Ctx;
use super::headers::request_host;
use super::shared::{Routes, Shared};

/// The error type of "no server of the upstream is healthy": answered 503 with `Retry-After`.
pub(crate) const NO_HEALTHY_SERVER: ErrorType = ErrorType::Custom("no healthy server");

/// The key consistent selection hashes: canonical host, path and query (as the store keys it).
pub(crate) fn selection_key(req: &RequestHeader) -> Vec<u8> {
    let host = request_host(req).map(canonical_host).unwrap_or_default();
    let (path, _) = canonical_path(req.uri.path());
    let query = req.uri.query().map(canonical_query);
    let mut key =
        Vec::with_capacity(host.len() + path.len() + query.as_ref().map_or(0, |q| q.len() + 1));
    key.extend_from_slice(host.as_bytes());
    key.extend_from_slice(path.as_bytes());
    if let Some(q) = &query {
        key.push(b'?');
        key.extend_from_slice(q.as_bytes());
    }
    key
}

/// The pool of upstream `index` in the configuration `live` (the request's).
pub(crate) fn pool(live: &Routes, index: usize) -> Result<&Pool> {
    live.upstreams
        .pool(index)
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "route names no such upstream"))
}

/// A server of `pool` for `req`, skipping `tried`; a 503 error when none is healthy.
pub(crate) fn server(
    s: &Shared,
    pool: &Pool,
    req: &RequestHeader,
    key: &mut Option<Vec<u8>>,
    tried: &[SocketAddr],
) -> Result<SocketAddr> {
    let key = key.get_or_insert_with(|| {
        if pool.keyed() {
            selection_key(req)
        } else {
            Vec::new()
        }
    });
    pool.select(key, tried).ok_or_else(|| {
        s.metrics.upstream_unavailable.inc();
        Error::explain(
            NO_HEALTHY_SERVER,
            format!("upstream {:?} has no healthy server", pool.settings().name),
        )
    })
}

/// The peer for a request's next attempt (Pingora's `upstream_peer`).
pub(crate) fn peer(
    s: &Shared,
    req: &RequestHeader,
    ctx: &mut Ctx,
    upstream: usize,
) -> Result<HttpPeer> {
    let live = ctx.live.clone();
    let pool = pool(&live, upstream)?;
    let addr = server(s, pool, req, &mut ctx.select_key, &ctx.tried)?;
    ctx.server = Some(addr);
    Ok(pool.peer(addr))
}

/// After a failed connection (nothing was sent): whether to try another server. The failed
/// server is remembered so that no attempt of this request goes back to it.
pub(crate) fn retry_after_connect_failure(s: &Shared, ctx: &mut Ctx, upstream: usize) -> bool {
    let live = ctx.live.clone();
    let Ok(pool) = pool(&live, upstream) else {
        return false;
    };
    if let Some(addr) = ctx.server.take() {
        ctx.tried.push(addr);
    }
    let key = ctx.select_key.as_deref().unwrap_or_default();
    let again = pool.select(key, &ctx.tried).is_some();
    if again {
        s.metrics.upstream_connect_retries.inc();
    }
    again
}

/// `Retry-After` seconds for an error that says no server of the request's upstream is healthy.
pub(crate) fn retry_after(ctx: &Ctx, e: &Error) -> Option<u64> {
    let unavailable = e.etype() == &NO_HEALTHY_SERVER;
    let route = ctx.route.and_then(|i| ctx.live.config.routes.get(i))?;
    unavailable
        .then(|| pool(&ctx.live, route.upstream).ok().map(Pool::retry_after))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::selection_key;
    use pingora::http::RequestHeader;

    fn req(host: &str, target: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        r.insert_header("Host", host).unwrap();
        r
    }

    #[test]
    fn every_spelling_of_a_resource_has_one_selection_key() {
        let k = selection_key(&req("test.local", "/docs/a?x=1"));
        assert_eq!(k, b"test.local/docs/a?x=1");
        for (host, target) in [
            ("TEST.local:80", "/docs/a?x=1"),
            ("test.local.", "/%64ocs/a?x=1"),
            ("Test.Local", "/docs/./a?x=1"),
        ] {
            assert_eq!(selection_key(&req(host, target)), k, "{host} {target}");
        }
        assert_ne!(selection_key(&req("test.local", "/docs/a?x=2")), k);
        assert_ne!(selection_key(&req("other.local", "/docs/a?x=1")), k);
    }
}
