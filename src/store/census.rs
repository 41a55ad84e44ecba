//! The lost-update census of `observe` routes: the version of each resource each caller last
//! read (or wrote), and the latest version anyone was shown, so that a write without any
//! precondition can be told to overwrite a version its caller never read (a *blind overwrite*).
//!
//! Owns: [`Census`] and [`Blind`]. Learns only from what the origin answered; never changes
//! what a request gets.
//!
//! Invariants:
//! - Bounded by bytes (`store.census_max_bytes`, moka's weigher: every entry counts its tag and a
//!   fixed [`ENTRY_OVERHEAD`]) and by the store's TTL; a forgotten entry makes a write
//!   unclassified ([`Blind::Unknown`]), never a blind overwrite.
//! - Partitioned like the store: one entry per (resource, principal); a caller's reads never
//!   stand for another's.
//! - Ordered by tickets: an answer to a request that started before the one recorded does not
//!   replace it (a slow read cannot roll the latest version back). Entries are keyed by 64-bit
//!   hashes under a per-process random key: a collision can miscount, never affect a request.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::identity::{Principal, ResourceKey};
use crate::precondition::EntityTag;

use super::entry::Tag;
use super::learn::Ticket;

/// Bytes counted per entry beyond its tag: the key, the record, moka's own bookkeeping.
pub const ENTRY_OVERHEAD: u32 = 160;

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

/// The census.
pub struct Census {
    cache: moka::sync::Cache<u64, Arc<Seen>>,
    hasher: foldhash::fast::FixedState,
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
        }
    }

    fn slot(&self, key: &ResourceKey<'_>, who: Option<Principal>) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u64(key.hash_with(&self.hasher));
        match who {
            Some(p) => {
                h.write_u8(1);
                h.write_u64(p.0);
            }
            None => h.write_u8(0),
        }
        h.finish()
    }

    fn record(&self, slot: u64, tag: Option<&EntityTag<'_>>, ticket: Ticket) {
        let t = ticket.0;
        self.cache.entry(slot).and_compute_with(|old| {
            use moka::ops::compute::Op;
            match (old.map(|e| e.into_value()), tag) {
                (Some(o), _) if o.ticket > t => Op::Nop,
                (_, Some(tag)) => Op::Put(Arc::new(Seen {
                    tag: Tag::from_ref(tag),
                    ticket: t,
                })),
                (Some(_), None) => Op::Remove,
                (None, None) => Op::Nop,
            }
        });
    }

    /// Records an answer the origin gave `who` about `key` to a request that took `ticket`:
    /// the version shown (a read's, or a completed write's), or `None` when the answer left it
    /// unknown (a write answered without `ETag`).
    pub fn saw(
        &self,
        key: &ResourceKey<'_>,
        who: Principal,
        tag: Option<&EntityTag<'_>>,
        ticket: Ticket,
    ) {
        self.record(self.slot(key, Some(who)), tag, ticket);
        self.record(self.slot(key, None), tag, ticket);
    }

    /// Classifies a write of `who` to `key` that carries no precondition.
    pub fn classify(&self, key: &ResourceKey<'_>, who: Principal) -> Blind {
        let (Some(mine), Some(latest)) = (
            self.cache.get(&self.slot(key, Some(who))),
            self.cache.get(&self.slot(key, None)),
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
        c.saw(&k, a, Some(&t("\"1\"")), Ticket(1));
        c.saw(&k, b, Some(&t("\"1\"")), Ticket(2));
        assert_eq!(c.classify(&k, a), Blind::Informed);
        // A writes: its answer shows "2" to A.
        c.saw(&k, a, Some(&t("\"2\"")), Ticket(3));
        assert_eq!(c.classify(&k, a), Blind::Informed);
        assert_eq!(c.classify(&k, b), Blind::Overwrite);
        // A slow read of B's that started before A's write does not roll the latest back.
        c.saw(&k, b, Some(&t("\"1\"")), Ticket(2));
        assert_eq!(c.classify(&k, b), Blind::Overwrite);
        // Weak comparison: an encoding of the same version is the same version.
        c.saw(&k, b, Some(&t("W/\"2\"")), Ticket(4));
        assert_eq!(c.classify(&k, b), Blind::Informed);
        // A write answered without a tag: unknown.
        c.saw(&k, a, None, Ticket(5));
        assert_eq!(c.classify(&k, a), Blind::Unknown);
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
                Some(&t("\"a-fairly-long-tag-value\"")),
                Ticket(i),
            );
        }
        assert!(c.bytes() <= max, "{} > {max}", c.bytes());
        assert!(c.bytes() > max / 2, "{}", c.bytes());
    }
}
