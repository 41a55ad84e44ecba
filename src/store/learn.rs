//! The learning rules: how one upstream exchange changes a resource's learned state.
//!
//! Owns: [`Observation`] (what an exchange showed), [`Outcome`], [`Ticket`] (a request's place in
//! the store's history) and [`apply`], the pure function from (old entry, observation) to new
//! entry. No I/O and no shared state: the store calls it inside its per-key critical section.
//!
//! Invariants:
//! - Race rule: every request takes a [`Ticket`] when it starts. A write outcome stamps the entry
//!   with a new sequence number; a read whose ticket predates that stamp, or predates the read that
//!   set the current tags, teaches nothing (its response may show an older representation).
//! - Only a completed replacement (200/201/204 to PUT, PATCH or DELETE) proves that the previous
//!   representation is gone; other 2xx make the current tags unknown.
//! - `last_modified` is never later than the response's `Date` (RFC 9110 §8.8.2.1); a read sets it
//!   to the current representation's date, a completed write only moves it forward.

use crate::identity::Principal;
use crate::precondition::date::{parse_http_date, Timestamp};
use crate::precondition::{EntityTag, Existence, Method};

use super::entry::{Entry, Tag, INFERRED, MAX_CURRENT};

/// How an upstream exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The origin answered with this final status.
    Status(u16),
    /// The exchange broke (connect, write or read failure, timeout): the outcome is unknown.
    Broken,
}

/// What one upstream exchange showed about its target resource.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// The request method.
    pub method: Method,
    /// How it ended.
    pub outcome: Outcome,
    /// The response's first `ETag` field value.
    pub etag: Option<&'a [u8]>,
    /// The response's `Last-Modified` field value.
    pub last_modified: Option<&'a [u8]>,
    /// The response's `Date` field value.
    pub date: Option<&'a [u8]>,
    /// Whether the response carries `Vary` (several current representations may coexist).
    pub vary: bool,
    /// `etag` was synthesised by precond from the representation.
    pub synthetic: bool,
    /// With a synthesised `etag`: the origin's own `ETag` field value it replaced.
    pub alias: Option<&'a [u8]>,
    /// Values of [`META_HEADERS`](super::META_HEADERS) in a 200, when they are to be kept.
    pub meta: Option<[Option<&'a [u8]>; 4]>,
    /// Who was shown the answer: the partition a read teaches, and a write's own partition.
    pub principal: Principal,
    /// How far a write's effects may reach across partitions (the route's `scope`).
    pub reach: Reach,
    /// The origin marked the answer per-caller (`Cache-Control: private`, or `Vary` naming a
    /// credential): a write's effects stay in the writer's partition.
    pub private: bool,
    /// `Cache-Control: no-store`: a read teaches nothing; a write still retires and forgets, but
    /// its new validators are not learned.
    pub no_store: bool,
    /// precond's own complete view of the representation (`enforce` fetches): a 200 without
    /// `ETag` means that the representation has none. Otherwise (`guard`: a HEAD handler, a
    /// compressing middleware, a 206 may drop the field) it means the current tag is unknown.
    pub complete: bool,
    /// A write's `If-Match`, when it names exactly one entity-tag: the representation the
    /// client claimed to replace. A completed write answered with another tag (or a completed
    /// DELETE) proves it replaced, even when other writes overlapped it.
    pub named: Option<EntityTag<'a>>,
}

/// How far a write's effects reach across the partitions of its resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// A completed write retires the prior tags in every partition (`scope = "auto"`, unless
    /// the origin marks the resource per-caller).
    Resource,
    /// A write's effects stay in the writer's partition; the others only forget their current
    /// tags (`scope = "principal"`).
    Partition,
}

