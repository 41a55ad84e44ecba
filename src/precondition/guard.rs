//! The `guard` role: the origin is the judge; the edge refuses a write only when what it has
//! learned *proves* a precondition false (docs/architecture.md, "guard: proving staleness").
//!
//! Owns: [`Policy`], the [`Knowledge`] a store entry must offer, and [`guard`], which maps a write's
//! preconditions and that knowledge to forward-or-412.
//!
//! Invariants:
//! - Only writes (PUT, PATCH, DELETE, POST) are ever refused; reads are forwarded untouched.
//! - Anything not proven false is forwarded with its preconditions intact, including malformed
//!   fields (the origin is the judge of syntax in this role).
//! - `Superseded` never trusts the *current* tag to refuse: only tags seen replaced, and
//!   the current representation's modification date (as last read, moved forward by writes). `Mismatch` also trusts the current tag and
//!   existence while the entry is alive (younger than the store's TTL).
//! - A resource known absent with a method that cannot create it is forwarded: the origin's 404
//!   takes precedence over any precondition (RFC 9110 §13.2.1).

use super::date::{parse_date_field, Timestamp};
use super::etag::{scan_list, EntityTag, ListShape};
use super::evaluate::{Decision, Existence, Failure, Field, Reason};
use super::request::{Conditional, FieldLines};

/// How much a `guard` route trusts its learned validators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Refuse only what is proven: every listed tag was seen replaced. Safe with many writers and
    /// many proxy instances.
    #[default]
    Superseded,
    /// Also refuse when no listed tag equals the cached current tag. Correct only when every write
    /// to the resource passes through this instance.
    Mismatch,
}

