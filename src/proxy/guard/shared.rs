//! `guard` routes with a shared store (`store.backend = "redis"`): the write's decision is made
//! on the facts every instance publishes, and what the origin answers is published for the
//! others (the facts and why they are coherent: [`crate::store::redis::facts`]).
//!
//! Owns: [`judge`] (the final say on a conditional write, after the local store and the fence)
//! and [`teach`] / [`forget`] (publishing an exchange's lesson).
//!
//! Invariants:
//! - With a shared store, a write is refused only on the shared facts: a refusal of the local
//!   store that they do not prove is forwarded (a stale local store never causes a false 412),
//!   and so is every refusal only the local store can make (`If-Unmodified-Since`, and
//!   `policy = "mismatch"`'s `If-None-Match` and current-tag refusals: another instance may
//!   have changed what they rest on).
//! - When Redis does not answer within `store.timeout`, the write is forwarded (counted as
//!   `unavailable`): with several instances nothing local proves it stale, and guard never
//!   answers 5xx because of Redis.
//! - Every lesson is published before the answer goes on to the client, so that the client's
//!   next request, through any instance, is judged on it; a lesson that fails is counted and
//!   logged by the client, and the answer goes on.

use tracing::info;

use crate::identity::OwnedKey;
use crate::precondition::etag::scan_list;
use crate::precondition::{guard, Conditional, Decision, EntityTag, Failure, FieldLines, Policy};
use crate::store::redis::{lesson, Redis, MAX_ASKED};
use crate::store::Observation;
use crate::telemetry::SharedGuard;

use super::super::ctx::Ctx;
use super::super::shared::Shared;

/// Decides a conditional write on the shared facts; `local` is what the local store (and the
/// fence) decided. Takes the write's ticket into `ctx` for the lesson of its answer.
pub(crate) async fn judge<'a, L: FieldLines<'a>>(
    s: &Shared,
    redis: &Redis,
    ctx: &mut Ctx,
    key: &OwnedKey,
    cond: &Conditional<L>,
    local: Option<Failure>,
) -> Option<Failure> {
    let mut named: Vec<EntityTag<'a>> = Vec::new();
    scan_list(cond.if_match.lines(), |t| {
        if named.len() < MAX_ASKED {
            named.push(t);
        }
    });
    let overruled = || {
        s.metrics.shared_guard(SharedGuard::Overruled);
        info!(
            decision = "forward",
            "the local store would refuse this write; the shared store does not prove it stale"
        );
    };
    if named.is_empty() {
        // Nothing the shared facts could prove: tags are all they hold.
        if local.is_some() {
            overruled();
        }
        return None;
    }
    let facts = match redis
        .judge(&redis.guard_key(&key.as_key()), ctx.principal, &named)
        .await
    {
        Ok(f) => f,
        Err(_) => {
            // Counted and logged (once a second) by the client.
            s.metrics.shared_guard(SharedGuard::Unavailable);
            return None;
        }
    };
    ctx.shared_ticket = Some(facts.ticket);
    match (guard(cond, Some(&facts), Policy::Superseded), local) {
        (Decision::PreconditionFailed(f), Some(_)) => {
            s.metrics.shared_guard(SharedGuard::Confirmed);
            Some(f)
        }
        (Decision::PreconditionFailed(f), None) => {
            s.metrics.shared_guard(SharedGuard::Refused);
            Some(f)
        }
        (_, Some(_)) => {
            overruled();
            None
        }
        (_, None) => None,
    }
}

/// Publishes what the origin's answer (`obs`) teaches, before the answer goes on.
pub(crate) async fn teach(redis: &Redis, ctx: &Ctx, key: &OwnedKey, obs: &Observation<'_>) {
    let Some(l) = lesson(obs) else {
        return;
    };
    // A failure is counted and logged by the client; the answer still goes out.
    let _ = redis
        .teach(
            &redis.guard_key(&key.as_key()),
            ctx.principal,
            &l,
            ctx.shared_ticket,
        )
        .await;
}

/// A forwarded write's exchange broke (its outcome is unknown): every replacement published so
/// far may be void.
pub(crate) async fn forget(s: &Shared, ctx: &Ctx) {
    let (Some(redis), Some(key)) = (&s.redis, &ctx.key) else {
        return;
    };
    teach(redis, ctx, key, &Observation::broken(ctx.method)).await;
}
