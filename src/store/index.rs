//! The lock-free index's parts: what it holds per resource and how its keys are hashed.
//!
//! Owns: [`Record`] (a resource's key, learned state, age and confirming-read stamp), [`Slot`] (the
//! index entry: the fast path's [`Summary`] inline, beside the record) and [`PassThrough`], the
//! hasher for keys that already are 64-bit hashes.
//!
//! Invariants:
//! - A slot's summary is the summary of its record's entry (both are written together, once).
//! - A record is immutable but for `read_since`, which only grows.
//! - Matching a key against a record ([`Record::is_for`]) compares the key itself, never only its
//!   hash: a slot found by hash may belong to another key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::identity::{OwnedKey, ResourceKey};

use super::entry::Entry;
use super::summary::{Prints, Summary};

/// What the store holds per resource: its key (to verify a hash match), its learned state, and
/// when it was learned (the fast path checks the TTL itself: moka expires entries lazily).
#[derive(Debug)]
pub struct Record {
    key: OwnedKey,
    learned_at: Instant,
    /// Ticket of the latest read that confirmed the entry without changing it (it then
    /// stands for `entry.current_since`, which is the ticket of the read that created it).
    read_since: AtomicU64,
    /// The learned state.
    pub entry: Entry,
}

impl Record {
    pub(super) fn new(key: &ResourceKey<'_>, entry: Entry) -> Record {
        Record {
            key: key.to_owned_key(),
            learned_at: Instant::now(),
            read_since: AtomicU64::new(0),
            entry,
        }
    }

    /// Whether this record is `key`'s (no allocation).
    #[inline]
    pub fn is_for(&self, key: &ResourceKey<'_>) -> bool {
        self.key.as_key().same_resource(key)
    }

    /// Time since the state was learned.
    pub(super) fn age(&self) -> std::time::Duration {
        self.learned_at.elapsed()
    }

    /// The latest ticket or stamp that set or confirmed `current`.
    pub(super) fn current_since(&self) -> u64 {
        self.entry
            .current_since
            .max(self.read_since.load(Ordering::Acquire))
    }

    /// The latest ticket or stamp this record's state depends on.
    pub(super) fn last_stamp(&self) -> u64 {
        self.entry.changed_at.max(self.current_since())
    }

    /// Records that a read with ticket `since` confirmed the state without changing it.
    pub(super) fn confirm(&self, since: u64) {
        self.read_since.fetch_max(since, Ordering::SeqCst);
    }
}

impl std::ops::Deref for Record {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.entry
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

/// What the index holds per resource: the fast path's [`Summary`] and the full record. Lives
/// inline in the index's entry, so the fast path reads one allocation (summary first).
#[repr(C)]
pub struct Slot {
    summary: Summary,
    record: Arc<Record>,
}

impl Slot {
    /// A slot for `record`, summarised with `prints`.
    pub(super) fn new(record: Arc<Record>, prints: &Prints) -> Slot {
        Slot {
            summary: Summary::of(&record.entry, prints),
            record,
        }
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

    /// A new reference to the record.
    pub(super) fn record_arc(&self) -> Arc<Record> {
        self.record.clone()
    }
}

/// The index: 64-bit key hash → slot.
pub(super) type Index = papaya::HashMap<u64, Slot, std::hash::BuildHasherDefault<PassThrough>>;
