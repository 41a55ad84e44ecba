//! The edge's own answers: 412, 428, 304, 404 (no route), 503 (busy, state unknown) and the
//! 502/503/504 of failed exchanges, each written to the client with a problem body.
//!
//! Owns: writing those answers ([`respond`] and the functions built on it), the mapping from an
//! error to the status precond answers ([`error_status`], [`error_problem`]), and the
//! [`DECISION_HEADER`]. The bodies themselves are built by the pure [`problem`].
//!
//! Invariants:
//! - Every answer precond makes itself carries `Precond-Decision`, `Cache-Control: no-store`, a
//!   `Date`, and (but for 304) an `application/problem+json` body with a `Content-Length`.
//! - A small declared request body is drained first so that the connection can stay open; larger,
//!   chunked or `Expect: 100-continue` bodies are not read (Pingora then closes the connection).
//! - An edge 412 discloses the current validators only when `edge.disclose_validators` is on.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorSource;
use tracing::{info, warn};

use crate::identity::Ambiguous;
use crate::precondition::date::format_http_date;
use crate::precondition::{Failure, Field};
use crate::store::{Entry, Meta, META_HEADERS};
use crate::telemetry::redact::{self, Shown};

use super::edge::Where;
use super::problem::{self, PreconditionFailed};
use super::select;
use super::shared::Shared;

/// Header on every answer precond makes itself, saying what it decided.
pub const DECISION_HEADER: &str = "Precond-Decision";

/// Reads and discards a small declared request body so that the connection can stay open
/// after an edge answer. `Expect: 100-continue` (the client waits for us before sending),
/// chunked and large bodies are not read: the connection then closes after the answer.
/// Returns whether a body the client may still be sending was left unread.
async fn drain_small_body(s: &Shared, session: &mut Session) -> bool {
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
    if expect_continue || session.is_body_done() || (!chunked && session.is_body_empty()) {
        return false;
    }
    if !chunked && declared.is_some_and(|n| n <= s.config().edge.drain_limit) {
        session.set_total_drain_timeout(Some(s.config().edge.drain_timeout));
        if session.drain_request_body().await.is_err() {
            // Read for drain_timeout already: a client that slow is not waited for again.
            session.set_keepalive(None);
        }
        return false;
    }
    // Whatever was not read makes the connection unusable for another request.
    session.set_keepalive(None);
    true
}

/// A lingering close: after an answer that left the request body unread, reads and discards
/// what the client still sends, for at most `limit`, before the connection is closed. Closing a
/// socket with unread bytes makes the kernel reset the connection, and a client still writing
/// its body then fails on its next write (or loses the answer) instead of reading the 412.
/// Bounded by time only: the bytes are discarded as they arrive, nothing is buffered.
async fn linger(session: &mut Session, limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Ok(Some(_))) = tokio::time::timeout_at(deadline, session.read_request_body()).await
    {
    }
}

