//! The lost-update census of `observe` routes: the version of each resource each caller last
//! read (or wrote), and the latest version anyone was shown, so that a write without any
//! precondition can be told to overwrite a version its caller never saw (a *blind overwrite*).
//!
//! Owns: [`Census`] and [`Blind`]. Learns only from what the origin answered; never changes
//! what a request gets.
//!
//! Invariants:
//! - Bounded by bytes (`store.census_max_bytes`, moka's weigher: every entry counts its tag and
//!   a fixed [`ENTRY_OVERHEAD`], calibrated on resident memory) and by the store's TTL; a
//!   forgotten entry makes a write unclassified ([`Blind::Unknown`]), never a blind overwrite.
//! - One entry per (resource, caller), the caller being the hash of its credentials whatever the
//!   route's scope; a caller's reads never stand for another's. A resource whose answers are
//!   marked per-caller (or on a `scope = "principal"` route) is not classified: its callers see
//!   different representations, and "latest" would mix them.
//! - Ordered: a read is dated by the ticket it took when it started, a write's answer by a
//!   ticket taken when it is answered; an older date never replaces a newer one (a slow read
//!   cannot roll the latest version back, nor hide a write answered after it started). A
//!   completed write answered without `ETag` (or a DELETE) records an *unseen* version unique to
//!   it (a tag no origin can guess): nobody but its writer has seen it. Keys are 64-bit hashes under a per-process random
//!   key: a collision can miscount, never affect a request.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::identity::{Principal, ResourceKey};
use crate::precondition::EntityTag;

use super::entry::Tag;
use super::learn::Ticket;

/// Bytes counted per entry beyond its tag: the key, the record, moka's own bookkeeping
/// (measured: 449 to 461 resident bytes per entry with short tags, 50,000 to 200,000 entries).
pub const ENTRY_OVERHEAD: u32 = 448;

/// One version as it was recorded.
#[derive(Debug)]
struct Seen {
    tag: Tag,
    ticket: u64,
}

/// What the census says of a write without a precondition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blind {
    /// Its caller last read the latest version shown: an informed write.
    Informed,
    /// Its caller last read a version that another answer has since replaced.
    Overwrite,
    /// Not known (the caller never read it, or an entry was forgotten).
    Unknown,
}

/// The kinds of entries.
#[derive(Clone, Copy)]
enum Slot {
    /// The latest version anyone was shown.
    Latest,
    /// The version one caller last saw.
    Caller(Principal),
    /// The resource is answered per caller.
    PerCaller,
}

/// The census.
pub struct Census {
    cache: moka::sync::Cache<u64, Arc<Seen>>,
    hasher: foldhash::fast::FixedState,
    /// Makes the tags of unseen versions unguessable.
    salt: u64,
}

