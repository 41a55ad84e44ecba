//! Decisions: a request's precondition fields (raw bytes per field line, or lines built from
//! tags and dates the scenario knows) × a state, through `store::guard_decision` under both
//! policies, `precondition::guard` on the exact entry, and `precondition::evaluate` on the
//! enforce-like `Current` of the entry (as `enforce` builds it: the latest current tag, the alias,
//! the current representation's `Last-Modified`).
//!
//! Three kinds of state (`Scenario`):
//! - `Free`: a short sequence of arbitrary `Observation`s (any method, status, `ETag`,
//!   `Last-Modified`, `Date`, flags, principal; a ticket may be taken before the previous
//!   observation is learned, as overlapping requests do) learned by a `Store`.
//! - `Model`: a simulated origin (unique tags per version, non-decreasing dates) and a sequence
//!   of exchanges through precond: reads (maybe late: answered from an earlier state, with the
//!   ticket taken then), writes judged by the origin with `evaluate` (2xx with or without the new
//!   tag, 412, 409, 5xx or a broken exchange, applied or not), two overlapping writes, reverts to
//!   an earlier tag, and writes that bypass precond.
//! - `Knowledge`: `guard` on a hand-made `Knowledge`, `evaluate` on a hand-made `Current`.
//!
//! Asserted after every step, for every request:
//! - The fast path equals `guard` on the exact entry, unless a fingerprint collision (which may
//!   only forward what the exact decision refuses) is present.
//! - `guard`'s invariants: only writes are refused, only with 412; nothing known, nothing refused;
//!   a resource known absent with a method that cannot create it is forwarded; a request without
//!   any precondition field is never refused; `superseded` refuses only a `If-Match` whose every
//!   tag was seen replaced or an `If-Unmodified-Since` older than the date on record, and what it
//!   refuses `mismatch` refuses the same way; an `If-Match` listing a current tag is never
//!   refused under `superseded`.
//! - `evaluate`'s invariants (OPTIONS/CONNECT/TRACE and extension methods, unknown existence, the
//!   404 precedence, 304 only to GET/HEAD without `no-cache`, 428 only when required and no usable
//!   precondition, no field no refusal).
//! - `Free`: a tag the last observation showed current to the requester's partition (with a
//!   ticket taken after everything before was learned) is current in the store, and an `If-Match`
//!   listing it is never refused under `superseded`.
//! - `Model`: an edge 412 under `superseded` is a precondition the origin finds false (for a
//!   resource the origin has; for one it lacks, an `If-Match`); under `mismatch` too, and the
//!   edge's `evaluate` on a decidable entry equals the origin's, when every write went through
//!   precond and every answer showed the tag as the origin wrote it.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use precond::identity::{Principal, ResourceKey, RouteId};
use precond::precondition::date::{format_http_date, parse_date_field, Timestamp};
use precond::precondition::etag::scan_list;
use precond::precondition::evaluate::has_usable_precondition;
use precond::precondition::{
    evaluate, guard, Conditional, Current, Decision, EntityTag, Existence, Field, Knowledge,
    ListShape, Method, Policy, Reason,
};
use precond::store::{guard_decision, Entry, Observation, Outcome, Reach, Store, Ticket};

// ---------------------------------------------------------------------------------------------
// Input.

#[derive(Arbitrary, Debug)]
struct Input {
    requests: Vec<Req>,
    scenario: Scenario,
}

