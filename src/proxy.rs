//! The Pingora glue: routes a request, asks the pure logic for a decision, answers edge 412s
//! without touching the origin, and teaches the store from every upstream response.
//!
//! Owns: [`Precond`] (the `ProxyHttp` implementation) and its per-request [`Ctx`].
//!
//! Invariants:
//! - The decision is made in `request_filter`, before any upstream peer is chosen: a refused write
//!   never opens a connection to the origin.
//! - Everything not refused is forwarded unchanged, preconditions included.
//! - A request whose method is not GET, HEAD or OPTIONS is never retried on another connection:
//!   a write reaches the origin at most once.
//! - Answers precond makes itself carry `Precond-Decision` and an `application/problem+json`
//!   body with a `Content-Length`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorSource;
use tracing::{info, warn};

use crate::config::{Config, Mode};
use crate::fastpath::guard_decision;
use crate::locks::{KeyGuard, KeyedLocks};
use crate::metrics::Metrics;
use crate::precondition::date::format_http_date;
use crate::precondition::{Conditional, Decision, Failure, Field, FieldLines, Method};
use crate::problem::{self, reason_code, PreconditionFailed};
use crate::store::{Entry, Observation, Outcome, ResourceKey, Store, Ticket};
use pingora::connectors::http::Connector;

/// Header on every answer precond makes itself, saying what it decided.
pub const DECISION_HEADER: &str = "Precond-Decision";

/// The field lines of one header in a Pingora/`http` header map.
#[derive(Clone, Copy)]
pub(crate) struct HeaderLines<'a> {
    map: &'a HeaderMap,
    name: &'a HeaderName,
}

impl<'a> FieldLines<'a> for HeaderLines<'a> {
    type Iter =
        std::iter::Map<http::header::ValueIter<'a, HeaderValue>, fn(&'a HeaderValue) -> &'a [u8]>;
    fn lines(self) -> Self::Iter {
        self.map
            .get_all(self.name)
            .iter()
            .map(HeaderValue::as_bytes)
    }
}

pub(crate) fn conditional<'a>(map: &'a HeaderMap, method: Method) -> Conditional<HeaderLines<'a>> {
    let lines = |name| HeaderLines { map, name };
    Conditional {
        method,
        if_match: lines(&header::IF_MATCH),
        if_none_match: lines(&header::IF_NONE_MATCH),
        if_modified_since: lines(&header::IF_MODIFIED_SINCE),
        if_unmodified_since: lines(&header::IF_UNMODIFIED_SINCE),
        no_cache: has_no_cache(map),
    }
}

fn has_no_cache(map: &HeaderMap) -> bool {
    let has = |name, token: &str| {
        map.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',').any(|d| {
                    d.trim()
                        .split('=')
                        .next()
                        .is_some_and(|d| d.eq_ignore_ascii_case(token))
                })
            })
        })
    };
    has(&header::CACHE_CONTROL, "no-cache") || has(&header::PRAGMA, "no-cache")
}

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    pub(crate) route: Option<usize>,
    pub(crate) method: Method,
    /// Resource key, set on `guard` and `enforce` routes (the store learns only there).
    pub(crate) key: Option<String>,
    pub(crate) ticket: Option<Ticket>,
    pub(crate) forwarded: bool,
    pub(crate) learned: bool,
    /// `enforce`: the per-resource write lock, held until the origin's answer is learned.
    pub(crate) write_lock: Option<KeyGuard>,
    /// `enforce`: the preconditions were evaluated against synthesised tags; remove
    /// `If-Match`/`If-None-Match` before forwarding (the origin never issued those tags).
    pub(crate) strip_tags: bool,
}

/// The precond proxy.
pub struct Precond {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<Store>,
    pub(crate) metrics: Arc<Metrics>,
    balancers: Vec<LoadBalancer<RoundRobin>>,
    /// Upstream connections for requests precond sends itself (`enforce` probes and reads).
    pub(crate) connector: Connector,
    pub(crate) locks: Arc<KeyedLocks>,
}

