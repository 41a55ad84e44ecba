//! RFC 9110 §13.2.2 evaluation for a judge that knows the selected representation's state.
//!
//! Owns: the decision types shared by every role ([`Decision`], [`Failure`], [`Field`], [`Reason`])
//! and [`evaluate`], the origin-role algorithm: If-Match, then If-Unmodified-Since, then
//! If-None-Match, then If-Modified-Since, each with its "ignore" rules.
//!
//! Invariants:
//! - A failing If-Match or If-Unmodified-Since is 412 whatever the method (even GET); a failing
//!   If-None-Match is 304 for GET/HEAD and 412 otherwise; a failing If-Modified-Since is 304.
//! - A request whose unconditional answer would be 404 (resource known absent, method that cannot
//!   create it) is never answered 412 or 304 (§13.2.1): the decision is [`Decision::Proceed`].
//! - OPTIONS, CONNECT and TRACE always proceed (§13.2.1).
//! - With [`Existence::Unknown`] nothing is decided: [`Decision::Proceed`].

use super::date::{parse_date_field, Timestamp};
use super::etag::{scan_list, EntityTag, ListShape};
use super::request::{Conditional, FieldLines};

/// Whether the target resource has a current representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existence {
    /// It has one.
    Exists,
    /// It has none (404/410 seen, or deleted).
    Absent,
    /// Not known.
    Unknown,
}

/// The selected representation's validators, as far as the judge knows them.
#[derive(Clone, Copy, Debug)]
pub struct Current<'a> {
    /// Whether the resource exists.
    pub existence: Existence,
    /// Its entity-tag, if it has one.
    pub etag: Option<EntityTag<'a>>,
    /// Another entity-tag of the same representation: the origin's own (weak) tag, where precond
    /// answers with a synthesised strong one. A client that holds it gets the answer the origin
    /// would give (strong comparison for `If-Match`, weak for `If-None-Match`).
    pub alias: Option<EntityTag<'a>>,
    /// Its modification date, if it has one.
    pub last_modified: Option<Timestamp>,
}

/// Which precondition decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `If-Match`
    IfMatch,
    /// `If-Unmodified-Since`
    IfUnmodifiedSince,
    /// `If-None-Match`
    IfNoneMatch,
    /// `If-Modified-Since`
    IfModifiedSince,
}

impl Field {
    /// Every field, in [`Field::index`] order.
    pub const ALL: [Field; 4] = [
        Field::IfMatch,
        Field::IfUnmodifiedSince,
        Field::IfNoneMatch,
        Field::IfModifiedSince,
    ];

    /// A dense index in `0..Field::ALL.len()` (exhaustive: a new field cannot share a slot).
    pub const fn index(self) -> usize {
        match self {
            Field::IfMatch => 0,
            Field::IfUnmodifiedSince => 1,
            Field::IfNoneMatch => 2,
            Field::IfModifiedSince => 3,
        }
    }

    /// The header name, as clients write it.
    pub fn header_name(self) -> &'static str {
        match self {
            Field::IfMatch => "If-Match",
            Field::IfUnmodifiedSince => "If-Unmodified-Since",
            Field::IfNoneMatch => "If-None-Match",
            Field::IfModifiedSince => "If-Modified-Since",
        }
    }
}

/// Why a precondition evaluated to false.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `If-Match` is not `*` nor a list of entity-tags (a malformed If-Match is false, §13.1.1).
    Malformed,
    /// No listed tag strongly matches the current entity-tag.
    NoMatch,
    /// Only weak tags were listed; If-Match uses strong comparison, so none can match.
    WeakOnly,
    /// Every listed tag is one precond saw replaced by a newer representation.
    Superseded,
    /// `If-Match: *` but the resource has no current representation.
    ResourceAbsent,
    /// `If-None-Match: *` but the resource has a current representation.
    ResourceExists,
    /// A listed tag weakly matches the current entity-tag (`If-None-Match`).
    TagMatches,
    /// The resource was modified after the given date (`If-Unmodified-Since`).
    ModifiedSince,
    /// The resource was not modified after the given date (`If-Modified-Since`).
    NotModifiedSince,
}

impl Reason {
    /// Every reason, in [`Reason::index`] order.
    pub const ALL: [Reason; 9] = [
        Reason::Malformed,
        Reason::NoMatch,
        Reason::WeakOnly,
        Reason::Superseded,
        Reason::ResourceAbsent,
        Reason::ResourceExists,
        Reason::TagMatches,
        Reason::ModifiedSince,
        Reason::NotModifiedSince,
    ];

