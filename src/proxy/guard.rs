//! `guard` routes: the origin is the judge; the edge refuses only a write whose precondition the
//! learned state proves false, and forwards everything else untouched.
//!
//! Owns: [`request`], the `request_filter` step of a `guard` route. The decision itself is the
//! store's fast path ([`guard_decision`]); the refusal is written by [`answer::reject`].
//!
//! Invariants:
//! - Only writes carrying a precondition are decided; every other request is forwarded.
//! - A refusal is decided before any upstream peer is chosen: the origin never sees it.
//! - The request's key is set in the context whether the write is forwarded or not, so that the
//!   origin's answer is learned.

use pingora::prelude::*;
use pingora::proxy::Session;
use tracing::info;

use crate::config::Route;
use crate::identity::OwnedKey;
use crate::precondition::Decision;
use crate::store::guard_decision;

use super::answer;
use super::ctx::Ctx;
use super::headers::conditional;
use super::shared::Shared;

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
        match guard_decision(&s.store, &key.as_key(), ctx.principal, &cond, route.policy) {
            Decision::PreconditionFailed(failure) => {
                // Only what this caller's partition holds: validators the origin showed them.
                let known = s.store.get(&key.as_key(), ctx.principal);
                answer::reject(s, session, failure, known.as_deref()).await?;
                return Ok(true);
            }
            _ => {
                s.metrics
                    .forwarded_conditional_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                info!(
                    decision = "forward",
                    method = %req.method,
                    path = %req.uri.path(),
                    "conditional write forwarded: not proven stale"
                );
            }
        }
    }
    ctx.key = Some(key);
    Ok(false)
}
