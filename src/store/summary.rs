//! Fingerprint summaries: the part of a resource's learned state that the decision fast path
//! reads, packed into a fixed-size value that lives inside the store's index entry.
//!
//! Owns: [`Summary`] (a digest of an [`Entry`]: existence, latest
//! `Last-Modified`, and 32-bit fingerprints of its current and replaced tags), [`Prints`] (the
//! seeded fingerprint function) and [`Summarised`], the [`Knowledge`] view of a summary.
//!
//! Invariants:
//! - Equal tags have equal fingerprints (one seed per store), so a summary never misses a tag its
//!   entry holds: "not current" and "not replaced" read from a summary are exact.
//! - Different tags share a fingerprint with probability 2^-31: "current" and "replaced" read
//!   from a summary mean "maybe". A decision taken on a summary is therefore final only when it is
//!   to forward; a refusal is taken again on the exact entry (see `fastpath`). A false "current"
//!   can only turn a refusal into forwarding, the safe direction in the `guard` role.
//! - Reading a summary touches no pointer: no cache miss beyond the index entry itself.

use super::entry::{Entry, MAX_CURRENT, MAX_REPLACED};
use crate::precondition::date::Timestamp;
use crate::precondition::{Comparison, EntityTag, Existence, Knowledge};

/// The seeded 32-bit fingerprint of an entity-tag: the opaque-tag's hash with the low bit
/// replaced by the weakness flag.
#[derive(Clone)]
pub struct Prints(foldhash::fast::FixedState);

impl Prints {
    /// Fingerprints seeded with `seed` (per process, so that clients cannot aim collisions).
    pub fn with_seed(seed: u64) -> Prints {
        Prints(foldhash::fast::FixedState::with_seed(seed))
    }

    /// The fingerprint of `tag`.
    #[inline]
    pub fn of(&self, tag: &EntityTag<'_>) -> u32 {
        use std::hash::BuildHasher;
        let h = (self.0.hash_one(tag.opaque()) >> 32) as u32;
        (h & !1) | u32::from(tag.is_weak())
    }
}

/// A fixed-size digest of one resource's learned state (see the module invariants).
///
/// Laid out in the order the fast path reads it (`repr(C)`): a matching `If-Match` reads only
/// the first 20 bytes, which share a cache line with the index entry's key most of the time.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Summary {
    n_current: u8,
    n_replaced: u8,
    current_known: bool,
    current_complete: bool,
    existence: Existence,
    current: [u32; MAX_CURRENT],
    replaced: [u32; MAX_REPLACED],
    last_modified: Option<Timestamp>,
}

impl Summary {
    /// The digest of `entry`.
    pub fn of(entry: &Entry, prints: &Prints) -> Summary {
        let mut s = Summary {
            current: [0; MAX_CURRENT],
            replaced: [0; MAX_REPLACED],
            last_modified: entry.last_modified,
            n_current: 0,
            n_replaced: 0,
            current_known: entry.current.is_some(),
            current_complete: entry.current_complete(),
            existence: entry.existence,
        };
        for (slot, t) in s.current.iter_mut().zip(entry.current_tags()) {
            *slot = prints.of(&t);
            s.n_current += 1;
        }
        for (slot, t) in s.replaced.iter_mut().zip(&entry.replaced) {
            *slot = prints.of(&t.as_ref());
            s.n_replaced += 1;
        }
        s
    }

    /// The summary as [`Knowledge`], comparing tags fingerprinted with `prints`.
    #[inline]
    pub fn knowledge<'a>(&'a self, prints: &'a Prints) -> Summarised<'a> {
        Summarised {
            summary: self,
            prints,
        }
    }
}

/// A summary and the fingerprint function its tags were made with.
pub struct Summarised<'a> {
    summary: &'a Summary,
    prints: &'a Prints,
}

