//! Entity-tags (RFC 9110 §8.8.3) parsed straight from header bytes.
//!
//! Owns: the `entity-tag` grammar, quote-aware list scanning (`#entity-tag` and `*`), and the strong
//! and weak comparison functions. Nothing here allocates: tags borrow the header bytes, and list
//! scanning hands each member to a visitor.
//!
//! Invariants:
//! - An [`EntityTag`] always holds an opaque-tag made only of `etagc` bytes (`!`, `#`..`~`, obs-text);
//!   the surrounding quotes are not part of [`EntityTag::opaque`].
//! - Bytes are compared raw: no unescaping, no case folding, no UTF-8 requirement (obs-text is legal).

/// One entity-tag: `[W/] DQUOTE *etagc DQUOTE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntityTag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// `etagc = %x21 / %x23-7E / obs-text` (RFC 9110 §8.8.3).
#[inline]
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// Optional whitespace: SP or HTAB (RFC 9110 §5.6.3).
#[inline]
fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Strips leading and trailing OWS.
#[inline]
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

impl<'a> EntityTag<'a> {
    /// Builds a tag from its parts. Returns `None` when `opaque` holds a byte outside `etagc`.
    pub fn new(weak: bool, opaque: &'a [u8]) -> Option<Self> {
        opaque
            .iter()
            .all(|&b| is_etagc(b))
            .then_some(EntityTag { weak, opaque })
    }

    /// Builds a tag from parts already known to be valid (for example, bytes that went through
    /// [`EntityTag::new`] or [`EntityTag::parse`] when they were stored). Skips the byte check:
    /// the caller upholds the `etagc` invariant (checked in debug builds).
    #[inline]
    pub fn from_trusted(weak: bool, opaque: &'a [u8]) -> Self {
        debug_assert!(opaque.iter().all(|&b| is_etagc(b)));
        EntityTag { weak, opaque }
    }

    /// Parses a whole field value that must be exactly one entity-tag (surrounding OWS allowed),
    /// as in an `ETag` response header.
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let (tag, rest) = Self::parse_prefix(trim_ows(value))?;
        rest.is_empty().then_some(tag)
    }

    /// Parses one entity-tag at the start of `s` and returns it with the bytes after it.
    fn parse_prefix(s: &'a [u8]) -> Option<(Self, &'a [u8])> {
        let (weak, s) = match s {
            [b'W', b'/', rest @ ..] => (true, rest),
            _ => (false, s),
        };
        let body = s.strip_prefix(b"\"")?;
        // One pass: stop at the closing quote, fail on any byte that is not `etagc`.
        for (end, &b) in body.iter().enumerate() {
            if b == b'"' {
                let tag = EntityTag {
                    weak,
                    opaque: &body[..end],
                };
                return Some((tag, &body[end + 1..]));
            }
            if !is_etagc(b) {
                return None;
            }
        }
        None
    }

    /// Whether the tag carries the `W/` prefix.
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The opaque-tag without its quotes.
    pub fn opaque(&self) -> &'a [u8] {
        self.opaque
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): neither tag is weak and the opaque-tags are equal.
    #[inline]
    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison (RFC 9110 §8.8.3.2): the opaque-tags are equal, whatever the `W/` flags.
    #[inline]
    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// The tag in wire form, byte for byte (`W/"..."` or `"..."`), for header fields.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.opaque.len() + 4);
        if self.weak {
            v.extend_from_slice(b"W/");
        }
        v.push(b'"');
        v.extend_from_slice(self.opaque);
        v.push(b'"');
        v
    }

    /// Writes the tag in wire form (`W/"..."` or `"..."`), replacing obs-text with `\u{fffd}` so the
    /// result is valid UTF-8 (for logs and problem bodies; never for comparison).
    pub fn to_display(&self) -> String {
        let mut s = String::with_capacity(self.opaque.len() + 4);
        if self.weak {
            s.push_str("W/");
        }
        s.push('"');
        s.push_str(&String::from_utf8_lossy(self.opaque));
        s.push('"');
        s
    }
}

