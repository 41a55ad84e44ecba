//! `enforce` routes: precond is the judge of every precondition (the origin knows nothing of
//! validators; see docs/architecture.md, "enforce").
//!
//! Files: this one decides reads and writes; [`probe`] sends precond's own requests to the origin
//! and synthesises tags; `super::locks` serialises writes per resource.
//!
//! Owns: [`request`], the `request_filter` step of an `enforce` route:
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

pub(crate) mod probe;

use pingora::prelude::*;
use std::time::Instant;

use pingora::proxy::Session;
use tracing::{info, warn};

use crate::config::{Probe, Route};
use crate::identity::OwnedKey;
use crate::precondition::date::parse_http_date;
use crate::precondition::etag::scan_list;
use crate::precondition::evaluate::has_usable_precondition;
use crate::precondition::{
    evaluate, Conditional, Current, Decision, EntityTag, Existence, FieldLines, Method,
};
use crate::store::redis::{Resource, Snapshot};
use crate::store::{Entry, Tag, META_HEADERS};
use crate::telemetry::redact::Shown;
use crate::telemetry::Wait;

use super::answer;
use super::ctx::Ctx;
use super::edge::Where;
use super::headers::{conditional, has_date_precondition, header_bytes};
use super::select;
use super::shared::Shared;
use probe::{fetch_and_learn, relay};

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

/// What a probe answered with `status` shows, when the store did not keep it: the state to judge
/// the write on (a 2xx: the representation and its validators; 404/410: absent).
fn probed(status: u16, v: &probe::Validators, lm: Option<i64>) -> Option<Entry> {
    let mut e = Entry::blank();
    match status {
        200..=299 => {
            e.existence = Existence::Exists;
            let tag = v.tag.as_deref().and_then(EntityTag::parse);
            e.current = Some(tag.iter().map(Tag::from_ref).collect());
            e.synthetic = v.synthetic;
            e.alias = v
                .alias
                .as_deref()
                .and_then(EntityTag::parse)
                .as_ref()
                .map(Tag::from_ref);
            e.current_lm = lm;
            e.last_modified = lm;
        }
        404 | 410 => {
            e.existence = Existence::Absent;
            e.current = Some(Vec::new());
        }
        _ => return None,
    }
    Some(e)
}

/// The state a shared-store snapshot describes (as [`probed`] reads a probe).
fn from_snapshot(sn: &Snapshot) -> Option<Entry> {
    let v = probe::Validators {
        tag: sn.tag.clone(),
        synthetic: sn.synthetic,
        alias: sn.alias.clone(),
    };
    probed(sn.status, &v, sn.last_modified)
}