#[derive(Arbitrary, Debug)]
enum Scenario {
    Free(Vec<FreeObs>),
    Model { weak_tags: bool, ops: Vec<Op> },
    Knowledge(FakeKnowledge),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum M {
    Get,
    Head,
    Put,
    Patch,
    Delete,
    Post,
    Options,
    Other,
}

impl M {
    fn method(self) -> Method {
        match self {
            M::Get => Method::Get,
            M::Head => Method::Head,
            M::Put => Method::Put,
            M::Patch => Method::Patch,
            M::Delete => Method::Delete,
            M::Post => Method::Post,
            M::Options => Method::NoPreconditions,
            M::Other => Method::Other,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum MethodSel {
    Known(M),
    Token(Vec<u8>),
}

impl MethodSel {
    fn method(&self) -> Method {
        match self {
            MethodSel::Known(m) => m.method(),
            MethodSel::Token(t) => Method::from_bytes(t),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: MethodSel,
    who: u8,
    if_match: Vec<Line>,
    if_none_match: Vec<Line>,
    if_modified_since: Vec<Line>,
    if_unmodified_since: Vec<Line>,
    no_cache: bool,
}

/// One field line.
#[derive(Arbitrary, Debug)]
enum Line {
    Raw(Vec<u8>),
    Tag(TagRef),
    List(Vec<TagRef>),
    Star,
    Date(DateRef),
}

/// A tag of the scenario's pool, with the weakness chosen here.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct TagRef {
    idx: u8,
    weak: bool,
}

/// A date of the scenario's pool, moved by `delta` seconds, in one of the three formats.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct DateRef {
    idx: u8,
    delta: i8,
    format: u8,
}

/// An `ETag` value for a free observation: a small alphabet (so that observations share tags)
/// or raw bytes.
#[derive(Arbitrary, Debug)]
enum TagSpec {
    Small { opaque: u8, weak: bool },
    Raw(Vec<u8>),
}

const SMALL_OPAQUES: [&[u8]; 6] = [b"a", b"b", b"c", b"v1", b"v2", b""];

impl TagSpec {
    fn render(&self) -> Vec<u8> {
        match self {
            TagSpec::Small { opaque, weak } => wire(
                *weak,
                SMALL_OPAQUES[usize::from(*opaque) % SMALL_OPAQUES.len()],
            ),
            TagSpec::Raw(b) => b.clone(),
        }
    }
}

/// A date value for a free observation: one of a few minutes, or raw bytes.
#[derive(Arbitrary, Debug)]
enum DateSpec {
    Minute(u8),
    Raw(Vec<u8>),
}

const BASE: Timestamp = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

impl DateSpec {
    fn render(&self) -> Vec<u8> {
        match self {
            DateSpec::Minute(m) => format_http_date(BASE + i64::from(*m % 8) * 60).into_bytes(),
            DateSpec::Raw(b) => b.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum StatusSel {
    Common(u8),
    Any(u16),
    Broken,
}

const STATUSES: [u16; 16] = [
    200, 201, 202, 203, 204, 206, 301, 304, 400, 403, 404, 409, 410, 412, 500, 503,
];

#[derive(Arbitrary, Debug)]
struct FreeObs {
    method: M,
    status: StatusSel,
    etag: Option<TagSpec>,
    last_modified: Option<DateSpec>,
    date: Option<DateSpec>,
    vary: bool,
    synthetic: bool,
    alias: Option<TagSpec>,
    meta: bool,
    who: u8,
    partition_reach: bool,
    private: bool,
    no_store: bool,
    complete: bool,
    named: Option<TagSpec>,
    /// This observation's ticket was taken before the previous observation was learned.
    early: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Show {
    AsWritten,
    /// A compressing middleware's weak form of a strong tag.
    WeakEncoded,
    Dropped,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum WriteKind {
    Put,
    Patch,
    Delete,
    Post { changes: bool },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Answer {
    Ok {
        show_etag: bool,
        show_lm: bool,
        no_store: bool,
    },
    Refused,
    Redirect,
    ServerError {
        applied: bool,
    },
    Broken {
        applied: bool,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Cond {
    Tag(TagRef),
    Star,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        who: u8,
        head: bool,
        show: Show,
        no_store: bool,
        if_none_match: Option<TagRef>,
        /// 0: a fresh read; k: a read that started k steps ago (its ticket and the origin's
        /// state then), answered now.
        late: u8,
    },
    Write {
        who: u8,
        kind: WriteKind,
        if_match: Option<Cond>,
        answer: Answer,
        /// Bring back an earlier version (identical content: the same tag).
        revert: Option<u8>,
    },
    Overlap {
        who_a: u8,
        who_b: u8,
        if_match_a: Option<TagRef>,
        if_match_b: Option<TagRef>,
        show_a: bool,
        show_b: bool,
        b_applied_first: bool,
        b_learned_first: bool,
    },
    Bypass {
        delete: bool,
    },
    Tick(u8),
}

#[derive(Arbitrary, Debug)]
struct FakeKnowledge {
    existence: u8,
    current: Option<Vec<TagSpec>>,
    complete: bool,
    replaced: Vec<TagSpec>,
    last_modified: Option<i16>,
    alias: Option<TagSpec>,
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn wire(weak: bool, opaque: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(opaque.len() + 4);
    if weak {
        v.extend_from_slice(b"W/");
    }
    v.push(b'"');
    v.extend_from_slice(opaque);
    v.push(b'"');
    v
}

const PRINCIPALS: [Principal; 3] = [Principal::SHARED, Principal(11), Principal(22)];

fn principal(who: u8) -> Principal {
    PRINCIPALS[usize::from(who) % PRINCIPALS.len()]
}

fn key(path: &str) -> ResourceKey<'_> {
    ResourceKey {
        route: RouteId(7),
        host: "example.com",
        path,
    }
}

/// One store for many executions, each on a resource of its own (`/r{n}`): creating and
/// dropping a moka cache costs more than a whole execution. Keys do not share state (the store's
/// invariant); the store is renewed every `RENEW` executions, long before its capacity or TTL
/// could forget anything.
const RENEW: u64 = 4096;

thread_local! {
    static STORE: std::cell::RefCell<(Option<std::rc::Rc<Store>>, u64)> =
        const { std::cell::RefCell::new((None, 0)) };
}

/// The store and a resource path no earlier execution used in it.
fn store_and_path() -> (std::rc::Rc<Store>, String) {
    STORE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (store, n) = &mut *cell;
        if store.is_none() || *n % RENEW == 0 {
            *store = Some(std::rc::Rc::new(Store::new(
                1 << 16,
                Duration::from_secs(3600),
            )));
        }
        *n += 1;
        (store.clone().unwrap(), format!("/r{n}"))
    })
}

/// An HTTP-date in IMF-fixdate (0), rfc850 (1) or asctime (2) form.
fn render_date(t: Timestamp, format: u8) -> Vec<u8> {
    let imf = format_http_date(t);
    let b = imf.as_bytes();
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (wd, dd, mon, yyyy, time) = (
        &imf[0..3],
        &imf[5..7],
        &imf[8..11],
        &imf[12..16],
        &imf[17..25],
    );
    debug_assert_eq!(b.len(), 29);
    match format % 3 {
        0 => imf.clone().into_bytes(),
        1 => {
            let long = match wd {
                "Mon" => "Monday",
                "Tue" => "Tuesday",
                "Wed" => "Wednesday",
                "Thu" => "Thursday",
                "Fri" => "Friday",
                "Sat" => "Saturday",
                _ => "Sunday",
            };
            format!("{long}, {dd}-{mon}-{} {time} GMT", &yyyy[2..]).into_bytes()
        }
        _ => {
            let d = dd.trim_start_matches('0');
            format!("{wd} {mon} {d:>2} {time} {yyyy}").into_bytes()
        }
    }
}

/// What a scenario offers requests to refer to.
struct Pools {
    /// Opaque-tags.
    tags: Vec<Vec<u8>>,
    dates: Vec<Timestamp>,
}

impl Pools {
    fn tag(&self, r: TagRef) -> Vec<u8> {
        if self.tags.is_empty() {
            return wire(r.weak, b"none");
        }
        wire(r.weak, &self.tags[usize::from(r.idx) % self.tags.len()])
    }

    fn date(&self, r: DateRef) -> Vec<u8> {
        let t = if self.dates.is_empty() {
            BASE
        } else {
            self.dates[usize::from(r.idx) % self.dates.len()]
        };
        render_date(t + i64::from(r.delta), r.format)
    }

    fn line(&self, l: &Line) -> Vec<u8> {
        match l {
            Line::Raw(b) => b.clone(),
            Line::Tag(r) => self.tag(*r),
            Line::List(rs) => rs
                .iter()
                .map(|r| self.tag(*r))
                .collect::<Vec<_>>()
                .join(&b", "[..]),
            Line::Star => b"*".to_vec(),
            Line::Date(r) => self.date(*r),
        }
    }
}

/// A request with its field lines rendered.
struct Rendered {
    method: Method,
    who: Principal,
    im: Vec<Vec<u8>>,
    inm: Vec<Vec<u8>>,
    ims: Vec<Vec<u8>>,
    ius: Vec<Vec<u8>>,
    no_cache: bool,
}

fn render(req: &Req, pools: &Pools) -> Rendered {
    let lines = |ls: &[Line]| ls.iter().take(4).map(|l| pools.line(l)).collect();
    Rendered {
        method: req.method.method(),
        who: principal(req.who),
        im: lines(&req.if_match),
        inm: lines(&req.if_none_match),
        ims: lines(&req.if_modified_since),
        ius: lines(&req.if_unmodified_since),
        no_cache: req.no_cache,
    }
}

/// Field lines as slices, for `Conditional`.
struct Slices<'a> {
    im: Vec<&'a [u8]>,
    inm: Vec<&'a [u8]>,
    ims: Vec<&'a [u8]>,
    ius: Vec<&'a [u8]>,
}

impl Rendered {
    fn slices(&self) -> Slices<'_> {
        fn s(v: &[Vec<u8>]) -> Vec<&[u8]> {
            v.iter().map(Vec::as_slice).collect()
        }
        Slices {
            im: s(&self.im),
            inm: s(&self.inm),
            ims: s(&self.ims),
            ius: s(&self.ius),
        }
    }
}

fn cond<'a>(r: &Rendered, s: &'a Slices<'a>, method: Method) -> Conditional<&'a [&'a [u8]]> {
    Conditional {
        method,
        if_match: &s.im[..],
        if_none_match: &s.inm[..],
        if_modified_since: &s.ims[..],
        if_unmodified_since: &s.ius[..],
        no_cache: r.no_cache,
    }
}

type Cnd<'a> = Conditional<&'a [&'a [u8]]>;

/// The enforce-like state of an entry (as `proxy::enforce` builds it).
fn current_of(e: &Entry) -> Current<'_> {
    Current {
        existence: e.existence,
        etag: e.current_tags().last(),
        alias: e.alias.as_ref().map(|t| t.as_ref()),
        last_modified: e.current_lm,
    }
}

/// Whether the entry would decide on enforce routes (`proxy::enforce::decidable`).
fn decidable(e: &Entry, needs_date: bool) -> bool {
    match e.existence {
        Existence::Unknown => false,
        Existence::Absent => true,
        Existence::Exists => e.current.is_some() && !(needs_date && e.lm_stale),
    }
}

/// Whether a listed tag shares a fingerprint (but for the weakness bit) with a different stored
/// tag: then the fast path may forward what the exact decision refuses.
fn collision(store: &Store, c: &Cnd<'_>, e: &Entry) -> bool {
    let prints = store.prints();
    let stored: Vec<EntityTag<'_>> = e
        .current_tags()
        .chain(e.replaced.iter().map(|t| t.as_ref()))
        .collect();
    let mut hit = false;
    for lines in [c.if_match, c.if_none_match] {
        scan_list(lines.iter().copied(), |t| {
            for s in &stored {
                if (prints.of(&t) ^ prints.of(s)) & !1 == 0 && t.opaque() != s.opaque() {
                    hit = true;
                }
            }
        });
    }
    hit
}

// ---------------------------------------------------------------------------------------------
// Invariants.

/// `guard`'s documented behaviour, on any knowledge.
fn check_guard<K: Knowledge>(c: &Cnd<'_>, k: Option<&K>) {
    let sup = guard(c, k, Policy::Superseded);
    let mis = guard(c, k, Policy::Mismatch);
    for d in [sup, mis] {
        assert!(
            matches!(d, Decision::Proceed | Decision::PreconditionFailed(_)),
            "guard answers only forward or 412: {d:?}"
        );
        if k.is_none() || !c.method.is_write() || !c.has_any() {
            assert_eq!(d, Decision::Proceed, "nothing known, a read, or no field");
        }
        if let Some(k) = k {
            if k.existence() == Existence::Absent && !c.method.may_create() {
                assert_eq!(d, Decision::Proceed, "the origin's 404 takes precedence");
            }
        }
    }
    let Some(k) = k else { return };
    if let Decision::PreconditionFailed(f) = sup {
        assert_eq!(mis, sup, "what superseded refuses, mismatch refuses alike");
        match (f.field, f.reason) {
            (Field::IfMatch, Reason::Superseded) => {
                let shape = scan_list(c.if_match.iter().copied(), |t| {
                    assert!(k.was_replaced(&t), "refused a tag not seen replaced: {t:?}");
                    assert!(!k.is_current_strong(&t), "refused a current tag: {t:?}");
                });
                assert!(matches!(shape, ListShape::Tags { count, .. } if count > 0));
            }
            (Field::IfUnmodifiedSince, Reason::ModifiedSince) => {
                let date = parse_date_field(c.if_unmodified_since.iter().copied())
                    .timestamp()
                    .expect("a valid date");
                assert!(k.last_modified().is_some_and(|lm| lm > date));
                assert!(
                    c.if_match.is_empty(),
                    "If-Unmodified-Since only without If-Match"
                );
            }
            other => panic!("superseded refused with {other:?}"),
        }
    }
    // An If-Match that lists a current tag is never refused under superseded.
    let mut lists_current = false;
    scan_list(c.if_match.iter().copied(), |t| {
        lists_current |= k.is_current_strong(&t);
    });
    if lists_current {
        assert_eq!(sup, Decision::Proceed, "superseded refused a current tag");
    }
}

/// `evaluate`'s documented behaviour, on any state.
fn check_evaluate(c: &Cnd<'_>, current: &Current<'_>) {
    let m = c.method;
    let lenient = evaluate(c, current, false);
    let strict = evaluate(c, current, true);
    for (d, require) in [(lenient, false), (strict, true)] {
        if !m.is_get_or_head() && !m.is_write() {
            assert_eq!(
                d,
                Decision::Proceed,
                "OPTIONS/CONNECT/TRACE and extension methods"
            );
        }
        if current.existence == Existence::Unknown {
            assert_eq!(d, Decision::Proceed, "unknown existence decides nothing");
        }
        if current.existence == Existence::Absent && !m.may_create() {
            assert_eq!(d, Decision::Proceed, "the 404 takes precedence");
        }
        match d {
            Decision::NotModified(_) => {
                assert!(
                    m.is_get_or_head() && !c.no_cache,
                    "304 to {m:?} no_cache={}",
                    c.no_cache
                )
            }
            Decision::PreconditionRequired => assert!(
                require && m.is_write() && !has_usable_precondition(c, current.last_modified),
                "428"
            ),
            Decision::PreconditionFailed(_) | Decision::Proceed => {}
        }
        if !c.has_any() && !require {
            assert_eq!(d, Decision::Proceed, "no precondition field");
        }
    }
    if strict != Decision::PreconditionRequired {
        assert_eq!(
            strict, lenient,
            "requiring a precondition changes only 428s"
        );
    }
    if c.no_cache {
        let mut cached = *c;
        cached.no_cache = false;
        match evaluate(&cached, current, false) {
            Decision::NotModified(_) => assert_eq!(lenient, Decision::Proceed),
            d => assert_eq!(lenient, d, "no-cache changes only 304s"),
        }
    }
}

/// The checks that hold for any state in a store.
fn check_store(store: &Store, key: &ResourceKey<'_>, r: &Rendered) {
    let s = r.slices();
    let c = cond(r, &s, r.method);
    let key = *key;
    let view = store.get(&key, r.who);
    let entry: Option<&Entry> = view.as_deref();
    for policy in [Policy::Superseded, Policy::Mismatch] {
        let fast = guard_decision(store, &key, r.who, &c, policy);
        let exact = guard(&c, entry, policy);
        if fast != exact {
            assert!(
                fast == Decision::Proceed && entry.is_some_and(|e| collision(store, &c, e)),
                "fast path {fast:?} != exact {exact:?} ({policy:?}) on {entry:?}"
            );
        }
    }
    check_guard(&c, entry);
    if let Some(e) = entry {
        check_evaluate(&c, &current_of(e));
    }
}

// ---------------------------------------------------------------------------------------------
// Free observations.

fn run_free(obs: &[FreeObs], requests: &[Req]) {
    let (store, path) = store_and_path();
    let store = &*store;
    let key = key(&path);
    let mut pools = Pools {
        tags: SMALL_OPAQUES.iter().map(|t| t.to_vec()).collect(),
        dates: vec![BASE, BASE + 60, BASE + 120],
    };
    let obs = &obs[..obs.len().min(8)];
    for o in obs {
        if let Some(TagSpec::Raw(b)) = &o.etag {
            if let Some(t) = EntityTag::parse(b) {
                pools.tags.push(t.opaque().to_vec());
            }
        }
    }
    let rendered: Vec<Rendered> = requests.iter().take(4).map(|r| render(r, &pools)).collect();
    let mut pending: Option<Ticket> = None;
    for (i, o) in obs.iter().enumerate() {
        let fresh = pending.is_none();
        let ticket = pending.take().unwrap_or_else(|| store.ticket());
        if obs.get(i + 1).is_some_and(|n| n.early) {
            pending = Some(store.ticket());
        }
        let etag = o.etag.as_ref().map(TagSpec::render);
        let lm = o.last_modified.as_ref().map(DateSpec::render);
        let date = o.date.as_ref().map(DateSpec::render);
        let alias = o.alias.as_ref().map(TagSpec::render);
        let named = o.named.as_ref().map(TagSpec::render);
        let meta = [
            Some(&b"max-age=60"[..]),
            None,
            Some(&b"accept-encoding"[..]),
            None,
        ];
        let outcome = match o.status {
            StatusSel::Common(i) => Outcome::Status(STATUSES[usize::from(i) % STATUSES.len()]),
            StatusSel::Any(s) => Outcome::Status(s),
            StatusSel::Broken => Outcome::Broken,
        };
        let who = principal(o.who);
        let observation = Observation {
            etag: etag.as_deref(),
            last_modified: lm.as_deref(),
            date: date.as_deref(),
            vary: o.vary,
            synthetic: o.synthetic,
            alias: alias.as_deref(),
            meta: o.meta.then_some(meta),
            principal: who,
            reach: if o.partition_reach {
                Reach::Partition
            } else {
                Reach::Resource
            },
            private: o.private,
            no_store: o.no_store,
            complete: o.complete,
            named: named.as_deref().and_then(EntityTag::parse),
            ..Observation::of(o.method.method(), outcome)
        };
        store.learn(&key, ticket, &observation);

        // What this observation showed current, if it must now be current.
        let shown = etag.as_deref().and_then(EntityTag::parse).filter(|_| {
            let m = o.method.method();
            fresh
                && match outcome {
                    Outcome::Status(200 | 203 | 206) if m.is_get_or_head() => !o.no_store,
                    Outcome::Status(304) if m.is_get_or_head() => !o.no_store,
                    Outcome::Status(200 | 201 | 204) if m.may_create() => !o.no_store,
                    _ => false,
                }
        });
        if let Some(t) = shown {
            let view = store.get(&key, who);
            let e = view
                .as_deref()
                .unwrap_or_else(|| panic!("{t:?} shown, but no state for {who:?}"));
            assert!(
                e.current_tags().any(|c| c == t),
                "{t:?} shown last, not current: {e:?}"
            );
            for r in &rendered {
                if r.who != who {
                    continue;
                }
                let mut r2 = Rendered {
                    method: if r.method.is_write() {
                        r.method
                    } else {
                        Method::Put
                    },
                    who,
                    im: vec![t.to_wire()],
                    inm: r.inm.clone(),
                    ims: r.ims.clone(),
                    ius: r.ius.clone(),
                    no_cache: r.no_cache,
                };
                r2.im.extend(r.im.iter().cloned());
                let s = r2.slices();
                let c = cond(&r2, &s, r2.method);
                let d = guard_decision(store, &key, who, &c, Policy::Superseded);
                assert_eq!(d, Decision::Proceed, "refused {t:?}, shown current last");
            }
        }
        for r in &rendered {
            check_store(store, &key, r);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The origin model.

#[derive(Clone, Debug)]
struct Version {
    tag: Vec<u8>,
    lm: Timestamp,
}

#[derive(Clone, Debug)]
struct Origin {
    /// The current version, when the resource exists.
    current: Option<Version>,
    weak: bool,
    now: Timestamp,
    next: u32,
    /// Every tag the origin issued, oldest first.
    issued: Vec<Vec<u8>>,
}

impl Origin {
    fn fresh_tag(&mut self) -> Vec<u8> {
        self.next += 1;
        let t = format!("m{}", self.next).into_bytes();
        self.issued.push(t.clone());
        t
    }

    fn state(&self) -> Current<'_> {
        match &self.current {
            Some(v) => Current {
                existence: Existence::Exists,
                etag: EntityTag::new(self.weak, &v.tag),
                alias: None,
                last_modified: Some(v.lm),
            },
            None => Current {
                existence: Existence::Absent,
                etag: None,
                alias: None,
                last_modified: None,
            },
        }
    }

    /// The origin's judgement of a write's `If-Match` (`evaluate`, as an origin does).
    fn accepts(&self, method: Method, if_match: Option<&[u8]>) -> bool {
        let lines: Vec<&[u8]> = if_match.into_iter().collect();
        let c = Conditional {
            method,
            if_match: &lines[..],
            if_none_match: &[][..],
            if_modified_since: &[][..],
            if_unmodified_since: &[][..],
            no_cache: false,
        };
        !matches!(
            evaluate(&c, &self.state(), false),
            Decision::PreconditionFailed(_)
        )
    }

    /// Applies a write; returns the version it left (if any) and whether it changed the state.
    fn apply(&mut self, kind: WriteKind, revert: Option<Vec<u8>>) -> Option<Version> {
        match kind {
            WriteKind::Delete => {
                self.current = None;
                None
            }
            WriteKind::Post { changes } => {
                if changes && self.current.is_some() {
                    let tag = self.fresh_tag();
                    self.current = Some(Version { tag, lm: self.now });
                }
                self.current.clone()
            }
            WriteKind::Put | WriteKind::Patch => {
                let tag = revert.unwrap_or_else(|| self.fresh_tag());
                self.current = Some(Version { tag, lm: self.now });
                self.current.clone()
            }
        }
    }
}

fn write_method(kind: WriteKind) -> Method {
    match kind {
        WriteKind::Put => Method::Put,
        WriteKind::Patch => Method::Patch,
        WriteKind::Delete => Method::Delete,
        WriteKind::Post { .. } => Method::Post,
    }
}

struct Model<'s> {
    store: &'s Store,
    key: ResourceKey<'s>,
    origin: Origin,
    /// Per step: a ticket taken when it started, and the origin's state then (for late reads).
    starts: Vec<(Ticket, Origin)>,
    /// Every write went through precond, every answer showed the tag as written.
    faithful: bool,
}

impl Model<'_> {
    fn learn(&self, ticket: Ticket, obs: &Observation<'_>) {
        self.store.learn(&self.key, ticket, obs);
    }

    fn date(&self) -> Vec<u8> {
        format_http_date(self.origin.now).into_bytes()
    }

    fn read(
        &mut self,
        who: Principal,
        head: bool,
        show: Show,
        no_store: bool,
        inm: Option<Vec<u8>>,
        late: u8,
    ) {
        let (ticket, seen) = match self.starts.len().checked_sub(usize::from(late) + 1) {
            Some(i) if late > 0 => self.starts[i].clone(),
            _ => (self.store.ticket(), self.origin.clone()),
        };
        let date = self.date();
        let method = if head { Method::Head } else { Method::Get };
        let Some(v) = &seen.current else {
            let obs = Observation {
                date: Some(&date),
                principal: who,
                ..Observation::of(method, Outcome::Status(404))
            };
            self.learn(ticket, &obs);
            return;
        };
        let etag = match show {
            Show::AsWritten => Some(wire(seen.weak, &v.tag)),
            Show::WeakEncoded => {
                self.faithful &= seen.weak;
                Some(wire(true, &v.tag))
            }
            Show::Dropped => None,
        };
        // A conditional GET: 304 when If-None-Match matches (weak comparison).
        let status = match inm.as_deref().and_then(EntityTag::parse) {
            Some(t) if EntityTag::new(seen.weak, &v.tag).is_some_and(|c| c.weak_eq(&t)) => 304,
            _ => 200,
        };
        let lm = format_http_date(v.lm).into_bytes();
        let obs = Observation {
            etag: etag.as_deref(),
            last_modified: (status == 200).then_some(&lm[..]),
            date: Some(&date),
            principal: who,
            no_store,
            ..Observation::of(method, Outcome::Status(status))
        };
        self.learn(ticket, &obs);
    }

    /// One write through precond, judged by the origin. Returns the observation's parts to learn
    /// later (for overlapping writes) or learns it now.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        who: Principal,
        kind: WriteKind,
        if_match: Option<Vec<u8>>,
        answer: Answer,
        revert: Option<Vec<u8>>,
        ticket: Ticket,
    ) -> Pending {
        let method = write_method(kind);
        let named = if_match.clone().filter(|m| EntityTag::parse(m).is_some());
        let mut p = Pending {
            ticket,
            method,
            who,
            outcome: Outcome::Status(412),
            etag: None,
            lm: None,
            date: self.date(),
            no_store: false,
            named,
        };
        if !self.origin.accepts(method, if_match.as_deref()) {
            return p;
        }
        let exists = self.origin.current.is_some();
        if !exists && !method.may_create() {
            p.outcome = Outcome::Status(404);
            return p;
        }
        match answer {
            Answer::Refused => p.outcome = Outcome::Status(409),
            Answer::Redirect => p.outcome = Outcome::Status(303),
            Answer::ServerError { applied } | Answer::Broken { applied } => {
                if applied {
                    // The answer shows no tag: a revert here would bypass what precond can
                    // see (a documented exception), so only new tags.
                    self.origin.apply(kind, None);
                }
                p.outcome = match answer {
                    Answer::Broken { .. } => Outcome::Broken,
                    _ => Outcome::Status(500),
                };
            }
            Answer::Ok {
                show_etag,
                show_lm,
                no_store,
            } => {
                // A revert is visible only in an answer that shows its tag.
                let revert = revert.filter(|_| show_etag);
                let left = self.origin.apply(kind, revert);
                p.outcome = Outcome::Status(match kind {
                    WriteKind::Delete => 204,
                    WriteKind::Put | WriteKind::Patch if !exists => 201,
                    _ => 200,
                });
                if let Some(v) = left.filter(|_| !matches!(kind, WriteKind::Delete)) {
                    if show_etag {
                        p.etag = Some(wire(self.origin.weak, &v.tag));
                    }
                    if show_lm {
                        p.lm = Some(format_http_date(v.lm).into_bytes());
                    }
                }
                p.no_store = no_store;
            }
        }
        p
    }

    fn finish(&self, p: &Pending) {
        let obs = Observation {
            etag: p.etag.as_deref(),
            last_modified: p.lm.as_deref(),
            date: Some(&p.date),
            principal: p.who,
            no_store: p.no_store,
            named: p.named.as_deref().and_then(EntityTag::parse),
            ..Observation::of(p.method, p.outcome)
        };
        self.learn(p.ticket, &obs);
    }

    /// The origin-side checks: an edge 412 is a false precondition at the origin.
    fn check(&self, r: &Rendered) {
        let s = r.slices();
        let c = cond(r, &s, r.method);
        let origin = self.origin.state();
        let at_origin = evaluate(&c, &origin, false);
        let key = self.key;
        for policy in [Policy::Superseded, Policy::Mismatch] {
            if policy == Policy::Mismatch && !self.faithful {
                continue;
            }
            let edge = guard_decision(self.store, &key, r.who, &c, policy);
            let Decision::PreconditionFailed(f) = edge else {
                continue;
            };
            let must = origin.existence == Existence::Exists
                || (c.method.may_create() && f.field == Field::IfMatch);
            if must {
                assert!(
                    matches!(at_origin, Decision::PreconditionFailed(_)),
                    "edge 412 {f:?} ({policy:?}) but the origin decides {at_origin:?}; origin {:?}, store {:?}",
                    self.origin,
                    self.store.get(&key, r.who).as_deref()
                );
            }
        }
        // Enforce: a decidable entry answers as the origin would (entity-tag fields only: on
        // these guard-route exchanges a 304 may be the first answer a partition learns, which
        // leaves it without a date; enforce learns from its own complete fetches).
        let needs_date = !c.if_modified_since.is_empty() || !c.if_unmodified_since.is_empty();
        if self.faithful && !needs_date {
            let view = self.store.get(&key, r.who);
            if let Some(e) = view.as_deref().filter(|e| decidable(e, false)) {
                let edge = evaluate(&c, &current_of(e), false);
                assert_eq!(
                    edge, at_origin,
                    "enforce on the store decides otherwise than the origin {:?}: {e:?}",
                    self.origin
                );
            }
        }
    }
}

struct Pending {
    ticket: Ticket,
    method: Method,
    who: Principal,
    outcome: Outcome,
    etag: Option<Vec<u8>>,
    lm: Option<Vec<u8>>,
    date: Vec<u8>,
    no_store: bool,
    named: Option<Vec<u8>>,
}

fn run_model(weak: bool, ops: &[Op], requests: &[Req]) {
    let (store, path) = store_and_path();
    let store = &*store;
    let ops = &ops[..ops.len().min(10)];
    let mut m = Model {
        store,
        key: key(&path),
        origin: Origin {
            current: None,
            weak,
            now: 1_700_000_000,
            next: 0,
            issued: Vec::new(),
        },
        starts: Vec::new(),
        faithful: true,
    };
    // The resource exists before the first step, with one version.
    let tag = m.origin.fresh_tag();
    m.origin.current = Some(Version {
        tag,
        lm: m.origin.now - 3600,
    });
    for op in ops {
        m.starts.push((store.ticket(), m.origin.clone()));
        m.origin.now += 1;
        // Requests refer to every tag issued so far, and to one never issued.
        let pools = Pools {
            tags: m
                .origin
                .issued
                .iter()
                .cloned()
                .chain([b"never".to_vec()])
                .collect(),
            dates: m
                .origin
                .current
                .iter()
                .map(|v| v.lm)
                .chain([m.origin.now - 3600, m.origin.now])
                .collect(),
        };
        match op {
            Op::Read {
                who,
                head,
                show,
                no_store,
                if_none_match,
                late,
            } => {
                let inm = if_none_match.map(|r| pools.tag(r));
                m.read(principal(*who), *head, *show, *no_store, inm, *late);
            }
            Op::Write {
                who,
                kind,
                if_match,
                answer,
                revert,
            } => {
                let if_match = if_match.map(|c| match c {
                    Cond::Tag(r) => pools.tag(r),
                    Cond::Star => b"*".to_vec(),
                });
                let revert = revert.and_then(|i| {
                    let issued = &m.origin.issued;
                    (!issued.is_empty()).then(|| issued[usize::from(i) % issued.len()].clone())
                });
                let ticket = store.ticket();
                let p = m.write(principal(*who), *kind, if_match, *answer, revert, ticket);
                m.finish(&p);
            }
            Op::Overlap {
                who_a,
                who_b,
                if_match_a,
                if_match_b,
                show_a,
                show_b,
                b_applied_first,
                b_learned_first,
            } => {
                let (ta, tb) = (store.ticket(), store.ticket());
                let ok = |show: bool| Answer::Ok {
                    show_etag: show,
                    show_lm: true,
                    no_store: false,
                };
                let a = (*who_a, if_match_a.map(|r| pools.tag(r)), *show_a, ta);
                let b = (*who_b, if_match_b.map(|r| pools.tag(r)), *show_b, tb);
                let (first, second) = if *b_applied_first { (b, a) } else { (a, b) };
                let p1 = m.write(
                    principal(first.0),
                    WriteKind::Put,
                    first.1,
                    ok(first.2),
                    None,
                    first.3,
                );
                let p2 = m.write(
                    principal(second.0),
                    WriteKind::Put,
                    second.1,
                    ok(second.2),
                    None,
                    second.3,
                );
                // p1 is the first applied; learn in the chosen order.
                let a_first_applied = !*b_applied_first;
                let learn_a_first = !*b_learned_first;
                if a_first_applied == learn_a_first {
                    m.finish(&p1);
                    m.finish(&p2);
                } else {
                    m.finish(&p2);
                    m.finish(&p1);
                }
            }
            Op::Bypass { delete } => {
                m.faithful = false;
                m.origin.apply(
                    if *delete {
                        WriteKind::Delete
                    } else {
                        WriteKind::Put
                    },
                    None,
                );
            }
            Op::Tick(n) => m.origin.now += i64::from(*n),
        }
        // The pools now include what this step issued.
        let pools = Pools {
            tags: m
                .origin
                .issued
                .iter()
                .cloned()
                .chain([b"never".to_vec()])
                .collect(),
            dates: m
                .origin
                .current
                .iter()
                .map(|v| v.lm)
                .chain([m.origin.now - 3600, m.origin.now])
                .collect(),
        };
        for req in requests.iter().take(4) {
            let r = render(req, &pools);
            check_store(store, &m.key, &r);
            m.check(&r);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-made knowledge.

struct Fake {
    existence: Existence,
    current: Option<Vec<Vec<u8>>>,
    complete: bool,
    replaced: Vec<Vec<u8>>,
    last_modified: Option<Timestamp>,
}

fn tags(v: &[Vec<u8>]) -> impl Iterator<Item = EntityTag<'_>> {
    v.iter().filter_map(|t| EntityTag::parse(t))
}

impl Knowledge for Fake {
    fn existence(&self) -> Existence {
        self.existence
    }
    fn current_known(&self) -> bool {
        self.current.is_some()
    }
    fn current_complete(&self) -> bool {
        self.current.is_some() && self.complete
    }
    fn is_current_strong(&self, tag: &EntityTag<'_>) -> bool {
        self.current
            .as_deref()
            .is_some_and(|c| tags(c).any(|c| c.strong_eq(tag)))
    }
    fn is_current_weak(&self, tag: &EntityTag<'_>) -> bool {
        self.current
            .as_deref()
            .is_some_and(|c| tags(c).any(|c| c.weak_eq(tag)))
    }
    fn was_replaced(&self, tag: &EntityTag<'_>) -> bool {
        // As an entry: never both current (strongly) and replaced.
        !self.is_current_strong(tag) && tags(&self.replaced).any(|r| r == *tag)
    }
    fn last_modified(&self) -> Option<Timestamp> {
        self.last_modified
    }
}

fn run_knowledge(k: &FakeKnowledge, requests: &[Req]) {
    let existence = match k.existence % 3 {
        0 => Existence::Exists,
        1 => Existence::Absent,
        _ => Existence::Unknown,
    };
    let fake = Fake {
        existence,
        current: k
            .current
            .as_ref()
            .map(|c| c.iter().take(4).map(TagSpec::render).collect()),
        complete: k.complete,
        replaced: k.replaced.iter().take(8).map(TagSpec::render).collect(),
        last_modified: k.last_modified.map(|d| BASE + i64::from(d)),
    };
    let alias = k.alias.as_ref().map(TagSpec::render);
    let mut pools = Pools {
        tags: SMALL_OPAQUES.iter().map(|t| t.to_vec()).collect(),
        dates: vec![BASE],
    };
    pools.dates.extend(fake.last_modified);
    for t in fake.current.iter().flatten().chain(&fake.replaced) {
        if let Some(t) = EntityTag::parse(t) {
            pools.tags.push(t.opaque().to_vec());
        }
    }
    let current = Current {
        existence,
        etag: fake.current.as_deref().and_then(|c| tags(c).last()),
        alias: alias.as_deref().and_then(EntityTag::parse),
        last_modified: fake.last_modified,
    };
    for req in requests.iter().take(4) {
        let r = render(req, &pools);
        let s = r.slices();
        let c = cond(&r, &s, r.method);
        check_guard(&c, Some(&fake));
        check_guard::<Fake>(&c, None);
        check_evaluate(&c, &current);
    }
}

/// `PRECOND_FUZZ_DEBUG=1`: print each input as decoded (to read a crashing input).
fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("PRECOND_FUZZ_DEBUG").is_some_and(|v| v == "1"))
}

fuzz_target!(|input: Input| {
    if debug() {
        eprintln!("{input:#?}");
    }
    match &input.scenario {
        Scenario::Free(obs) => run_free(obs, &input.requests),
        Scenario::Model { weak_tags, ops } => run_model(*weak_tags, ops, &input.requests),
        Scenario::Knowledge(k) => run_knowledge(k, &input.requests),
    }
});
