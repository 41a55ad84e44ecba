//! One resource's learned state: what precond believes about its representations.
//!
//! Owns: [`Entry`] and its owned tags ([`Tag`]), the bounds on what one entry holds, and the
//! header fields kept for building 304s ([`META_HEADERS`]). Plain data with small helpers; the rules
//! that change an entry live in [`learn`](super::learn).
//!
//! Invariants:
//! - A tag is never both current and replaced, nor both unsure and replaced (or current).
//! - `replaced` holds at most [`MAX_REPLACED`] tags (oldest dropped first: a dropped tag becomes
//!   unknown, so requests carrying it are forwarded); `current` at most [`MAX_CURRENT`].
//! - `last_modified` only moves forward on writes; a read sets it to what it showed.

use crate::precondition::date::Timestamp;
use crate::precondition::{EntityTag, Existence, Knowledge};

/// `Entry::replaced_at` of a tag retired because another was shown current, not because a
/// write named it.
pub const INFERRED: u64 = u64::MAX;

/// Most tags remembered as replaced per resource.
pub const MAX_REPLACED: usize = 16;
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
    /// Tags that were current when the current state became unknown (a 200 without `ETag`, a
    /// write whose result is unknown, someone else's write): maybe current still, never proven
    /// replaced. They decide nothing, but a later proof that the resource changed retires them
    /// like current tags, so that a caller shown a tag does not lose its protection because an
    /// answer in between carried no validator. At most [`MAX_CURRENT`], newest last.
    pub(crate) unsure: Vec<Tag>,
    /// Tags seen replaced, oldest first.
    pub replaced: Vec<Tag>,
    /// For each of `replaced`, when it was *proven* replaced (the stamp of a completed write
    /// that named it, or deleted the resource), or [`INFERRED`]: an exchange that started later
    /// and shows the tag again brought it back. An inferred retirement (the tag was current as
    /// far as the store knew when another was shown) may be an artefact of answers learned out
    /// of order, so it never counts as a recurrence.
    pub(crate) replaced_at: Vec<u64>,
    /// The date guard compares `If-Unmodified-Since` with: the current representation's
    /// `Last-Modified` as the last read showed it (with `Vary`, the earliest among the variants),
    /// moved forward by completed writes.
    pub last_modified: Option<Timestamp>,
    /// Store sequence number of the last write outcome applied.
    pub changed_at: u64,
    /// The current tag was synthesised by precond (the origin never issued it).
    pub synthetic: bool,
    /// With a synthesised current tag: the origin's own tag for the same representation (a weak
    /// one precond replaced), evaluated as an alias of the current state.
    pub alias: Option<Tag>,
    /// The current representation's `Last-Modified` (`last_modified` is what guard compares with).
    pub current_lm: Option<Timestamp>,
    /// A write completed whose response carried no `Last-Modified`: `current_lm` may be older
    /// than the resource.
    pub lm_stale: bool,
    /// Ticket or stamp of the exchange that set `current`: an older read never overrides it.
    /// In a stored record, later confirming reads are counted in the record, not here.
    pub(crate) current_since: u64,
    /// Header fields of the last 200, for building 304s.
    pub meta: Option<Box<Meta>>,
    /// The last 200 carried `Vary`: `current` holds the variants seen, maybe not all of them,
    /// so "not among the current tags" proves nothing.
    pub vary: bool,
    /// This resource's tags were seen to recur: a replaced tag shown current again, or a
    /// completed write answered with the tag it replaced (content-derived tags). Then the order of
    /// overlapping writes cannot be read from their tags, and the rules that assume it are off.
    pub recurs: bool,
}

impl Entry {
    /// Heap bytes this state holds beyond its own struct: tags and stored header fields.
    pub fn heap_bytes(&self) -> usize {
        let tags = |v: &[Tag]| v.iter().map(|t| t.opaque.len() + 24).sum::<usize>();
        let meta = self.meta.as_ref().map_or(0, |m| {
            m.iter().flatten().map(|v| v.len() + 16).sum::<usize>() + std::mem::size_of::<Meta>()
        });
        tags(self.current.as_deref().unwrap_or_default())
            + tags(&self.unsure)
            + tags(&self.replaced)
            + self.replaced_at.len() * 8
            + self.alias.as_ref().map_or(0, |t| t.opaque.len() + 24)
            + meta
    }

