//! The validator store: what precond knows about each resource, bounded by moka, read without
//! locks.
//!
//! Files, each owning one concern (arrows point down only):
//! - [`entry`]: one resource's learned state ([`Entry`]) and its bounds;
//! - [`learn`]: the learning rules ([`Observation`] of an exchange → new [`Entry`]) and the race
//!   rule's [`Ticket`];
//! - [`partition`]: one resource's state split by principal, and which partitions an
//!   observation concerns;
//! - [`summary`]: fixed-size fingerprint digests of entries, read by the fast path;
//! - [`index`]: what the lock-free index holds ([`Record`], [`Slot`]);
//! - [`fastpath`]: the benchmarked `guard` decision ([`guard_decision`]);
//! - [`census`]: the lost-update census of `observe` routes (what each caller last read);
//! - [`redis`]: the shared store of several instances (`store.backend = "redis"`): enforce's
//!   per-resource lease, its fencing chain and published snapshots;
//! - this file: the [`Store`] facade that ties moka (bounds) to the index (reads).
//!
//! Invariants:
//! - Records are immutable snapshots behind `Arc` (but for the confirming-read stamp, which only
//!   grows); a reader never sees a half-applied update, and updates to one key are applied
//!   atomically (moka `and_compute_with`), the index being updated inside that critical section,
//!   so the index never holds an older record than moka.
//! - moka's eviction listener removes evicted records from the index; a record past its TTL that
//!   the index still holds is never used to refuse anything ([`Store::is_fresh`]).
//! - A read older than the last write of a record that left the store does not re-create it (a
//!   per-hash removal watermark).

pub mod census;
pub mod entry;
pub mod fastpath;
pub mod index;
pub mod learn;
pub mod partition;
#[cfg(feature = "proxy")]
pub mod redis;
pub mod summary;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::Op;

use crate::identity::{Principal, ResourceKey};

pub use entry::{Entry, Meta, Tag, MAX_CURRENT, MAX_REPLACED, META_HEADERS};
pub use fastpath::guard_decision;
pub use index::{Record, Slot, View};
pub use learn::{apply, Observation, Outcome, Reach, Ticket};
pub use partition::{Part, Parts, MAX_PARTS};

use index::{slot_hash, Index};
use partition::{apply_parts, Change};

use summary::Prints;

/// The bounded, concurrent map of resource to learned state.
///
/// Reads go through a lock-free index (`papaya`, keyed by a 64-bit hash of the resource key; the
/// stored key itself is compared before anything is refused); moka bounds it (capacity, TTL) and its eviction listener removes
/// evicted records from the index. Writes to one key are serialised by moka's
/// `and_compute_with`, and the index is updated inside that critical section, so the index
/// never holds an older record than moka.
pub struct Store {
    index: Arc<Index>,
    /// Per hash slot, the latest write stamp of a record that left the store: a read that
    /// started before it must not re-create the record (it may show what that write replaced).
    removed: Arc<[AtomicU64]>,
    cache: moka::sync::Cache<u64, Arc<Record>>,
    hash_state: foldhash::fast::FixedState,
    prints: Prints,
    ttl: Duration,
    seq: AtomicU64,
    /// Records removed by the bounds: `[size, expired]`.
    evicted: Arc<[AtomicU64; 2]>,
    /// Incremented by [`Store::forget_all`]: a record made under an earlier epoch is treated as
    /// expired.
    epoch: AtomicU64,
    /// The ticket [`Store::forget_all`] took: exchanges of requests that started before it
    /// teach nothing.
    forgotten: AtomicU64,
    /// The lost-update census of `observe` routes.
    census: census::Census,
    /// A [`Store::settle`] is running.
    settling: AtomicBool,
}

impl Store {
    /// A store holding at most `capacity` resources, each forgotten `ttl` after it was last
    /// learned.
    pub fn new(capacity: u64, ttl: Duration) -> Store {
        Store::bounded(capacity, u64::MAX, ttl)
    }