impl Observation<'_> {
    /// An exchange of `method` that ended with `outcome`, showing nothing else, seen by the
    /// shared partition: the base that callers fill in (`..Observation::of(m, o)`).
    pub fn of(method: Method, outcome: Outcome) -> Observation<'static> {
        Observation {
            method,
            outcome,
            etag: None,
            last_modified: None,
            date: None,
            vary: false,
            synthetic: false,
            alias: None,
            meta: None,
            principal: Principal::SHARED,
            reach: Reach::Resource,
            private: false,
            no_store: false,
            complete: false,
            named: None,
        }
    }

    /// An exchange of `method` that broke before a final response (its outcome is unknown).
    pub fn broken(method: Method) -> Observation<'static> {
        Observation::of(method, Outcome::Broken)
    }

    /// A completed replacement or deletion: the only write outcome that proves the previous
    /// representation gone (a 202 may never be applied; a POST is an action, or creates a child
    /// elsewhere).
    pub(crate) fn proves_replacement(&self) -> bool {
        matches!(self.outcome, Outcome::Status(200 | 201 | 204))
            && matches!(self.method, Method::Put | Method::Patch | Method::Delete)
    }

    /// `Last-Modified`, ignored when invalid and clamped to `Date` when later (RFC 9110 §8.8.2.1).
    pub(crate) fn last_modified(&self) -> Option<Timestamp> {
        let lm = parse_http_date(self.last_modified?)?;
        match self.date.and_then(parse_http_date) {
            Some(date) if lm > date => Some(date),
            _ => Some(lm),
        }
    }

    pub(crate) fn etag(&self) -> Option<Tag> {
        EntityTag::parse(self.etag?).as_ref().map(Tag::from_ref)
    }
}

/// A request's place in the store's history, taken when the request starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(pub(super) u64);

