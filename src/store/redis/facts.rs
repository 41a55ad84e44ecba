//! `guard` on the shared store: the facts every instance publishes about a resource's tags, and
//! the judgement of a conditional write on them.
//!
//! Owns: [`Lesson`] and [`lesson`] (pure: what one upstream exchange teaches the shared facts),
//! [`Facts`] (what Redis holds about the tags one write names, as the pure [`Knowledge`] the
//! `guard` role decides on), and the two calls [`Redis::judge`] and [`Redis::teach`].
//!
//! The facts of a resource are one Redis hash, `precond:{id}:guard`, whose fields are stamps
//! (microseconds, by the Redis server's clock, never lower than any stamp issued before):
//! `seq`, the latest stamp; `r:*:<tag>`, when a completed write proved `<tag>` replaced for
//! every caller (`r:<principal>:<tag>` for the writer's partition only: `scope = "principal"`, or
//! an answer marked per-caller); `c:<opaque>`, when a response last showed a tag with that opaque
//! part current; `f`, before which every replacement is void: set when the hash is created (what
//! a lost hash held is unknown), when it outgrows its bound, and by an outcome that may have
//! brought back any tag (a write whose outcome is unknown, a 5xx, a 2xx without `ETag`);
//! `a:<principal>`, the origin answered that caller about this resource (`na` counts them);
//! `k:<principal>`, the opaque parts of the newest [`MAX_KNOWN`] tags that admitted caller was
//! shown current or replaced with a write of theirs (each followed by `"`, which no opaque part
//! holds; one field per caller, kept when replacements and showings are dropped); `private`, an
//! answer was marked per-caller.
//!
//! Coherency (why neither a stale local store nor a stale fact can cause a false 412):
//! - In this mode a write is refused only on these facts, read from Redis as it is decided: the
//!   local store's refusal is never enough, and when Redis does not answer the write is
//!   forwarded ([`crate::store`] keeps learning, for the fast path of the memory backend).
//! - A tag counts as replaced only when its replacement's stamp is later than every showing of
//!   it as current and than `f`. A replacement is stamped with the write's *ticket*, taken from
//!   Redis before the write was forwarded; a showing is stamped when it is published, after the
//!   origin answered and before the answer goes on to the client. For a tag to be current again
//!   after a replacement, the origin must have answered a later write with it; if that answer
//!   passed through any instance, it was published after the replacing write was decided, so its
//!   stamp is not lower than the replacement's (ties count as current), whichever of the two
//!   reached Redis first. If the hash was lost in between (expiry, eviction, a restart), the
//!   re-created hash's `f` is later than the ticket, and the replacement is void.
//! - Only tags are shared: `If-Unmodified-Since` is never refused on shared facts (a date shown
//!   to one caller may belong to another variant, or have moved backwards).
//! - What no instance saw (a write sent around precond, a publication lost while Redis was
//!   down, a publication Redis acknowledged and then lost with an unsynchronised restart or
//!   failover) is the limit: documented in the README.
//!
//! Invariants:
//! - A replacement is published only with the ticket of the write that proved it, and only for
//!   the one tag its `If-Match` named (a client cannot plant tags: the origin accepted the write).
//! - A caller is refused only when the origin answered them about the resource (`a:`), as a
//!   partition of the local store exists only then; at most [`MAX_ADMITTED`] callers per resource
//!   are admitted (the others are never refused on shared facts: no caller can push another out).
//! - A caller is refused only on a tag they were shown or replaced themselves (`k:`): an edge 412
//!   never tells a caller that a tag of someone else's view of the resource was replaced (no
//!   oracle for guesses of another caller's tags).
//! - Bounded: at most [`MAX_ASKED`] tags of one `If-Match` are looked up, tags longer than
//!   [`MAX_TAG_BYTES`] are not published, and a hash past [`MAX_FIELDS`] fields loses its
//!   replacements and showings before it grows; judging creates no hash and renews no TTL; a
//!   hash expires `state_ttl` after its last publication.

use redis::Value;

use crate::identity::Principal;
use crate::precondition::date::Timestamp;
use crate::precondition::Method;
use crate::precondition::{EntityTag, Existence, Knowledge};
use crate::store::entry::Tag;
use crate::store::learn::{Observation, Outcome, Reach};

use super::{ms, Redis, SharedError};

/// Most tags of one `If-Match` looked up in Redis (the others are judged unknown: forwarded).
pub const MAX_ASKED: usize = 8;
/// Longest tag (opaque part) published.
pub const MAX_TAG_BYTES: usize = 256;
/// Most fields of one resource's hash: past it, its replacements and showings are forgotten
/// (forgetting is safe).
pub const MAX_FIELDS: usize = 256;
/// Most callers admitted per resource (as the local store's partitions).
pub const MAX_ADMITTED: usize = crate::store::MAX_PARTS;
/// Most tags remembered as known per admitted caller (as the local store's replaced tags).
pub const MAX_KNOWN: usize = crate::store::MAX_REPLACED;