    /// A store holding at most `capacity` resources and `max_bytes` (as [`Record::weight`]
    /// counts them), each forgotten `ttl` after it was last learned. Every record weighs at
    /// least `max_bytes / capacity`, so that both bounds hold with one moka weigher.
    pub fn bounded(capacity: u64, max_bytes: u64, ttl: Duration) -> Store {
        let capacity = capacity.max(1);
        let floor = (max_bytes / capacity).clamp(1, u64::from(u32::MAX));
        let max_weight = max_bytes.min(floor.saturating_mul(capacity));
        let index: Arc<Index> = Arc::new(
            papaya::HashMap::builder()
                .hasher(std::hash::BuildHasherDefault::default())
                .resize_mode(papaya::ResizeMode::Incremental(INDEX_RESIZE_CHUNK))
                .build(),
        );
        let evict_from = index.clone();
        let removed: Arc<[AtomicU64]> = (0..REMOVED_SLOTS).map(|_| AtomicU64::new(0)).collect();
        let watermark = removed.clone();
        let evicted: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let counted = evicted.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_weight)
            .weigher(move |_: &u64, record: &Arc<Record>| {
                (record.weight() as u64).clamp(floor, u64::from(u32::MAX)) as u32
            })
            .time_to_live(ttl)
            .eviction_listener(move |hash: Arc<u64>, record: Arc<Record>, cause| {
                use moka::notification::RemovalCause;
                match cause {
                    RemovalCause::Size => counted[0].fetch_add(1, Ordering::Relaxed),
                    RemovalCause::Expired => counted[1].fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                if cause != RemovalCause::Replaced {
                    // Remove, then read the record's stamps: a confirming read that bumps
                    // `read_since` and then still finds the slot is seen here (the fences pair
                    // with the one in `learn`); one that finds it gone writes a new record.
                    let index = evict_from.pin();
                    for p in &record.parts.parts {
                        let _ = index.remove_if(&slot_hash(*hash, p.principal), |_, slot| {
                            slot.holds(&record)
                        });
                    }
                    std::sync::atomic::fence(Ordering::SeqCst);
                    let stamp = record.last_stamp();
                    watermark[(*hash as usize) % REMOVED_SLOTS].fetch_max(stamp, Ordering::AcqRel);
                }
            })
            .build();
        Store {
            index,
            removed,
            cache,
            hash_state: foldhash::fast::FixedState::with_seed(rand_seed(1)),
            prints: Prints::with_seed(rand_seed(2)),
            ttl,
            seq: AtomicU64::new(1),
            evicted,
            epoch: AtomicU64::new(0),
            forgotten: AtomicU64::new(0),
            census: census::Census::new(DEFAULT_CENSUS_BYTES, ttl, rand_seed(3)),
            settling: AtomicBool::new(false),
        }
    }

    /// The same store with a census of at most `max_bytes` (`store.census_max_bytes`).
    pub fn with_census_bytes(mut self, max_bytes: u64) -> Store {
        self.census = census::Census::new(max_bytes, self.ttl, rand_seed(3));
        self
    }

    /// The lost-update census of `observe` routes.
    pub fn census(&self) -> &census::Census {
        &self.census
    }

    /// Bytes held, as [`Record::weight`] counts them (after pending evictions are applied).
    pub fn bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// Records removed because a bound was reached, and because they expired.
    pub fn evictions(&self) -> (u64, u64) {
        (
            self.evicted[0].load(Ordering::Relaxed),
            self.evicted[1].load(Ordering::Relaxed),
        )
    }

    /// Takes a ticket for a request that is starting. Tickets are unique and increasing, so two
    /// reads of one resource that answer out of order are told apart.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.seq.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Whether a record is younger than the store's TTL, and was made after the last
    /// [`Store::forget_all`].
    pub fn is_fresh(&self, record: &Record) -> bool {
        record.age() < self.ttl && record.epoch() == self.epoch.load(Ordering::Acquire)
    }