/// Shared store only: refuses the write (412) when the state its last lease holder published,
/// with no write forwarded since, proves the precondition false. `Ok(false)`: not decided here (no
/// shared store, nothing published, a write in flight, the precondition holds, or Redis did not
/// answer: the write then takes the lease, which answers 503 if Redis is down).
async fn refused_on_peek(
    s: &Shared,
    session: &mut Session,
    judged: Method,
    required: bool,
    res: &Resource,
    at: &Where,
) -> Result<bool> {
    let Some(redis) = &s.redis else {
        return Ok(false);
    };
    let needs_date = has_date_precondition(session.req_header());
    let Some(entry) = redis
        .peek(res)
        .await
        .ok()
        .flatten()
        .as_ref()
        .and_then(from_snapshot)
        .filter(|e| decidable(e, needs_date))
    else {
        return Ok(false);
    };
    let cond = conditional(&session.req_header().headers, judged);
    match evaluate(&cond, &current_of(&entry, &cond), required) {
        Decision::PreconditionFailed(f) => {
            answer::reject(s, session, f, Some(&entry), at).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A write refused under the shared store's lease: the resource did not change; what this
/// write's probe showed (if it probed) is published for the next holder. A failure to publish
/// only costs the next holder a probe.
async fn end_unchanged(ctx: &mut Ctx, snapshot: Option<&Snapshot>) {
    if let Some(lease) = ctx.lease.take() {
        let _ = lease.publish(false, snapshot).await;
    }
}

/// The state `evaluate` needs for `cond`. With several current tags (`Vary`: one per variant
/// seen), the one `If-Match` names if any (each is a representation of the current state: a
/// writer holding the gzip variant's tag is not stale because another reader fetched the
/// identity one), else the latest.
fn current_of<'e, 'a, L: FieldLines<'a>>(e: &'e Entry, cond: &Conditional<L>) -> Current<'e> {
    let mut named = None;
    if e.current.as_ref().is_some_and(|c| c.len() > 1) {
        scan_list(cond.if_match.lines(), |t| {
            if named.is_none() {
                named = e.current_tags().find(|c| c.strong_eq(&t));
            }
        });
    }
    Current {
        existence: e.existence,
        etag: named.or_else(|| e.current_tags().last()),
        alias: e.alias.as_ref().map(|t| t.as_ref()),
        last_modified: e.current_lm,
    }
}

/// Handles a request on an `enforce` route. `Ok(true)` when precond answered it.
pub(crate) async fn request(
    s: &Shared,
    session: &mut Session,
    ctx: &mut Ctx,
    route: &Route,
    key: OwnedKey,
) -> Result<bool> {
    // A reload changed which route, key or mode requests get: writes started under the earlier
    // configuration are not serialised by this one's locks, and the state they leave was
    // never learned. They finish first (bounded by `write_wait`). A write's whole wait (for
    // them, its lock, its lease and an earlier holder's write in flight) has one deadline.
    let wait = route.enforce.write_wait;
    let deadline = Instant::now() + wait;
    if !ctx.live.earlier_writes_done(ctx.resource, deadline).await {
        warn!(path = %s.shown_target(session.req_header()), "a write started under the previous configuration is still in flight");
        answer::write_busy(s, session, wait).await?;
        return Ok(true);
    }
    // Reads, ranged or not: `Range` is ignored on enforce routes (a full 200), because the
    // origin cannot evaluate `If-Range` against tags precond synthesised (RFC 9110 §14.2 lets
    // a server ignore Range).
    if ctx.method.is_get_or_head() {
        return read(s, session, ctx, route, key).await;
    }
    if session.req_header().method == http::Method::OPTIONS {
        // Preconditions never apply (RFC 9110 §13.2.1): forwarded, and learned from like in guard.
        ctx.key = Some(key);
        return Ok(false);
    }
    // Every other method, exactly as spelled (RFC 9110 §9.1: `put` is not PUT), is a write: an
    // extension method may change the resource, so it is serialised, may be required to be
    // conditional, and invalidates what precond knew (fail closed). TRACE arrives here as an
    // extension method (`request_filter` classified it).
    write(s, session, ctx, route, key, deadline).await
}

async fn read(
    s: &Shared,
    session: &mut Session,
    ctx: &mut Ctx,
    route: &Route,
    key: OwnedKey,
) -> Result<bool> {
    let needs_date = has_date_precondition(session.req_header());
    // 1. Known validators: answer 304/412 without the origin. Not with a shared store: another
    // instance may have written the resource since this one learned it.
    if let Some(entry) = s
        .store
        .get(&key.as_key(), ctx.principal)
        .filter(|e| s.redis.is_none() && decidable(e, needs_date))
    {
        let cond = conditional(&session.req_header().headers, ctx.method);
        if cond.has_any() {
            match evaluate(&cond, &current_of(&entry, &cond), false) {
                Decision::NotModified(f) => {
                    let meta = entry.meta.as_deref().cloned().unwrap_or_default();
                    let tag = current_of(&entry, &cond).etag.map(|t| t.to_wire());
                    answer::not_modified(
                        s,
                        session,
                        f,
                        tag,
                        entry.current_lm,
                        &meta,
                        &Where::of(ctx),
                    )
                    .await?;
                    return Ok(true);
                }
                Decision::PreconditionFailed(f) => {
                    answer::reject(s, session, f, Some(&entry), &Where::of(ctx)).await?;
                    return Ok(true);
                }
                _ => {}
            }
        }
    }
    // 2. Fetch the representation; learn (and synthesise) its validators.
    let (fetched, peer, v) = match fetch_and_learn(s, session, ctx, route, &key, false).await {
        Ok(f) => f,
        Err(e) => {
            let retry = select::retry_after(ctx, &e);
            return answer::upstream_failed(s, session, &e, retry)
                .await
                .map(|()| true);
        }
    };
    let (tag, synthetic) = (v.tag, v.synthetic);
    // 3. Evaluate against what the origin just showed.
    if fetched.header.status == 200 {
        let lm = header_bytes(&fetched.header, "last-modified").and_then(parse_http_date);
        let current = Current {
            existence: Existence::Exists,
            etag: tag.as_deref().and_then(EntityTag::parse),
            alias: v.alias.as_deref().and_then(EntityTag::parse),
            last_modified: lm,
        };
        let mut cond = conditional(&session.req_header().headers, ctx.method);
        cond.no_cache = false; // just validated with the origin
        match evaluate(&cond, &current, false) {
            Decision::NotModified(f) => {
                let meta =
                    META_HEADERS.map(|n| header_bytes(&fetched.header, n).map(Box::<[u8]>::from));
                answer::not_modified(s, session, f, tag, lm, &meta, &Where::of(ctx)).await?;
                fetched.finish(&s.connector, &peer).await;
                return Ok(true);
            }
            Decision::PreconditionFailed(f) => {
                let entry = s.store.get(&key.as_key(), ctx.principal);
                answer::reject(s, session, f, entry.as_deref(), &Where::of(ctx)).await?;
                fetched.finish(&s.connector, &peer).await;
                return Ok(true);
            }
            _ => {}
        }
    }
    // 4. Relay the response, with the synthesised tag.
    ctx.relayed = true;
    relay(s, session, fetched, &peer, tag.filter(|_| synthetic)).await?;
    Ok(true)
}

async fn write(
    s: &Shared,
    session: &mut Session,
    ctx: &mut Ctx,
    route: &Route,
    key: OwnedKey,
    deadline: Instant,
) -> Result<bool> {
    let settings = &route.enforce;
    // Extension methods are judged like POST (a write that cannot create its target) and are
    // required to be conditional whenever the route requires any method to be.
    let judged = match ctx.method {
        Method::Other => Method::Post,
        m => m,
    };
    let required = settings.require.contains(&ctx.method)
        || (ctx.method == Method::Other && !settings.require.is_empty());
    let has_any = conditional(&session.req_header().headers, judged).has_any();
    // A refusal that does not depend on the resource's state is answered without waiting for
    // (or holding) its lock.
    if required && !has_any {
        answer::require(s, session, &Where::of(ctx)).await?;
        return Ok(true);
    }
    // With a shared store: a write whose precondition the published state already proves false
    // is refused without waiting for (or taking) the lock and the lease.
    // The resource's Redis names, once for the peek and the lease.
    let shared_res = s
        .redis
        .as_ref()
        .map(|r| r.resource(&key.as_key(), ctx.principal));
    if let (true, Some(res)) = (has_any, &shared_res) {
        if refused_on_peek(s, session, judged, required, res, &Where::of(ctx)).await? {
            return Ok(true);
        }
    }
    let waiting = std::time::Instant::now();
    let lock = s
        .locks
        .lock(&key, deadline.saturating_duration_since(waiting))
        .await;
    s.metrics.waited(Wait::WriteLock, waiting.elapsed());
    let Some(lock) = lock else {
        warn!(path = %s.shown_target(session.req_header()), "write lock not obtained in time");
        answer::write_busy(s, session, settings.write_wait).await?;
        return Ok(true);
    };
    ctx.write_lock = Some(lock);
    // With a shared store, the resource's lease there too (several instances): the write is then
    // decided on what the lease's previous holder published, or on a probe made under it, never
    // on this instance's own store.
    let mut shared_view: Option<Entry> = None;
    if let (Some(redis), Some(res)) = (&s.redis, shared_res) {
        let waiting = std::time::Instant::now();
        let acquired = redis.acquire(res, deadline).await;
        s.metrics.waited(Wait::Lease, waiting.elapsed());
        match acquired {
            Ok(Some(lease)) => {
                // The chain is broken: a write an earlier holder forwarded (it died, or gave up on
                // the origin) may still be in flight there. Nothing is forwarded beside it.
                let mut lease = lease;
                let quiet = lease.quiet();
                if !quiet.is_zero() {
                    if std::time::Instant::now() + quiet > deadline {
                        // Released (not published): the chain stays broken for the next holder.
                        let _ = lease.release().await;
                        ctx.write_lock = None;
                        warn!(path = %s.shown_target(session.req_header()), wait_ms = quiet.as_millis() as u64, "write refused: an earlier write to the resource may still be in flight");
                        answer::earlier_write_in_flight(s, session, quiet).await?;
                        return Ok(true);
                    }
                    tokio::time::sleep(quiet).await;
                    lease.waited_out();
                }
                shared_view = lease.snapshot().and_then(from_snapshot);
                ctx.lease = Some(lease);
            }
            Ok(None) => {
                ctx.write_lock = None;
                warn!(path = %s.shown_target(session.req_header()), "shared write lease not obtained in time");
                answer::write_busy(s, session, settings.write_wait).await?;
                return Ok(true);
            }
            Err(e) => {
                ctx.write_lock = None;
                answer::shared_store_unavailable(s, session, &e.to_string()).await?;
                return Ok(true);
            }
        }
    }
    // The body must arrive within `write_body_timeout` of taking the lock (the deadline is
    // enforced per read here and between chunks in `request_body_filter`).
    ctx.body_deadline = Some(Instant::now() + settings.write_body_timeout);
    session.set_read_timeout(Some(settings.write_body_timeout));
    let needs_date = has_date_precondition(session.req_header());
    // Writes before this one (through this instance) have completed and been learned: this
    // write's place in the store's history starts now, not when it began waiting.
    ctx.ticket = Some(s.store.ticket());
    if has_any || required {
        let shared = s.redis.is_some();
        let stored = || {
            s.store
                .get(&key.as_key(), ctx.principal)
                .filter(|e| !shared && decidable(e, needs_date))
        };
        let mut view = stored();
        // What the probe showed, when the store did not keep it (or what the shared store's
        // previous lease holder published).
        let mut shown = shared_view.filter(|e| decidable(e, needs_date));
        // What this write's probe showed, for the shared store's next holder.
        let mut probed_snapshot = None;
        if view.is_none() && shown.is_none() {
            let head = settings.probe == Probe::Head;
            match fetch_and_learn(s, session, ctx, route, &key, head).await {
                Ok((fetched, peer, v)) => {
                    let status = fetched.header.status.as_u16();
                    let lm =
                        header_bytes(&fetched.header, "last-modified").and_then(parse_http_date);
                    fetched.finish(&s.connector, &peer).await;
                    if status >= 500 {
                        ctx.lease = None;
                        ctx.write_lock = None;
                        return answer::unknown_state(s, session, status)
                            .await
                            .map(|()| true);
                    }
                    view = stored();
                    if view.is_none() {
                        // The store may not have kept it (full, and the newcomer not admitted):
                        // the write is judged on what the probe just showed all the same.
                        shown = probed(status, &v, lm);
                    }
                    if shared {
                        probed_snapshot = Some(Snapshot {
                            status,
                            tag: v.tag.clone(),
                            synthetic: v.synthetic,
                            alias: v.alias.clone(),
                            last_modified: lm,
                        });
                    }
                }
                Err(e) => {
                    warn!(path = %s.shown_target(session.req_header()), error = %Shown(&e.to_string()), "probe failed");
                    ctx.lease = None;
                    ctx.write_lock = None;
                    if let Some(retry) = select::retry_after(ctx, &e) {
                        // No server is healthy: nothing was sent, nothing is unknown.
                        return answer::upstream_failed(s, session, &e, Some(retry))
                            .await
                            .map(|()| true);
                    }
                    return answer::unknown_state(s, session, 502).await.map(|()| true);
                }
            }
        }
        match view.as_deref().or(shown.as_ref()) {
            Some(entry) => {
                let cond = conditional(&session.req_header().headers, judged);
                match evaluate(&cond, &current_of(entry, &cond), required) {
                    Decision::PreconditionFailed(f) => {
                        end_unchanged(ctx, probed_snapshot.as_ref()).await;
                        ctx.write_lock = None;
                        answer::reject(s, session, f, Some(entry), &Where::of(ctx)).await?;
                        return Ok(true);
                    }
                    Decision::PreconditionRequired => {
                        end_unchanged(ctx, probed_snapshot.as_ref()).await;
                        ctx.write_lock = None;
                        answer::require(s, session, &Where::of(ctx)).await?;
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
                        &conditional(&session.req_header().headers, judged),
                        None,
                    )
                {
                    end_unchanged(ctx, probed_snapshot.as_ref()).await;
                    ctx.write_lock = None;
                    answer::require(s, session, &Where::of(ctx)).await?;
                    return Ok(true);
                }
                info!(
                    path = %s.shown_target(session.req_header()),
                    "write forwarded unevaluated: the probe established no state"
                );
            }
        }
    }
    // Shared store: the write's bound in flight is recorded before it is sent, so that a holder
    // after it whose chain is broken waits it out.
    if let Some(lease) = &ctx.lease {
        let hold = ctx.live.config.enforce_write_bound(route);
        match lease.mark_forwarding(hold).await {
            Ok(true) => {}
            Ok(false) => {
                ctx.lease = None;
                ctx.write_lock = None;
                answer::shared_store_unavailable(s, session, "the write's lease expired").await?;
                return Ok(true);
            }
            Err(e) => {
                ctx.lease = None;
                ctx.write_lock = None;
                answer::shared_store_unavailable(s, session, &e.to_string()).await?;
                return Ok(true);
            }
        }
    }
    ctx.key = Some(key);
    Ok(false)
}
