//! `observe` routes: the adoption path. precond learns exactly as on a `guard` route (identity,
//! principals, both policies) and forwards *everything* untouched, recording what `guard` would
//! have done and what the origin answered instead, and counting the writes without any
//! precondition that overwrote a version their caller had not seen (the lost-update census,
//! [`crate::store::census`]).
//!
//! Owns: [`request`] (before forwarding: the would-be decision; which census question the write
//! asks) and [`answered`] / [`broken`] (after: the origin's answer, counted, logged, and taught to
//! the census).
//!
//! Invariants:
//! - Nothing is refused, delayed or changed: no 412, no fence, no wait; the request and the
//!   response pass as on a `pass` route. Only counters, the store, the census and log lines
//!   change.
//! - A would-be refusal is the exact `guard` decision ([`guard_decision`], the fast path with
//!   the route's policy) on this instance's store; the shared store, the fence and
//!   `strict_targets` are not modelled (documented: the count is a lower bound).
//! - Only PUT, PATCH and DELETE without a precondition are classified, when the origin completed
//!   them (200, 201, 204), before their answer is recorded; a POST (an action) and a 202 (maybe
//!   never applied) are not.
//! - Log lines (target `precond::observe`, one per would-be refusal and per blind overwrite,
//!   after the origin answered) are bounded: at most [`LOG_LINES_PER_SECOND`] per route, the
//!   rest counted (`precond_observe_log_suppressed_total`); every client value in them is bounded
//!   and redacted.

use pingora::proxy::Session;
use tracing::info;

use crate::config::{Route, Scope};
use crate::identity::OwnedKey;
use crate::precondition::{Decision, EntityTag, Method};
use crate::store::census::Blind;
use crate::store::{guard_decision, Observation, Reach};
use crate::telemetry::observe::{Answer, Census};
use crate::telemetry::redact::Shown;

use super::ctx::Ctx;
use super::headers::conditional;
use super::principal::caller_of;
use super::shared::Shared;

/// Most `precond::observe` log lines per route and second.
pub(crate) const LOG_LINES_PER_SECOND: u64 = 100;

/// A write whose effect the census can follow: a replacement or a deletion.
fn replaces(m: Method) -> bool {
    matches!(m, Method::Put | Method::Patch | Method::Delete)
}

/// Records what `guard` would do with the request (it is then forwarded: never answered here).
pub(crate) fn request(s: &Shared, session: &Session, ctx: &mut Ctx, route: &Route, key: OwnedKey) {
    let headers = &session.req_header().headers;
    if ctx.method.is_write() {
        let cond = conditional(headers, ctx.method);
        s.metrics.observe.write(cond.has_any());
        if cond.has_any() {
            if let Decision::PreconditionFailed(f) =
                guard_decision(&s.store, &key.as_key(), ctx.principal, &cond, route.policy)
            {
                s.metrics.observe.would_refuse(f.field, f.reason);
                ctx.would_refuse = Some(f);
            }
        } else {
            ctx.blind = replaces(ctx.method);
        }
    }
    // The caller is the principal but on `scope = "shared"` routes (where every request is
    // the shared partition for the store, not for the census).
    ctx.caller = if route.scope == Scope::Shared {
        caller_of(route, headers, &s.keys.principal)
    } else {
        ctx.principal
    };
    ctx.key = Some(key);
}

/// The origin answered an observed request (`obs`): counts and logs what the request's record
/// says, and teaches the census.
pub(crate) fn answered(s: &Shared, session: &Session, ctx: &Ctx, obs: &Observation<'_>) {
    let (Some(key), Some(route)) = (&ctx.key, ctx.route) else {
        return;
    };
    let crate::store::Outcome::Status(status) = obs.outcome else {
        return;
    };
    let k = key.as_key();
    let census = s.store.census();
    let shown = obs.etag.and_then(EntityTag::parse);
    let completed = matches!(status, 200 | 201 | 204);
    let may_log = || {
        ctx.live.observe_logged[route].take(LOG_LINES_PER_SECOND) || {
            s.metrics.observe.log_suppressed.inc();
            false
        }
    };
    if obs.private || obs.reach == Reach::Partition {
        // Callers are shown different representations: "latest" would mix them.
        if (200..=299).contains(&status) || status == 304 {
            census.per_caller(&k);
        }
        if ctx.blind && completed {
            s.metrics.observe.census(Census::Unclassified);
        }
    } else if ctx.method.is_get_or_head() {
        if let (200 | 203 | 206 | 304, Some(t)) = (status, &shown) {
            census.saw(
                &k,
                ctx.caller,
                t,
                ctx.ticket.unwrap_or_else(|| s.store.ticket()),
            );
        }
    } else if replaces(ctx.method) && completed {
        if ctx.blind {
            match census.classify(&k, ctx.caller) {
                Blind::Overwrite => {
                    s.metrics.observe.census(Census::Overwrite);
                    if may_log() {
                        info!(
                            target: "precond::observe",
                            event = "blind_overwrite",
                            method = %Shown(session.req_header().method.as_str()),
                            path = %s.shown_target(session.req_header()),
                            caller = %format_args!("{:016x}", ctx.caller.0),
                            origin_status = status,
                            "a write without a precondition overwrote a version its caller had not seen"
                        );
                    }
                }
                Blind::Informed => {
                    s.metrics.observe.census(Census::Informed);
                }
                Blind::Unknown => {
                    s.metrics.observe.census(Census::Unclassified);
                }
            }
        }
        let made = if ctx.method == Method::Delete {
            None
        } else {
            shown.as_ref()
        };
        // Dated when answered: a read that started before cannot roll it back.
        census.wrote(&k, ctx.caller, made, s.store.ticket());
    }
    if let Some(f) = ctx.would_refuse {
        let answer = Answer::of(status);
        s.metrics.observe.answered(answer);
        if may_log() {
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
    }
}

/// An observed request's exchange broke (no answer).
pub(crate) fn broken(s: &Shared, ctx: &Ctx) {
    if ctx.would_refuse.is_some() {
        s.metrics.observe.answered(Answer::Broken);
    }
}
