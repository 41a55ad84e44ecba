//! `observe` routes: the adoption path. precond learns exactly as on a `guard` route (identity,
//! principals, both policies) and forwards *everything* untouched, recording what `guard` would
//! have done and what the origin answered instead, and counting the writes without any
//! precondition that overwrote a version their caller had not read (the lost-update census,
//! [`crate::store::census`]).
//!
//! Owns: [`request`] (before forwarding: the would-be decision, the census's classification)
//! and [`answered`] / [`broken`] (after: the origin's answer, counted and logged).
//!
//! Invariants:
//! - Nothing is refused, delayed or changed: no 412, no fence, no wait; the request and the
//!   response pass as on a `pass` route. Only counters, the store, the census and log lines
//!   change.
//! - A would-be refusal is the exact `guard` decision ([`guard_decision`], the fast path with
//!   the route's policy) on this instance's store; the shared store is not consulted.
//! - One log line (target `precond::observe`) per would-be refusal and per blind overwrite, each
//!   after the origin answered; every client-supplied value in it is bounded and redacted.

use std::sync::atomic::Ordering::Relaxed;

use pingora::proxy::Session;
use tracing::info;

use crate::config::Route;
use crate::identity::OwnedKey;
use crate::precondition::{Decision, EntityTag};
use crate::store::census::Blind;
use crate::store::guard_decision;
use crate::telemetry::observe::Answer;
use crate::telemetry::redact::Shown;

use super::ctx::Ctx;
use super::headers::conditional;
use super::shared::Shared;

/// Records what `guard` would do with the request (it is then forwarded: never answered here).
pub(crate) fn request(s: &Shared, session: &Session, ctx: &mut Ctx, route: &Route, key: OwnedKey) {
    if ctx.method.is_write() {
        let cond = conditional(&session.req_header().headers, ctx.method);
        s.metrics.observe.write(cond.has_any());
        if cond.has_any() {
            if let Decision::PreconditionFailed(f) =
                guard_decision(&s.store, &key.as_key(), ctx.principal, &cond, route.policy)
            {
                s.metrics.observe.would_refuse(f.field, f.reason);
                ctx.would_refuse = Some(f);
            }
        } else {
            ctx.blind = s.store.census().classify(&key.as_key(), ctx.principal) == Blind::Overwrite;
        }
    }
    ctx.key = Some(key);
}

/// The origin answered an observed request with `status` (its `ETag` field value `etag`): counts
/// and logs what the request's record says, and teaches the census.
pub(crate) fn answered(s: &Shared, session: &Session, ctx: &Ctx, status: u16, etag: Option<&[u8]>) {
    let Some(key) = &ctx.key else {
        return;
    };
    let ticket = ctx.ticket.unwrap_or_else(|| s.store.ticket());
    let shown = etag.and_then(EntityTag::parse);
    let census = s.store.census();
    match (ctx.method.changes_state(), status) {
        // A read that showed a version, or a completed write (its answer's version, or unknown).
        (false, 200 | 203 | 206 | 304) if shown.is_some() => {
            census.saw(&key.as_key(), ctx.principal, shown.as_ref(), ticket)
        }
        (true, 200..=299) => census.saw(&key.as_key(), ctx.principal, shown.as_ref(), ticket),
        _ => {}
    }
    if let Some(f) = ctx.would_refuse {
        let answer = Answer::of(status);
        s.metrics.observe.answered(answer);
        info!(
            target: "precond::observe",
            event = "would_refuse",
            method = %Shown(session.req_header().method.as_str()),
            path = %s.shown_target(session.req_header()),
            precondition = f.field.header_name(),
            reason = f.reason.code(),
            origin_status = status,
            answer = answer.name(),
            "guard would have answered 412; the origin answered {status}"
        );
    }
    if ctx.blind && (200..=299).contains(&status) {
        s.metrics.observe.blind_overwrites.fetch_add(1, Relaxed);
        info!(
            target: "precond::observe",
            event = "blind_overwrite",
            method = %Shown(session.req_header().method.as_str()),
            path = %s.shown_target(session.req_header()),
            caller = %format_args!("{:016x}", ctx.principal.0),
            origin_status = status,
            "a write without a precondition overwrote a version its caller had not read"
        );
    }
}

/// An observed request's exchange broke (no answer).
pub(crate) fn broken(s: &Shared, ctx: &Ctx) {
    if ctx.would_refuse.is_some() {
        s.metrics.observe.answered(Answer::Broken);
    }
}
