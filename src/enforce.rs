//! `enforce` routes: precond is the judge of every precondition (design §2, `enforce`).
//!
//! Owns: the request handling of `enforce` routes, as methods of [`Precond`]:
//! - reads (`GET`/`HEAD` without `Range`) are fetched by precond itself, so that an ETag can be
//!   synthesised from the body *before* the response header goes out; the request's
//!   preconditions are evaluated against the fresh validators (304/412), or against the store
//!   when it already knows them (then the origin is not contacted at all);
//! - writes take the resource's write lock (bounded wait, then 503), probe the origin on a cache
//!   miss, evaluate RFC 9110 §13.2.2 (412), require preconditions (428), and are forwarded holding
//!   the lock until the origin's answer has been learned.
//!
//! Invariants:
//! - Two writes to one resource never overlap between evaluation and learning; writes to
//!   different resources never wait for each other.
//! - A precondition evaluated against a synthesised tag is removed before forwarding; one
//!   evaluated against an origin tag is forwarded.
//! - When the current validators cannot be established (probe failed with 5xx or broke), a
//!   conditional write is answered 503, never forwarded unprotected.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::prelude::*;
use pingora::proxy::Session;
use tracing::{info, warn};

use crate::config::{Probe, Route};
use crate::fetch::{fetch, synthesize_etag, Fetched};
use crate::precondition::date::{format_http_date, parse_http_date};
use crate::precondition::evaluate::has_usable_precondition;
use crate::precondition::{evaluate, Current, Decision, EntityTag, Existence, Failure};
use crate::problem;
use crate::proxy::{conditional, error_problem, error_status, Ctx, Precond};
use crate::store::{Entry, Observation, Outcome, META_HEADERS};

/// Hop-by-hop fields never relayed from a fetched response.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

/// Whether an entry knows enough to decide: existence known, the current tags known when the
/// resource exists, and (when the request carries a date precondition) a modification date that
/// is the current representation's (a write answered without `Last-Modified` leaves an older
/// date on record).
fn decidable(e: &Entry, needs_date: bool) -> bool {
    match e.existence {
        Existence::Unknown => false,
        Existence::Absent => true,
        Existence::Exists => e.current.is_some() && !(needs_date && e.lm_stale),
    }
}

/// Whether the request carries `If-Unmodified-Since` or `If-Modified-Since`.
fn has_date_precondition(session: &Session) -> bool {
    let h = &session.req_header().headers;
    h.contains_key(header::IF_UNMODIFIED_SINCE) || h.contains_key(header::IF_MODIFIED_SINCE)
}

/// The state `evaluate` needs. With several current tags (`Vary`), the latest one is used.
fn current_of(e: &Entry) -> Current<'_> {
    Current {
        existence: e.existence,
        etag: e.current_tags().last(),
        last_modified: e.current_lm,
    }
}

fn header_bytes<'a>(h: &'a ResponseHeader, name: &str) -> Option<&'a [u8]> {
    h.headers.get(name).map(HeaderValue::as_bytes)
}

/// Validators of a fetched response, as raw `ETag` bytes: the origin's strong ETag if it sent
/// one, else a synthesised tag when the response is a 200 to a GET whose whole body was read (a
/// HEAD has no body to hash: a tag synthesised from it would never change). Second value: whether
/// the tag was synthesised.
fn validators_of(f: &Fetched, was_get: bool) -> (Option<Vec<u8>>, bool) {
    let raw = header_bytes(&f.header, "etag");
    let origin = raw.and_then(EntityTag::parse);
    match origin {
        Some(t) if !t.is_weak() => (raw.map(|r| etag_trim(r).to_vec()), false),
        _ if was_get && f.header.status == 200 && f.complete => {
            let ct = header_bytes(&f.header, "content-type").unwrap_or_default();
            let ce = header_bytes(&f.header, "content-encoding").unwrap_or_default();
            (Some(synthesize_etag(ct, ce, &f.body).into_bytes()), true)
        }
        // A weak origin tag that cannot be replaced: keep it (it still serves If-None-Match);
        // it can never satisfy If-Match.
        Some(_) => (raw.map(|r| etag_trim(r).to_vec()), false),
        None => (None, false),
    }
}

