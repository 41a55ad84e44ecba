//! The validator store: what precond has learned about each resource, bounded by moka.
//!
//! Owns: [`Entry`] (one resource's learned state), the learning rules of design §3
//! ([`Store::learn`] applied to an [`Observation`] of an upstream exchange), and the race rule that
//! keeps an in-flight read from rolling the store back.
//!
//! Invariants:
//! - Entries are immutable snapshots behind `Arc`; a reader never sees a half-applied update, and
//!   updates to one key are applied atomically (moka `and_compute_with`).
//! - A tag is never both current and replaced.
//! - `replaced` holds at most [`MAX_REPLACED`] tags (oldest dropped first: a dropped tag becomes
//!   unknown, so requests carrying it are forwarded); `current` at most [`MAX_CURRENT`].
//! - Race rule: every request takes a [`Ticket`] when it starts. A write outcome stamps the entry
//!   with a new sequence number; a read whose ticket predates that stamp teaches nothing (its
//!   response may show the representation the write replaced).
//! - `last_modified` only moves forward and is never later than the response's `Date`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::Op;

use crate::precondition::date::{parse_http_date, Timestamp};
use crate::precondition::{EntityTag, Existence, Knowledge, Method};
use crate::summary::{Prints, Summary};

/// Most tags remembered as replaced per resource.
pub const MAX_REPLACED: usize = 8;
/// Most tags held as current at once (several only with `Vary`).
pub const MAX_CURRENT: usize = 4;

/// An owned entity-tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    weak: bool,
    opaque: Box<[u8]>,
}

impl Tag {
    /// Copies a borrowed tag.
    pub fn from_ref(t: &EntityTag<'_>) -> Tag {
        Tag {
            weak: t.is_weak(),
            opaque: t.opaque().into(),
        }
    }

    /// Borrows it back.
    #[inline]
    pub fn as_ref(&self) -> EntityTag<'_> {
        // `opaque` came from a parsed `EntityTag` (the only constructor is `from_ref`).
        EntityTag::from_trusted(self.weak, &self.opaque)
    }
}

/// Response header fields a 304 must repeat (RFC 9110 §15.4.5), kept for `enforce` routes.
pub const META_HEADERS: [&str; 4] = ["cache-control", "expires", "vary", "content-location"];

/// Values of [`META_HEADERS`], in that order.
pub type Meta = [Option<Box<[u8]>>; 4];

/// One resource's learned state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Whether the resource exists.
    pub existence: Existence,
    /// Current tags; `None` when unknown, empty when known to have no ETag.
    pub current: Option<Vec<Tag>>,
    /// Tags seen replaced, oldest first.
    pub replaced: Vec<Tag>,
    /// Latest `Last-Modified` seen.
    pub last_modified: Option<Timestamp>,
    /// Store sequence number of the last write outcome applied.
    pub changed_at: u64,
    /// The current tag was synthesised by precond (the origin never issued it).
    pub synthetic: bool,
    /// The current representation's `Last-Modified` (`last_modified` is the latest ever seen).
    pub current_lm: Option<Timestamp>,
    /// A write completed whose response carried no `Last-Modified`: `current_lm` may be older
    /// than the resource.
    pub lm_stale: bool,
    /// Ticket or stamp of the exchange that set `current`: an older read never overrides it.
    /// In a stored record, later confirming reads are counted in the record, not here.
    pub(crate) current_since: u64,
    /// Header fields of the last 200, for building 304s.
    pub meta: Option<Box<Meta>>,
}

impl Entry {
    pub(crate) fn blank() -> Entry {
        Entry {
            existence: Existence::Unknown,
            current: None,
            replaced: Vec::new(),
            last_modified: None,
            changed_at: 0,
            synthetic: false,
            current_lm: None,
            lm_stale: false,
            current_since: 0,
            meta: None,
        }
    }

    fn unreplace(&mut self, tag: &Tag) {
        self.replaced.retain(|r| r != tag);
    }