/// What a list-valued precondition field (`If-Match`, `If-None-Match`) turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListShape {
    /// No field line at all.
    Absent,
    /// Exactly one `*` and nothing else (across all field lines).
    Any,
    /// A list of entity-tags, possibly empty (`If-Match: ` or `If-Match: ,`).
    Tags {
        /// Number of members.
        count: usize,
        /// Number of members with the `W/` prefix.
        weak: usize,
    },
    /// Anything else: a member that is not an entity-tag, or `*` mixed with tags or repeated
    /// (RFC 9110 §13.1.1 calls that "syntactically invalid").
    Malformed,
}

/// Scans every field line of a list-valued header as one list (RFC 9110 §5.3, §5.6.1.2), calling
/// `visit` for each entity-tag member in order. Commas inside quotes do not split; empty members and
/// SP/HTAB around members are allowed.
///
/// `visit` may be called for members of a list that later proves [`ListShape::Malformed`]; callers
/// must look at the returned shape before trusting what they gathered.
pub fn scan_list<'a, I>(lines: I, mut visit: impl FnMut(EntityTag<'a>)) -> ListShape
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut seen_line = false;
    let mut stars = 0usize;
    let mut count = 0usize;
    let mut weak = 0usize;
    for line in lines {
        seen_line = true;
        let mut s = line;
        loop {
            // Skip OWS and empty members.
            while let [b, rest @ ..] = s {
                if is_ows(*b) || *b == b',' {
                    s = rest;
                } else {
                    break;
                }
            }
            if s.is_empty() {
                break;
            }
            let rest = if let [b'*', rest @ ..] = s {
                stars += 1;
                rest
            } else {
                match EntityTag::parse_prefix(s) {
                    Some((tag, rest)) => {
                        count += 1;
                        weak += usize::from(tag.weak);
                        visit(tag);
                        rest
                    }
                    None => return ListShape::Malformed,
                }
            };
            // After a member: OWS, then a comma or the end of the line.
            let rest = trim_leading_ows(rest);
            match rest {
                [] => break,
                [b',', more @ ..] => s = more,
                _ => return ListShape::Malformed,
            }
        }
    }
    match (seen_line, stars, count) {
        (false, _, _) => ListShape::Absent,
        (true, 0, _) => ListShape::Tags { count, weak },
        (true, 1, 0) => ListShape::Any,
        _ => ListShape::Malformed,
    }
}