/// What one upstream exchange of a `guard` route teaches the shared facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lesson {
    /// The origin answered this caller about the resource.
    pub admit: bool,
    /// Every replacement so far is void (the outcome may have brought back any tag).
    pub forget: bool,
    /// The answer was marked per-caller.
    pub private: bool,
    /// The tag the write named, proven replaced; `true` when only for the writer's partition.
    pub replaced: Option<(Tag, bool)>,
    /// The opaque part of a tag shown current.
    pub current: Option<Box<[u8]>>,
}

/// What `obs` (an exchange of a `guard` route) teaches the shared facts, if anything.
pub fn lesson(obs: &Observation<'_>) -> Option<Lesson> {
    let write = obs.method.changes_state();
    let status = match obs.outcome {
        Outcome::Broken => {
            return write.then(|| Lesson {
                forget: true,
                ..Lesson::default()
            })
        }
        Outcome::Status(s) => s,
    };
    let shown = || {
        obs.etag()
            .map(|t| Box::<[u8]>::from(t.as_ref().opaque()))
            .filter(|o| o.len() <= MAX_TAG_BYTES)
    };
    if !write {
        // A read: only a representation shown teaches (and a no-store answer nothing).
        if !matches!(status, 200 | 203 | 206 | 304) || obs.no_store {
            return None;
        }
        return Some(Lesson {
            admit: true,
            private: obs.private,
            current: shown(),
            ..Lesson::default()
        });
    }
    match status {
        // The write may have been applied: whatever it replaced may be current again.
        500..=599 => Some(Lesson {
            forget: true,
            ..Lesson::default()
        }),
        200..=299 => {
            let mut l = Lesson {
                admit: true,
                private: obs.private,
                ..Lesson::default()
            };
            let only_mine = obs.reach == Reach::Partition || obs.private;
            let named = obs.named.filter(|n| n.opaque().len() <= MAX_TAG_BYTES);
            match (obs.proves_replacement(), obs.etag()) {
                (true, Some(t)) => {
                    if let Some(n) = named.filter(|n| !n.weak_eq(&t.as_ref())) {
                        l.replaced = Some((Tag::from_ref(&n), only_mine));
                    }
                    l.current = shown();
                }
                (true, None) if obs.method == Method::Delete => {
                    l.replaced = named.map(|n| (Tag::from_ref(&n), only_mine));
                }
                // A 2xx without a tag (which may be a revert to a replaced one), a 202 (which
                // may be applied later), a POST (an action): what it did is unknown.
                _ => l.forget = true,
            }
            Some(l)
        }
        // Refused by the origin (3xx, 4xx, 412 included): nothing changed.
        _ => None,
    }
}

/// What Redis holds about the tags one write names, for its caller.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The write's ticket: stamps the replacement its answer may prove.
    pub ticket: u64,
    admitted: bool,
    private: bool,
    forgot: u64,
    /// Per tag asked: replaced for every caller, replaced for this one, shown current, known to
    /// this caller.
    tags: Vec<(Tag, [u64; 4])>,
}

impl Facts {
    fn stamps(&self, tag: &EntityTag<'_>) -> Option<[u64; 4]> {
        self.tags
            .iter()
            .find(|(t, _)| t.as_ref() == *tag)
            .map(|(_, s)| *s)
    }

    /// When `tag` was proven replaced for this caller (0: never).
    fn replaced_at(&self, s: [u64; 4]) -> u64 {
        if self.private {
            s[1]
        } else {
            s[0].max(s[1])
        }
    }

    fn shown(&self, tag: &EntityTag<'_>) -> bool {
        self.stamps(tag)
            .is_some_and(|s| s[2] > 0 && s[2] >= self.replaced_at(s))
    }
}

impl Knowledge for Facts {
    fn existence(&self) -> Existence {
        Existence::Unknown
    }
    fn current_known(&self) -> bool {
        false
    }
    fn is_current_strong(&self, tag: &EntityTag<'_>) -> bool {
        self.shown(tag)
    }
    fn is_current_weak(&self, tag: &EntityTag<'_>) -> bool {
        self.shown(tag)
    }
    fn was_replaced(&self, tag: &EntityTag<'_>) -> bool {
        self.admitted
            && self.stamps(tag).is_some_and(|s| {
                let r = self.replaced_at(s);
                s[3] > 0 && r > s[2] && r > self.forgot
            })
    }
    /// Dates are not shared: `If-Unmodified-Since` is left to the origin.
    fn last_modified(&self) -> Option<Timestamp> {
        None
    }
}

