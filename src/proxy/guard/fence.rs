//! The in-flight write fence of `guard` routes: a write naming the tag of a write still in flight
//! waits for that write's answer instead of racing it; and, while a resource's current tag is
//! unknown, every conditional write waits for the one in flight ([`Gate::Uncertain`],
//! single-flight), so that the edge converges instead of forwarding a stream of writes it cannot
//! judge.
//!
//! Owns: [`Fences`] (one fair lock per resource, partition and tag, see [`super::super::locks`]),
//! [`Hold`] (a forwarded write's place at the fence, kept in the request's context until its
//! answer has been learned) and [`Last`] (what the previous holder's answer proved).
//!
//! Invariants:
//! - Only writes whose `If-Match` names exactly one entity-tag are fenced, keyed by resource,
//!   the caller's knowledge partition and the tag: reads, writes without a precondition, and
//!   writes naming other tags never wait at the fence. Single-flight is keyed by resource and
//!   partition, and entered after the fence (never the other way round: no waiting cycle).
//! - The fence changes *when* a write is decided, never *how*: a write that passed the fence is
//!   decided again by the store on the same rules as any write, and refused only if the store
//!   proves its precondition false. The holder's answer reaches the store as any answer does; the
//!   store learns from a completed write answered with another tag (or a completed DELETE) that
//!   the tag it named is replaced ([`Last::Replaced`] records that for the counters). A 2xx
//!   without a tag, the same tag, 412, 5xx, a broken exchange or a timeout prove nothing about
//!   the named tag: the waiter goes on to the origin.
//! - Who waits for whom: the first write in holds the key until its answer is learned, then the
//!   next waiter holds it in turn (writes naming one tag reach the origin one at a time), except
//!   after an answer that kept the tag current ([`Last::Kept`]: the writes waiting for it go
//!   through at once, since no answer can replace what an unchanged tag names).
//! - Waiting is bounded: by the route's `fence_wait` in total and by `fence_waiters` per key; a
//!   write past either bound is forwarded (counted and logged), never refused, never held longer.
//! - Fence keys are 64-bit hashes under a per-process random key: a collision (never steered by a
//!   client) makes one write wait for an unrelated one, it cannot refuse anything.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::identity::{OwnedKey, Principal};
use crate::precondition::etag::scan_list;
use crate::precondition::{EntityTag, FieldLines, ListShape, Method};

use super::super::locks::{KeyGuard, KeyedLocks, NotTaken};

/// What the last holder of a fence key learned from the origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Last {
    /// Nobody has held the key yet, or the holder's answer proves nothing about the tag (no
    /// tag, 4xx, 5xx, a broken exchange): the next waiter holds the key in turn.
    #[default]
    Unknown,
    /// The holder's write completed and its answer proves the tag no longer current.
    Replaced,
    /// The holder's write completed and was answered with the same tag (or an encoding of it):
    /// the tag is still current, and the writes waiting for it may all go.
    Kept,
}

/// Every fence of the process.
pub(crate) struct Fences {
    locks: Arc<KeyedLocks<u64, Last>>,
    hasher: RandomState,
}

/// A forwarded write's place at its fence, released (waking the next waiter) on drop.
#[derive(Debug)]
pub(crate) struct Hold {
    guard: KeyGuard<u64, Last>,
    weak: bool,
    opaque: Box<[u8]>,
}

/// The one entity-tag an `If-Match` names, if it names exactly one.
pub(crate) fn single_tag<'a, L: FieldLines<'a>>(if_match: L) -> Option<(bool, &'a [u8])> {
    let mut first = None;
    match scan_list(if_match.lines(), |t| {
        first.get_or_insert((t.is_weak(), t.opaque()));
    }) {
        ListShape::Tags { count: 1, .. } => first,
        _ => None,
    }
}

impl Default for Fences {
    fn default() -> Self {
        Fences {
            locks: Arc::default(),
            hasher: RandomState::new(),
        }
    }
}

/// What a write waits behind.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Gate<'a> {
    /// Writes naming this one tag (`If-Match`'s only member: weakness, opaque bytes).
    Tag(bool, &'a [u8]),
    /// Every conditional write to the resource, while its current state is unknown
    /// (single-flight: one goes to the origin, the others are decided on its answer).
    Uncertain,
}

impl Fences {
    /// Waits at most `wait` (and not at all past `max_waiters`) for the fence of `tag` on `key`
    /// in `who`'s partition (`on_wait` is called if it has to wait). On success, the hold, what its previous holder learned, and whether
    /// this write waited.
    pub(crate) async fn enter(
        &self,
        key: &OwnedKey,
        who: Principal,
        gate: Gate<'_>,
        wait: Duration,
        max_waiters: usize,
        on_wait: impl FnOnce(),
    ) -> Result<(Hold, Last, bool), NotTaken> {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        who.hash(&mut h);
        let tag = match gate {
            Gate::Tag(weak, opaque) => {
                h.write_u8(1);
                opaque.hash(&mut h);
                (weak, opaque)
            }
            // The holder's answer is compared with no tag: any completed write with a tag
            // counts as having replaced what was there.
            Gate::Uncertain => {
                h.write_u8(2);
                (false, &[][..])
            }
        };
        let id = h.finish();
        let guard = self
            .locks
            .lock_bounded(&id, wait, max_waiters, on_wait)
            .await?;
        let last = *guard;
        let waited = guard.waited();
        Ok((
            Hold {
                guard,
                weak: tag.0,
                opaque: tag.1.into(),
            },
            last,
            waited,
        ))
    }