    fn push_replaced(&mut self, tag: Tag) {
        if self.replaced.contains(&tag) {
            return;
        }
        if self.replaced.len() == MAX_REPLACED {
            self.replaced.remove(0);
        }
        self.replaced.push(tag);
    }

    /// Moves every current tag to `replaced`, except `keep`.
    fn supersede_current(&mut self, keep: Option<&Tag>) {
        for t in self.current.take().unwrap_or_default() {
            if Some(&t) != keep {
                self.push_replaced(t);
            }
        }
    }

    fn note_last_modified(&mut self, lm: Option<Timestamp>) {
        if let Some(lm) = lm {
            self.last_modified = Some(self.last_modified.map_or(lm, |old| old.max(lm)));
        }
    }

    /// The current tags, when known.
    pub fn current_tags(&self) -> impl Iterator<Item = EntityTag<'_>> {
        self.current.iter().flatten().map(Tag::as_ref)
    }
}

impl Knowledge for Entry {
    fn existence(&self) -> Existence {
        self.existence
    }
    fn current_known(&self) -> bool {
        self.current.is_some()
    }
    fn is_current_strong(&self, tag: &EntityTag<'_>) -> bool {
        self.current_tags().any(|c| c.strong_eq(tag))
    }
    fn is_current_weak(&self, tag: &EntityTag<'_>) -> bool {
        self.current_tags().any(|c| c.weak_eq(tag))
    }
    fn was_replaced(&self, tag: &EntityTag<'_>) -> bool {
        self.replaced.iter().any(|r| r.as_ref() == *tag)
    }
    fn last_modified(&self) -> Option<Timestamp> {
        self.last_modified
    }
}

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
    /// Values of [`META_HEADERS`] in a 200, when they are to be kept.
    pub meta: Option<[Option<&'a [u8]>; 4]>,
}

impl Observation<'_> {
    /// `Last-Modified`, ignored when invalid and clamped to `Date` when later (RFC 9110 §8.8.2.1).
    fn last_modified(&self) -> Option<Timestamp> {
        let lm = parse_http_date(self.last_modified?)?;
        match self.date.and_then(parse_http_date) {
            Some(date) if lm > date => Some(date),
            _ => Some(lm),
        }
    }

    fn etag(&self) -> Option<Tag> {
        EntityTag::parse(self.etag?).as_ref().map(Tag::from_ref)
    }
}

/// A request's place in the store's history, taken when the request starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