/// Writes an answer made at the edge.
pub(crate) async fn respond(
    s: &Shared,
    session: &mut Session,
    status: u16,
    decision: &str,
    body: Vec<u8>,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<()> {
    let unread = drain_small_body(s, session).await;
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
        resp.insert_header(name.clone(), value.clone())?;
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
    if unread {
        linger(session, s.config().edge.linger_timeout).await;
    }
    Ok(())
}

/// 503: an enforce write could not be serialised across instances because the shared store
/// did not answer in time; nothing was sent to the origin.
pub(crate) async fn shared_store_unavailable(
    s: &Shared,
    session: &mut Session,
    error: &str,
) -> Result<()> {
    s.metrics.shared_store_unavailable.inc();
    info!(decision = "503", error = %Shown(error), "write refused: shared store unavailable");
    let body = problem::simple(
        503,
        "Service Unavailable",
        "The write could not be serialised with the other precond instances: the shared store \
         (Redis) did not answer in time. Nothing was sent to the origin; retry after the time in \
         Retry-After.",
    );
    respond(
        s,
        session,
        503,
        "shared-store-unavailable",
        body,
        &[(header::RETRY_AFTER, HeaderValue::from_static("1"))],
    )
    .await
}

/// 404: no route of this precond matches the request.
pub(crate) async fn no_route(s: &Shared, session: &mut Session) -> Result<()> {
    let req = session.req_header();
    let host = super::headers::request_host(req).map_or_else(String::new, |h| Shown(h).to_string());
    let path = Shown(req.uri.path()).to_string();
    info!(decision = "404", path = %path, host = %host, "no route");
    let body = problem::simple(
        404,
        "Not Found",
        &format!("No route of this precond matches host {host:?} and path {path:?}."),
    );
    respond(s, session, 404, "no-route", body, &[]).await
}

/// 400: the target's canonical form depends on how the origin reads it (`strict_targets`).
pub(crate) async fn ambiguous_target(
    s: &Shared,
    session: &mut Session,
    why: Ambiguous,
) -> Result<()> {
    let path = session.req_header().uri.path().to_string();
    info!(
        decision = "400",
        path_len = path.len(),
        "ambiguous target refused"
    );
    let body = problem::simple(
        400,
        "Bad Request",
        &format!(
            "precond cannot tell which resource this target names: {}. Send the path in its \
             plain form (single slashes, no encoded separators, UTF-8 escapes only).",
            why.explain()
        ),
    );
    respond(s, session, 400, "ambiguous-target", body, &[]).await
}

/// Builds and writes the edge 412 for a failed precondition.
pub(crate) async fn reject(
    s: &Shared,
    session: &mut Session,
    failure: Failure,
    entry: Option<&Entry>,
    at: &Where,
) -> Result<()> {
    let req = session.req_header();
    let name = match failure.field {
        Field::IfMatch => header::IF_MATCH,
        Field::IfNoneMatch => header::IF_NONE_MATCH,
        Field::IfUnmodifiedSince => header::IF_UNMODIFIED_SINCE,
        Field::IfModifiedSince => header::IF_MODIFIED_SINCE,
    };
    // What the client sent is echoed once, and bounded: a huge field must not make a huge answer
    // or log line.
    let (sent, sent_truncated) = redact::capped(
        req.headers
            .get_all(&name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes())),
    );
    let path = s.shown_target(req);
    let method = Shown(req.method.as_str()).to_string();
    let disclose = s.config().edge.disclose_validators;
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
    // The `ETag` field carries the stored tag's wire bytes (obs-text included), so a client that
    // copies it into `If-Match` sends exactly the tag; the JSON body can only show text.
    if let Some(e) = entry.filter(|e| disclose && e.current.as_ref().is_some_and(|c| c.len() == 1))
    {
        if let Some(v) = e
            .current_tags()
            .next()
            .and_then(|t| HeaderValue::from_bytes(&t.to_wire()).ok())
        {
            extra.push((header::ETAG, v));
        }
    }
    if let Some(lm) = current_lm
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        extra.push((header::LAST_MODIFIED, lm));
    }
    let code = failure.reason.code();
    info!(
        decision = "412",
        route = at.route(),
        method = %method,
        path = %path,
        precondition = failure.field.header_name(),
        reason = code,
        sent = %sent.join(", "),
        sent_count = sent.len(),
        current = %current_etags.as_deref().map(|c| c.join(", ")).unwrap_or_default(),
        upstream = at.upstream(),
        duration_ms = at.duration_ms(),
        "write refused at the edge"
    );
    s.metrics.reject(failure.field, failure.reason);
    let body = problem::precondition_failed(&PreconditionFailed {
        method: &method,
        path: &path,
        field: failure.field,
        reason: failure.reason,
        sent,
        sent_truncated,
        current_etags,
        current_last_modified: current_lm,
    });
    let decision = format!(
        "rejected; precondition={}; reason={code}",
        failure.field.header_name()
    );
    respond(s, session, 412, &decision, body, &extra).await
}