impl Precond {
    /// Builds the proxy for a validated configuration.
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let balancers = config
            .upstreams
            .iter()
            .map(|u| LoadBalancer::try_from_iter(u.servers.iter().copied()))
            .collect::<std::io::Result<_>>()?;
        Ok(Precond {
            config,
            store,
            metrics,
            balancers,
            connector: Connector::new(None),
            locks: Arc::new(KeyedLocks::default()),
        })
    }

    /// A peer of upstream `index`, chosen round-robin, with the upstream's timeouts.
    pub(crate) fn peer_for(&self, index: usize) -> Result<HttpPeer> {
        let up = &self.config.upstreams[index];
        let backend = self.balancers[index].select(b"", 256).ok_or_else(|| {
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

    /// Reads and discards a small declared request body so that the connection can stay open
    /// after an edge answer. `Expect: 100-continue` (the client waits for us before sending),
    /// chunked and large bodies are not read: Pingora then answers with `Connection: close`.
    async fn drain_small_body(&self, session: &mut Session) {
        let req = session.req_header();
        let expect_continue = req
            .headers
            .get_all(header::EXPECT)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let chunked = req.headers.contains_key(header::TRANSFER_ENCODING);
        if expect_continue || chunked || session.is_body_empty() {
            return;
        }
        if declared.is_some_and(|n| n <= self.config.edge.drain_limit) {
            session.set_total_drain_timeout(Some(self.config.edge.drain_timeout));
            if session.drain_request_body().await.is_err() {
                session.set_keepalive(None);
            }
        }
    }

    /// Writes an answer made at the edge.
    pub(crate) async fn respond(
        &self,
        session: &mut Session,
        status: u16,
        decision: &str,
        body: Vec<u8>,
        extra: &[(HeaderName, String)],
    ) -> Result<()> {
        self.drain_small_body(session).await;
        let mut resp = ResponseHeader::build(status, Some(6 + extra.len()))?;
        resp.insert_header(header::CONTENT_TYPE, problem::CONTENT_TYPE)?;
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        resp.insert_header(
            header::DATE,
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        )?;
        resp.insert_header(DECISION_HEADER, decision)?;
        for (name, value) in extra {
            resp.insert_header(name.clone(), value.as_str())?;
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(resp), head_only)
            .await?;
        if !head_only {
            session
                .write_response_body(Some(Bytes::from(body)), true)
                .await?;
        }
        Ok(())
    }

    /// Builds and writes the edge 412 for a failed precondition.
    pub(crate) async fn reject(
        &self,
        session: &mut Session,
        failure: Failure,
        entry: Option<&Entry>,
    ) -> Result<()> {
        let req = session.req_header();
        let name = match failure.field {
            Field::IfMatch => header::IF_MATCH,
            Field::IfNoneMatch => header::IF_NONE_MATCH,
            Field::IfUnmodifiedSince => header::IF_UNMODIFIED_SINCE,
            Field::IfModifiedSince => header::IF_MODIFIED_SINCE,
        };
        let sent: Vec<String> = req
            .headers
            .get_all(&name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let path = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let method = req.method.as_str().to_string();
        let disclose = self.config.edge.disclose_validators;
        let current_etags: Option<Vec<String>> = entry.filter(|_| disclose).and_then(|e| {
            e.current
                .as_ref()
                .map(|_| e.current_tags().map(|t| t.to_display()).collect())
        });
        let current_lm = entry
            .filter(|_| disclose)
            .and_then(|e| e.last_modified)
            .map(format_http_date);
        let mut extra = Vec::new();
        if let Some([one]) = current_etags.as_deref() {
            extra.push((header::ETAG, one.clone()));
        }
        if let Some(lm) = &current_lm {
            extra.push((header::LAST_MODIFIED, lm.clone()));
        }
        let code = reason_code(failure.reason);
        info!(
            decision = "412",
            method = %method,
            path = %path,
            precondition = failure.field.header_name(),
            reason = code,
            sent = ?sent,
            current = ?current_etags,
            "write refused at the edge"
        );
        self.metrics.reject(failure.field, failure.reason);
        let body = problem::precondition_failed(&PreconditionFailed {
            method: &method,
            path: &path,
            field: failure.field,
            reason: failure.reason,
            sent,
            current_etags,
            current_last_modified: current_lm,
        });
        let decision = format!(
            "rejected; precondition={}; reason={code}",
            failure.field.header_name()
        );
        self.respond(session, 412, &decision, body, &extra).await
    }
}

/// The status precond answers for an error (0: the client is gone, answer nothing).
pub(crate) fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Title and detail of the problem body for an error status.
pub(crate) fn error_problem(code: u16, e: &Error) -> (&'static str, String) {
    let title = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let detail = match code {
        502 => "The upstream server failed to answer. A write may or may not have been applied: fetch the resource before retrying.".to_string(),
        503 => "No upstream server is available for this route.".to_string(),
        504 => "The upstream server did not answer in time. A write may or may not have been applied: fetch the resource before retrying.".to_string(),
        _ => format!("precond could not handle the request: {}", e.etype().as_str()),
    };
    (title, detail)
}

fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host())
}

#[async_trait]
impl ProxyHttp for Precond {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            route: None,
            method: Method::Other,
            key: None,
            ticket: None,
            forwarded: false,
            learned: false,
            write_lock: None,
            strip_tags: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let host = request_host(req);
        let path = req.uri.path();
        let Some((idx, route)) = self.config.route_for(host, path) else {
            self.metrics
                .no_route
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            info!(decision = "404", path = %path, host = ?host, "no route");
            let body = problem::simple(
                404,
                "Not Found",
                &format!("No route of this precond matches host {host:?} and path {path:?}."),
            );
            self.respond(session, 404, "no-route", body, &[]).await?;
            return Ok(true);
        };
        ctx.route = Some(idx);
        ctx.method = Method::from_bytes(req.method.as_str().as_bytes());
        if route.mode == Mode::Pass {
            return Ok(false);
        }
        let path_and_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let rkey = ResourceKey {
            route: idx as u32,
            host: host.unwrap_or(""),
            path: path_and_query,
        };
        let key = rkey.to_key_string();
        ctx.ticket = Some(self.store.ticket());
        if route.mode == Mode::Enforce {
            return self.enforce(session, ctx, route, key).await;
        }
        let cond = conditional(&req.headers, ctx.method);
        if ctx.method.is_write() && cond.has_any() {
            match guard_decision(&self.store, &rkey, &cond, route.policy) {
                Decision::PreconditionFailed(failure) => {
                    let record = self.store.get(&key);
                    self.reject(session, failure, record.as_deref().map(|r| &r.entry))
                        .await?;
                    return Ok(true);
                }
                _ => {
                    self.metrics
                        .forwarded_conditional_writes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    info!(
                        decision = "forward",
                        method = %req.method,
                        path = %path,
                        "conditional write forwarded: not proven stale"
                    );
                }
            }
        }
        ctx.key = Some(key);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .map(|i| &self.config.routes[i])
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let peer = self.peer_for(route.upstream)?;
        ctx.forwarded = true;
        self.metrics
            .forwarded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.strip_tags {
            upstream_request.remove_header(&header::IF_MATCH);
            upstream_request.remove_header(&header::IF_NONE_MATCH);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        let (Some(key), Some(ticket)) = (ctx.key.as_deref(), ctx.ticket) else {
            return Ok(());
        };
        let h = &resp.headers;
        let obs = Observation {
            method: ctx.method,
            outcome: Outcome::Status(resp.status.as_u16()),
            etag: h.get(header::ETAG).map(HeaderValue::as_bytes),
            last_modified: h.get(header::LAST_MODIFIED).map(HeaderValue::as_bytes),
            date: h.get(header::DATE).map(HeaderValue::as_bytes),
            vary: h.contains_key(header::VARY),
            synthetic: false,
            meta: None,
        };
        self.store.learn(key, ticket, &obs);
        ctx.learned = true;
        // The origin's answer is in the store: the next write to this resource may go.
        ctx.write_lock = None;
        self.metrics
            .learned
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let m = &session.req_header().method;
        let safe = m == http::Method::GET || m == http::Method::HEAD || m == http::Method::OPTIONS;
        if safe && !session.as_ref().retry_buffer_truncated() {
            e.retry.decide_reuse(client_reused);
        } else {
            // PUT and DELETE are idempotent in theory; a legacy origin may still apply them
            // twice. precond never sends a write a second time.
            e.set_retry(false);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let code = error_status(e);
        if code >= 500 {
            self.metrics
                .upstream_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if code > 0 && session.response_written().is_none() {
            let (title, detail) = error_problem(code, e);
            let body = Bytes::from(problem::simple(code, title, &detail));
            let mut resp = pingora::protocols::http::ServerSession::generate_error(code);
            let _ = resp.insert_header(header::CONTENT_TYPE, problem::CONTENT_TYPE);
            let _ = resp.insert_header(header::CONTENT_LENGTH, body.len().to_string());
            let _ = resp.insert_header(DECISION_HEADER, "upstream-error");
            if let Err(err) = session.write_error_response(resp, body).await {
                warn!("failed to send error response downstream: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, _session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let (Some(key), Some(ticket)) = (ctx.key.as_deref(), ctx.ticket) {
            if ctx.forwarded && !ctx.learned && ctx.method.is_write() {
                // The write may or may not have been applied: forget what we believed.
                let obs = Observation {
                    method: ctx.method,
                    outcome: Outcome::Broken,
                    etag: None,
                    last_modified: None,
                    date: None,
                    vary: false,
                    synthetic: false,
                    meta: None,
                };
                self.store.learn(key, ticket, &obs);
                warn!(key, error = ?e.map(|e| e.to_string()), "write outcome unknown: validators forgotten");
            }
        }
    }
}