impl Census {
    /// A census of at most `max_bytes`, each entry forgotten `ttl` after it was written, keyed
    /// with `seed` (random per process).
    pub fn new(max_bytes: u64, ttl: Duration, seed: u64) -> Census {
        Census {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_: &u64, s: &Arc<Seen>| {
                    ENTRY_OVERHEAD.saturating_add(
                        u32::try_from(s.tag.as_ref().opaque().len()).unwrap_or(u32::MAX),
                    )
                })
                .time_to_live(ttl)
                .build(),
            hasher: foldhash::fast::FixedState::with_seed(seed),
            salt: seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn slot(&self, key: &ResourceKey<'_>, kind: Slot) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u64(key.hash_with(&self.hasher));
        match kind {
            Slot::Latest => h.write_u8(0),
            Slot::Caller(p) => {
                h.write_u8(1);
                h.write_u64(p.0);
            }
            Slot::PerCaller => h.write_u8(2),
        }
        h.finish()
    }

    fn record(&self, slot: u64, tag: &Tag, ticket: Ticket) {
        let t = ticket.0;
        self.cache.entry(slot).and_compute_with(|old| {
            use moka::ops::compute::Op;
            match old.map(|e| e.into_value()) {
                Some(o) if o.ticket > t => Op::Nop,
                _ => Op::Put(Arc::new(Seen {
                    tag: tag.clone(),
                    ticket: t,
                })),
            }
        });
    }

    /// Records a read's answer: `who` was shown `tag` of `key` by a request that took `ticket`
    /// when it started.
    pub fn saw(&self, key: &ResourceKey<'_>, who: Principal, tag: &EntityTag<'_>, ticket: Ticket) {
        let tag = Tag::from_ref(tag);
        self.record(self.slot(key, Slot::Caller(who)), &tag, ticket);
        self.record(self.slot(key, Slot::Latest), &tag, ticket);
    }

    /// Records a completed write's answer (`ticket` taken when it was answered): the version it
    /// made, or an unseen one when the answer carried no tag (or the write was a DELETE).
    pub fn wrote(
        &self,
        key: &ResourceKey<'_>,
        who: Principal,
        tag: Option<&EntityTag<'_>>,
        ticket: Ticket,
    ) {
        let tag = match tag {
            Some(t) => Tag::from_ref(t),
            // Unique to this write, and not a tag an origin can guess (the per-process salt).
            None => {
                let unseen = format!("precond-unseen-{:016x}-{}", self.salt, ticket.0);
                Tag::from_ref(&EntityTag::from_trusted(false, unseen.as_bytes()))
            }
        };
        self.record(self.slot(key, Slot::Caller(who)), &tag, ticket);
        self.record(self.slot(key, Slot::Latest), &tag, ticket);
    }

    /// Marks `key` as answered per caller: its writes are no longer classified.
    pub fn per_caller(&self, key: &ResourceKey<'_>) {
        let none = Tag::from_ref(&EntityTag::from_trusted(false, b""));
        self.cache.insert(
            self.slot(key, Slot::PerCaller),
            Arc::new(Seen {
                tag: none,
                ticket: 0,
            }),
        );
    }

    /// Classifies a write of `who` to `key` that carries no precondition, as its answer arrives
    /// (before that answer is recorded).
    pub fn classify(&self, key: &ResourceKey<'_>, who: Principal) -> Blind {
        if self.cache.contains_key(&self.slot(key, Slot::PerCaller)) {
            return Blind::Unknown;
        }
        let (Some(mine), Some(latest)) = (
            self.cache.get(&self.slot(key, Slot::Caller(who))),
            self.cache.get(&self.slot(key, Slot::Latest)),
        ) else {
            return Blind::Unknown;
        };
        if mine.tag.as_ref().weak_eq(&latest.tag.as_ref()) {
            Blind::Informed
        } else {
            Blind::Overwrite
        }
    }

    /// Bytes held, as the bound counts them (after pending evictions are applied).
    pub fn bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::RouteId;

    fn key(path: &str) -> ResourceKey<'_> {
        ResourceKey {
            route: RouteId(0),
            host: "h",
            path,
        }
    }

    fn t(s: &str) -> EntityTag<'_> {
        EntityTag::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn a_write_over_a_version_its_caller_never_read_is_blind() {
        let c = Census::new(1 << 20, Duration::from_secs(60), 1);
        let (a, b) = (Principal(1), Principal(2));
        let k = key("/doc");
        assert_eq!(c.classify(&k, a), Blind::Unknown);
        c.saw(&k, a, &t("\"1\""), Ticket(1));
        c.saw(&k, b, &t("\"1\""), Ticket(2));
        assert_eq!(c.classify(&k, a), Blind::Informed);
        // A writes: its answer shows "2" to A.
        c.wrote(&k, a, Some(&t("\"2\"")), Ticket(4));
        assert_eq!(c.classify(&k, a), Blind::Informed);
        assert_eq!(c.classify(&k, b), Blind::Overwrite);
        // A read of B's that started before A's write was answered does not roll it back.
        c.saw(&k, b, &t("\"1\""), Ticket(3));
        assert_eq!(c.classify(&k, b), Blind::Overwrite);
        // Weak comparison: an encoding of the same version is the same version.
        c.saw(&k, b, &t("W/\"2\""), Ticket(5));
        assert_eq!(c.classify(&k, b), Blind::Informed);
        // A write answered without a tag: a version only its writer has seen.
        c.wrote(&k, a, None, Ticket(6));
        assert_eq!(c.classify(&k, a), Blind::Informed);
        assert_eq!(c.classify(&k, b), Blind::Overwrite);
        // Answers marked per caller: nothing is classified any more.
        c.per_caller(&k);
        assert_eq!(c.classify(&k, b), Blind::Unknown);
    }

    #[test]
    fn bounded_by_bytes() {
        let max = 64 << 10;
        let c = Census::new(max, Duration::from_secs(60), 1);
        for i in 0..10_000u64 {
            c.saw(
                &key("/doc"),
                Principal(i),
                &t("\"a-fairly-long-tag-value\""),
                Ticket(i),
            );
        }
        assert!(c.bytes() <= max, "{} > {max}", c.bytes());
        assert!(c.bytes() > max / 2, "{}", c.bytes());
    }
}