/// Applies one observation to a resource's state. Returns `None` when nothing is to change.
/// `confirmed_since` is the latest ticket of a read that confirmed `old` after it was stored
/// (it counts as `old.current_since` when later; 0 when there is none). `stamp` is the store's
/// clock as the observation is learned: a write's own stamp, or (for a read) the clock's value;
/// it dates what the observation proves replaced.
pub fn apply(
    old: Option<&Entry>,
    confirmed_since: u64,
    obs: &Observation<'_>,
    ticket: Ticket,
    stamp: u64,
) -> Option<Entry> {
    let mut e = old.cloned().unwrap_or_else(Entry::blank);
    e.current_since = e.current_since.max(confirmed_since);
    let Outcome::Status(status) = obs.outcome else {
        if !obs.method.changes_state() {
            return None;
        }
        // A write that broke may or may not have been applied: forget what we believed.
        e.existence = Existence::Unknown;
        e.forget_current();
        e.lm_stale = true;
        e.changed_at = stamp;
        return Some(e);
    };
    if obs.method.is_get_or_head() {
        if e.changed_at > ticket.0 || e.current_since > ticket.0 {
            // A write completed while this read was in flight, or a read that started later
            // already answered: this response may show an older representation.
            return None;
        }
        if obs.no_store {
            // Nothing is learned from it, but a tag it shows current is not replaced any more
            // (forgetting is not learning: a revert under `no-store` must not stay refused).
            let tag = obs
                .etag()
                .filter(|_| matches!(status, 200 | 203 | 206 | 304))?;
            e.unreplace(&tag, ticket.0);
            return (old != Some(&e)).then_some(e);
        }
        match status {
            200 | 203 | 206 => {
                e.existence = Existence::Exists;
                e.current_since = ticket.0;
                match obs.etag() {
                    Some(tag) => {
                        e.unreplace(&tag, ticket.0);
                        if obs.vary {
                            e.unsure.retain(|u| *u != tag);
                            let cur = e.current.get_or_insert_with(Vec::new);
                            if !cur.contains(&tag) {
                                if cur.len() == MAX_CURRENT {
                                    cur.remove(0);
                                }
                                cur.push(tag);
                            }
                        } else {
                            // Encodings of the same representation (without Vary) stay current;
                            // every other tag current (or unsure) before is replaced.
                            let mut cur = e.supersede_by(&tag);
                            cur.truncate(MAX_CURRENT - 1);
                            cur.push(tag);
                            e.current = Some(cur);
                        }
                    }
                    // precond's own complete fetch: the representation has no tag.
                    None if obs.complete && !obs.vary => {
                        e.supersede_current(INFERRED);
                        e.current = Some(Vec::new());
                    }
                    // The field may have been dropped on the way (a HEAD handler, a
                    // compressing middleware, a 206): unknown, and nothing proven replaced.
                    None => e.forget_current(),
                }
                e.vary = obs.vary;
                e.synthetic = obs.synthetic;
                e.alias = obs
                    .alias
                    .filter(|_| obs.synthetic)
                    .and_then(EntityTag::parse)
                    .as_ref()
                    .map(Tag::from_ref);
                e.current_lm = obs.last_modified();
                e.lm_stale = false;
                if let Some(meta) = obs.meta {
                    e.meta = meta
                        .iter()
                        .any(Option::is_some)
                        .then(|| Box::new(meta.map(|v| v.map(Box::from))));
                }
                // The date guard compares `If-Unmodified-Since` with is the current
                // representation's, not the latest ever seen: one later date (another variant, a
                // skewed server) must not refuse every later write while the resource is read.
                // With `Vary`, the earliest date among the variants seen.
                e.last_modified = match (obs.vary, e.last_modified, obs.last_modified()) {
                    (true, Some(old), Some(new)) => Some(old.min(new)),
                    (_, _, lm) => lm,
                };
            }
            304 => {
                let tag = obs.etag()?;
                e.existence = Existence::Exists;
                e.current_since = ticket.0;
                e.unreplace(&tag, ticket.0);
                e.unsure.retain(|u| *u != tag);
                let cur = e.current.get_or_insert_with(Vec::new);
                if !cur.contains(&tag) {
                    if cur.len() == MAX_CURRENT {
                        cur.remove(0);
                    }
                    cur.push(tag);
                }
            }
            // Absence matters only once a tag (or a write) was seen: a 404 for a resource this
            // partition knows nothing of teaches nothing, so that a flood of GETs for made-up
            // URLs fills nothing (precond's own complete fetches on enforce routes excepted).
            404 | 410
                if !obs.complete
                    && e.existence == Existence::Unknown
                    && e.current.is_none()
                    && e.unsure.is_empty()
                    && e.replaced.is_empty() =>
            {
                return None
            }
            404 | 410 => {
                e.supersede_current(INFERRED);
                e.existence = Existence::Absent;
                e.current = Some(Vec::new());
                e.current_since = ticket.0;
            }
            _ => return None,
        }
        return (old != Some(&e)).then_some(e);
    }
    if !obs.method.changes_state() {
        return None;
    }
    let concurrent = e.changed_at > ticket.0;
    match status {
        200..=299 if !obs.proves_replacement() => {
            e.synthetic = false;
            e.alias = None;
            e.forget_current();
            e.lm_stale = true;
            if obs.method == Method::Delete {
                e.existence = Existence::Unknown;
            }
        }
        200..=299 => {
            // `no-store`: the write happened (retire, forget), its validators are not kept.
            let shown = obs.etag();
            let new_tag = shown.clone().filter(|_| !obs.no_store);
            e.synthetic = false;
            e.alias = None;
            e.current_since = stamp;
            e.current_lm = obs.last_modified().filter(|_| !obs.no_store);
            e.lm_stale = e.current_lm.is_none();
            e.vary = false;
            match (&shown, obs.method) {
                // Another write finished while this one was in flight: their order at the
                // origin is unknown, so neither result is trusted as current.
                _ if concurrent => e.forget_current(),
                (_, Method::Delete) => e.supersede_current(stamp),
                // The answer names the representation the write left: every other current tag
                // is replaced, but encodings of the same one (equal under weak comparison:
                // W/"x" from a compressing middleware for "x").
                (Some(shown), _) => {
                    // A completed write answered with the very tag it named: the origin's tags
                    // are derived from content (a version counter would have moved), and may
                    // come back.
                    e.recurs |= obs.named.is_some_and(|n| Tag::from_ref(&n) == *shown);
                    let mut cur = e.supersede_by(shown);
                    e.current = new_tag.clone().map(|t| {
                        cur.truncate(MAX_CURRENT - 1);
                        cur.push(t);
                        cur
                    });
                }
                // A 2xx without a tag proves nothing about the tags: a write may leave the
                // representation as it was (an idempotent retry, a no-op PATCH). Unknown.
                (None, _) => e.forget_current(),
            }
            // The tag the write named was current until this write was applied (or already
            // gone): once the origin answers with another tag, or the resource is deleted, it
            // is not current any more, whatever the order of overlapping writes.
            // With tags that recur, an overlapping write may have brought it back: order unknown.
            let named = obs.named.filter(|_| !(concurrent && e.recurs)).filter(|n| {
                match (&shown, obs.method) {
                    (_, Method::Delete) => true,
                    (Some(t), _) => !t.as_ref().weak_eq(n),
                    (None, _) => false,
                }
            });
            if let Some(n) = named {
                let n = Tag::from_ref(&n);
                if let Some(cur) = e.current.as_mut() {
                    cur.retain(|t| *t != n);
                }
                e.push_replaced(n, stamp);
            }
            // A revert makes a replaced tag current again. When another write overlapped this
            // one, a tag learned replaced *while* this write was in flight may be this write's
            // own result, replaced by the other write (learned first): it stays replaced, unless
            // this resource's tags are known to recur. A tag learned replaced before this write
            // started was brought back by it.
            // (`shown`, not `new_tag`: a tag shown current again under `no-store` is forgotten
            // as replaced all the same.)
            if let Some(t) = &shown {
                let revert =
                    !concurrent || e.recurs || e.replaced_when(t).is_some_and(|at| at < ticket.0);
                if revert {
                    e.unreplace(t, ticket.0);
                }
            }
            match obs.method {
                Method::Delete => {
                    e.existence = Existence::Absent;
                    e.current = Some(Vec::new());
                }
                Method::Put | Method::Patch => e.existence = Existence::Exists,
                _ => {}
            }
            e.note_last_modified(e.current_lm);
        }
        300..=399 | 412 | 500..=599 => {
            // Invalidate (RFC 9111 §4.4); a 412 carries no representation's validators
            // (RFC 9110 §15.5.13); a 5xx leaves the outcome unknown.
            e.forget_current();
            e.lm_stale = true;
            if status >= 500 {
                e.existence = Existence::Unknown;
            }
        }
        _ => return None,
    }
    e.changed_at = stamp;
    Some(e)
}