impl Summarised<'_> {
    #[inline]
    fn current(&self) -> &[u32] {
        &self.summary.current[..usize::from(self.summary.n_current)]
    }

    #[inline]
    fn replaced(&self) -> &[u32] {
        &self.summary.replaced[..usize::from(self.summary.n_replaced)]
    }
}

impl Knowledge for Summarised<'_> {
    fn existence(&self) -> Existence {
        self.summary.existence
    }
    fn current_known(&self) -> bool {
        self.summary.current_known
    }
    fn current_complete(&self) -> bool {
        self.summary.current_complete
    }
    fn is_current_strong(&self, tag: &EntityTag<'_>) -> bool {
        self.compare(tag).current_strong
    }
    fn is_current_weak(&self, tag: &EntityTag<'_>) -> bool {
        self.compare(tag).current_weak
    }
    fn was_replaced(&self, tag: &EntityTag<'_>) -> bool {
        self.compare(tag).replaced
    }
    fn last_modified(&self) -> Option<Timestamp> {
        self.summary.last_modified
    }
    #[inline]
    fn compare(&self, tag: &EntityTag<'_>) -> Comparison {
        let p = self.prints.of(tag);
        let mut c = Comparison::default();
        for &cur in self.current() {
            // Same opaque-tag (maybe): weak match; and both strong: strong match.
            if (cur ^ p) & !1 == 0 {
                c.current_weak = true;
                c.current_strong |= (cur | p) & 1 == 0;
            }
        }
        // A tag is never both current and replaced in an entry: when it matches a current tag
        // strongly, whether it was replaced does not matter (and is not read).
        c.replaced = !c.current_strong && self.replaced().contains(&p);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entry::Tag;

    fn tag(s: &str) -> EntityTag<'_> {
        EntityTag::parse(s.as_bytes()).unwrap()
    }

    fn entry(current: &[&str], replaced: &[&str]) -> Entry {
        let mut e = Entry::blank();
        e.existence = Existence::Exists;
        e.current = Some(current.iter().map(|t| Tag::from_ref(&tag(t))).collect());
        e.replaced = replaced.iter().map(|t| Tag::from_ref(&tag(t))).collect();
        e.last_modified = Some(1000);
        e
    }

    /// On tags without fingerprint collisions, the summary answers exactly as the entry.
    #[test]
    fn agrees_with_the_entry_it_summarises() {
        let prints = Prints::with_seed(7);
        let e = entry(&["\"v3\"", "W/\"gz\""], &["\"v1\"", "\"v2\"", "W/\"old\""]);
        let s = Summary::of(&e, &prints);
        let k = s.knowledge(&prints);
        let probes = [
            "\"v1\"",
            "\"v2\"",
            "\"v3\"",
            "W/\"v3\"",
            "\"gz\"",
            "W/\"gz\"",
            "\"old\"",
            "W/\"old\"",
            "\"v4\"",
            "\"\"",
            "W/\"\"",
        ];
        for p in probes {
            let t = tag(p);
            assert_eq!(k.compare(&t), e.compare(&t), "{p}");
        }
        assert_eq!(k.existence(), Existence::Exists);
        assert!(k.current_known());
        assert_eq!(k.last_modified(), Some(1000));
    }

    #[test]
    fn unknown_current_is_not_an_empty_one() {
        let prints = Prints::with_seed(1);
        let mut e = entry(&[], &["\"v1\""]);
        assert!(Summary::of(&e, &prints).knowledge(&prints).current_known());
        e.current = None;
        let s = Summary::of(&e, &prints);
        assert!(!s.knowledge(&prints).current_known());
        assert!(s.knowledge(&prints).was_replaced(&tag("\"v1\"")));
    }

    #[test]
    fn weakness_is_part_of_the_fingerprint() {
        let prints = Prints::with_seed(3);
        let (s, w) = (prints.of(&tag("\"x\"")), prints.of(&tag("W/\"x\"")));
        assert_ne!(s, w);
        assert_eq!(s & !1, w & !1);
    }
}