    /// A dense index in `0..Reason::ALL.len()` (exhaustive: a new reason cannot share a slot).
    pub const fn index(self) -> usize {
        match self {
            Reason::Malformed => 0,
            Reason::NoMatch => 1,
            Reason::WeakOnly => 2,
            Reason::Superseded => 3,
            Reason::ResourceAbsent => 4,
            Reason::ResourceExists => 5,
            Reason::TagMatches => 6,
            Reason::ModifiedSince => 7,
            Reason::NotModifiedSince => 8,
        }
    }

    /// Short machine-readable name (used in problem bodies, logs, metrics and the edge header).
    pub const fn code(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::NoMatch => "no_match",
            Reason::WeakOnly => "weak_only",
            Reason::Superseded => "superseded",
            Reason::ResourceAbsent => "resource_absent",
            Reason::ResourceExists => "resource_exists",
            Reason::TagMatches => "tag_matches",
            Reason::ModifiedSince => "modified_since",
            Reason::NotModifiedSince => "not_modified_since",
        }
    }
}

/// A precondition that evaluated to false, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The field that failed.
    pub field: Field,
    /// Why it failed.
    pub reason: Reason,
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Perform the method (at the edge: forward the request, preconditions intact).
    Proceed,
    /// 412 Precondition Failed.
    PreconditionFailed(Failure),
    /// 304 Not Modified (GET/HEAD only).
    NotModified(Failure),
    /// 428 Precondition Required (RFC 6585 §3): the method must carry a precondition.
    PreconditionRequired,
}

/// What a request's preconditions amount to for the 428 check (RFC 6585 §3, with precond's policy,
/// docs/architecture.md "enforce"): a precondition that would be ignored or is unusable counts as
/// absent.
///
/// Counted: a well-formed `If-Match` (including `*`); `If-None-Match: *` (create only); a valid
/// `If-Unmodified-Since` *when the resource has a modification date* (otherwise RFC 9110 §13.1.4
/// makes the recipient ignore it, and it would protect nothing). Not counted: an `If-None-Match`
/// tag list (it does not protect a write against a lost update), malformed or invalid fields.
/// `last_modified` is the resource's date, when known.
pub fn has_usable_precondition<'a, L: FieldLines<'a>>(
    req: &Conditional<L>,
    last_modified: Option<Timestamp>,
) -> bool {
    !matches!(
        scan_list(req.if_match.lines(), |_| {}),
        ListShape::Absent | ListShape::Malformed
    ) || scan_list(req.if_none_match.lines(), |_| {}) == ListShape::Any
        || (last_modified.is_some()
            && parse_date_field(req.if_unmodified_since.lines())
                .timestamp()
                .is_some())
}