/// Applies a write by *another* principal to one partition's state. Returns `None` when
/// nothing is to change.
///
/// What a partition learns from someone else's write is only ever a loss: its current tags are
/// retired (when `retire`: a completed replacement of a resource whose answers do not depend on
/// the caller) or forgotten; it never learns the writer's new validators (they were shown to the
/// writer, not to this partition's caller), so an edge answer to this caller never carries them.
pub fn apply_foreign(
    old: &Entry,
    obs: &Observation<'_>,
    retire: bool,
    stamp: u64,
) -> Option<Entry> {
    let mut e = old.clone();
    match obs.outcome {
        Outcome::Status(_) if obs.proves_replacement() && retire => {
            match obs.etag() {
                Some(t) => {
                    // Every current (or unsure: a caller shown a tag keeps its protection) tag
                    // is replaced but encodings of the writer's result, which this partition
                    // only forgets; a revert to a tag this partition saw replaced makes it
                    // current again.
                    e.supersede_by(&t);
                    e.unreplace(&t, 0);
                }
                // A completed DELETE leaves nothing current.
                None if obs.method == Method::Delete => e.supersede_current(INFERRED),
                // Without a tag the write proves nothing replaced (it may have been a no-op).
                None => {}
            }
            e.forget_current();
            if obs.method == Method::Delete {
                e.existence = Existence::Absent;
                e.current = Some(Vec::new());
            } else {
                // Not "exists": the origin may hide the resource from this caller (a 404 to
                // them), and an edge 412 to their `If-None-Match: *` would disclose it.
                e.existence = Existence::Unknown;
            }
        }
        // A 2xx that retires nothing here may still have created or deleted the resource.
        Outcome::Status(200..=299) => {
            e.forget_current();
            e.existence = Existence::Unknown;
        }
        Outcome::Status(300..=399 | 412) => e.forget_current(),
        Outcome::Status(500..=599) | Outcome::Broken => {
            e.forget_current();
            e.existence = Existence::Unknown;
        }
        // Refused by the origin (401, 403, 409, ...): nothing changed.
        Outcome::Status(_) => return None,
    }
    e.synthetic = false;
    e.alias = None;
    e.lm_stale = true;
    e.changed_at = stamp;
    Some(e)
}