/// 414: an enforce write whose resource key is longer than `store.max_key_bytes`.
pub(crate) async fn key_too_long(s: &Shared, session: &mut Session) -> Result<()> {
    let path = s.shown_target(session.req_header());
    info!(decision = "414", path = %path, "resource key too long to serialise writes");
    let body = problem::simple(
        414,
        "URI Too Long",
        &format!(
            "The target is longer than this precond serialises writes for (store.max_key_bytes = \
             {} bytes of host, path and query). Send the write to a shorter URL.",
            s.config().store.max_key_bytes
        ),
    );
    respond(s, session, 414, "key-too-long", body, &[]).await
}

/// 428: the route requires a usable precondition on this method and the request has none.
pub(crate) async fn require(s: &Shared, session: &mut Session, at: &Where) -> Result<()> {
    let req = session.req_header();
    let method = Shown(req.method.as_str()).to_string();
    let path = s.shown_target(req);
    info!(
        decision = "428",
        route = at.route(),
        method = %method,
        path = %path,
        upstream = at.upstream(),
        duration_ms = at.duration_ms(),
        "write without a usable precondition"
    );
    s.metrics.required.inc();
    let body = problem::precondition_required(&method, &path);
    respond(s, session, 428, "required", body, &[]).await
}

/// 503 + `Retry-After: 1`: the write could not be handled safely now (`decision` says why).
async fn retry_shortly(
    s: &Shared,
    session: &mut Session,
    decision: &str,
    detail: &str,
) -> Result<()> {
    retry_after(s, session, decision, detail, 1).await
}

/// 503 with `Retry-After: secs`.
async fn retry_after(
    s: &Shared,
    session: &mut Session,
    decision: &str,
    detail: &str,
    secs: u64,
) -> Result<()> {
    let body = problem::simple(503, "Service Unavailable", detail);
    let extra = [(header::RETRY_AFTER, HeaderValue::from(secs.max(1)))];
    respond(s, session, 503, decision, body, &extra).await
}

/// 503 when another write to the resource held it for longer than `wait`.
pub(crate) async fn write_busy(
    s: &Shared,
    session: &mut Session,
    wait: std::time::Duration,
) -> Result<()> {
    let detail =
        format!("Another write to this resource did not finish within {wait:?}; retry shortly.");
    retry_shortly(s, session, "write-busy", &detail).await
}

/// 503 (shared store): an earlier write to this resource, forwarded by an instance that died or
/// gave up on the origin, may still be in flight there for `left`; this write is not forwarded
/// beside it.
pub(crate) async fn earlier_write_in_flight(
    s: &Shared,
    session: &mut Session,
    left: std::time::Duration,
) -> Result<()> {
    let detail = format!(
        "An earlier write to this resource has an unknown outcome (the instance that sent it \
         stopped, or gave up waiting for the origin) and may still be applied for up to \
         {:.1} s; this write was not forwarded beside it. Retry after that, and read the \
         resource first.",
        left.as_secs_f64()
    );
    let secs = left.as_millis().div_ceil(1000) as u64;
    retry_after(s, session, "earlier-write-in-flight", &detail, secs).await
}

/// 503 when the validators a conditional write needs could not be established.
pub(crate) async fn unknown_state(
    s: &Shared,
    session: &mut Session,
    probe_status: u16,
) -> Result<()> {
    let detail = format!(
        "precond could not establish the resource's current validators (the origin \
         answered {probe_status} when asked for it), so the write was not forwarded \
         unprotected. Retry shortly."
    );
    retry_shortly(s, session, "state-unknown", &detail).await
}

