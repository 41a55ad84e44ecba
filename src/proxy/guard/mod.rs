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
pub(crate) mod shared;

use pingora::prelude::*;
use pingora::proxy::Session;
use tracing::{info, warn};

use crate::config::Route;
use crate::identity::OwnedKey;
use crate::precondition::{Decision, Failure};
use crate::store::guard_decision;
use crate::telemetry::redact::Shown;
use crate::telemetry::Wait;

use super::answer;
use super::ctx::Ctx;
use super::edge::Where;
use super::headers::conditional;
use super::locks::NotTaken;
use super::shared::Shared;
use fence::{Gate, Last};

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
        let who = ctx.principal;
        let decide = || guard_decision(&s.store, &key.as_key(), who, &cond, route.policy);
        let mut refused = match decide() {
            Decision::PreconditionFailed(failure) => Some(failure),
            _ => None,
        };
        // Writes naming one tag wait for the write in flight naming it (the fence); then, while
        // the resource's current tag is unknown to this caller's partition after tags were seen
        // (writes overlapped, an exchange broke, a 5xx), one conditional write at a time goes to
        // the origin and the others wait for its answer (single-flight). Always in this order,
        // so that nobody holding the second waits for the first.
        let mut gated = false;
        if let (None, Some((weak, opaque))) = (&refused, fence::single_tag(cond.if_match)) {
            if !route.fence.wait.is_zero() {
                gated = true;
                refused = pass(s, ctx, &key, Gate::Tag(weak, opaque), route, &decide).await;
            }
        }
        let uncertain = || {
            !route.fence.uncertain_wait.is_zero()
                && s.store
                    .get(&key.as_key(), who)
                    .is_some_and(|e| e.current.is_none() && !e.replaced.is_empty())
        };
        if refused.is_none() && uncertain() {
            gated = true;
            refused = pass(s, ctx, &key, Gate::Uncertain, route, &decide).await;
        }
        // With a shared store, the shared facts have the last word (the local store's refusal
        // may be stale; another instance may have seen the tag replaced).
        if let Some(redis) = &s.redis {
            refused = shared::judge(s, redis, ctx, &key, &cond, refused).await;
        }
        if gated {
            // Writes learned while this one waited were answered before it is sent: its ticket
            // is taken now, so that its answer is not mistaken for an overlapping write's.
            ctx.ticket = Some(s.store.ticket());
        }
        if let Some(failure) = refused {
            return refuse(s, session, ctx, &key, failure).await;
        }
        s.metrics.forwarded_conditional_writes.inc();
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

/// Takes the write's place at `gate` (bounded wait), then decides it again: a refusal, or `None`
/// with the hold kept in the context (released once the write's answer has been learned).
async fn pass(
    s: &Shared,
    ctx: &mut Ctx,
    key: &OwnedKey,
    gate: Gate<'_>,
    route: &Route,
    decide: &impl Fn() -> Decision,
) -> Option<Failure> {
    let wait = match gate {
        Gate::Tag(..) => route.fence.wait,
        Gate::Uncertain => route.fence.uncertain_wait,
    };
    let on_wait = || {
        s.metrics.fence_waits.inc();
    };
    let waiting = std::time::Instant::now();
    let entered = s
        .fences
        .enter(key, ctx.principal, gate, wait, route.fence.waiters, on_wait)
        .await;
    s.metrics.waited(Wait::Fence, waiting.elapsed());
    match entered {
        Ok((mut hold, last, waited)) => match decide() {
            // Decided again once in: the write it waited for (or one learned between the first
            // decision and now) may have changed what the store proves.
            Decision::PreconditionFailed(failure) => {
                if waited && last == Last::Replaced {
                    s.metrics.fence_refused.inc();
                }
                Some(failure)
            }
            // The write before kept the tag current: nothing more is to be learned by waiting
            // for this one. It goes, and lets the next waiter go.
            _ if last == Last::Kept => None,
            _ => {
                hold.forwarding();
                ctx.fence.push(hold);
                None
            }
        },
        Err(why) => {
            let (counter, cause) = match why {
                NotTaken::TimedOut => (&s.metrics.fence_timeouts, "the wait elapsed"),
                NotTaken::Full => (&s.metrics.fence_full, "fence_waiters reached"),
            };
            counter.inc();
            // Counted every time; logged at most once a second per route (a client can cause
            // these).
            if ctx.live.fence_warned[ctx.route.unwrap_or_default()].ready(FENCE_WARNING_PERIOD) {
                let gate = match gate {
                    Gate::Tag(..) => "fence_wait",
                    Gate::Uncertain => "uncertain_wait",
                };
                warn!(
                    decision = "forward",
                    gate,
                    cause,
                    "conditional write forwarded without waiting for the write in flight \
                     (counted in precond_fence_bypassed_total; logged once a second)"
                );
            }
            None
        }
    }
}

/// Answers the edge 412, with what the caller's own partition holds: validators the origin
/// showed them (none with a shared store).
async fn refuse(
    s: &Shared,
    session: &mut Session,
    ctx: &Ctx,
    key: &OwnedKey,
    failure: Failure,
) -> Result<bool> {
    // With a shared store the refusal rests on facts another instance may have learned: this
    // instance's validators may be the very ones refused. None are disclosed then.
    let known = s
        .redis
        .is_none()
        .then(|| s.store.get(&key.as_key(), ctx.principal))
        .flatten();
    answer::reject(s, session, failure, known.as_deref(), &Where::of(ctx)).await?;
    Ok(true)
}