/// What the edge knows about one resource.
pub trait Knowledge {
    /// Whether the resource exists, as last seen.
    fn existence(&self) -> Existence;
    /// Whether the set of current entity-tags is known (an unknown set matches nothing and
    /// refutes nothing).
    fn current_known(&self) -> bool;
    /// Whether the known current tags are all of them (not only the variants seen of a
    /// resource that varies): only then does "not among them" prove a mismatch.
    fn current_complete(&self) -> bool {
        self.current_known()
    }
    /// Whether `tag` strongly matches a current entity-tag.
    fn is_current_strong(&self, tag: &EntityTag<'_>) -> bool;
    /// Whether `tag` weakly matches a current entity-tag.
    fn is_current_weak(&self, tag: &EntityTag<'_>) -> bool;
    /// Whether `tag` (same weakness, same bytes) was seen replaced by a newer representation.
    fn was_replaced(&self, tag: &EntityTag<'_>) -> bool;
    /// The current representation's `Last-Modified`, as the store knows it (the date compared with `If-Unmodified-Since`).
    fn last_modified(&self) -> Option<Timestamp>;
    /// All three comparisons of one tag at once (implementations that hash a tag before
    /// comparing it override this to hash it once).
    #[inline]
    fn compare(&self, tag: &EntityTag<'_>) -> Comparison {
        Comparison {
            current_strong: self.is_current_strong(tag),
            current_weak: self.is_current_weak(tag),
            replaced: self.was_replaced(tag),
        }
    }
}

/// How one listed tag relates to what is known of the resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// It strongly matches a current tag.
    pub current_strong: bool,
    /// It weakly matches a current tag.
    pub current_weak: bool,
    /// It was seen replaced.
    pub replaced: bool,
}

fn failed(field: Field, reason: Reason) -> Decision {
    Decision::PreconditionFailed(Failure { field, reason })
}

/// Decides whether a write is provably stale. `knowledge` is `None` when nothing is known about
/// the resource (then everything is forwarded).
pub fn guard<'a, L: FieldLines<'a>, K: Knowledge>(
    req: &Conditional<L>,
    knowledge: Option<&K>,
    policy: Policy,
) -> Decision {
    let Some(k) = knowledge else {
        return Decision::Proceed;
    };
    if !req.method.is_write() {
        return Decision::Proceed;
    }
    let existence = k.existence();
    if existence == Existence::Absent && !req.method.may_create() {
        return Decision::Proceed;
    }
    let trust_current = policy == Policy::Mismatch && k.current_complete();

    // Step 1: If-Match.
    let mut any_current = false;
    // Every listed tag proven stale: seen replaced, and (a weak one) not weakly current either.
    // A weak tag never satisfies If-Match (RFC 9110 §13.1.1), so refusing it is always correct;
    // requiring it seen replaced keeps guard from refusing what a lenient origin would accept.
    let mut all_replaced = true;
    let im = scan_list(req.if_match.lines(), |t| {
        let c = k.compare(&t);
        any_current |= c.current_strong;
        if !c.replaced || (t.is_weak() && c.current_weak) {
            all_replaced = false;
        }
    });
    match im {
        ListShape::Absent => {
            // Step 2: If-Unmodified-Since (only without If-Match, only when a date is on record).
            if existence != Existence::Absent {
                if let (Some(date), Some(lm)) = (
                    parse_date_field(req.if_unmodified_since.lines()).timestamp(),
                    k.last_modified(),
                ) {
                    if lm > date {
                        return failed(Field::IfUnmodifiedSince, Reason::ModifiedSince);
                    }
                }
            }
        }
        ListShape::Any => {
            if policy == Policy::Mismatch && existence == Existence::Absent {
                return failed(Field::IfMatch, Reason::ResourceAbsent);
            }
        }
        ListShape::Malformed => {}
        ListShape::Tags { count, weak } => {
            let strong = count - weak;
            if count > 0 && all_replaced && !any_current {
                return failed(Field::IfMatch, Reason::Superseded);
            }
            if policy == Policy::Mismatch && count > 0 {
                if existence == Existence::Absent {
                    return failed(Field::IfMatch, Reason::ResourceAbsent);
                }
                if strong == 0 {
                    return failed(Field::IfMatch, Reason::WeakOnly);
                }
                if trust_current && existence == Existence::Exists && !any_current {
                    return failed(Field::IfMatch, Reason::NoMatch);
                }
            }
        }
    }

    // Step 3: If-None-Match (only the mismatch policy trusts existence and the current tag).
    if policy == Policy::Mismatch && existence == Existence::Exists {
        let mut weak_match = false;
        let inm = scan_list(req.if_none_match.lines(), |t| {
            weak_match |= k.compare(&t).current_weak;
        });
        match inm {
            ListShape::Any => return failed(Field::IfNoneMatch, Reason::ResourceExists),
            ListShape::Tags { .. } if trust_current && weak_match => {
                return failed(Field::IfNoneMatch, Reason::TagMatches)
            }
            _ => {}
        }
    }
    Decision::Proceed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precondition::request::Method::{self, *};

    /// A hand-made knowledge record: current tags, replaced tags, existence, date.
    struct K {
        existence: Existence,
        current: Option<Vec<&'static str>>,
        replaced: Vec<&'static str>,
        lm: Option<Timestamp>,
    }

    fn tags(v: &[&'static str]) -> Vec<EntityTag<'static>> {
        v.iter()
            .map(|s| EntityTag::parse(s.as_bytes()).unwrap())
            .collect()
    }

    impl Knowledge for K {
        fn existence(&self) -> Existence {
            self.existence
        }
        fn current_known(&self) -> bool {
            self.current.is_some()
        }
        fn is_current_strong(&self, tag: &EntityTag<'_>) -> bool {
            self.current
                .as_ref()
                .is_some_and(|c| tags(c).iter().any(|c| c.strong_eq(tag)))
        }
        fn is_current_weak(&self, tag: &EntityTag<'_>) -> bool {
            self.current
                .as_ref()
                .is_some_and(|c| tags(c).iter().any(|c| c.weak_eq(tag)))
        }
        fn was_replaced(&self, tag: &EntityTag<'_>) -> bool {
            tags(&self.replaced).iter().any(|r| r == tag)
        }
        fn last_modified(&self) -> Option<Timestamp> {
            self.lm
        }
    }

    /// Resource at "v3", having been "v1" then "v2"; modified at t=1000.
    fn k() -> K {
        K {
            existence: Existence::Exists,
            current: Some(vec!["\"v3\""]),
            replaced: vec!["\"v1\"", "\"v2\""],
            lm: Some(1000),
        }
    }

    fn absent() -> K {
        K {
            existence: Existence::Absent,
            current: Some(vec![]),
            replaced: vec!["\"v3\""],
            lm: Some(1000),
        }
    }

    fn decide(
        m: Method,
        im: &[&'static str],
        inm: &[&'static str],
        ius: &[&'static str],
        k: &K,
        p: Policy,
    ) -> Decision {
        let im: Vec<&[u8]> = im.iter().map(|s| s.as_bytes()).collect();
        let inm: Vec<&[u8]> = inm.iter().map(|s| s.as_bytes()).collect();
        let ius: Vec<&[u8]> = ius.iter().map(|s| s.as_bytes()).collect();
        let req = Conditional {
            method: m,
            if_match: &im[..],
            if_none_match: &inm[..],
            if_modified_since: &[][..],
            if_unmodified_since: &ius[..],
            no_cache: false,
        };
        guard(&req, Some(k), p)
    }

    const S: Policy = Policy::Superseded;
    const M: Policy = Policy::Mismatch;

    fn is_412(d: Decision, field: Field) -> bool {
        matches!(d, Decision::PreconditionFailed(f) if f.field == field)
    }

    #[test]
    fn superseded_refuses_only_tags_seen_replaced() {
        assert!(is_412(
            decide(Put, &["\"v1\""], &[], &[], &k(), S),
            Field::IfMatch
        ));
        assert!(is_412(
            decide(Put, &["\"v1\", \"v2\""], &[], &[], &k(), S),
            Field::IfMatch
        ));
        // An unknown tag may be newer than what we saw: forward.
        assert_eq!(
            decide(Put, &["\"v9\""], &[], &[], &k(), S),
            Decision::Proceed
        );
        // One unknown tag in the list is enough to forward.
        assert_eq!(
            decide(Put, &["\"v1\", \"v9\""], &[], &[], &k(), S),
            Decision::Proceed
        );
        assert_eq!(
            decide(Put, &["\"v3\""], &[], &[], &k(), S),
            Decision::Proceed
        );
    }

    #[test]
    fn superseded_forwards_weak_only_star_and_malformed() {
        assert_eq!(
            decide(Put, &["W/\"v1\""], &[], &[], &k(), S),
            Decision::Proceed
        );
        assert_eq!(
            decide(Put, &["*"], &[], &[], &absent(), S),
            Decision::Proceed
        );
        assert_eq!(decide(Put, &["v1"], &[], &[], &k(), S), Decision::Proceed);
        assert_eq!(decide(Put, &[""], &[], &[], &k(), S), Decision::Proceed);
        assert_eq!(decide(Put, &[], &["*"], &[], &k(), S), Decision::Proceed);
    }

    #[test]
    fn superseded_refuses_weak_tags_seen_replaced_and_not_weakly_current() {
        let weak = K {
            existence: Existence::Exists,
            current: Some(vec!["W/\"w2\""]),
            replaced: vec!["W/\"w1\"", "W/\"w0\""],
            lm: None,
        };
        for policy in [S, M] {
            assert_eq!(
                decide(Put, &["W/\"w1\""], &[], &[], &weak, policy),
                Decision::PreconditionFailed(Failure {
                    field: Field::IfMatch,
                    reason: Reason::Superseded
                })
            );
            assert!(is_412(
                decide(Put, &["W/\"w1\", W/\"w0\""], &[], &[], &weak, policy),
                Field::IfMatch
            ));
        }
        // Current, unknown, or in a list with an unknown tag: forwarded (superseded).
        for tags in [&["W/\"w2\""][..], &["W/\"w9\""], &["W/\"w1\", W/\"w9\""]] {
            assert_eq!(
                decide(Put, tags, &[], &[], &weak, S),
                Decision::Proceed,
                "{tags:?}"
            );
        }
        // Seen replaced as a weak tag, but weakly equal to a current strong one: forwarded.
        let both = K {
            current: Some(vec!["\"w1\""]),
            ..weak
        };
        assert_eq!(
            decide(Put, &["W/\"w1\""], &[], &[], &both, S),
            Decision::Proceed
        );
    }

    #[test]
    fn mismatch_trusts_the_current_tag() {
        assert!(is_412(
            decide(Put, &["\"v9\""], &[], &[], &k(), M),
            Field::IfMatch
        ));
        assert!(is_412(
            decide(Put, &["W/\"v3\""], &[], &[], &k(), M),
            Field::IfMatch
        ));
        assert_eq!(
            decide(Put, &["\"v9\", \"v3\""], &[], &[], &k(), M),
            Decision::Proceed
        );
        assert!(is_412(
            decide(Put, &["*"], &[], &[], &absent(), M),
            Field::IfMatch
        ));
        assert!(is_412(
            decide(Put, &[], &["*"], &[], &k(), M),
            Field::IfNoneMatch
        ));
        assert!(is_412(
            decide(Put, &[], &["W/\"v3\""], &[], &k(), M),
            Field::IfNoneMatch
        ));
        // Current unknown: nothing to trust.
        let unknown = K {
            current: None,
            ..k()
        };
        assert_eq!(
            decide(Put, &["\"v9\""], &[], &[], &unknown, M),
            Decision::Proceed
        );
    }

    #[test]
    fn if_unmodified_since_refused_when_a_later_date_was_seen() {
        let before = "Thu, 01 Jan 1970 00:16:39 GMT"; // t=999
        let at = "Thu, 01 Jan 1970 00:16:40 GMT"; // t=1000
        for p in [S, M] {
            assert!(is_412(
                decide(Put, &[], &[], &[before], &k(), p),
                Field::IfUnmodifiedSince
            ));
            assert_eq!(decide(Put, &[], &[], &[at], &k(), p), Decision::Proceed);
            // If-Match present: IUS ignored.
            assert_eq!(
                decide(Put, &["\"v3\""], &[], &[before], &k(), p),
                Decision::Proceed
            );
            // Invalid date: ignored.
            assert_eq!(decide(Put, &[], &[], &["soon"], &k(), p), Decision::Proceed);
        }
    }

    #[test]
    fn reads_and_unknown_resources_are_forwarded() {
        assert_eq!(
            decide(Get, &["\"v1\""], &[], &[], &k(), S),
            Decision::Proceed
        );
        let req = Conditional {
            method: Put,
            if_match: &[&b"\"v1\""[..]][..],
            if_none_match: &[][..],
            if_modified_since: &[][..],
            if_unmodified_since: &[][..],
            no_cache: false,
        };
        assert_eq!(guard::<_, K>(&req, None, M), Decision::Proceed);
    }

    #[test]
    fn rfc9110_13_2_1_absent_resource_404_beats_412_for_delete() {
        for p in [S, M] {
            assert_eq!(
                decide(Delete, &["\"v3\""], &[], &[], &absent(), p),
                Decision::Proceed
            );
        }
        // PUT with a replaced tag on a deleted resource: proven stale.
        assert!(is_412(
            decide(Put, &["\"v3\""], &[], &[], &absent(), S),
            Field::IfMatch
        ));
    }
}