/// An `ETag` field value without surrounding whitespace (bytes kept as sent: obs-text allowed).
fn etag_trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

impl Precond {
    /// Handles a request on an `enforce` route. `Ok(true)` when precond answered it.
    pub(crate) async fn enforce(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
        key: String,
    ) -> Result<bool> {
        // Reads, ranged or not: `Range` is ignored on enforce routes (a full 200), because the
        // origin cannot evaluate `If-Range` against tags precond synthesised (RFC 9110 §14.2 lets
        // a server ignore Range).
        if ctx.method.is_get_or_head() {
            return self.enforce_read(session, ctx, route, key).await;
        }
        if ctx.method.is_write() {
            return self.enforce_write(session, ctx, route, key).await;
        }
        // OPTIONS and extension methods: forwarded, and learned from like in guard.
        ctx.key = Some(key);
        Ok(false)
    }

    /// The request precond sends to learn a representation: the client's header (credentials,
    /// `Accept*`, `Host`) as a GET or HEAD without preconditions, ranges or body framing.
    fn probe_request(session: &Session, head: bool) -> Result<RequestHeader> {
        let mut req = session.req_header().clone();
        req.set_method(if head {
            http::Method::HEAD
        } else {
            http::Method::GET
        });
        for name in [
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::RANGE,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::EXPECT,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
        ] {
            req.remove_header(&name);
        }
        Ok(req)
    }