    /// A state that knows nothing.
    pub fn blank() -> Entry {
        Entry {
            existence: Existence::Unknown,
            current: None,
            unsure: Vec::new(),
            replaced: Vec::new(),
            replaced_at: Vec::new(),
            last_modified: None,
            changed_at: 0,
            synthetic: false,
            alias: None,
            current_lm: None,
            lm_stale: false,
            current_since: 0,
            meta: None,
            vary: false,
            recurs: false,
        }
    }

    /// A replaced tag shown current again. `since`: when the exchange that shows it started;
    /// if the tag was learned replaced before that, it came back: the resource's tags recur.
    pub(super) fn unreplace(&mut self, tag: &Tag, since: u64) {
        if let Some(i) = self.replaced.iter().position(|r| r == tag) {
            self.replaced.remove(i);
            let at = self.replaced_at.remove(i);
            self.recurs |= at < since;
        }
    }

    /// When `tag` was learned replaced, if it is.
    pub(super) fn replaced_when(&self, tag: &Tag) -> Option<u64> {
        let i = self.replaced.iter().position(|r| r == tag)?;
        self.replaced_at.get(i).copied()
    }

    /// Records `tag` replaced as of the store's clock `at`.
    pub(super) fn push_replaced(&mut self, tag: Tag, at: u64) {
        self.unsure.retain(|u| *u != tag);
        if let Some(i) = self.replaced.iter().position(|r| *r == tag) {
            // A proof beats an inference.
            self.replaced_at[i] = self.replaced_at[i].min(at);
            return;
        }
        if self.replaced.len() == MAX_REPLACED {
            self.replaced.remove(0);
            self.replaced_at.remove(0);
        }
        self.replaced.push(tag);
        self.replaced_at.push(at);
    }

    /// Moves every current (and unsure) tag to `replaced`: nothing is current any more.
    pub(super) fn supersede_current(&mut self, at: u64) {
        let unsure = std::mem::take(&mut self.unsure);
        for t in self.current.take().into_iter().flatten().chain(unsure) {
            self.push_replaced(t, at);
        }
    }

    /// The current tags become unknown: they are kept as [`unsure`](Entry::unsure).
    pub(super) fn forget_current(&mut self) {
        for t in self.current.take().unwrap_or_default() {
            if !self.unsure.contains(&t) {
                if self.unsure.len() == MAX_CURRENT {
                    self.unsure.remove(0);
                }
                self.unsure.push(t);
            }
        }
    }

    /// A representation tagged `shown` is current: every current and unsure tag but its
    /// encodings (equal under weak comparison: W/"x" for gzip, "x" for identity) is replaced.
    /// Returns the current tags that are such encodings (but `shown` itself), which the caller
    /// may keep current; `current` is left empty (`None`) and `unsure` empty.
    pub(super) fn supersede_by(&mut self, shown: &Tag) -> Vec<Tag> {
        let unsure = std::mem::take(&mut self.unsure);
        let (encodings, retired): (Vec<Tag>, Vec<Tag>) = self
            .current
            .take()
            .into_iter()
            .flatten()
            .partition(|t| t.as_ref().weak_eq(&shown.as_ref()));
        let unsure = unsure
            .into_iter()
            .filter(|t| !t.as_ref().weak_eq(&shown.as_ref()));
        for t in retired.into_iter().chain(unsure) {
            self.push_replaced(t, INFERRED);
        }
        encodings.into_iter().filter(|t| t != shown).collect()
    }

    pub(super) fn note_last_modified(&mut self, lm: Option<Timestamp>) {
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
    fn current_complete(&self) -> bool {
        self.current.is_some() && !self.vary
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