/// The field suffix naming a tag exactly (weakness and opaque part).
fn exact(tag: &EntityTag<'_>) -> Vec<u8> {
    let mut v = Vec::with_capacity(tag.opaque().len() + 1);
    v.push(if tag.is_weak() { b'w' } else { b's' });
    v.extend_from_slice(tag.opaque());
    v
}

fn who(p: Principal) -> String {
    format!("{:016x}", p.0)
}

/// The field of a tag shown current (by its opaque part: a showing in either form counts).
fn shown_field(opaque: &[u8]) -> Vec<u8> {
    let mut f = b"c:".to_vec();
    f.extend_from_slice(opaque);
    f
}

impl Redis {
    /// The name of a resource's guard facts (`id` from [`Redis::resource_id`]).
    pub fn guard_key(&self, key: &crate::identity::ResourceKey<'_>) -> String {
        format!("precond:{{{}}}:guard", self.resource_id(key))
    }

    /// Takes a write's ticket and reads what is known of the tags it names (at most
    /// [`MAX_ASKED`]) for `principal`: one round trip.
    pub async fn judge(
        &self,
        guard_key: &str,
        principal: Principal,
        tags: &[EntityTag<'_>],
    ) -> Result<Facts, SharedError> {
        let tags = &tags[..tags.len().min(MAX_ASKED)];
        let mut args: Vec<Vec<u8>> = vec![who(principal).into()];
        for t in tags {
            args.push(exact(t));
            args.push(shown_field(t.opaque()));
        }
        let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let reply: Vec<Value> = self
            .run("judge", &self.scripts.judge, &[guard_key], &argv)
            .await?;
        let n = |i: usize| match reply.get(i) {
            Some(Value::Int(n)) => Ok((*n).max(0) as u64),
            _ => Err(SharedError("judge: unexpected reply".into())),
        };
        Ok(Facts {
            ticket: n(0)?,
            admitted: n(1)? > 0,
            private: n(2)? > 0,
            forgot: n(3)?,
            tags: tags
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let b = 4 + 4 * i;
                    Ok((Tag::from_ref(t), [n(b)?, n(b + 1)?, n(b + 2)?, n(b + 3)?]))
                })
                .collect::<Result<_, SharedError>>()?,
        })
    }

    /// Publishes what an exchange of `principal` taught; `ticket` is the write's (from
    /// [`Redis::judge`]), without which no replacement is published.
    pub async fn teach(
        &self,
        guard_key: &str,
        principal: Principal,
        lesson: &Lesson,
        ticket: Option<u64>,
    ) -> Result<(), SharedError> {
        let flag = |b: bool| -> Vec<u8> {
            if b {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            }
        };
        let p = who(principal);
        let (ticket, field) = match (&lesson.replaced, ticket) {
            (Some((tag, only_mine)), Some(t)) => {
                let scope = if *only_mine { p.as_str() } else { "*" };
                let mut f = format!("r:{scope}:").into_bytes();
                f.extend_from_slice(&exact(&tag.as_ref()));
                (t.to_string().into_bytes(), f)
            }
            _ => (Vec::new(), Vec::new()),
        };
        let mut args: Vec<Vec<u8>> = vec![
            ms(self.settings.state_ttl),
            p.clone().into_bytes(),
            flag(lesson.admit),
            flag(lesson.forget),
            flag(lesson.private),
            ticket,
            field,
            lesson
                .current
                .as_deref()
                .map(shown_field)
                .unwrap_or_default(),
            MAX_FIELDS.to_string().into_bytes(),
            MAX_ADMITTED.to_string().into_bytes(),
            MAX_KNOWN.to_string().into_bytes(),
        ];
        // What the caller now knows: the tag shown, and the tag its write named.
        args.extend(lesson.current.as_deref().map(<[u8]>::to_vec));
        args.extend(
            lesson
                .replaced
                .as_ref()
                .map(|(t, _)| t.as_ref().opaque().to_vec()),
        );
        let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let _: i64 = self
            .run("teach", &self.scripts.teach, &[guard_key], &argv)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precondition::guard;
    use crate::precondition::{Conditional, Decision, Policy};

    fn obs<'a>(
        method: Method,
        status: u16,
        etag: Option<&'a str>,
        named: Option<&'a str>,
    ) -> Observation<'a> {
        Observation {
            etag: etag.map(str::as_bytes),
            named: named.and_then(|n| EntityTag::parse(n.as_bytes())),
            ..Observation::of(method, Outcome::Status(status))
        }
    }

    fn tag(s: &str) -> Tag {
        Tag::from_ref(&EntityTag::parse(s.as_bytes()).unwrap())
    }

    #[test]
    fn a_completed_write_answered_with_another_tag_proves_the_named_one_replaced() {
        let l = lesson(&obs(Method::Put, 200, Some("\"b\""), Some("\"a\""))).unwrap();
        assert_eq!(l.replaced, Some((tag("\"a\""), false)));
        assert_eq!(l.current.as_deref(), Some(&b"b"[..]));
        assert!(l.admit && !l.forget);
        // The same tag (or an encoding of it) back: nothing replaced.
        let l = lesson(&obs(Method::Put, 204, Some("W/\"a\""), Some("\"a\""))).unwrap();
        assert_eq!(l.replaced, None);
        // Per-caller answers and partition routes keep the replacement in the partition.
        let o = Observation {
            reach: Reach::Partition,
            ..obs(Method::Put, 200, Some("\"b\""), Some("\"a\""))
        };
        assert_eq!(lesson(&o).unwrap().replaced, Some((tag("\"a\""), true)));
        // A completed DELETE replaces what it named.
        let l = lesson(&obs(Method::Delete, 204, None, Some("\"a\""))).unwrap();
        assert_eq!(l.replaced, Some((tag("\"a\""), false)));
    }

    #[test]
    fn unknown_outcomes_forget_and_refusals_teach_nothing() {
        for o in [
            obs(Method::Put, 204, None, Some("\"a\"")),
            obs(Method::Put, 202, Some("\"b\""), Some("\"a\"")),
            obs(Method::Post, 200, Some("\"b\""), Some("\"a\"")),
            obs(Method::Put, 503, None, Some("\"a\"")),
            Observation::broken(Method::Patch),
        ] {
            let l = lesson(&o).unwrap();
            assert!(l.forget && l.replaced.is_none(), "{o:?}");
        }
        for o in [
            obs(Method::Put, 412, Some("\"b\""), Some("\"a\"")),
            obs(Method::Put, 403, None, Some("\"a\"")),
            obs(Method::Get, 404, None, None),
            Observation::broken(Method::Get),
        ] {
            assert_eq!(lesson(&o), None, "{o:?}");
        }
        let read = lesson(&obs(Method::Get, 200, Some("\"a\""), None)).unwrap();
        assert_eq!(read.current.as_deref(), Some(&b"a"[..]));
        assert!(read.admit && read.replaced.is_none() && !read.forget);
        let no_store = Observation {
            no_store: true,
            ..obs(Method::Get, 200, Some("\"a\""), None)
        };
        assert_eq!(lesson(&no_store), None);
    }

    fn decide(f: &Facts, im: &str) -> Decision {
        let lines = [im.as_bytes()];
        let cond = Conditional {
            method: Method::Put,
            if_match: &lines[..],
            if_none_match: &[][..],
            if_modified_since: &[][..],
            if_unmodified_since: &[][..],
            no_cache: false,
        };
        guard(&cond, Some(f), Policy::Superseded)
    }

    fn facts(admitted: bool, private: bool, forgot: u64, a: [u64; 3]) -> Facts {
        Facts {
            ticket: 100,
            admitted,
            private,
            forgot,
            tags: vec![(tag("\"a\""), [a[0], a[1], a[2], 1])],
        }
    }

    #[test]
    fn a_replacement_refuses_only_when_later_than_every_showing_and_forget() {
        let refused = |f: &Facts| decide(f, "\"a\"") != Decision::Proceed;
        assert!(refused(&facts(true, false, 0, [10, 0, 5])));
        assert!(
            refused(&facts(true, false, 0, [0, 10, 5])),
            "the caller's own"
        );
        // Shown current at or after it: current.
        assert!(!refused(&facts(true, false, 0, [10, 0, 10])));
        assert!(!refused(&facts(true, false, 0, [10, 0, 11])));
        // Forgotten at or after it.
        assert!(!refused(&facts(true, false, 10, [10, 0, 0])));
        // A caller the origin never answered about the resource.
        assert!(!refused(&facts(false, false, 0, [10, 0, 0])));
        // Per-caller resource: another caller's write proves nothing for this one.
        assert!(!refused(&facts(true, true, 0, [10, 0, 0])));
        assert!(refused(&facts(true, true, 0, [0, 10, 0])));
        // A tag this caller was never shown (nor named): no oracle for another caller's tags.
        let mut unseen = facts(true, false, 0, [10, 0, 5]);
        unseen.tags[0].1[3] = 0;
        assert!(!refused(&unseen));
        // A tag that was not asked (or not known): forwarded.
        assert_eq!(
            decide(&facts(true, false, 0, [10, 0, 0]), "\"z\""),
            Decision::Proceed
        );
        assert_eq!(
            decide(&facts(true, false, 0, [10, 0, 0]), "\"a\", \"z\""),
            Decision::Proceed
        );
    }
}