    /// Fetches the target for `route` and teaches the store what it showed.
    async fn fetch_and_learn(
        &self,
        session: &Session,
        route: &Route,
        key: &str,
        head: bool,
    ) -> Result<(Fetched, HttpPeer, Option<Vec<u8>>, bool)> {
        let peer = self.peer_for(route.upstream)?;
        let req = Self::probe_request(session, head)?;
        // The ticket is taken when the fetch starts: a write that completes while the fetch is in
        // flight makes its answer unteachable (store race rule).
        let ticket = self.store.ticket();
        let fetched = fetch(
            &self.connector,
            &peer,
            &req,
            route.enforce.synthesize_max_body,
        )
        .await?;
        self.metrics
            .forwarded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tag, synthetic) = validators_of(&fetched, !head);
        let h = &fetched.header;
        let meta = META_HEADERS.map(|n| header_bytes(h, n));
        let obs = Observation {
            method: crate::precondition::Method::Get,
            outcome: Outcome::Status(h.status.as_u16()),
            etag: tag.as_deref(),
            last_modified: header_bytes(h, "last-modified"),
            date: header_bytes(h, "date"),
            vary: h.headers.contains_key(header::VARY),
            synthetic,
            meta: Some(meta),
        };
        self.store.learn(key, ticket, &obs);
        Ok((fetched, peer, tag, synthetic))
    }

    async fn enforce_read(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
        key: String,
    ) -> Result<bool> {
        let needs_date = has_date_precondition(session);
        // 1. Known validators: answer 304/412 without the origin.
        if let Some(entry) = self.store.get(&key).filter(|e| decidable(e, needs_date)) {
            let cond = conditional(&session.req_header().headers, ctx.method);
            if cond.has_any() {
                match evaluate(&cond, &current_of(&entry), false) {
                    Decision::NotModified(f) => {
                        let meta = entry.meta.as_deref().cloned().unwrap_or_default();
                        let tag = current_of(&entry).etag.map(|t| t.to_wire());
                        self.not_modified(session, f, tag, entry.current_lm, &meta)
                            .await?;
                        return Ok(true);
                    }
                    Decision::PreconditionFailed(f) => {
                        self.reject(session, f, Some(&entry)).await?;
                        return Ok(true);
                    }
                    _ => {}
                }
            }
        }
        // 2. Fetch the representation; learn (and synthesise) its validators.
        let (fetched, peer, tag, synthetic) =
            match self.fetch_and_learn(session, route, &key, false).await {
                Ok(f) => f,
                Err(e) => return self.upstream_failed(session, &e).await,
            };
        // 3. Evaluate against what the origin just showed.
        if fetched.header.status == 200 {
            let lm = header_bytes(&fetched.header, "last-modified").and_then(parse_http_date);
            let current = Current {
                existence: Existence::Exists,
                etag: tag.as_deref().and_then(EntityTag::parse),
                last_modified: lm,
            };
            let mut cond = conditional(&session.req_header().headers, ctx.method);
            cond.no_cache = false; // just validated with the origin
            match evaluate(&cond, &current, false) {
                Decision::NotModified(f) => {
                    let meta = META_HEADERS
                        .map(|n| header_bytes(&fetched.header, n).map(Box::<[u8]>::from));
                    self.not_modified(session, f, tag, lm, &meta).await?;
                    fetched.finish(&self.connector, &peer).await;
                    return Ok(true);
                }
                Decision::PreconditionFailed(f) => {
                    let entry = self.store.get(&key);
                    self.reject(session, f, entry.as_deref().map(|r| &r.entry))
                        .await?;
                    fetched.finish(&self.connector, &peer).await;
                    return Ok(true);
                }
                _ => {}
            }
        }
        // 4. Relay the response, with the synthesised tag.
        self.relay(session, fetched, &peer, tag.filter(|_| synthetic))
            .await?;
        Ok(true)
    }

    async fn enforce_write(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
        key: String,
    ) -> Result<bool> {
        let settings = &route.enforce;
        let Some(lock) = self.locks.lock(&key, settings.write_wait).await else {
            warn!(key = %key, "write lock not obtained in time");
            let body = problem::simple(
                503,
                "Service Unavailable",
                &format!(
                    "Another write to this resource did not finish within {:?}; retry shortly.",
                    settings.write_wait
                ),
            );
            let extra = [(header::RETRY_AFTER, "1".to_string())];
            self.respond(session, 503, "write-busy", body, &extra)
                .await?;
            return Ok(true);
        };
        ctx.write_lock = Some(lock);
        let needs_date = has_date_precondition(session);
        // Writes before this one (through this instance) have completed and been learned: this
        // write's place in the store's history starts now, not when it began waiting.
        ctx.ticket = Some(self.store.ticket());
        let required = settings.require.contains(&ctx.method);
        let has_any = conditional(&session.req_header().headers, ctx.method).has_any();
        if has_any || required {
            let mut entry = self.store.get(&key).filter(|e| decidable(e, needs_date));
            if entry.is_none() {
                let head = settings.probe == Probe::Head;
                match self.fetch_and_learn(session, route, &key, head).await {
                    Ok((fetched, peer, _, _)) => {
                        let status = fetched.header.status.as_u16();
                        fetched.finish(&self.connector, &peer).await;
                        if status >= 500 {
                            return self.unknown_state(session, status).await;
                        }
                        entry = self.store.get(&key).filter(|e| decidable(e, needs_date));
                        if entry.is_none() && matches!(status, 200..=299 | 404 | 410) {
                            // The origin showed the state but it could not be recorded: never
                            // forward the write unprotected.
                            return self.unknown_state(session, status).await;
                        }
                    }
                    Err(e) => {
                        warn!(key = %key, error = %e, "probe failed");
                        return self.unknown_state(session, 502).await;
                    }
                }
            }
            match entry {
                Some(entry) => {
                    let cond = conditional(&session.req_header().headers, ctx.method);
                    match evaluate(&cond, &current_of(&entry), required) {
                        Decision::PreconditionFailed(f) => {
                            self.reject(session, f, Some(&entry)).await?;
                            return Ok(true);
                        }
                        Decision::PreconditionRequired => {
                            self.require(session).await?;
                            return Ok(true);
                        }
                        _ => ctx.strip_tags = entry.synthetic,
                    }
                }
                None => {
                    // The probe showed neither a representation nor its absence (401, 403,
                    // 3xx, ...): the origin's answer takes precedence (RFC 9110 §13.2.1).
                    if required
                        && !has_usable_precondition(
                            &conditional(&session.req_header().headers, ctx.method),
                            None,
                        )
                    {
                        self.require(session).await?;
                        return Ok(true);
                    }
                    info!(key = %key, "write forwarded unevaluated: the probe established no state");
                }
            }
        }
        ctx.key = Some(key);
        Ok(false)
    }

    /// 503 when the validators a conditional write needs could not be established.
    async fn unknown_state(&self, session: &mut Session, probe_status: u16) -> Result<bool> {
        let body = problem::simple(
            503,
            "Service Unavailable",
            &format!(
                "precond could not establish the resource's current validators (the origin \
                 answered {probe_status} when asked for it), so the write was not forwarded \
                 unprotected. Retry shortly."
            ),
        );
        let extra = [(header::RETRY_AFTER, "1".to_string())];
        self.respond(session, 503, "state-unknown", body, &extra)
            .await?;
        Ok(true)
    }

    async fn require(&self, session: &mut Session) -> Result<()> {
        let req = session.req_header();
        let method = req.method.as_str().to_string();
        let path = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        info!(decision = "428", method = %method, path = %path, "write without a usable precondition");
        self.metrics
            .required
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = problem::precondition_required(&method, &path);
        self.respond(session, 428, "required", body, &[]).await
    }

    /// 304 with the fields RFC 9110 §15.4.5 requires: `ETag`, `Date`, and the stored
    /// `Cache-Control`, `Expires`, `Vary`, `Content-Location`; `Last-Modified` only without an
    /// ETag. No body.
    async fn not_modified(
        &self,
        session: &mut Session,
        failure: Failure,
        etag: Option<Vec<u8>>,
        last_modified: Option<u64>,
        meta: &crate::store::Meta,
    ) -> Result<()> {
        self.metrics.not_modified(failure.field);
        let mut resp = ResponseHeader::build(304, Some(8))?;
        resp.insert_header(
            header::DATE,
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        )?;
        match etag {
            Some(t) => resp.insert_header(
                header::ETAG,
                HeaderValue::from_bytes(&t)
                    .map_err(|e| Error::because(ErrorType::InternalError, "etag", e))?,
            )?,
            None => {
                if let Some(lm) = last_modified {
                    resp.insert_header(header::LAST_MODIFIED, format_http_date(lm))?;
                }
            }
        }
        for (name, value) in META_HEADERS.iter().zip(meta.iter()) {
            if let Some(v) = value {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    resp.insert_header(HeaderName::from_static(name), v)?;
                }
            }
        }
        resp.insert_header(
            crate::proxy::DECISION_HEADER,
            format!("not-modified; precondition={}", failure.field.header_name()),
        )?;
        session.write_response_header(Box::new(resp), true).await
    }

    /// Sends a fetched response to the client, with `etag` added when it was synthesised.
    async fn relay(
        &self,
        session: &mut Session,
        mut fetched: Fetched,
        peer: &HttpPeer,
        etag: Option<Vec<u8>>,
    ) -> Result<()> {
        let mut resp = fetched.header.clone();
        for name in HOP_BY_HOP {
            resp.remove_header(name);
        }
        if let Some(tag) = etag {
            let v = HeaderValue::from_bytes(&tag)
                .map_err(|e| Error::because(ErrorType::InternalError, "etag", e))?;
            resp.insert_header(header::ETAG, v)?;
        }
        if fetched.complete {
            resp.remove_header(&header::TRANSFER_ENCODING);
            resp.insert_header(header::CONTENT_LENGTH, fetched.body.len().to_string())?;
        }
        let head = session.req_header().method == http::Method::HEAD;
        let no_body = head || (fetched.complete && fetched.body.is_empty());
        session
            .write_response_header(Box::new(resp), no_body)
            .await?;
        if !no_body {
            let first = std::mem::take(&mut fetched.body).freeze();
            session
                .write_response_body(Some(first), fetched.complete)
                .await?;
            if !fetched.complete {
                loop {
                    let chunk = fetched.read_more().await?;
                    let end = chunk.is_none();
                    session
                        .write_response_body(Some(chunk.unwrap_or_else(Bytes::new)), end)
                        .await?;
                    if end {
                        break;
                    }
                }
            }
        }
        fetched.finish(&self.connector, peer).await;
        Ok(())
    }

    /// A fetch that failed before a response: 502/504 with a problem body.
    async fn upstream_failed(&self, session: &mut Session, e: &Error) -> Result<bool> {
        self.metrics
            .upstream_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Only upstream errors reach here (the client's request was fully read).
        let code = match error_status(e) {
            c @ (502..=504) => c,
            _ => 502,
        };
        let (title, detail) = error_problem(code, e);
        let body = problem::simple(code, title, &detail);
        self.respond(session, code, "upstream-error", body, &[])
            .await?;
        Ok(true)
    }
}
