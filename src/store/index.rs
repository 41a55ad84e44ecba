//! The lock-free index's parts: what it holds per resource and how its keys are hashed.
//!
//! Owns: [`Record`] (a resource's key, its partitions' learned state, age and confirming-read
//! stamp), [`Slot`] (the index entry of one partition: the fast path's [`Summary`] inline,
//! beside the record), [`View`] (one partition of a record, for slower paths), [`slot_hash`]
//! and [`PassThrough`], the hasher for keys that already are 64-bit hashes.
//!
//! Invariants:
//! - The index holds one slot per partition, under [`slot_hash`] of the resource's hash and the
//!   partition's principal; moka holds one record per resource, under the resource's hash.
//! - A slot's summary is the summary of its partition's entry (both are written together, once).
//! - A record is immutable but for `read_since`, which only grows.
//! - Matching a key against a record ([`Record::is_for`]) compares the key itself, never only its
//!   hash: a slot found by hash may belong to another key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::identity::{OwnedKey, Principal, ResourceKey};

use super::entry::Entry;
use super::partition::Parts;
use super::summary::{Prints, Summary};

/// The index key of `who`'s partition of the resource whose hash is `resource`.
#[inline]
pub fn slot_hash(resource: u64, who: Principal) -> u64 {
    resource ^ who.0.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

/// Bytes counted per record beyond its key and partitions: the record (with its `Arc`), moka's
/// entry and its bookkeeping, the hash-map slots and allocator slack. Measured with
/// `benches/flood` (a learned resource with a short key and one tag costs about 1,900 resident
/// bytes), so that `store.max_bytes` bounds resident memory, not just the data.
pub const RECORD_OVERHEAD: usize = 1536;
/// Bytes counted per partition beyond its tags: the entry, its index slot and summary.
pub const PART_OVERHEAD: usize = 512;

/// What the store holds per resource: its key (to verify a hash match), its learned state, and
/// when it was learned (the fast path checks the TTL itself: moka expires entries lazily).
#[derive(Debug)]
pub struct Record {
    key: OwnedKey,
    learned_at: Instant,
    /// The store's forget epoch when this record was made (fresh only in that epoch).
    epoch: u64,
    /// Ticket of the latest read that confirmed a partition without changing it (it then
    /// stands for that entry's `current_since`). Counted for every partition, which only makes
    /// older reads more cautious, and carried into the record that replaces this one.
    read_since: AtomicU64,
    /// The learned state, per partition.
    pub parts: Parts,
}

impl Record {
    pub(super) fn new(key: &ResourceKey<'_>, parts: Parts, epoch: u64) -> Record {
        Record {
            key: key.to_owned_key(),
            learned_at: Instant::now(),
            epoch,
            read_since: AtomicU64::new(0),
            parts,
        }
    }

    /// What the record weighs against `store.max_bytes`: its key, every partition's state (with
    /// its index slot), and a fixed share for the record's own structures and moka's entry.
    pub fn weight(&self) -> usize {
        RECORD_OVERHEAD
            + self.key.len()
            + self
                .parts
                .parts
                .iter()
                .map(|p| PART_OVERHEAD + p.entry.heap_bytes())
                .sum::<usize>()
    }

    /// The state of `who`'s partition, if the record has one.
    pub fn part(&self, who: Principal) -> Option<&Entry> {
        self.parts.find(who).map(|(_, e)| e)
    }

    /// Whether this record is `key`'s (no allocation).
    #[inline]
    pub fn is_for(&self, key: &ResourceKey<'_>) -> bool {
        self.key.as_key().same_resource(key)
    }

    /// Time since the state was learned.
    pub fn age(&self) -> std::time::Duration {
        self.learned_at.elapsed()
    }

    /// The store's [`forget_all`](super::Store::forget_all) epoch when the record was made.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The ticket of the latest read that confirmed a partition in place.
    pub(super) fn read_since(&self) -> u64 {
        self.read_since.load(Ordering::Acquire)
    }

    /// The latest ticket or stamp this record's state depends on.
    pub(super) fn last_stamp(&self) -> u64 {
        self.parts
            .parts
            .iter()
            .map(|p| p.entry.changed_at.max(p.entry.current_since))
            .fold(self.parts.changed_at.max(self.read_since()), u64::max)
    }

    /// Records that a read with ticket `since` confirmed the state without changing it.
    pub(super) fn confirm(&self, since: u64) {
        self.read_since.fetch_max(since, Ordering::SeqCst);
    }
}

/// One partition of a record (an `Arc` clone: for refusals and slower paths).
#[derive(Clone, Debug)]
pub struct View {
    record: Arc<Record>,
    part: usize,
}

impl View {
    /// The partition at `part` of `record`.
    pub(super) fn new(record: Arc<Record>, part: usize) -> View {
        View { record, part }
    }

    /// The whole record.
    pub fn record(&self) -> &Record {
        &self.record
    }
}

impl std::ops::Deref for View {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.record.parts.parts[self.part].entry
    }
}

/// A hasher for keys that are already 64-bit hashes.
#[derive(Default, Clone, Copy)]
pub struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What the index holds per partition: the fast path's [`Summary`] of it and the full record.
/// Lives inline in the index's entry, so the fast path reads one allocation (summary first).
#[repr(C)]
pub struct Slot {
    summary: Summary,
    record: Arc<Record>,
    part: usize,
}

impl Slot {
    /// A slot for partition `part` of `record`, summarised with `prints`.
    pub(super) fn new(record: Arc<Record>, part: usize, prints: &Prints) -> Slot {
        Slot {
            summary: Summary::of(&record.parts.parts[part].entry, prints),
            record,
            part,
        }
    }

    /// The exact state of this slot's partition, when it is `key`'s and `who`'s (compares the
    /// key byte for byte: a slot found by hash may be another key's or another principal's).
    #[inline]
    pub fn entry_for(&self, key: &ResourceKey<'_>, who: Principal) -> Option<&Entry> {
        let p = &self.record.parts.parts[self.part];
        (p.principal == who && self.record.is_for(key)).then_some(&p.entry)
    }

    /// This slot's partition as a [`View`].
    pub(super) fn view(&self) -> View {
        View::new(self.record.clone(), self.part)
    }

    /// The digest the fast path decides on.
    #[inline]
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The full record (one pointer away: for refusals and slower paths).
    #[inline]
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Whether this slot holds exactly `record`.
    pub(super) fn holds(&self, record: &Arc<Record>) -> bool {
        Arc::ptr_eq(&self.record, record)
    }
}

/// The index: 64-bit key hash → slot.
pub(super) type Index = papaya::HashMap<u64, Slot, std::hash::BuildHasherDefault<PassThrough>>;