/// Applies one observation to a resource's state. Returns `None` when nothing is to change.
/// `confirmed_since` is the latest ticket of a read that confirmed `old` after it was stored
/// (it counts as `old.current_since` when later; 0 when there is none).
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
        if !obs.method.is_write() {
            return None;
        }
        // A write that broke may or may not have been applied: forget what we believed.
        e.existence = Existence::Unknown;
        e.current = None;
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
        match status {
            200 | 203 | 206 => {
                e.existence = Existence::Exists;
                e.current_since = ticket.0;
                match obs.etag() {
                    Some(tag) => {
                        e.unreplace(&tag);
                        if obs.vary {
                            let cur = e.current.get_or_insert_with(Vec::new);
                            if !cur.contains(&tag) {
                                if cur.len() == MAX_CURRENT {
                                    cur.remove(0);
                                }
                                cur.push(tag);
                            }
                        } else {
                            // Tags equal under weak comparison are encodings of the same
                            // representation (W/"x" for gzip, "x" for identity, without Vary):
                            // they stay current rather than being retired.
                            let (mut cur, retired): (Vec<Tag>, Vec<Tag>) = e
                                .current
                                .take()
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|t| *t != tag)
                                .partition(|t| t.as_ref().weak_eq(&tag.as_ref()));
                            for t in retired {
                                e.push_replaced(t);
                            }
                            cur.truncate(MAX_CURRENT - 1);
                            cur.push(tag);
                            e.current = Some(cur);
                        }
                    }
                    None if obs.vary => e.current = None,
                    None => {
                        e.supersede_current(None);
                        e.current = Some(Vec::new());
                    }
                }
                e.synthetic = obs.synthetic;
                e.current_lm = obs.last_modified();
                e.lm_stale = false;
                if let Some(meta) = obs.meta {
                    e.meta = meta
                        .iter()
                        .any(Option::is_some)
                        .then(|| Box::new(meta.map(|v| v.map(Box::from))));
                }
                e.note_last_modified(obs.last_modified());
            }
            304 => {
                let tag = obs.etag()?;
                e.existence = Existence::Exists;
                e.current_since = ticket.0;
                e.unreplace(&tag);
                let cur = e.current.get_or_insert_with(Vec::new);
                if !cur.contains(&tag) {
                    if cur.len() == MAX_CURRENT {
                        cur.remove(0);
                    }
                    cur.push(tag);
                }
            }
            404 | 410 => {
                e.supersede_current(None);
                e.existence = Existence::Absent;
                e.current = Some(Vec::new());
                e.current_since = ticket.0;
            }
            _ => return None,
        }
        return (old != Some(&e)).then_some(e);
    }
    if !obs.method.is_write() {
        return None;
    }
    let concurrent = e.changed_at > ticket.0;
    // Only a completed replacement or deletion proves that the previous representation is gone;
    // a 202 (maybe never applied), a POST (an action, or a child created elsewhere) or another
    // 2xx only makes the current tag unknown.
    let proves_replacement = matches!(status, 200 | 201 | 204)
        && matches!(obs.method, Method::Put | Method::Patch | Method::Delete);
    match status {
        200..=299 if !proves_replacement => {
            e.synthetic = false;
            e.current = None;
            e.lm_stale = true;
            if obs.method == Method::Delete {
                e.existence = Existence::Unknown;
            }
        }
        200..=299 => {
            let new_tag = obs.etag();
            e.synthetic = false;
            e.current_since = stamp;
            e.current_lm = obs.last_modified();
            e.lm_stale = e.current_lm.is_none();
            if concurrent {
                // Another write finished while this one was in flight: their order at the
                // origin is unknown, so neither result is trusted as current.
                e.current = None;
            } else {
                e.supersede_current(new_tag.as_ref());
                e.current = new_tag.clone().map(|t| vec![t]);
            }
            if let Some(t) = &new_tag {
                e.unreplace(t);
            }
            match obs.method {
                Method::Delete => {
                    e.existence = Existence::Absent;
                    e.current = Some(Vec::new());
                }
                Method::Put | Method::Patch => e.existence = Existence::Exists,
                _ => {}
            }
            e.note_last_modified(obs.last_modified());
        }
        300..=399 | 412 | 500..=599 => {
            // Invalidate (RFC 9111 §4.4); a 412 carries no representation's validators
            // (RFC 9110 §15.5.13); a 5xx leaves the outcome unknown.
            e.current = None;
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

/// Identifies a resource without allocating: route index, host (compared case-insensitively)
/// and path with query. Its owned form is the key string `"{route}\u{1f}{host}\u{1f}{path}"`
/// with the host in lower case.
#[derive(Clone, Copy, Debug)]
pub struct ResourceKey<'a> {
    /// Route index in the configuration.
    pub route: u32,
    /// Host, as received.
    pub host: &'a str,
    /// Path and query.
    pub path: &'a str,
}

impl<'a> ResourceKey<'a> {
    /// The owned key string.
    pub fn to_key_string(&self) -> String {
        let mut key = String::with_capacity(self.host.len() + self.path.len() + 12);
        key.push_str(&self.route.to_string());
        key.push('\u{1f}');
        key.extend(self.host.chars().map(|c| c.to_ascii_lowercase()));
        key.push('\u{1f}');
        key.push_str(self.path);
        key
    }

    /// Reads a key string back into its parts.
    pub fn parse(key: &'a str) -> Option<ResourceKey<'a>> {
        let mut it = key.splitn(3, '\u{1f}');
        let route = it.next()?.parse().ok()?;
        Some(ResourceKey {
            route,
            host: it.next()?,
            path: it.next()?,
        })
    }

    /// Whether `key` (an owned key string) names this resource.
    pub fn matches(&self, key: &str) -> bool {
        match ResourceKey::parse(key) {
            Some(k) => {
                k.route == self.route
                    && k.path == self.path
                    && k.host.eq_ignore_ascii_case(self.host)
            }
            None => false,
        }
    }

    /// Whether `record` is this resource's (no parsing, no allocation).
    #[inline]
    pub fn matches_record(&self, r: &Record) -> bool {
        let (h, p) = (r.host_at as usize, r.path_at as usize);
        r.route == self.route
            && r.key.get(p..) == Some(self.path)
            && r.key
                .get(h..p.saturating_sub(1))
                .is_some_and(|host| host == self.host || host.eq_ignore_ascii_case(self.host))
    }

    fn hash_with(&self, state: &foldhash::fast::FixedState) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = state.build_hasher();
        h.write_u32(self.route);
        let host = self.host.as_bytes();
        // `fold` rather than `any`: no early exit, so the check is vectorised.
        if host.iter().fold(false, |up, b| up | b.is_ascii_uppercase()) {
            for chunk in host.chunks(64) {
                let mut buf = [0u8; 64];
                for (d, s) in buf.iter_mut().zip(chunk) {
                    *d = s.to_ascii_lowercase();
                }
                h.write(&buf[..chunk.len()]);
            }
        } else {
            for chunk in host.chunks(64) {
                h.write(chunk);
            }
        }
        h.write_u8(0x1f);
        h.write(self.path.as_bytes());
        h.finish()
    }
}

/// What the store holds per resource: its key (to verify a hash match), its learned state, and
/// when it was learned (the fast path checks the TTL itself: moka expires entries lazily).
#[derive(Debug)]
pub struct Record {
    key: Box<str>,
    route: u32,
    /// Byte offsets of the host and of the path in `key`.
    host_at: u32,
    path_at: u32,
    learned_at: std::time::Instant,
    /// Ticket of the latest read that confirmed the entry without changing it (it then
    /// stands for `entry.current_since`, which is the ticket of the read that created it).
    read_since: AtomicU64,
    /// The learned state.
    pub entry: Entry,
}

impl Record {
    /// The latest ticket or stamp that set or confirmed `current`.
    fn current_since(&self) -> u64 {
        self.entry
            .current_since
            .max(self.read_since.load(Ordering::Acquire))
    }

    /// The latest ticket or stamp this record's state depends on.
    fn last_stamp(&self) -> u64 {
        self.entry.changed_at.max(self.current_since())
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
}

type Index = papaya::HashMap<u64, Slot, std::hash::BuildHasherDefault<PassThrough>>;

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
}

impl Store {
    /// A store holding at most `capacity` resources, each forgotten `ttl` after it was last
    /// learned.
    pub fn new(capacity: u64, ttl: Duration) -> Store {
        let index: Arc<Index> = Arc::new(
            papaya::HashMap::builder()
                .hasher(std::hash::BuildHasherDefault::default())
                .build(),
        );
        let evict_from = index.clone();
        let removed: Arc<[AtomicU64]> = (0..REMOVED_SLOTS).map(|_| AtomicU64::new(0)).collect();
        let watermark = removed.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(move |hash: Arc<u64>, record: Arc<Record>, cause| {
                if cause != moka::notification::RemovalCause::Replaced {
                    // Remove, then read the record's stamps: a confirming read that bumps
                    // `read_since` and then still finds the slot is seen here (the fences pair
                    // with the one in `learn`); one that finds it gone writes a new record.
                    let _ = evict_from
                        .pin()
                        .remove_if(&*hash, |_, slot| Arc::ptr_eq(&slot.record, &record));
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
        }
    }

    /// Takes a ticket for a request that is starting. Tickets are unique and increasing, so two
    /// reads of one resource that answer out of order are told apart.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.seq.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Whether a record is younger than the store's TTL.
    pub fn is_fresh(&self, record: &Record) -> bool {
        record.learned_at.elapsed() < self.ttl
    }

    /// The fast path: calls `f` with the index slot holding the key's 64-bit hash, without
    /// locking and without allocating. The slot may belong to another key with the same hash
    /// (then the key's own resource is not in the store, as each hash has one slot) and may be
    /// past its TTL (moka evicts lazily): before refusing anything on its account, compare the key
    /// itself ([`ResourceKey::matches_record`]) and check [`Store::is_fresh`]. Forwarding on its
    /// account is always safe: an unknown resource is forwarded too.
    #[inline]
    pub fn with<R>(&self, key: &ResourceKey<'_>, f: impl FnOnce(Option<&Slot>) -> R) -> R {
        let hash = key.hash_with(&self.hash_state);
        f(self.index.pin().get(&hash))
    }

    /// The fingerprint function of this store's summaries.
    #[inline]
    pub fn prints(&self) -> &Prints {
        &self.prints
    }

    /// The fresh record of a resource, if any (clones an `Arc`: for slower paths).
    pub fn get(&self, key: &str) -> Option<Arc<Record>> {
        let k = ResourceKey::parse(key)?;
        let hash = k.hash_with(&self.hash_state);
        self.index
            .pin()
            .get(&hash)
            .filter(|s| *s.record.key == *key && self.is_fresh(&s.record))
            .map(|s| s.record.clone())
    }

    /// Learns from one upstream exchange of a request that took `ticket` when it started.
    pub fn learn(&self, key: &str, ticket: Ticket, obs: &Observation<'_>) {
        let Some(k) = ResourceKey::parse(key) else {
            return;
        };
        let hash = k.hash_with(&self.hash_state);
        let stamp = if obs.method.is_write() {
            self.seq.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            0
        };
        let floor = &self.removed[(hash as usize) % REMOVED_SLOTS];
        // moka hides expired entries before its listener runs; the index still has them.
        if let Some(r) = self
            .index
            .pin()
            .get(&hash)
            .map(|s| &s.record)
            .filter(|r| !self.is_fresh(r))
        {
            floor.fetch_max(r.last_stamp(), Ordering::AcqRel);
        }
        self.cache.entry(hash).and_compute_with(|old| {
            let old = old.map(|e| e.into_value());
            // A record of another key under the same hash, or past its TTL, is not this one's;
            // but a read older than that record's last write must not re-create it.
            if let Some(r) = old.as_ref().filter(|r| !self.is_fresh(r)) {
                floor.fetch_max(r.last_stamp(), Ordering::AcqRel);
            }
            let old = old.filter(|r| *r.key == *key && self.is_fresh(r));
            if old.is_none() && !obs.method.is_write() && ticket.0 < floor.load(Ordering::Acquire) {
                return Op::Nop;
            }
            let confirmed_since = old.as_deref().map_or(0, Record::current_since);
            match apply(
                old.as_deref().map(|r| &r.entry),
                confirmed_since,
                obs,
                ticket,
                stamp,
            ) {
                Some(mut entry) => {
                    if let Some(r) = old.as_deref() {
                        // A read that only confirms the state moves `current_since` in place:
                        // no new record, no index or moka write; unless the record is past half
                        // its TTL, so that a state reads keep confirming is renewed (as any
                        // learned state, it lives `ttl` after the last exchange that showed it).
                        let since = entry.current_since;
                        entry.current_since = r.entry.current_since;
                        if entry == r.entry && r.learned_at.elapsed() < self.ttl / 2 {
                            r.read_since.fetch_max(since, Ordering::SeqCst);
                            std::sync::atomic::fence(Ordering::SeqCst);
                            // moka may be evicting the record concurrently (its listener runs
                            // outside this closure's critical section): if the index no longer
                            // holds it, the bump would be lost, so write a new record instead.
                            let held = self
                                .index
                                .pin()
                                .get(&hash)
                                .zip(old.as_ref())
                                .is_some_and(|(s, o)| Arc::ptr_eq(&s.record, o));
                            if held {
                                return Op::Nop;
                            }
                        }
                        entry.current_since = since;
                    }
                    let host_at = key.find('\u{1f}').map_or(0, |i| i + 1);
                    let slot = Slot {
                        summary: Summary::of(&entry, &self.prints),
                        record: Arc::new(Record {
                            route: k.route,
                            host_at: host_at as u32,
                            path_at: (host_at + k.host.len() + 1) as u32,
                            key: key.into(),
                            learned_at: std::time::Instant::now(),
                            read_since: AtomicU64::new(0),
                            entry,
                        }),
                    };
                    let record = slot.record.clone();
                    self.index.pin().insert(hash, slot);
                    Op::Put(record)
                }
                None => Op::Nop,
            }
        });
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

    fn obs(method: Method, status: u16, etag: Option<&'static str>) -> Observation<'static> {
        Observation {
            method,
            outcome: Outcome::Status(status),
            etag: etag.map(str::as_bytes),
            last_modified: None,
            date: None,
            vary: false,
            synthetic: false,
            meta: None,
        }
    }

    fn store() -> Store {
        Store::new(100, Duration::from_secs(60))
    }

    /// Tests name resources by path on route 0, host "h".
    fn k(path: &str) -> String {
        ResourceKey {
            route: 0,
            host: "h",
            path,
        }
        .to_key_string()
    }

    fn tag(s: &str) -> EntityTag<'_> {
        EntityTag::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn get_learns_current_and_a_new_tag_supersedes_it() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        let e = s.get(&k("/a")).unwrap();
        assert!(e.is_current_strong(&tag("\"v1\"")));
        assert_eq!(e.existence, Existence::Exists);
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v2\"")));
        let e = s.get(&k("/a")).unwrap();
        assert!(e.was_replaced(&tag("\"v1\"")));
        assert!(e.is_current_strong(&tag("\"v2\"")));
    }

    #[test]
    fn vary_keeps_several_current_tags() {
        let s = store();
        let mut o = obs(Method::Get, 200, Some("\"gz\""));
        o.vary = true;
        s.learn(&k("/a"), s.ticket(), &o);
        o.etag = Some(b"\"id\"");
        s.learn(&k("/a"), s.ticket(), &o);
        let e = s.get(&k("/a")).unwrap();
        assert!(e.is_current_strong(&tag("\"gz\"")) && e.is_current_strong(&tag("\"id\"")));
        assert!(e.replaced.is_empty());
    }

    #[test]
    fn a_confirming_read_updates_in_place_and_still_orders_reads() {
        let s = store();
        let (t0, ta, tb) = (s.ticket(), s.ticket(), s.ticket());
        s.learn(&k("/a"), t0, &obs(Method::Get, 200, Some("\"v1\"")));
        let first = s.get(&k("/a")).unwrap();
        // A later read showing the same state: no new record.
        s.learn(&k("/a"), tb, &obs(Method::Get, 200, Some("\"v1\"")));
        assert!(Arc::ptr_eq(&first, &s.get(&k("/a")).unwrap()));
        // A read that started before the confirming one answers late with another tag: it may
        // show an older representation, so it teaches nothing.
        s.learn(&k("/a"), ta, &obs(Method::Get, 200, Some("\"v0\"")));
        let e = s.get(&k("/a")).unwrap();
        assert!(e.is_current_strong(&tag("\"v1\"")));
        assert!(!e.was_replaced(&tag("\"v1\"")));
        // A newer read with a new tag is learned.
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v2\"")));
        assert!(s.get(&k("/a")).unwrap().was_replaced(&tag("\"v1\"")));
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
        let e = s.get(&k("/a")).expect("renewed by a confirming 200");
        assert!(e.was_replaced(&tag("\"v1\"")));
        assert!(e.is_current_strong(&tag("\"v2\"")));
        let e = s.get(&k("/b")).expect("renewed by a confirming 304");
        assert!(e.was_replaced(&tag("\"b1\"")));
        assert!(e.is_current_strong(&tag("\"b2\"")));
        let e = s.get(&k("/c")).expect("renewed by a repeated 404");
        assert_eq!(e.existence, Existence::Absent);
    }

    #[test]
    fn revert_leaves_the_replaced_set() {
        let s = store();
        for t in ["\"v1\"", "\"v2\"", "\"v1\""] {
            s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some(t)));
        }
        let e = s.get(&k("/a")).unwrap();
        assert!(!e.was_replaced(&tag("\"v1\"")));
        assert!(e.was_replaced(&tag("\"v2\"")));
    }

    #[test]
    fn successful_write_supersedes_and_unknown_without_etag() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 204, None));
        let e = s.get(&k("/a")).unwrap();
        assert!(e.was_replaced(&tag("\"v1\"")));
        assert!(!e.current_known());
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 200, Some("\"v3\"")));
        let e = s.get(&k("/a")).unwrap();
        assert!(e.is_current_strong(&tag("\"v3\"")));
    }

    #[test]
    fn delete_and_404_mean_absent() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Delete, 204, None));
        let e = s.get(&k("/a")).unwrap();
        assert_eq!(e.existence, Existence::Absent);
        assert!(e.was_replaced(&tag("\"v1\"")));
        s.learn(&k("/b"), s.ticket(), &obs(Method::Get, 404, None));
        assert_eq!(s.get(&k("/b")).unwrap().existence, Existence::Absent);
    }

    #[test]
    fn broken_or_5xx_write_forgets_current() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 503, None));
        let e = s.get(&k("/a")).unwrap();
        assert!(!e.current_known());
        assert_eq!(e.existence, Existence::Unknown);
        assert!(!e.was_replaced(&tag("\"v1\""))); // not proven replaced
        let mut broken = obs(Method::Delete, 0, None);
        broken.outcome = Outcome::Broken;
        s.learn(&k("/b"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        s.learn(&k("/b"), s.ticket(), &broken);
        assert!(!s.get(&k("/b")).unwrap().current_known());
    }

    #[test]
    fn in_flight_get_does_not_roll_back_a_completed_write() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        let get_ticket = s.ticket(); // a GET starts...
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 200, Some("\"v2\""))); // a write completes
        s.learn(&k("/a"), get_ticket, &obs(Method::Get, 200, Some("\"v1\""))); // ...the GET answers
        let e = s.get(&k("/a")).unwrap();
        assert!(e.is_current_strong(&tag("\"v2\"")));
        assert!(e.was_replaced(&tag("\"v1\"")));
        // A GET that started after the write may show a genuine revert.
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        assert!(s.get(&k("/a")).unwrap().is_current_strong(&tag("\"v1\"")));
    }

    #[test]
    fn concurrent_writes_leave_current_unknown() {
        let s = store();
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
        let t1 = s.ticket();
        let t2 = s.ticket();
        s.learn(&k("/a"), t1, &obs(Method::Put, 200, Some("\"v2\"")));
        s.learn(&k("/a"), t2, &obs(Method::Put, 200, Some("\"v3\"")));
        let e = s.get(&k("/a")).unwrap();
        assert!(!e.current_known());
        assert!(!e.was_replaced(&tag("\"v2\"")));
        assert!(e.was_replaced(&tag("\"v1\"")));
    }

    #[test]
    fn last_modified_is_clamped_to_date_and_only_moves_forward() {
        let s = store();
        let mut o = obs(Method::Get, 200, None);
        o.last_modified = Some(b"Sun, 06 Nov 1994 08:49:40 GMT");
        o.date = Some(b"Sun, 06 Nov 1994 08:49:37 GMT");
        s.learn(&k("/a"), s.ticket(), &o);
        assert_eq!(s.get(&k("/a")).unwrap().last_modified, Some(784_111_777));
        o.last_modified = Some(b"Sun, 06 Nov 1994 08:00:00 GMT");
        o.date = None;
        s.learn(&k("/a"), s.ticket(), &o);
        assert_eq!(s.get(&k("/a")).unwrap().last_modified, Some(784_111_777));
    }

    #[test]
    fn replaced_set_is_bounded() {
        let s = store();
        for i in 0..(MAX_REPLACED + 3) {
            let t: &'static str = Box::leak(format!("\"v{i}\"").into_boxed_str());
            s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some(t)));
        }
        let e = s.get(&k("/a")).unwrap();
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
            .filter(|i| s.get(&k(&format!("/r{i}"))).is_some())
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
        assert!(s.get(&k("/a")).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&k("/a")).is_none());
        let key = ResourceKey {
            route: 0,
            host: "h",
            path: "/a",
        };
        assert!(s.with(&key, |r| r.is_none_or(|r| !s.is_fresh(r.record()))));
    }

    #[test]
    fn resource_keys_compare_hosts_case_insensitively() {
        let a = ResourceKey {
            route: 1,
            host: "API.example.com",
            path: "/x?y=1",
        };
        let owned = a.to_key_string();
        assert_eq!(owned, "1\u{1f}api.example.com\u{1f}/x?y=1");
        assert!(a.matches(&owned));
        assert!(!ResourceKey {
            path: "/x?y=2",
            ..a
        }
        .matches(&owned));
        assert!(!ResourceKey { route: 2, ..a }.matches(&owned));
        let s = store();
        s.learn(&owned, s.ticket(), &obs(Method::Get, 200, Some("\"v\"")));
        let lower = ResourceKey {
            host: "api.example.com",
            ..a
        };
        assert!(
            s.with(&lower, |r| r.is_some()),
            "same resource whatever the host's case"
        );
    }

    #[test]
    fn an_older_read_answering_late_does_not_retire_a_newer_tag() {
        let s = store();
        let slow = s.ticket(); // a slow GET starts (it will show v1)
        let fast = s.ticket(); // a later GET shows v2 (a write bypassed precond in between)
        s.learn(&k("/a"), fast, &obs(Method::Get, 200, Some("\"v2\"")));
        s.learn(&k("/a"), slow, &obs(Method::Get, 200, Some("\"v1\"")));
        let e = s.get(&k("/a")).unwrap();
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
        let e = s.get(&k("/a")).unwrap();
        assert!(e.is_current_strong(&tag("\"abc\"")));
        assert!(!e.was_replaced(&tag("\"abc\"")));
    }

    #[test]
    fn accepted_or_post_responses_prove_no_replacement() {
        for (m, status) in [(Method::Post, 200), (Method::Put, 202), (Method::Post, 201)] {
            let s = store();
            s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v1\"")));
            s.learn(&k("/a"), s.ticket(), &obs(m, status, None));
            let e = s.get(&k("/a")).unwrap();
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
        assert!(!s.get(&k("/a")).unwrap().lm_stale);
        s.learn(&k("/a"), s.ticket(), &obs(Method::Put, 200, Some("\"v2\"")));
        let e = s.get(&k("/a")).unwrap();
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
            s.get(&k("/a")).is_none(),
            "the stale read did not bring v1 back"
        );
        s.learn(&k("/a"), s.ticket(), &obs(Method::Get, 200, Some("\"v2\"")));
        assert!(s.get(&k("/a")).unwrap().is_current_strong(&tag("\"v2\"")));
    }

    #[test]
    fn invalid_etag_is_not_learned() {
        let s = store();
        s.learn(
            &k("/a"),
            s.ticket(),
            &obs(Method::Get, 200, Some("unquoted")),
        );
        let e = s.get(&k("/a")).unwrap();
        assert_eq!(e.current, Some(Vec::new()));
    }
}