/// Evaluates a request's preconditions in the order of RFC 9110 §13.2.2, as the origin would,
/// given the resource's current state. `require` asks for a 428 when the method is a write and no
/// usable precondition is present.
pub fn evaluate<'a, 'c, L: FieldLines<'a>>(
    req: &Conditional<L>,
    current: &Current<'c>,
    require: bool,
) -> Decision {
    let method = req.method;
    if !method.is_get_or_head() && !method.is_write() {
        // OPTIONS/CONNECT/TRACE ignore preconditions; extension methods are left to the origin.
        return Decision::Proceed;
    }
    if current.existence == Existence::Unknown {
        return Decision::Proceed;
    }
    if current.existence == Existence::Absent && !method.may_create() {
        // §13.2.1: the 404 takes precedence over every precondition (and over 428).
        return Decision::Proceed;
    }
    if require && method.is_write() && !has_usable_precondition(req, current.last_modified) {
        return Decision::PreconditionRequired;
    }
    let exists = current.existence == Existence::Exists;

    // Step 1: If-Match (strong comparison).
    let mut strong_match = false;
    let im = scan_list(req.if_match.lines(), |t| {
        strong_match |= current.etag.is_some_and(|c| t.strong_eq(&c))
            || current.alias.is_some_and(|c| t.strong_eq(&c));
    });
    let im_fail = |reason| {
        Decision::PreconditionFailed(Failure {
            field: Field::IfMatch,
            reason,
        })
    };
    match im {
        ListShape::Absent => {
            // Step 2: If-Unmodified-Since, only when If-Match is absent and the resource has a
            // modification date.
            if let (Some(date), Some(lm)) = (
                parse_date_field(req.if_unmodified_since.lines()).timestamp(),
                current.last_modified.filter(|_| exists),
            ) {
                if lm > date {
                    return Decision::PreconditionFailed(Failure {
                        field: Field::IfUnmodifiedSince,
                        reason: Reason::ModifiedSince,
                    });
                }
            }
        }
        ListShape::Any if exists => {}
        ListShape::Any => return im_fail(Reason::ResourceAbsent),
        ListShape::Malformed => return im_fail(Reason::Malformed),
        ListShape::Tags { .. } if strong_match => {}
        ListShape::Tags { count, weak } if count > 0 && count == weak => {
            return im_fail(Reason::WeakOnly)
        }
        ListShape::Tags { .. } if !exists => return im_fail(Reason::ResourceAbsent),
        ListShape::Tags { .. } => return im_fail(Reason::NoMatch),
    }

    // Step 3: If-None-Match (weak comparison).
    let mut weak_match = false;
    let inm = scan_list(req.if_none_match.lines(), |t| {
        weak_match |= exists
            && (current.etag.is_some_and(|c| t.weak_eq(&c))
                || current.alias.is_some_and(|c| t.weak_eq(&c)));
    });
    let inm_false = match inm {
        ListShape::Absent => None,
        ListShape::Any if exists => Some(Reason::ResourceExists),
        ListShape::Tags { .. } if weak_match => Some(Reason::TagMatches),
        // A malformed If-None-Match is true (§13.1.2 "otherwise, the condition is true").
        ListShape::Any | ListShape::Tags { .. } | ListShape::Malformed => None,
    };
    if let Some(reason) = inm_false {
        let failure = Failure {
            field: Field::IfNoneMatch,
            reason,
        };
        return if method.is_get_or_head() {
            not_modified_unless_no_cache(req.no_cache, failure)
        } else {
            Decision::PreconditionFailed(failure)
        };
    }

    // Step 4: If-Modified-Since, GET/HEAD only, only when If-None-Match is absent.
    if method.is_get_or_head() && inm == ListShape::Absent {
        if let (Some(date), Some(lm)) = (
            parse_date_field(req.if_modified_since.lines()).timestamp(),
            current.last_modified.filter(|_| exists),
        ) {
            if lm <= date {
                return not_modified_unless_no_cache(
                    req.no_cache,
                    Failure {
                        field: Field::IfModifiedSince,
                        reason: Reason::NotModifiedSince,
                    },
                );
            }
        }
    }
    Decision::Proceed
}

