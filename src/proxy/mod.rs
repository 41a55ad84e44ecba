//! The Pingora glue: routes a request, hands it to its role (`pass`, `guard`, `enforce`,
//! `observe`), and teaches the store from every upstream response.
//!
//! Files, each owning one concern:
//! - this one: [`Precond`], the `ProxyHttp` implementation, phases only, each delegating;
//! - `shared.rs`: the state every handler shares; `ctx.rs`: per-request state;
//! - `headers.rs`: reading fields into the pure types;
//! - `guard/` and `enforce/`: the two deciding roles (`pass` needs no code of its own);
//! - `observe.rs`: the reporting role (guard's learning, nothing refused);
//! - `locks.rs`: per-key waiting (enforce's write locks, guard's in-flight fence);
//! - `answer.rs` and `problem.rs`: the edge's own answers and their problem bodies; `edge.rs`:
//!   their labels (the metrics' decision word, the decision line's route and upstream);
//! - `select.rs`: which server a request goes to.
//!
//! Invariants:
//! - The decision is made in `request_filter`, before any upstream peer is chosen: a refused write
//!   never opens a connection to the origin.
//! - Everything not refused is forwarded unchanged, preconditions included (but for tags precond
//!   synthesised itself on `enforce` routes, which the origin never issued).
//! - A request whose method is not GET, HEAD or OPTIONS is never retried on another connection:
//!   a write reaches the origin at most once.
//! - A forwarded write whose outcome is unknown (the exchange broke) makes the store forget what it
//!   believed of the resource.

pub(crate) mod answer;
mod ctx;
mod edge;
pub(crate) mod enforce;
mod guard;
pub(crate) mod headers;
mod locks;
mod observe;
mod principal;
mod problem;
mod select;
mod shared;

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use http::header::{self, HeaderValue};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use tracing::warn;

use crate::config::{Mode, Policy};
use crate::identity::{
    canonical_host, canonical_path, canonical_query, path_readings, Ambiguous, OwnedKey,
};
use crate::precondition::{EntityTag, Method};
use crate::store::redis::Redis;
use crate::store::{Observation, Outcome, Store};
use crate::telemetry::redact::Shown;
use crate::telemetry::Metrics;

pub use answer::DECISION_HEADER;
pub use ctx::Ctx;
use guard::fence::single_tag;
use headers::{
    client_ip, downstream_tls, forwarded_host, request_host, set_forwarding, HeaderLines,
};
use shared::Shared;
pub use shared::{Keys, LiveConfig};

/// At most one warning per route and period about weak tags under `policy = "mismatch"`.
const WEAK_WARNING_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

/// The precond proxy.
pub struct Precond {
    s: Shared,
}

impl Precond {
    /// A forwarded write whose answer was not learned (the exchange broke) may or may not have
    /// been applied: the store forgets what it believed of the resource. Once per request;
    /// `true` when it did.
    fn forget_if_broken(&self, ctx: &mut Ctx) -> bool {
        let (Some(key), Some(ticket)) = (ctx.key.as_ref(), ctx.ticket) else {
            return false;
        };
        if !(ctx.forwarded && !ctx.learned && ctx.method.changes_state()) {
            return false;
        }
        observe::broken(&self.s, ctx);
        let obs = Observation {
            principal: ctx.principal,
            ..Observation::broken(ctx.method)
        };
        self.s.store.learn(&key.as_key(), ticket, &obs);
        ctx.learned = true;
        true
    }

    /// Counts a finished request and its duration, by route, mode and decision.
    fn count(&self, session: &Session, ctx: &Ctx) {
        let route = ctx.route();
        let header = session
            .response_written()
            .and_then(|r| r.headers.get(DECISION_HEADER))
            .map(HeaderValue::as_bytes);
        self.s.metrics.request(
            ctx.route.map_or("", |i| ctx.live.labels[i].as_str()),
            route.map_or("none", |r| r.mode.name()),
            edge::decision_label(header, ctx.forwarded || ctx.relayed),
            ctx.started.elapsed(),
        );
    }

