//! `guard` routes: the origin is the judge; the edge refuses only a write whose precondition the
//! learned state proves false, and forwards everything else untouched.
//!
//! Files: this one decides; [`fence`] makes a write naming the tag of a write still in flight wait
//! for that write's answer (the race window of read-modify-write clients).
//!
//! Owns: [`request`], the `request_filter` step of a `guard` route. The decision itself is the
//! store's fast path ([`guard_decision`]); the refusal is written by [`answer::reject`].
//!
//! Invariants:
//! - Only writes carrying a precondition are decided; every other request is forwarded, and
//!   never waits.
//! - A refusal is decided before any upstream peer is chosen: the origin never sees it.
//! - A write that waited at the fence is decided again on the same rules; the fence never refuses
//!   on its own (see [`fence`]).
//! - The request's key is set in the context whether the write is forwarded or not, so that the
//!   origin's answer is learned.

pub(crate) mod fence;

use std::sync::atomic::Ordering::Relaxed;

use pingora::prelude::*;
use pingora::proxy::Session;
use tracing::{info, warn};

use crate::config::Route;
use crate::identity::OwnedKey;
use crate::precondition::{Decision, Failure};
use crate::store::guard_decision;
use crate::telemetry::redact::Shown;

use super::answer;
use super::ctx::Ctx;
use super::headers::conditional;
use super::locks::NotTaken;
use super::shared::Shared;
use fence::Last;

/// At most one log line per route and period about writes forwarded past the fence.
const FENCE_WARNING_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// Decides a request on a `guard` route. `Ok(true)` when precond answered it (412).
pub(crate) async fn request(
    s: &Shared,
    session: &mut Session,
    ctx: &mut Ctx,
    route: &Route,
    key: OwnedKey,
) -> Result<bool> {
    let req = session.req_header();
    let cond = conditional(&req.headers, ctx.method);
    if ctx.method.is_write() && cond.has_any() {
        let decide = || guard_decision(&s.store, &key.as_key(), ctx.principal, &cond, route.policy);
        let mut refused = match decide() {
            Decision::PreconditionFailed(failure) => Some(failure),
            _ => None,
        };
        let fenced = fence::single_tag(cond.if_match)
            .filter(|_| refused.is_none() && !route.fence.wait.is_zero());
        if let Some(tag) = fenced {
            match s
                .fences
                .enter(
                    &key,
                    ctx.principal,
                    tag,
                    route.fence.wait,
                    route.fence.waiters,
                    || {
                        s.metrics.fence_waits.fetch_add(1, Relaxed);
                    },
                )
                .await
            {
                Ok((mut hold, last, waited)) => {
                    // Decided again once in: the write the fence was for may have been learned
                    // between the first decision and now. The store decides on its usual rules.
                    match decide() {
                        Decision::PreconditionFailed(failure) => {
                            if waited && last == Last::Replaced {
                                s.metrics.fence_refused.fetch_add(1, Relaxed);
                            }
                            refused = Some(failure);
                        }
                        // The write before kept the tag current: nothing more is to be learned
                        // by waiting for this one. It goes, and lets the next waiter go.
                        _ if last == Last::Kept => drop(hold),
                        _ => {
                            hold.forwarding();
                            ctx.fence = Some(hold);
                        }
                    }
                }
                Err(why) => {
                    let (counter, cause) = match why {
                        NotTaken::TimedOut => (&s.metrics.fence_timeouts, "fence_wait elapsed"),
                        NotTaken::Full => (&s.metrics.fence_full, "fence_waiters reached"),
                    };
                    counter.fetch_add(1, Relaxed);
                    // Counted every time; logged at most once a second per route (a client
                    // can cause these).
                    if s.fence_warned[ctx.route.unwrap_or_default()].ready(FENCE_WARNING_PERIOD) {
                        warn!(
                            decision = "forward",
                            method = %Shown(req.method.as_str()),
                            path = %Shown(req.uri.path()),
                            cause,
                            "conditional write forwarded without waiting for the write in flight \
                             (counted in precond_fence_bypassed_total; logged once a second)"
                        );
                    }
                }
            }
            // Writes learned while this one waited were answered before it is sent: its ticket
            // is taken now, so that its answer is not mistaken for an overlapping write's.
            ctx.ticket = Some(s.store.ticket());
        }
        if let Some(failure) = refused {
            return refuse(s, session, ctx, &key, failure).await;
        }
        s.metrics.forwarded_conditional_writes.fetch_add(1, Relaxed);
        info!(
            decision = "forward",
            method = %Shown(req.method.as_str()),
            path = %Shown(req.uri.path()),
            "conditional write forwarded: not proven stale"
        );
    }
    ctx.key = Some(key);
    Ok(false)
}

/// Answers the edge 412, with what the caller's own partition holds: validators the origin
/// showed them.
async fn refuse(
    s: &Shared,
    session: &mut Session,
    ctx: &Ctx,
    key: &OwnedKey,
    failure: Failure,
) -> Result<bool> {
    let known = s.store.get(&key.as_key(), ctx.principal);
    answer::reject(s, session, failure, known.as_deref()).await?;
    Ok(true)
}