/// 304 with the fields RFC 9110 §15.4.5 requires: `ETag`, `Date`, and the stored
/// `Cache-Control`, `Expires`, `Vary`, `Content-Location`; `Last-Modified` only without an
/// ETag. No body.
pub(crate) async fn not_modified(
    s: &Shared,
    session: &mut Session,
    failure: Failure,
    etag: Option<Vec<u8>>,
    last_modified: Option<crate::precondition::Timestamp>,
    meta: &Meta,
    at: &Where,
) -> Result<()> {
    s.metrics.not_modified(failure.field);
    let req = session.req_header();
    info!(
        decision = "304",
        route = at.route(),
        method = %Shown(req.method.as_str()),
        path = %s.shown_target(req),
        precondition = failure.field.header_name(),
        current = %etag.as_deref().map(String::from_utf8_lossy).unwrap_or_default(),
        upstream = at.upstream(),
        duration_ms = at.duration_ms(),
        "read answered 304 at the edge"
    );
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
        DECISION_HEADER,
        format!("not-modified; precondition={}", failure.field.header_name()),
    )?;
    session.write_response_header(Box::new(resp), true).await
}

/// A request precond sent itself failed before a response: 502/504 with a problem body.
/// `retry_after`: seconds sent in `Retry-After` with a 503 (no healthy server).
pub(crate) async fn upstream_failed(
    s: &Shared,
    session: &mut Session,
    e: &Error,
    retry_after: Option<u64>,
) -> Result<()> {
    s.metrics.upstream_failures.inc();
    // Only upstream errors reach here (the client's request was fully read).
    let code = match error_status(e) {
        c @ (502..=504) => c,
        _ => 502,
    };
    let (title, detail) = error_problem(code, e);
    let body = problem::simple(code, title, &detail);
    let retry: Vec<(HeaderName, HeaderValue)> = retry_after
        .filter(|_| code == 503)
        .map(|secs| (header::RETRY_AFTER, HeaderValue::from(secs)))
        .into_iter()
        .collect();
    respond(s, session, code, "upstream-error", body, &retry).await
}

/// The answer to a proxied exchange that failed (Pingora's `fail_to_proxy`): the status written
/// (0: the client is gone, nothing written).
///
/// `retry_after`: seconds sent in `Retry-After` with a 503 (no healthy server).
pub(crate) async fn proxy_failed(
    s: &Shared,
    session: &mut Session,
    e: &Error,
    retry_after: Option<u64>,
) -> u16 {
    let code = error_status(e);
    if code >= 500 {
        s.metrics.upstream_failures.inc();
    }
    // An interim answer (1xx) relayed before the failure is not an answer: the client still
    // gets a final one.
    let answered = session
        .response_written()
        .is_some_and(|h| !h.status.is_informational());
    if code > 0 && !answered {
        let (title, detail) = error_problem(code, e);
        let body = Bytes::from(problem::simple(code, title, &detail));
        let mut resp = pingora::protocols::http::ServerSession::generate_error(code);
        let _ = resp.insert_header(header::CONTENT_TYPE, problem::CONTENT_TYPE);
        let _ = resp.insert_header(header::CONTENT_LENGTH, body.len().to_string());
        let _ = resp.insert_header(DECISION_HEADER, "upstream-error");
        if let Some(secs) = retry_after.filter(|_| code == 503) {
            let _ = resp.insert_header(header::RETRY_AFTER, secs.to_string());
        }
        if let Err(err) = session.write_error_response(resp, body).await {
            warn!("failed to send error response downstream: {err}");
        }
    }
    code
}

/// The status precond answers for an error (0: the client is gone, answer nothing).
pub(crate) fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        t if *t == select::NO_HEALTHY_SERVER => 503,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                // The client's body did not arrive in time (an enforce write's
                // `write_body_timeout`, or a stalled upload).
                ErrorType::ReadTimedout => 408,
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
        503 => "No server of this route's upstream is healthy; nothing was sent. Retry after the time in Retry-After.".to_string(),
        408 => "The request body did not arrive in time (write_body_timeout on enforce routes), so the write was aborted. It may have reached the origin incomplete: fetch the resource before retrying.".to_string(),
        504 => "The upstream server did not answer in time. A write may or may not have been applied: fetch the resource before retrying.".to_string(),
        _ => format!("precond could not handle the request: {}", e.etype().as_str()),
    };
    (title, detail)
}