    /// Fence keys held or waited for.
    #[cfg(test)]
    pub(crate) fn active(&self) -> usize {
        self.locks.active()
    }
}

impl Hold {
    /// The holder goes to the origin: until its answer is in, the next holder knows nothing.
    pub(crate) fn forwarding(&mut self) {
        *self.guard = Last::Unknown;
    }

    /// Records the origin's answer to the held write (`etag`: its `ETag` field, if any).
    pub(crate) fn answered(&mut self, method: Method, status: u16, etag: Option<&[u8]>) {
        let completed = matches!(status, 200 | 201 | 204);
        let mine = EntityTag::from_trusted(self.weak, &self.opaque);
        *self.guard = match (method, completed, etag.and_then(EntityTag::parse)) {
            (Method::Delete, true, _) => Last::Replaced,
            (Method::Put | Method::Patch, true, Some(new)) if new.weak_eq(&mine) => Last::Kept,
            (Method::Put | Method::Patch, true, Some(_)) => Last::Replaced,
            _ => Last::Unknown,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{ResourceKey, RouteId};

    fn key() -> OwnedKey {
        ResourceKey {
            route: RouteId(0),
            host: "h",
            path: "/a",
        }
        .to_owned_key()
    }

    #[test]
    fn only_a_single_tag_is_fenced() {
        let one: &[&[u8]] = &[b"\"a\""];
        assert_eq!(single_tag(one), Some((false, &b"a"[..])));
        let weak: &[&[u8]] = &[b"W/\"a\""];
        assert_eq!(single_tag(weak), Some((true, &b"a"[..])));
        for lines in [
            &[b"\"a\", \"b\"" as &[u8]][..],
            &[b"\"a\"", b"\"b\""],
            &[b"*"],
            &[b"a"],
            &[],
        ] {
            assert_eq!(single_tag(lines), None, "{lines:?}");
        }
    }

    #[test]
    fn only_a_completed_write_with_another_tag_proves_replacement() {
        let cases: &[(Method, u16, Option<&[u8]>, Last)] = &[
            (Method::Put, 200, Some(b"\"b\""), Last::Replaced),
            (Method::Patch, 204, Some(b"W/\"b\""), Last::Replaced),
            (Method::Delete, 204, None, Last::Replaced),
            (Method::Put, 200, Some(b"\"a\""), Last::Kept),
            (Method::Put, 200, Some(b"W/\"a\""), Last::Kept),
            (Method::Put, 204, None, Last::Unknown),
            (Method::Put, 202, Some(b"\"b\""), Last::Unknown),
            (Method::Put, 412, Some(b"\"b\""), Last::Unknown),
            (Method::Put, 500, Some(b"\"b\""), Last::Unknown),
            (Method::Post, 201, Some(b"\"b\""), Last::Unknown),
            (Method::Put, 200, Some(b"garbage"), Last::Unknown),
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let fences = Arc::new(Fences::default());
        for &(method, status, etag, want) in cases {
            let seen = rt.block_on(async {
                let enter = |f: Arc<Fences>| async move {
                    f.enter(
                        &key(),
                        Principal(1),
                        Gate::Tag(false, b"a"),
                        Duration::from_secs(5),
                        8,
                        || {},
                    )
                    .await
                    .unwrap()
                };
                let (mut hold, _, _) = enter(fences.clone()).await;
                hold.forwarding();
                let next = tokio::spawn(enter(fences.clone()));
                tokio::task::yield_now().await;
                hold.answered(method, status, etag);
                drop(hold);
                next.await.unwrap().1
            });
            assert_eq!(seen, want, "{method:?} {status} {etag:?}");
            // Nobody waits any more: the key (and what it learned) is gone with its holders.
            assert_eq!(fences.active(), 0);
        }
    }

    #[tokio::test]
    async fn a_waiter_sees_the_holders_answer_and_other_partitions_do_not_wait() {
        let fences = Arc::new(Fences::default());
        let (mut first, last, _) = fences
            .enter(
                &key(),
                Principal(1),
                Gate::Tag(false, b"a"),
                Duration::from_secs(1),
                8,
                || {},
            )
            .await
            .unwrap();
        assert_eq!(last, Last::Unknown);
        first.forwarding();
        // Another caller's partition, and another tag, do not wait.
        for (who, tag) in [(Principal(2), &b"a"[..]), (Principal(1), &b"b"[..])] {
            let other = fences
                .enter(
                    &key(),
                    who,
                    Gate::Tag(false, tag),
                    Duration::from_millis(10),
                    8,
                    || {},
                )
                .await;
            assert!(other.is_ok(), "{who:?} {tag:?} waited");
        }
        let f = fences.clone();
        let second = tokio::spawn(async move {
            f.enter(
                &key(),
                Principal(1),
                Gate::Tag(true, b"a"),
                Duration::from_secs(5),
                8,
                || {},
            )
            .await
            .map(|(_, last, waited)| (last, waited))
        });
        tokio::task::yield_now().await;
        first.answered(Method::Put, 200, Some(b"\"b\""));
        drop(first);
        assert_eq!(second.await.unwrap(), Ok((Last::Replaced, true)));
    }
}