    /// The access line of a finished request (`log.access_log`).
    fn access_line(&self, session: &Session, ctx: &Ctx) {
        let req = session.req_header();
        let resp = session.response_written();
        let route = ctx.route();
        let decision = resp
            .and_then(|r| r.headers.get(DECISION_HEADER))
            .map(|v| Shown(&String::from_utf8_lossy(v.as_bytes())).to_string())
            .unwrap_or_else(|| {
                if ctx.forwarded {
                    "forwarded".into()
                } else {
                    String::new()
                }
            });
        tracing::info!(
            target: "precond::access",
            method = %Shown(req.method.as_str()),
            path = %self.s.shown_target(req),
            status = resp.map_or(0, |r| r.status.as_u16()),
            decision = %decision,
            route = ctx.route.map_or("", |i| ctx.live.labels[i].as_str()),
            upstream = route.map_or("", |r| ctx.live.config.upstreams[r.upstream].name.as_str()),
            duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            "access"
        );
    }

    /// On a `guard` route with a shared store, publishes that a forwarded write's outcome is
    /// unknown (after [`Precond::forget_if_broken`] said so).
    async fn forget_shared(&self, ctx: &Ctx) {
        if ctx.route().map(|r| r.mode) == Some(Mode::Guard) {
            guard::shared::forget(&self.s, ctx).await;
        }
    }

    /// Builds the proxy for a validated configuration.
    pub fn new(
        live: Arc<LiveConfig>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        redis: Option<Arc<Redis>>,
        keys: Keys,
    ) -> Self {
        Precond {
            s: Shared::new(live, store, metrics, redis, keys),
        }
    }
}