/// A 304 is never answered from stored validators to a `no-cache` request (RFC 9111 §5.2.1.4).
fn not_modified_unless_no_cache(no_cache: bool, failure: Failure) -> Decision {
    if no_cache {
        Decision::Proceed
    } else {
        Decision::NotModified(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precondition::request::Method;

    const LM: Timestamp = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
    const LM_STR: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
    const BEFORE: &[u8] = b"Sun, 06 Nov 1994 08:49:36 GMT";
    const AFTER: &[u8] = b"Sun, 06 Nov 1994 08:49:38 GMT";

    #[derive(Default)]
    struct Req {
        im: Vec<&'static [u8]>,
        inm: Vec<&'static [u8]>,
        ims: Vec<&'static [u8]>,
        ius: Vec<&'static [u8]>,
        no_cache: bool,
    }

    impl Req {
        fn im(mut self, v: &'static str) -> Self {
            self.im.push(v.as_bytes());
            self
        }
        fn inm(mut self, v: &'static str) -> Self {
            self.inm.push(v.as_bytes());
            self
        }
        fn ims(mut self, v: &'static [u8]) -> Self {
            self.ims.push(v);
            self
        }
        fn ius(mut self, v: &'static [u8]) -> Self {
            self.ius.push(v);
            self
        }
        fn no_cache(mut self) -> Self {
            self.no_cache = true;
            self
        }
        fn eval_with(&self, method: Method, current: &Current<'_>, require: bool) -> Decision {
            let req = Conditional {
                method,
                if_match: &self.im[..],
                if_none_match: &self.inm[..],
                if_modified_since: &self.ims[..],
                if_unmodified_since: &self.ius[..],
                no_cache: self.no_cache,
            };
            evaluate(&req, current, require)
        }
        fn eval(&self, method: Method) -> Decision {
            self.eval_with(method, &exists("\"v2\""), false)
        }
    }

    fn exists(tag: &'static str) -> Current<'static> {
        Current {
            existence: Existence::Exists,
            etag: EntityTag::parse(tag.as_bytes()),
            alias: None,
            last_modified: Some(LM),
        }
    }

    fn absent() -> Current<'static> {
        Current {
            existence: Existence::Absent,
            etag: None,
            alias: None,
            last_modified: None,
        }
    }

    fn failed(field: Field, reason: Reason) -> Decision {
        Decision::PreconditionFailed(Failure { field, reason })
    }

    fn not_modified(field: Field, reason: Reason) -> Decision {
        Decision::NotModified(Failure { field, reason })
    }

    use Method::*;

    #[test]
    fn rfc9110_13_1_1_if_match_strong_comparison() {
        assert_eq!(Req::default().im("\"v2\"").eval(Put), Decision::Proceed);
        assert_eq!(
            Req::default().im("\"v1\"").eval(Put),
            failed(Field::IfMatch, Reason::NoMatch)
        );
        assert_eq!(
            Req::default().im("W/\"v2\"").eval(Put),
            failed(Field::IfMatch, Reason::WeakOnly)
        );
        assert_eq!(
            Req::default().im("\"v1\", \"v2\"").eval(Put),
            Decision::Proceed
        );
        // A weak current tag never matches strongly.
        let weak_current = exists("W/\"v2\"");
        assert_eq!(
            Req::default()
                .im("\"v2\"")
                .eval_with(Put, &weak_current, false),
            failed(Field::IfMatch, Reason::NoMatch)
        );
    }

    #[test]
    fn rfc9110_13_1_1_if_match_star_depends_on_existence_not_etag() {
        let no_etag = Current {
            existence: Existence::Exists,
            etag: None,
            alias: None,
            last_modified: None,
        };
        assert_eq!(
            Req::default().im("*").eval_with(Put, &no_etag, false),
            Decision::Proceed
        );
        assert_eq!(
            Req::default().im("*").eval_with(Put, &absent(), false),
            failed(Field::IfMatch, Reason::ResourceAbsent)
        );
    }

    #[test]
    fn rfc9110_13_1_1_no_current_etag_matches_nothing() {
        let no_etag = Current {
            existence: Existence::Exists,
            etag: None,
            alias: None,
            last_modified: None,
        };
        assert_eq!(
            Req::default().im("\"v2\"").eval_with(Put, &no_etag, false),
            failed(Field::IfMatch, Reason::NoMatch)
        );
    }

    #[test]
    fn rfc9110_13_1_1_malformed_if_match_is_false() {
        for v in ["v2", "*, \"v2\"", "\"v2\" junk", "W/ \"v2\""] {
            assert_eq!(
                Req::default().im(v).eval(Put),
                failed(Field::IfMatch, Reason::Malformed),
                "{v}"
            );
        }
    }

    #[test]
    fn rfc9110_13_1_1_empty_if_match_list_is_false() {
        assert_eq!(
            Req::default().im("").eval(Put),
            failed(Field::IfMatch, Reason::NoMatch)
        );
    }

    #[test]
    fn rfc9110_13_1_2_if_none_match_weak_comparison() {
        assert_eq!(
            Req::default().inm("W/\"v2\"").eval(Get),
            not_modified(Field::IfNoneMatch, Reason::TagMatches)
        );
        assert_eq!(Req::default().inm("\"v1\"").eval(Get), Decision::Proceed);
        assert_eq!(
            Req::default().inm("\"v1\", \"v2\"").eval(Put),
            failed(Field::IfNoneMatch, Reason::TagMatches)
        );
    }

    #[test]
    fn rfc9110_13_1_2_if_none_match_star() {
        assert_eq!(
            Req::default().inm("*").eval(Put),
            failed(Field::IfNoneMatch, Reason::ResourceExists)
        );
        assert_eq!(
            Req::default().inm("*").eval_with(Put, &absent(), false),
            Decision::Proceed
        );
    }

    #[test]
    fn rfc9110_13_1_2_malformed_if_none_match_is_true() {
        assert_eq!(Req::default().inm("v2").eval(Get), Decision::Proceed);
        assert_eq!(Req::default().inm("*, \"v2\"").eval(Put), Decision::Proceed);
    }

    #[test]
    fn rfc9110_13_1_2_failed_if_none_match_is_304_for_get_head_412_otherwise() {
        let r = Req::default().inm("\"v2\"");
        assert!(matches!(r.eval(Get), Decision::NotModified(_)));
        assert!(matches!(r.eval(Head), Decision::NotModified(_)));
        for m in [Put, Patch, Delete, Post] {
            assert!(
                matches!(r.eval(m), Decision::PreconditionFailed(_)),
                "{m:?}"
            );
        }
    }

    #[test]
    fn rfc9110_13_1_3_if_modified_since() {
        assert_eq!(
            Req::default().ims(LM_STR).eval(Get),
            not_modified(Field::IfModifiedSince, Reason::NotModifiedSince)
        );
        assert_eq!(Req::default().ims(BEFORE).eval(Get), Decision::Proceed);
        // Future date: still 304 (no "future IMS is invalid" rule in RFC 9110).
        assert!(matches!(
            Req::default()
                .ims(b"Fri, 01 Jan 2100 00:00:00 GMT")
                .eval(Get),
            Decision::NotModified(_)
        ));
    }

    #[test]
    fn rfc9110_13_1_3_if_modified_since_ignored_cases() {
        // With If-None-Match present.
        assert_eq!(
            Req::default().inm("\"other\"").ims(AFTER).eval(Get),
            Decision::Proceed
        );
        // Invalid date, two lines, non-GET method, no modification date.
        assert_eq!(Req::default().ims(b"garbage").eval(Get), Decision::Proceed);
        assert_eq!(
            Req::default().ims(AFTER).ims(AFTER).eval(Get),
            Decision::Proceed
        );
        assert_eq!(Req::default().ims(AFTER).eval(Put), Decision::Proceed);
        let no_lm = Current {
            existence: Existence::Exists,
            etag: None,
            alias: None,
            last_modified: None,
        };
        assert_eq!(
            Req::default().ims(AFTER).eval_with(Get, &no_lm, false),
            Decision::Proceed
        );
    }

    #[test]
    fn rfc9110_13_1_4_if_unmodified_since() {
        assert_eq!(Req::default().ius(LM_STR).eval(Put), Decision::Proceed);
        assert_eq!(Req::default().ius(AFTER).eval(Put), Decision::Proceed);
        assert_eq!(
            Req::default().ius(BEFORE).eval(Put),
            failed(Field::IfUnmodifiedSince, Reason::ModifiedSince)
        );
        // Even on GET a failing IUS is 412, not 304.
        assert!(matches!(
            Req::default().ius(BEFORE).eval(Get),
            Decision::PreconditionFailed(_)
        ));
    }

    #[test]
    fn rfc9110_13_1_4_if_unmodified_since_ignored_cases() {
        // If-Match present (even malformed: If-Match decides).
        assert_eq!(
            Req::default().im("\"v2\"").ius(BEFORE).eval(Put),
            Decision::Proceed
        );
        assert_eq!(
            Req::default().im("bad").ius(AFTER).eval(Put),
            failed(Field::IfMatch, Reason::Malformed)
        );
        // Invalid date, a list of dates, no modification date.
        assert_eq!(Req::default().ius(b"nope").eval(Put), Decision::Proceed);
        assert_eq!(
            Req::default().ius(BEFORE).ius(BEFORE).eval(Put),
            Decision::Proceed
        );
        let no_lm = Current {
            existence: Existence::Exists,
            etag: EntityTag::parse(b"\"v2\""),
            alias: None,
            last_modified: None,
        };
        assert_eq!(
            Req::default().ius(BEFORE).eval_with(Put, &no_lm, false),
            Decision::Proceed
        );
    }

    #[test]
    fn rfc9110_13_2_2_order_if_match_failure_beats_if_none_match_304() {
        assert_eq!(
            Req::default().im("\"v1\"").inm("\"v2\"").eval(Get),
            failed(Field::IfMatch, Reason::NoMatch)
        );
    }

    #[test]
    fn rfc9110_13_2_2_passing_if_match_does_not_skip_if_none_match() {
        assert_eq!(
            Req::default().im("\"v2\"").inm("\"v2\"").eval(Put),
            failed(Field::IfNoneMatch, Reason::TagMatches)
        );
    }

    #[test]
    fn rfc9110_13_2_2_if_unmodified_since_failure_beats_if_none_match() {
        assert_eq!(
            Req::default().ius(BEFORE).inm("\"v2\"").eval(Get),
            failed(Field::IfUnmodifiedSince, Reason::ModifiedSince)
        );
    }

    #[test]
    fn rfc9110_13_2_1_missing_resource_404_beats_412() {
        for m in [Delete, Get, Head, Post] {
            assert_eq!(
                Req::default().im("*").eval_with(m, &absent(), false),
                Decision::Proceed,
                "{m:?}"
            );
        }
        assert_eq!(
            Req::default().im("*").eval_with(Put, &absent(), false),
            failed(Field::IfMatch, Reason::ResourceAbsent)
        );
        assert_eq!(
            Req::default().im("\"v1\"").eval_with(Put, &absent(), false),
            failed(Field::IfMatch, Reason::ResourceAbsent)
        );
    }

    #[test]
    fn rfc9110_13_2_1_options_connect_trace_ignore_preconditions() {
        assert_eq!(
            Req::default().im("\"nope\"").eval(Method::NoPreconditions),
            Decision::Proceed
        );
    }

    #[test]
    fn rfc9111_4_3_2_no_cache_request_is_never_answered_304() {
        assert_eq!(
            Req::default().inm("\"v2\"").no_cache().eval(Get),
            Decision::Proceed
        );
        assert_eq!(
            Req::default().ims(AFTER).no_cache().eval(Get),
            Decision::Proceed
        );
        // ... but a 412 is still a 412.
        assert!(matches!(
            Req::default().im("\"v1\"").no_cache().eval(Get),
            Decision::PreconditionFailed(_)
        ));
    }

    #[test]
    fn rfc6585_3_when_required_and_no_usable_precondition() {
        let cur = exists("\"v2\"");
        assert_eq!(
            Req::default().eval_with(Put, &cur, true),
            Decision::PreconditionRequired
        );
        // An unusable date counts as absent.
        assert_eq!(
            Req::default().ius(b"not a date").eval_with(Put, &cur, true),
            Decision::PreconditionRequired
        );
        // A malformed If-Match counts as absent too.
        assert_eq!(
            Req::default().im("v2").eval_with(Put, &cur, true),
            Decision::PreconditionRequired
        );
        assert_eq!(
            Req::default().im("\"v2\"").eval_with(Put, &cur, true),
            Decision::Proceed
        );
        // An If-None-Match tag list does not protect a write; If-None-Match: * does.
        assert_eq!(
            Req::default().inm("\"x\"").eval_with(Put, &cur, true),
            Decision::PreconditionRequired
        );
        assert_eq!(
            Req::default().inm("*").eval_with(Put, &absent(), true),
            Decision::Proceed
        );
        // A valid date on a resource without a modification date would be ignored: absent.
        let no_lm = Current {
            last_modified: None,
            ..exists("\"v2\"")
        };
        assert_eq!(
            Req::default().ius(AFTER).eval_with(Put, &no_lm, true),
            Decision::PreconditionRequired
        );
        assert_eq!(
            Req::default().ius(AFTER).eval_with(Put, &cur, true),
            Decision::Proceed
        );
        // Reads are never required to be conditional; 404 beats 428.
        assert_eq!(Req::default().eval_with(Get, &cur, true), Decision::Proceed);
        assert_eq!(
            Req::default().eval_with(Delete, &absent(), true),
            Decision::Proceed
        );
    }

    #[test]
    fn the_origins_own_tag_is_an_alias_of_the_current_state() {
        let mut current = exists("\"s-synth\"");
        current.alias = EntityTag::parse(b"W/\"o1\"");
        // If-None-Match compares weakly: the origin's weak tag matches.
        assert_eq!(
            Req::default()
                .inm("W/\"o1\"")
                .eval_with(Get, &current, false),
            not_modified(Field::IfNoneMatch, Reason::TagMatches)
        );
        assert_eq!(
            Req::default().inm("\"o1\"").eval_with(Put, &current, false),
            failed(Field::IfNoneMatch, Reason::TagMatches)
        );
        // If-Match compares strongly: a weak tag never matches.
        assert_eq!(
            Req::default()
                .im("W/\"o1\"")
                .eval_with(Put, &current, false),
            failed(Field::IfMatch, Reason::WeakOnly)
        );
        // A strong alias does.
        current.alias = EntityTag::parse(b"\"o2\"");
        assert_eq!(
            Req::default().im("\"o2\"").eval_with(Put, &current, false),
            Decision::Proceed
        );
    }

    #[test]
    fn unknown_state_decides_nothing() {
        let unknown = Current {
            existence: Existence::Unknown,
            etag: None,
            alias: None,
            last_modified: None,
        };
        assert_eq!(
            Req::default().im("\"v1\"").eval_with(Put, &unknown, false),
            Decision::Proceed
        );
    }
}