#[inline]
fn trim_leading_ows(mut s: &[u8]) -> &[u8] {
    while let [b, rest @ ..] = s {
        if !is_ows(*b) {
            break;
        }
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> EntityTag<'_> {
        EntityTag::parse(s.as_bytes()).expect("valid tag")
    }

    fn collect<'a>(lines: &[&'a [u8]]) -> (ListShape, Vec<EntityTag<'a>>) {
        let mut v = Vec::new();
        let shape = scan_list(lines.iter().copied(), |t| v.push(t));
        (shape, v)
    }

    #[test]
    fn rfc9110_8_8_3_grammar_accepts_legal_tags() {
        assert_eq!(tag("\"abc\"").opaque(), b"abc");
        assert!(tag("W/\"abc\"").is_weak());
        assert_eq!(tag("\"\"").opaque(), b""); // empty tag is valid
        assert_eq!(tag("\"a,b\"").opaque(), b"a,b"); // comma inside
        assert_eq!(tag("\"a\\b\"").opaque(), b"a\\b"); // backslash is just a byte
        assert_eq!(tag("\"!#~\"").opaque(), b"!#~");
        assert_eq!(tag("  \"x\"\t").opaque(), b"x");
        assert_eq!(
            EntityTag::parse(b"\"caf\xc3\xa9\xff\"").unwrap().opaque(),
            b"caf\xc3\xa9\xff"
        ); // obs-text
    }

    #[test]
    fn rfc9110_8_8_3_grammar_rejects_illegal_tags() {
        for bad in [
            "abc",        // unquoted
            "w/\"x\"",    // lower-case weak prefix
            "W/ \"x\"",   // space after W/
            "\"a b\"",    // space inside
            "\"a\tb\"",   // tab inside
            "\"a\\\"b\"", // no escaping
            "\"abc",      // unterminated
            "\"a\"b",     // junk after
            "",
            "*",
        ] {
            assert!(EntityTag::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert!(EntityTag::parse(b"\"a\x7fb\"").is_none()); // DEL
        assert!(EntityTag::parse(b"\"a\x01b\"").is_none()); // control
    }

    #[test]
    fn rfc9110_8_8_3_2_comparison_table() {
        let cases = [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
            ("\"foo\"", "\"Foo\"", false, false), // case-sensitive
        ];
        for (a, b, strong, weak) in cases {
            assert_eq!(tag(a).strong_eq(&tag(b)), strong, "strong {a} {b}");
            assert_eq!(tag(a).weak_eq(&tag(b)), weak, "weak {a} {b}");
        }
    }

    #[test]
    fn rfc9110_5_6_1_2_list_splits_only_outside_quotes() {
        let (shape, tags) = collect(&[b"\"a,b\", \"c\""]);
        assert_eq!(shape, ListShape::Tags { count: 2, weak: 0 });
        assert_eq!(tags[0].opaque(), b"a,b");
        assert_eq!(tags[1].opaque(), b"c");
    }

    #[test]
    fn rfc9110_5_6_1_2_list_accepts_empty_elements_and_htab() {
        let (shape, tags) = collect(&[b" ,\t\"a\" ,, \t W/\"b\"\t, "]);
        assert_eq!(shape, ListShape::Tags { count: 2, weak: 1 });
        assert_eq!(tags[1], EntityTag::new(true, b"b").unwrap());
        assert_eq!(collect(&[b""]).0, ListShape::Tags { count: 0, weak: 0 });
        assert_eq!(collect(&[b" , ,"]).0, ListShape::Tags { count: 0, weak: 0 });
    }

    #[test]
    fn rfc9110_5_3_several_field_lines_form_one_list() {
        let (shape, tags) = collect(&[b"\"a\"", b"\"b\", \"c\""]);
        assert_eq!(shape, ListShape::Tags { count: 3, weak: 0 });
        assert_eq!(tags[2].opaque(), b"c");
        assert_eq!(collect(&[]).0, ListShape::Absent);
    }

    #[test]
    fn rfc9110_13_1_1_star_alone_is_any_and_mixed_is_malformed() {
        assert_eq!(collect(&[b"*"]).0, ListShape::Any);
        assert_eq!(collect(&[b" * "]).0, ListShape::Any);
        assert_eq!(collect(&[b"*, \"a\""]).0, ListShape::Malformed);
        assert_eq!(collect(&[b"\"a\", *"]).0, ListShape::Malformed);
        assert_eq!(collect(&[b"*, *"]).0, ListShape::Malformed);
        assert_eq!(collect(&[b"*", b"*"]).0, ListShape::Malformed);
        assert_eq!(collect(&[b"*", b"\"a\""]).0, ListShape::Malformed);
        assert_eq!(collect(&[b"*x"]).0, ListShape::Malformed);
    }

    #[test]
    fn rfc9110_5_6_1_2_bad_member_makes_whole_list_malformed() {
        // Strict reading: the value is not a list of entity-tags.
        assert_eq!(collect(&[b"\"a\", b"]).0, ListShape::Malformed);
        // A prefix of a malformed member must not count as a tag (Go matches "inner" here).
        assert_eq!(collect(&[b"\"inner\"quotes\""]).0, ListShape::Malformed);
        assert_eq!(collect(&[b"\"a\" \"b\""]).0, ListShape::Malformed); // missing comma
        assert_eq!(collect(&[b"\"a b\""]).0, ListShape::Malformed);
    }

    #[test]
    fn rfc9110_8_8_3_obs_text_tags_are_compared_as_bytes() {
        let (shape, tags) = collect(&[b"\"\xe9t\xe9\""]);
        assert_eq!(shape, ListShape::Tags { count: 1, weak: 0 });
        assert!(tags[0].strong_eq(&EntityTag::new(false, b"\xe9t\xe9").unwrap()));
    }

    #[test]
    fn display_is_wire_form() {
        assert_eq!(tag("W/\"x\"").to_display(), "W/\"x\"");
        assert_eq!(tag("\"x,y\"").to_display(), "\"x,y\"");
    }
}