#[async_trait]
impl ProxyHttp for Precond {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.s.live.routes())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let s = &self.s;
        // A request pipelined behind this one (RFC 9112 §9.3.2) is answered after it, in order,
        // rather than dropped with the connection (an edge answer after a drained body included).
        session.set_pipelining_enabled(true);
        let req = session.req_header();
        // One function decides which resource the request names (identity.rs): routes match the
        // canonical path too, so no spelling reaches another route than its resource's.
        let host = request_host(req).map(canonical_host);
        let (path, mut ambiguous) = canonical_path(req.uri.path());
        let asterisk = req.raw_path() == b"*" && req.method == http::Method::OPTIONS;
        if !req.raw_path().starts_with(b"/") && !asterisk {
            ambiguous.get_or_insert(Ambiguous::NotOriginForm);
        }
        if !req.raw_path_is_utf8() {
            // Pingora holds a lossy rendering (U+FFFD) of a target that is not UTF-8: in the
            // path or the query, two targets would share one key.
            ambiguous.get_or_insert(Ambiguous::NotUtf8);
        }
        // The configuration this request runs under to its end; a write is counted in it.
        let mut method = Method::from_bytes(req.method.as_str().as_bytes());
        // TRACE is a write on enforce routes (below): counted as one whatever the route.
        let counted = method.changes_state() || req.method == http::Method::TRACE;
        ctx.resource = s.resource_hash(host.as_deref(), &path);
        ctx.generation_write = s.started_under(&mut ctx.live, ctx.resource, counted);
        let live = ctx.live.clone();
        let chosen = live.config.route_for(host.as_deref(), &path);
        if let Some(why) = ambiguous {
            // Refused when any reading an origin may give the target falls on a route that
            // refuses ambiguous targets, whichever route the lenient reading chose: `..;` or
            // `//..` must not carry a write past an enforce route through a pass route.
            let strict = path_readings(req.uri.path()).iter().any(|p| {
                live.config
                    .route_for(host.as_deref(), p)
                    .is_some_and(|(_, r)| r.strict_targets && r.mode.refuses_ambiguous())
            });
            if strict {
                ctx.route = chosen.map(|(i, _)| i);
                answer::ambiguous_target(s, session, why).await?;
                return Ok(true);
            }
        }
        let Some((idx, route)) = chosen else {
            s.metrics.no_route.inc();
            answer::no_route(s, session).await?;
            return Ok(true);
        };
        ctx.route = Some(idx);
        if route.mode == Mode::Enforce && req.method == http::Method::TRACE {
            // On enforce routes every method but GET, HEAD and OPTIONS is a write (fail closed:
            // an origin that knows nothing of validators is not trusted to keep TRACE safe): it
            // is judged, serialised and learned like an extension method.
            method = Method::Other;
        }
        ctx.method = method;
        if route.mode == Mode::Pass {
            return Ok(false);
        }
        if ambiguous.is_some() && route.mode == Mode::Observe {
            // Observed, never answered: forwarded untouched, not learned.
            return Ok(false);
        }
        // Behind a trusted balancer the origin may answer for the forwarded host: it is part of
        // the resource's identity (`host>forwarded` in the key).
        let trusted = route
            .trust_forwarded
            .then(|| forwarded_host(req).map(canonical_host))
            .flatten()
            .filter(|f| Some(f) != host.as_ref());
        let key_host = match (&host, &trusted) {
            (h, Some(f)) => Cow::Owned(format!("{}>{f}", h.as_deref().unwrap_or(""))),
            (Some(h), None) => Cow::Borrowed(h.as_ref()),
            (None, None) => Cow::Borrowed(""),
        };
        let query = req.uri.query().map(canonical_query);
        let key = OwnedKey::new(route.id, &key_host, &path, query.as_deref());
        if key.len() > live.config.store.max_key_bytes {
            // Never learned, so never decided: forwarded untouched, but for an enforce write,
            // which cannot be serialised without a key (fail closed).
            s.metrics.key_too_long.inc();
            if route.mode == Mode::Enforce && ctx.method.changes_state() {
                answer::key_too_long(s, session).await?;
                return Ok(true);
            }
            return Ok(false);
        }
        ctx.ticket = Some(s.store.ticket());
        ctx.principal = principal::principal_of(route, &req.headers, &s.keys.principal);
        match route.mode {
            Mode::Enforce => enforce::request(s, session, ctx, route, key).await,
            Mode::Observe => {
                observe::request(s, session, ctx, route, key);
                Ok(false)
            }
            _ => guard::request(s, session, ctx, route, key).await,
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let live = ctx.live.clone();
        let route = ctx
            .route
            .map(|i| &live.config.routes[i])
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let peer = select::peer(&self.s, session.req_header(), ctx, route.upstream)?;
        if !ctx.forwarded {
            ctx.forwarded = true;
            self.s.metrics.forwarded.inc();
        }
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent: trying another server is safe for every method, a write included.
        let again = ctx.route.is_some_and(|i| {
            let upstream = ctx.live.config.routes[i].upstream;
            select::retry_after_connect_failure(&self.s, ctx, upstream)
        });
        e.set_retry(again);
        e
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // An enforce write holding its resource's lock: the body has a total deadline, so that a
        // client trickling it cannot hold the lock (each read is bounded by what remains).
        if let (Some(deadline), false) = (ctx.body_deadline, end_of_stream) {
            let now = std::time::Instant::now();
            if now >= deadline {
                ctx.write_lock = None;
                ctx.lease = None; // released in the background, unpublished: the next probes
                return Error::e_explain(
                    ErrorType::HTTPStatus(408),
                    "write_body_timeout elapsed while the write held its resource's lock",
                );
            }
            session.set_read_timeout(Some(deadline - now));
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let trust = ctx.route().is_some_and(|r| r.trust_forwarded);
        set_forwarding(
            upstream_request,
            client_ip(session),
            downstream_tls(session),
            trust,
        );
        ctx.sent = Some(std::time::Instant::now());
        if ctx.method.changes_state() && ctx.in_flight.is_none() {
            ctx.in_flight = Some(self.s.metrics.write_in_flight());
        }
        if ctx.strip_tags {
            upstream_request.remove_header(&header::IF_MATCH);
            upstream_request.remove_header(&header::IF_NONE_MATCH);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Only precond speaks for precond: an origin's (or a client-planted) decision header is
        // removed, so that clients can trust it.
        resp.remove_header(DECISION_HEADER);
        if resp.status.is_informational() {
            return Ok(());
        }
        ctx.in_flight = None;
        let live = ctx.live.clone();
        if let (Some(sent), Some(route)) = (ctx.sent.take(), ctx.route()) {
            let upstream = &live.config.upstreams[route.upstream];
            self.s
                .metrics
                .upstream_responded(&upstream.name, sent.elapsed());
        }
        let (Some(key), Some(ticket), Some(route)) = (
            ctx.key.as_ref(),
            ctx.ticket,
            ctx.route.map(|i| &live.config.routes[i]),
        ) else {
            return Ok(());
        };
        let h = &resp.headers;
        let named = ctx
            .method
            .changes_state()
            .then(|| {
                single_tag(HeaderLines::of(
                    &session.req_header().headers,
                    &header::IF_MATCH,
                ))
            })
            .flatten()
            .map(|(weak, opaque)| EntityTag::from_trusted(weak, opaque));
        let obs = Observation {
            etag: h.get(header::ETAG).map(HeaderValue::as_bytes),
            last_modified: h.get(header::LAST_MODIFIED).map(HeaderValue::as_bytes),
            date: h.get(header::DATE).map(HeaderValue::as_bytes),
            vary: h.contains_key(header::VARY),
            principal: ctx.principal,
            reach: principal::reach_of(route),
            private: principal::marks_private(route, h),
            // On enforce routes the store is precond's own record as the judge (it must keep
            // serialising writes); on guard routes a no-store answer teaches nothing.
            no_store: route.mode.guards() && principal::no_store(h),
            complete: route.mode == Mode::Enforce,
            named,
            ..Observation::of(ctx.method, Outcome::Status(resp.status.as_u16()))
        };
        self.s.store.learn(&key.as_key(), ticket, &obs);
        ctx.learned = true;
        if let (Mode::Guard, Some(redis)) = (route.mode, &self.s.redis) {
            guard::shared::teach(redis, ctx, key, &obs).await;
        }
        if route.mode == Mode::Observe {
            observe::answered(&self.s, session, ctx, &obs);
        }
        // The shared store's lease: the write is answered (whatever the status: the origin is
        // done with it), the resource may have changed: the next holder probes.
        if let Some(lease) = ctx.lease.take() {
            if let Ok(false) = lease.publish(true, None).await {
                warn!(
                    path = %self.s.shown_target(session.req_header()),
                    "the write's shared lease expired while it was in flight: its result was not published"
                );
            }
        }
        // The origin's answer is in the store: the next write to this resource (enforce), or
        // naming the same tag (guard's fence), may go.
        ctx.write_lock = None;
        for mut hold in ctx.fence.drain(..) {
            hold.answered(ctx.method, resp.status.as_u16(), obs.etag);
        }
        self.s.metrics.learned.inc();
        if route.mode == Mode::Guard
            && route.policy == Policy::Mismatch
            && obs.etag.is_some_and(|t| t.starts_with(b"W/"))
        {
            self.s.metrics.weak_tags_under_mismatch.inc();
            if live.weak_warned[ctx.route.unwrap_or_default()].ready(WEAK_WARNING_PERIOD) {
                warn!(
                    route = %route.path_prefix,
                    "the origin sends weak ETags on a guard route with policy = \"mismatch\": \
                     every If-Match naming them is refused (weak_only); use policy = \"superseded\", \
                     mode = \"enforce\", or strong ETags at the origin"
                );
            }
        }
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

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // The shared lease is not held while the error answer is written (the exchange is
        // over: the next holder probes).
        ctx.lease = None;
        // Forgotten before the client hears of the failure: its next request must not be
        // decided on what the broken write may have changed.
        if self.forget_if_broken(ctx) {
            self.forget_shared(ctx).await;
            warn!(
                path = %self.s.shown_target(session.req_header()),
                error = %Shown(&e.to_string()),
                "write outcome unknown: validators forgotten"
            );
        }
        FailToProxy {
            error_code: answer::proxy_failed(&self.s, session, e, select::retry_after(ctx, e))
                .await,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.in_flight = None;
        self.count(session, ctx);
        if ctx.live.config.log.access_log {
            self.access_line(session, ctx);
        }
        if self.forget_if_broken(ctx) {
            self.forget_shared(ctx).await;
            warn!(
                path = %self.s.shown_target(session.req_header()),
                error = %e.map(|e| Shown(&e.to_string()).to_string()).unwrap_or_default(),
                "write outcome unknown: validators forgotten"
            );
        }
    }
}