    /// Forgets everything learned until now (a reload changed which route, key or mode a
    /// request gets: what was learned under the old routes may be stale under the new ones).
    /// Records made before are treated as expired from now on (never used to decide) and are
    /// invalidated; exchanges of requests that started before teach nothing, even when they
    /// answer later (their state may be the old routes'). A record being made concurrently
    /// carries the old epoch, or sees the new ticket bound: either way it is not used.
    pub fn forget_all(&self) {
        let ticket = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.forgotten.fetch_max(ticket, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    /// The fast path: calls `f` with the index slot of `who`'s partition of `key`, without
    /// locking and without allocating. The slot may belong to another key or principal with the
    /// same hash (then this partition is not in the store, as each hash has one slot) and may be
    /// past its TTL (moka evicts lazily): before refusing anything on its account, take the exact
    /// state with [`Slot::entry_for`] and check [`Store::is_fresh`]. Forwarding on its account
    /// is always safe: an unknown resource is forwarded too.
    #[inline]
    pub fn with<R>(
        &self,
        key: &ResourceKey<'_>,
        who: Principal,
        f: impl FnOnce(Option<&Slot>) -> R,
    ) -> R {
        let hash = slot_hash(key.hash_with(&self.hash_state), who);
        f(self.index.pin().get(&hash))
    }

    /// The fingerprint function of this store's summaries.
    #[inline]
    pub fn prints(&self) -> &Prints {
        &self.prints
    }

    /// The fresh state of `who`'s partition of a resource, if any (clones an `Arc`: for slower
    /// paths).
    pub fn get(&self, key: &ResourceKey<'_>, who: Principal) -> Option<View> {
        let hash = slot_hash(key.hash_with(&self.hash_state), who);
        self.index
            .pin()
            .get(&hash)
            .filter(|s| s.entry_for(key, who).is_some() && self.is_fresh(s.record()))
            .map(Slot::view)
    }

    /// Learns from one upstream exchange of a request that took `ticket` when it started.
    pub fn learn(&self, key: &ResourceKey<'_>, ticket: Ticket, obs: &Observation<'_>) {
        let hash = key.hash_with(&self.hash_state);
        if ticket.0 < self.forgotten.load(Ordering::SeqCst) {
            // Started before `forget_all` (under other routes, perhaps): teaches nothing. A
            // write still dates the resource, so that a read that started before it answered
            // cannot create state from what it replaced.
            if obs.method.changes_state() {
                let stamp = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
                self.removed[(hash as usize) % REMOVED_SLOTS].fetch_max(stamp, Ordering::AcqRel);
            }
            return;
        }
        let who = obs.principal;
        let stamp = if obs.method.changes_state() {
            self.seq.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            0
        };
        // What a read teaches is dated by the store's clock when it is learned (a read's
        // ticket only says when it started): a write that starts later knows of it.
        let clock = if stamp > 0 {
            stamp
        } else {
            self.seq.load(Ordering::Acquire)
        };
        let floor = &self.removed[(hash as usize) % REMOVED_SLOTS];
        if stamp > 0 {
            // Whatever happens to the record later (expiry, eviction), a read that started
            // before this write cannot create state for any caller (one without a partition
            // included: its own index slot would not show the expired record).
            floor.fetch_max(stamp, Ordering::AcqRel);
        }
        // moka hides expired entries before its listener runs; the index still has them (found
        // here through this principal's slot).
        if let Some(r) = self
            .index
            .pin()
            .get(&slot_hash(hash, who))
            .map(Slot::record)
            .filter(|r| !self.is_fresh(r))
        {
            floor.fetch_max(r.last_stamp(), Ordering::AcqRel);
        }
        self.cache.entry(hash).and_compute_with(|old| {
            // Read before the ticket bound is checked again: a `forget_all` that ran since either
            // changed the epoch this record will carry (it is then not fresh) or is seen here.
            let epoch = self.epoch.load(Ordering::SeqCst);
            if ticket.0 < self.forgotten.load(Ordering::SeqCst) {
                return Op::Nop;
            }
            let raw = old.map(|e| e.into_value());
            // A record of another key under the same hash, or past its TTL, is not this one's;
            // but a read older than that record's last write must not re-create it.
            if let Some(r) = raw.as_ref().filter(|r| !self.is_fresh(r)) {
                floor.fetch_max(r.last_stamp(), Ordering::AcqRel);
            }
            let old = raw.as_ref().filter(|r| r.is_for(key) && self.is_fresh(r));
            if old.is_none()
                && !obs.method.changes_state()
                && ticket.0 < floor.load(Ordering::Acquire)
            {
                return Op::Nop;
            }
            let confirmed_since = old.map_or(0, |r| r.read_since());
            let parts =
                match apply_parts(old.map(|r| &r.parts), confirmed_since, obs, ticket, clock) {
                    Change::None => return Op::Nop,
                    Change::New(parts) => parts,
                    Change::Confirmed(since) => {
                        let Some(r) = old else { return Op::Nop };
                        // A read that only confirms its partition moves the confirmation stamp in
                        // place: no new record, no index or moka write; unless the record is past
                        // half its TTL, so that a state reads keep confirming is renewed (as any
                        // learned state, it lives `ttl` after the last exchange that showed it).
                        if r.age() < self.ttl / 2 {
                            r.confirm(since);
                            std::sync::atomic::fence(Ordering::SeqCst);
                            // moka may be evicting the record concurrently (its listener runs
                            // outside this closure's critical section): if the index no longer
                            // holds it, the bump would be lost, so write a new record instead.
                            let held = self
                                .index
                                .pin()
                                .get(&slot_hash(hash, who))
                                .is_some_and(|s| s.holds(r));
                            if held {
                                return Op::Nop;
                            }
                        }
                        let mut parts = r.parts.clone();
                        for p in parts.parts.iter_mut().filter(|p| p.principal == who) {
                            p.entry.current_since = p.entry.current_since.max(since);
                        }
                        parts
                    }
                };
            let record = Arc::new(Record::new(key, parts, epoch));
            // Confirmations counted in the replaced record still order later reads.
            if let Some(o) = old {
                record.confirm(o.read_since());
            }
            let index = self.index.pin();
            for (i, p) in record.parts.parts.iter().enumerate() {
                let slot = Slot::new(record.clone(), i, &self.prints);
                index.insert(slot_hash(hash, p.principal), slot);
            }
            // Slots of the record replaced (this key's, another key's under the same hash, or
            // an expired one) that the new record does not overwrite: moka's listener is not
            // told of replacements.
            for p in raw.iter().flat_map(|r| r.parts.parts.iter()) {
                if record.part(p.principal).is_none() {
                    let _ = index.remove_if(&slot_hash(hash, p.principal), |_, s| {
                        raw.as_ref().is_some_and(|r| s.holds(r))
                    });
                }
            }
            Op::Put(record)
        });
    }

    /// Everything held about a resource, every partition (for the admin listener's `/store`), if
    /// it is held and fresh.
    pub fn record_of(&self, key: &ResourceKey<'_>) -> Option<Arc<Record>> {
        self.cache
            .get(&key.hash_with(&self.hash_state))
            .filter(|r| r.is_for(key) && self.is_fresh(r))
    }

    /// Forgets everything held about a resource (the admin listener's `DELETE /store`); `true`
    /// when something was held. Goes through moka's removal, so the index and the removal
    /// watermark are updated as for an eviction: a read that started before cannot bring it back.
    pub fn forget(&self, key: &ResourceKey<'_>) -> bool {
        let hash = key.hash_with(&self.hash_state);
        match self.cache.get(&hash) {
            Some(r) if r.is_for(key) => {
                self.cache.invalidate(&hash);
                self.cache.run_pending_tasks();
                true
            }
            _ => false,
        }
    }

    /// Finishes the work the store's structures defer: moka's pending evictions, and an index
    /// resize in progress. papaya resizes incrementally (a write that meets the part of the old
    /// table already copied copies a share more: no write ever stalls on a whole-table copy), and
    /// until a resize completes a lookup may search both tables (a lookup of an unknown resource
    /// took about twice as long in `benches/decision` at 1 million resources). In a store that
    /// is mostly read, writes alone may take long to finish one, so every metrics scrape settles
    /// the store on a blocking thread (`app`), off the request path; the benches settle before
    /// measuring, so that they measure the steady state. One settle runs at a time: a call while
    /// another runs returns at once. It may take long (the rest of a resize of a large index).
    pub fn settle(&self) {
        if self.settling.swap(true, Ordering::AcqRel) {
            return;
        }
        self.cache.run_pending_tasks();
        // Iterating a papaya map completes any resize in progress first.
        let _ = self.index.pin().iter().next();
        self.settling.store(false, Ordering::Release);
    }

    /// Number of resources held (after pending evictions are applied; for metrics).
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Slots of the removal watermark (collisions only make reads more cautious).
const REMOVED_SLOTS: usize = 4096;

/// Index entries a write that helps an index resize copies (papaya's default is 64). A write
/// helps when its probe meets the part of the old table already copied, so with 64 a resize of a
/// large table needs hundreds of thousands of writes to finish, and lookups are slower until it
/// does ([`Store::settle`]); with 1,024, 16 times fewer. Copying 1,024 entries costs the write
/// that helps microseconds.
const INDEX_RESIZE_CHUNK: usize = 1024;

/// The census's bound when none is configured (the default of `store.census_max_bytes`).
const DEFAULT_CENSUS_BYTES: u64 = 16 << 20;

/// A per-process random seed, so that key hashes cannot be precomputed by clients; `n` tells
/// the store's independent hash functions apart.
fn rand_seed(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.write_u64(n);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::RouteId;
    use crate::precondition::{EntityTag, Existence, Knowledge, Method};

    fn obs(method: Method, status: u16, etag: Option<&'static str>) -> Observation<'static> {
        Observation {
            etag: etag.map(str::as_bytes),
            complete: true,
            ..Observation::of(method, Outcome::Status(status))
        }
    }

    const P0: Principal = Principal::SHARED;

    fn store() -> Store {
        Store::new(100, Duration::from_secs(60))
    }

    /// Tests name resources by path on route 0, host "h".
    fn k(path: &str) -> ResourceKey<'_> {
        ResourceKey {
            route: RouteId(0),
            host: "h",
            path,
        }
    }

    fn tag(s: &str) -> EntityTag<'_> {
        EntityTag::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn get_learns_current_and_a_new_tag_supersedes_it() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.is_current_strong(&tag("\"v1\"")));
        assert_eq!(e.existence, Existence::Exists);
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v2\"")));
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.was_replaced(&tag("\"v1\"")));
        assert!(e.is_current_strong(&tag("\"v2\"")));
    }

    #[test]
    fn forget_all_distrusts_what_was_learned_and_lets_later_exchanges_teach() {
        let s = store();
        let before = s.ticket();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 204, Some("\"v2\"")));
        assert!(s.get(&k("/a"), P0).is_some());
        s.forget_all();
        assert!(
            s.get(&k("/a"), P0).is_none(),
            "nothing learned before is used"
        );
        // A read that started before the forgotten write cannot bring its state back...
        s.learn(&k("/a"), before, &obs(Method::Get, 200, Some("\"v1\"")));
        assert!(s.get(&k("/a"), P0).is_none());
        // ...one that starts now teaches from scratch (v1 is not remembered as replaced).
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v3\"")));
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.is_current_strong(&tag("\"v3\"")));
        assert!(!e.was_replaced(&tag("\"v1\"")));
        // A write that started before another forget teaches nothing, but a read that started
        // before that write answered cannot create state from what it replaced.
        let old_write = s.ticket();
        s.forget_all();
        let read = s.ticket();
        s.learn(&k("/a"), old_write, &obs(Method::Put, 204, Some("\"v4\"")));
        assert!(s.get(&k("/a"), P0).is_none());
        s.learn(&k("/a"), read, &obs(Method::Get, 200, Some("\"v3\"")));
        assert!(
            s.get(&k("/a"), P0).is_none(),
            "the read may show what the write replaced"
        );
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v4\"")));
        assert!(s.get(&k("/a"), P0).is_some());
    }

    #[test]
    fn vary_keeps_several_current_tags() {
        let s = store();
        let mut o = obs(Method::Get, 200, Some("\"gz\""));
        o.vary = true;
        s.learn(&k("/a"), s.ticket(), &o);
        o.etag = Some(b"\"id\"");
        s.learn(&k("/a"), s.ticket(), &o);
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.is_current_strong(&tag("\"gz\"")) && e.is_current_strong(&tag("\"id\"")));
        assert!(e.replaced.is_empty());
    }

    #[test]
    fn a_confirming_read_updates_in_place_and_still_orders_reads() {
        let s = store();
        let (t0, ta, tb) = (s.ticket(), s.ticket(), s.ticket());
        s.learn(&k("/a"), t0, &obs(Method::Get, 200, Some("\"v1\"")));
        let first = s.get(&k("/a"), P0).unwrap();
        // A later read showing the same state: no new record.
        s.learn(&k("/a"), tb, &obs(Method::Get, 200, Some("\"v1\"")));
        assert!(std::ptr::eq(
            first.record(),
            s.get(&k("/a"), P0).unwrap().record()
        ));
        // A read that started before the confirming one answers late with another tag: it may
        // show an older representation, so it teaches nothing.
        s.learn(&k("/a"), ta, &obs(Method::Get, 200, Some("\"v0\"")));
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.is_current_strong(&tag("\"v1\"")));
        assert!(!e.was_replaced(&tag("\"v1\"")));
        // A newer read with a new tag is learned.
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v2\"")));
        assert!(s.get(&k("/a"), P0).unwrap().was_replaced(&tag("\"v1\"")));
    }

    #[test]
    fn reads_that_keep_confirming_a_state_keep_it_alive() {
        let s = Store::new(10, Duration::from_millis(400));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v2\"")));
        s.learn(&k("/b"), s.ticket(), &obs(Method::Get, 200, Some("\"b1\"")));
        s.learn(&k("/b"), s.ticket(), &obs(Method::Get, 200, Some("\"b2\"")));
        s.learn(&k("/c"), s.ticket(), &obs(Method::Get, 404, None));
        std::thread::sleep(Duration::from_millis(250)); // past half the TTL
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v2\"")));
        s.learn(&k("/b"), s.ticket(), &obs(Method::Get, 304, Some("\"b2\"")));
        s.learn(&k("/c"), s.ticket(), &obs(Method::Get, 404, None));
        std::thread::sleep(Duration::from_millis(250)); // past the TTL since the last change
        let e = s.get(&k("/a"), P0).expect("renewed by a confirming 200");
        assert!(e.was_replaced(&tag("\"v1\"")));
        assert!(e.is_current_strong(&tag("\"v2\"")));
        let e = s.get(&k("/b"), P0).expect("renewed by a confirming 304");
        assert!(e.was_replaced(&tag("\"b1\"")));
        assert!(e.is_current_strong(&tag("\"b2\"")));
        let e = s.get(&k("/c"), P0).expect("renewed by a repeated 404");
        assert_eq!(e.existence, Existence::Absent);
    }

    #[test]
    fn revert_leaves_the_replaced_set() {
        let s = store();
        for t in ["\"v1\"", "\"v2\"", "\"v1\""] {
            s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some(t)));
        }
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(!e.was_replaced(&tag("\"v1\"")));
        assert!(e.was_replaced(&tag("\"v2\"")));
    }

    #[test]
    fn a_write_with_a_tag_supersedes_and_one_without_makes_the_tag_unknown() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        // A 2xx without a tag may have left the representation as it was (a no-op PATCH, an
        // idempotent retry): nothing is proven replaced.
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 204, None));
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(!e.was_replaced(&tag("\"v1\"")));
        assert!(!e.current_known());
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 200, Some("\"v3\"")));
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.is_current_strong(&tag("\"v3\"")));
        assert!(e.was_replaced(&tag("\"v1\"")));
        // An encoding of the same representation stays current.
        s.learn(
            &k("/a"),
            s.ticket(),
            &obs(Method::Put, 200, Some("W/\"v3\"")),
        );
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(!e.was_replaced(&tag("\"v3\"")));
        assert!(e.is_current_strong(&tag("\"v3\"")));
    }

    #[test]
    fn overlapping_writes_learned_out_of_order_keep_what_each_proved() {
        // Two writes in flight at once: A names "v1" (the origin answers "v2"), B names "v2"
        // (answered "v3"), and B's answer is learned first.
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        let (ta, tb) = (s.ticket(), s.ticket());
        let write = |named: &'static str, etag: &'static str| Observation {
            named: Some(tag(named)),
            ..obs(Method::Put, 200, Some(etag))
        };
        s.learn(&k("/a"), tb, &write("\"v2\"", "\"v3\""));
        s.learn(&k("/a"), ta, &write("\"v1\"", "\"v2\""));
        let e = s.get(&k("/a"), P0).unwrap();
        // Their order at the origin is unknown: nothing is current; but each named tag is gone,
        // and A's late answer does not bring back the "v2" that B replaced.
        assert!(!e.current_known());
        assert!(e.was_replaced(&tag("\"v1\"")));
        assert!(e.was_replaced(&tag("\"v2\"")));
        assert!(!e.was_replaced(&tag("\"v3\"")));
    }

    #[test]
    fn a_write_answered_with_the_tag_it_named_replaces_nothing() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        let same = Observation {
            named: Some(tag("\"v1\"")),
            ..obs(Method::Put, 200, Some("\"v1\""))
        };
        s.learn(&k("/a"), s.ticket(), &same);
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.is_current_strong(&tag("\"v1\"")));
        assert!(!e.was_replaced(&tag("\"v1\"")));
    }

    #[test]
    fn delete_and_404_mean_absent() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Delete, 204, None));
        let e = s.get(&k("/a"), P0).unwrap();
        assert_eq!(e.existence, Existence::Absent);
        assert!(e.was_replaced(&tag("\"v1\"")));
        s.learn(&k("/b"), s.ticket(), &obs(Method::Get, 404, None));
        assert_eq!(s.get(&k("/b"), P0).unwrap().existence, Existence::Absent);
    }

    #[test]
    fn broken_or_5xx_write_forgets_current() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 503, None));
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(!e.current_known());
        assert_eq!(e.existence, Existence::Unknown);
        assert!(!e.was_replaced(&tag("\"v1\""))); // not proven replaced
        let mut broken = obs(Method::Delete, 0, None);
        broken.outcome = Outcome::Broken;
        s.learn(&k("/b"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        s.learn(&k("/b"), s.ticket(), &broken);
        assert!(!s.get(&k("/b"), P0).unwrap().current_known());
    }

    #[test]
    fn in_flight_get_does_not_roll_back_a_completed_write() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        let get_ticket = s.ticket(); // a GET starts...
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 200, Some("\"v2\""))); // a write completes
        s.learn(&k("/a"), get_ticket, &obs(Method::Get, 200, Some("\"v1\""))); // ...the GET answers
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.is_current_strong(&tag("\"v2\"")));
        assert!(e.was_replaced(&tag("\"v1\"")));
        // A GET that started after the write may show a genuine revert.
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        assert!(s
            .get(&k("/a"), P0)
            .unwrap()
            .is_current_strong(&tag("\"v1\"")));
    }

    #[test]
    fn concurrent_writes_leave_current_unknown() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        let t1 = s.ticket();
        let t2 = s.ticket();
        s.learn(&k("/a"), t1, &obs(Method::Put, 200, Some("\"v2\"")));
        s.learn(&k("/a"), t2, &obs(Method::Put, 200, Some("\"v3\"")));
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(!e.current_known());
        assert!(!e.was_replaced(&tag("\"v2\"")));
        assert!(e.was_replaced(&tag("\"v1\"")));
    }

    #[test]
    fn last_modified_is_clamped_to_date_and_follows_the_current_representation() {
        let s = store();
        let mut o = obs(Method::Get, 200, None);
        o.last_modified = Some(b"Sun, 06 Nov 1994 08:49:40 GMT");
        o.date = Some(b"Sun, 06 Nov 1994 08:49:37 GMT");
        s.learn(&k("/a"), s.ticket(), &o);
        assert_eq!(
            s.get(&k("/a"), P0).unwrap().last_modified,
            Some(784_111_777)
        );
        // A later read showing an older date (another server, a restored version): the current
        // representation's date is what If-Unmodified-Since is compared with.
        o.last_modified = Some(b"Sun, 06 Nov 1994 08:00:00 GMT");
        o.date = None;
        s.learn(&k("/a"), s.ticket(), &o);
        assert_eq!(
            s.get(&k("/a"), P0).unwrap().last_modified,
            Some(784_108_800)
        );
        // With Vary, the earliest of the variants' dates.
        o.vary = true;
        o.last_modified = Some(b"Sun, 06 Nov 1994 09:00:00 GMT");
        s.learn(&k("/a"), s.ticket(), &o);
        assert_eq!(
            s.get(&k("/a"), P0).unwrap().last_modified,
            Some(784_108_800)
        );
        // A completed write moves it forward.
        let mut w = obs(Method::Put, 200, None);
        w.last_modified = Some(b"Sun, 06 Nov 1994 10:00:00 GMT");
        s.learn(&k("/a"), s.ticket(), &w);
        assert_eq!(
            s.get(&k("/a"), P0).unwrap().last_modified,
            Some(784_116_000)
        );
    }

    #[test]
    fn replaced_set_is_bounded() {
        let s = store();
        for i in 0..(MAX_REPLACED + 3) {
            let t: &'static str = Box::leak(format!("\"v{i}\"").into_boxed_str());
            s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some(t)));
        }
        let e = s.get(&k("/a"), P0).unwrap();
        assert_eq!(e.replaced.len(), MAX_REPLACED);
        assert!(!e.was_replaced(&tag("\"v0\""))); // fell out: unknown again
    }

    #[test]
    fn evicted_records_leave_the_lock_free_index() {
        let s = Store::new(10, Duration::from_secs(60));
        for i in 0..200 {
            s.learn(
                &k(&format!("/r{i}")),
                s.ticket(),
                &obs(Method::Get, 200, Some("\"v\"")),
            );
        }
        s.len(); // runs moka's pending maintenance, which notifies evictions
        let indexed = (0..200)
            .filter(|i| s.get(&k(&format!("/r{i}")), P0).is_some())
            .count();
        assert!(
            indexed <= 10,
            "index holds {indexed} records for a capacity of 10"
        );
    }

    #[test]
    fn records_past_their_ttl_are_not_used() {
        let s = Store::new(10, Duration::from_millis(30));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v\"")));
        assert!(s.get(&k("/a"), P0).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&k("/a"), P0).is_none());
        let key = k("/a");
        assert!(s.with(&key, P0, |r| r.is_none_or(|r| !s.is_fresh(r.record()))));
    }

    #[test]
    fn resource_keys_compare_hosts_case_insensitively() {
        let a = ResourceKey {
            route: RouteId(1),
            host: "API.example.com",
            path: "/x?y=1",
        };
        let s = store();
        s.learn(&a, s.ticket(), &obs(Method::Get, 200, Some("\"v\"")));
        let r = s.get(&a, P0).expect("learned");
        let r = r.record();
        assert!(r.is_for(&a));
        assert!(!r.is_for(&ResourceKey {
            path: "/x?y=2",
            ..a
        }));
        assert!(!r.is_for(&ResourceKey {
            route: RouteId(2),
            ..a
        }));
        let lower = ResourceKey {
            host: "api.example.com",
            ..a
        };
        assert!(
            s.with(&lower, P0, |r| r.is_some()),
            "same resource whatever the host's case"
        );
        assert!(s
            .get(&lower, P0)
            .is_some_and(|l| std::ptr::eq(l.record(), r)));
    }

    #[test]
    fn an_older_read_answering_late_does_not_retire_a_newer_tag() {
        let s = store();
        let slow = s.ticket(); // a slow GET starts (it will show v1)
        let fast = s.ticket(); // a later GET shows v2 (a write bypassed precond in between)
        s.learn(&k("/a"), fast, &obs(Method::Get, 200, Some("\"v2\"")));
        s.learn(&k("/a"), slow, &obs(Method::Get, 200, Some("\"v1\"")));
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.is_current_strong(&tag("\"v2\"")));
        assert!(!e.was_replaced(&tag("\"v2\"")));
    }

    #[test]
    fn weakly_equal_variants_without_vary_stay_current() {
        let s = store();
        s.learn(
            &k("/a"),
            s.ticket(),
            &obs(Method::Get, 200, Some("\"abc\"")),
        );
        s.learn(
            &k("/a"),
            s.ticket(),
            &obs(Method::Get, 200, Some("W/\"abc\"")),
        );
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.is_current_strong(&tag("\"abc\"")));
        assert!(!e.was_replaced(&tag("\"abc\"")));
    }

    #[test]
    fn accepted_or_post_responses_prove_no_replacement() {
        for (m, status) in [(Method::Post, 200), (Method::Put, 202), (Method::Post, 201)] {
            let s = store();
            s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
            s.learn(&k("/a"), s.ticket(), &obs(m, status, None));
            let e = s.get(&k("/a"), P0).unwrap();
            assert!(!e.was_replaced(&tag("\"v1\"")), "{m:?} {status}");
            assert!(!e.current_known(), "{m:?} {status}");
        }
    }

    #[test]
    fn a_write_without_last_modified_makes_the_current_date_stale() {
        let s = store();
        let mut o = obs(Method::Get, 200, Some("\"v1\""));
        o.last_modified = Some(b"Sun, 06 Nov 1994 08:49:37 GMT");
        s.learn(&k("/a"), s.ticket(), &o);
        assert!(!s.get(&k("/a"), P0).unwrap().lm_stale);
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 200, Some("\"v2\"")));
        let e = s.get(&k("/a"), P0).unwrap();
        assert!(e.lm_stale && e.current_lm.is_none());
        assert_eq!(
            e.last_modified,
            Some(784_111_777),
            "guard keeps the latest date seen"
        );
    }

    #[test]
    fn a_read_older_than_an_expired_records_last_write_does_not_recreate_it() {
        let s = Store::new(10, Duration::from_millis(30));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        let slow = s.ticket();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 200, Some("\"v2\"")));
        std::thread::sleep(Duration::from_millis(60)); // the record expires
        s.learn(&k("/a"), slow, &obs(Method::Get, 200, Some("\"v1\"")));
        assert!(
            s.get(&k("/a"), P0).is_none(),
            "the stale read did not bring v1 back"
        );
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v2\"")));
        assert!(s
            .get(&k("/a"), P0)
            .unwrap()
            .is_current_strong(&tag("\"v2\"")));
    }

    fn as_(
        who: u64,
        method: Method,
        status: u16,
        etag: Option<&'static str>,
    ) -> Observation<'static> {
        Observation {
            principal: Principal(who),
            ..obs(method, status, etag)
        }
    }

    /// A confirmation stored in one record orders reads after another caller rebuilds it.
    #[test]
    fn a_confirmation_survives_another_callers_rebuild() {
        let s = store();
        s.learn(
            &k("/a"),
            s.ticket(),
            &as_(1, Method::Get, 200, Some("\"v1\"")),
        );
        let (slow, confirm) = (s.ticket(), s.ticket());
        s.learn(&k("/a"), confirm, &as_(1, Method::Get, 200, Some("\"v1\"")));
        s.learn(
            &k("/a"),
            s.ticket(),
            &as_(2, Method::Get, 200, Some("\"v1\"")),
        );
        s.learn(&k("/a"), slow, &as_(1, Method::Get, 200, Some("\"v0\"")));
        let e = s.get(&k("/a"), Principal(1)).unwrap();
        assert!(
            e.is_current_strong(&tag("\"v1\"")),
            "the slow read taught nothing"
        );
        assert!(!e.was_replaced(&tag("\"v1\"")));
    }

    /// A caller without a partition, whose read started before a write, cannot re-create the
    /// older state once the record has expired.
    #[test]
    fn a_stale_read_cannot_create_a_partition_after_expiry() {
        let s = Store::new(10, Duration::from_millis(40));
        s.learn(
            &k("/a"),
            s.ticket(),
            &as_(1, Method::Get, 200, Some("\"v1\"")),
        );
        let slow = s.ticket();
        s.learn(
            &k("/a"),
            s.ticket(),
            &as_(2, Method::Put, 200, Some("\"v2\"")),
        );
        std::thread::sleep(Duration::from_millis(80));
        s.learn(&k("/a"), slow, &as_(3, Method::Get, 200, Some("\"v1\"")));
        assert!(s.get(&k("/a"), Principal(3)).is_none());
    }

    #[test]
    fn invalid_etag_is_not_learned() {
        let s = store();
        s.learn(
            &k("/a"),
            s.ticket(),
            &obs(Method::Get, 200, Some("unquoted")),
        );
        let e = s.get(&k("/a"), P0).unwrap();
        assert_eq!(e.current, Some(Vec::new()));
    }
}
