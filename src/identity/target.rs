//! Canonical targets: which resource a request names, so that every spelling of one resource
//! gives one key (and one write lock). Pure: no I/O, imports nothing of the crate.
//!
//! Owns: [`canonical_host`] (lower case, no port, no trailing dot), [`canonical_path`] (RFC 3986
//! §6.2.2: percent-encoding in upper case, unreserved characters decoded, characters not
//! allowed raw escaped, dot segments removed), [`canonical_query`] (its percent-encoding
//! normalised the same way, nothing else), [`Ambiguous`] and [`path_readings`].
//!
//! Invariants:
//! - Normalisation is idempotent, and two spellings RFC 3986 / RFC 9110 §4.2.3 make equivalent
//!   give one canonical form.
//! - Spellings whose meaning depends on the origin (an empty segment `//`, an encoded `/` or
//!   `\`, percent-encoded bytes that are not UTF-8, a `\`, a `;` path parameter) are reported as
//!   [`Ambiguous`], never silently keyed: [`canonical_path`] gives a lenient reading for route
//!   selection, and [`path_readings`] every reading an origin may give them, so that a target is
//!   refused when any of them reaches a route that refuses ambiguous targets.

use std::borrow::Cow;

/// A host (`Host` field or target authority) in canonical form: lower case, without a port,
/// without a trailing dot. Allocates only when something changes.
///
/// Every port is dropped, not only the default one: routes match hosts without their port, the
/// port in `Host` is the client's to choose (the listener does not depend on it), and a port that
/// made a new key would make a new write lock for the same resource.
pub fn canonical_host(host: &str) -> Cow<'_, str> {
    let h = host.trim();
    let h = split_port(h).map_or(h, |(name, _)| name);
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

/// `host:port` → (`host`, `port`); IPv6 literals keep their brackets.
fn split_port(host: &str) -> Option<(&str, &str)> {
    if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        return rest.strip_prefix(':').map(|p| (&host[..=end], p));
    }
    host.rsplit_once(':')
}

/// Why a path cannot be normalised without knowing how the origin reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ambiguous {
    /// An empty segment (`//`): some servers merge slashes, others do not.
    EmptySegment,
    /// An encoded `/` (`%2F`) or `\` (`%5C`), or a raw `\`: a separator for some servers only.
    EncodedSeparator,
    /// Percent-encoded bytes that are not UTF-8 (or an invalid `%` escape), or raw bytes outside
    /// ASCII in the target.
    NotUtf8,
    /// Path parameters (`;`): servlet containers and others strip them (`/a;x/b` is `/a/b` there).
    PathParameter,
    /// A target that is not a path (asterisk-form, absolute-form, or no leading `/`).
    NotOriginForm,
}

impl Ambiguous {
    /// A sentence for the problem body.
    pub fn explain(self) -> &'static str {
        match self {
            Ambiguous::EmptySegment => "the path has an empty segment (\"//\")",
            Ambiguous::EncodedSeparator => {
                "the path has an encoded or backslash separator (%2F, %5C or \\)"
            }
            Ambiguous::NotUtf8 => {
                "the path has a percent-encoding that is invalid or not UTF-8, or bytes outside ASCII"
            }
            Ambiguous::PathParameter => "the path has a path parameter (\";\")",
            Ambiguous::NotOriginForm => "the target is not a path starting with \"/\"",
        }
    }
}

/// The canonical path, and the reason it is ambiguous if it is. When ambiguous, the path returned
/// is a lenient reading (empty segments merged, encoded separators read as `/`), good for choosing
/// a route, never for a key ([`path_readings`] gives the others). The input must be the path only
/// (no query). Allocates only when the path is not already canonical.
pub fn canonical_path(path: &str) -> (Cow<'_, str>, Option<Ambiguous>) {
    if is_plain(path) {
        return (Cow::Borrowed(path), None);
    }
    let (canonical, ambiguous) = read_path(path, LENIENT);
    (Cow::Owned(canonical), ambiguous)
}

/// How an origin may read what [`Ambiguous`] names.
#[derive(Clone, Copy, Debug)]
struct Reading {
    /// Empty segments are merged (`/a//b` is `/a/b`), or kept (and `..` removes one).
    merge_empty: bool,
    /// Path parameters are cut from their segment (`/a;x/b` is `/a/b`, `..;` is `..`).
    strip_params: bool,
    /// `%2F`, `%5C` and `\` separate segments, or are characters of one.
    split_encoded: bool,
}

/// The reading [`canonical_path`] returns.
const LENIENT: Reading = Reading {
    merge_empty: true,
    strip_params: false,
    split_encoded: true,
};

/// Every reading of a path that origins may give it, the lenient one first: empty segments
/// merged or kept, path parameters kept or cut, encoded separators split or not (each read per
/// RFC 3986 otherwise). For an unambiguous path, one. A target is refused (`strict_targets`)
/// when *any* of them falls on a route that refuses ambiguous targets: a spelling must not reach
/// a guard or enforce resource through another route's lenient reading.
pub fn path_readings(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(8);
    for merge_empty in [true, false] {
        for strip_params in [false, true] {
            for split_encoded in [true, false] {
                let r = Reading {
                    merge_empty,
                    strip_params,
                    split_encoded,
                };
                let (p, _) = read_path(path, r);
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// [`canonical_path`]'s work under one reading (the ambiguity reported is what the lenient
/// reading finds).
fn read_path(path: &str, how: Reading) -> (String, Option<Ambiguous>) {
    let mut ambiguous = None;
    // 1. Percent-encoding (RFC 3986 §6.2.2.1, §6.2.2.2): decode unreserved characters, write the
    //    others in upper case. A run of escapes must decode to UTF-8.
    let bytes = path.as_bytes();
    let mut text = String::with_capacity(bytes.len() + 1);
    let mut run: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            check_run(&mut run, &mut ambiguous);
            if b == b';' {
                ambiguous.get_or_insert(Ambiguous::PathParameter);
                if how.strip_params {
                    i = segment_end(bytes, i, how.split_encoded);
                    continue;
                }
            } else if !b.is_ascii() {
                ambiguous.get_or_insert(Ambiguous::NotUtf8);
            }
            if b == b'\\' {
                ambiguous.get_or_insert(Ambiguous::EncodedSeparator);
                text.push_str(if how.split_encoded { "/" } else { "%5C" });
            } else if needs_escape(b) {
                // A character RFC 3986 does not allow raw (`|`, `{`, `"`, ...) that the request
                // line parser let through: origins decode it and its escape alike, so it is
                // written as its escape (`/a|b` is `/a%7Cb`).
                push_escape(&mut text, b);
            } else {
                // `path` is a `str`: copy whole characters.
                let ch = path[i..].chars().next().unwrap_or('?');
                text.push(ch);
                i += ch.len_utf8();
                continue;
            }
            i += 1;
            continue;
        }
        let Some(v) = escaped_byte(bytes, i) else {
            check_run(&mut run, &mut ambiguous);
            ambiguous.get_or_insert(Ambiguous::NotUtf8);
            text.push_str("%25");
            i += 1;
            continue;
        };
        run.push(v);
        if v == b';' {
            // An origin that decodes before it cuts path parameters reads `..%3B` as `..;`.
            ambiguous.get_or_insert(Ambiguous::PathParameter);
            if how.strip_params {
                i = segment_end(bytes, i, how.split_encoded);
                check_run(&mut run, &mut ambiguous);
                continue;
            }
        }
        if is_unreserved(v) {
            text.push(char::from(v));
        } else if (v == b'/' || v == b'\\') && how.split_encoded {
            ambiguous.get_or_insert(Ambiguous::EncodedSeparator);
            text.push('/');
        } else {
            if v == b'/' || v == b'\\' {
                ambiguous.get_or_insert(Ambiguous::EncodedSeparator);
            }
            push_escape(&mut text, v);
        }
        i += 3;
    }
    check_run(&mut run, &mut ambiguous);
    // 2. Dot segments (RFC 3986 §5.2.4); empty segments are ambiguous (merged when lenient).
    let mut out: Vec<&str> = Vec::new();
    let mut segments = text.split('/').peekable();
    if segments.peek() == Some(&"") {
        segments.next(); // before the leading '/'
    }
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "." | ".." => {
                if seg == ".." {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            "" if !last => {
                ambiguous.get_or_insert(Ambiguous::EmptySegment);
                if !how.merge_empty {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut canonical = String::with_capacity(text.len() + 1);
    for seg in &out {
        canonical.push('/');
        canonical.push_str(seg);
    }
    if canonical.is_empty() {
        canonical.push('/');
    }
    (canonical, ambiguous)
}

/// The query in canonical form: its percent-encoding normalised as a path's (RFC 3986 §6.2.2.1,
/// §6.2.2.2; RFC 9110 §4.2.3: escapes of unreserved characters decoded, the others in upper case,
/// characters not allowed raw escaped, an invalid `%` escaped), nothing else: parameters keep
/// their order, `+` stays `+`, an empty query stays (`?` is not no query). Allocates only when
/// something changes.
pub fn canonical_query(query: &str) -> Cow<'_, str> {
    let bytes = query.as_bytes();
    if is_canonical_query(bytes) {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            match escaped_byte(bytes, i) {
                Some(v) if is_unreserved(v) => out.push(char::from(v)),
                Some(v) => push_escape(&mut out, v),
                None => {
                    out.push_str("%25");
                    i += 1;
                    continue;
                }
            }
            i += 3;
        } else if plain_in_query(b) {
            out.push(char::from(b));
            i += 1;
        } else {
            // Not allowed raw, or a byte of a character outside ASCII (IRI to URI, RFC 3987
            // §3.1): its escape.
            push_escape(&mut out, b);
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// Where the segment holding `bytes[i]` ends: at the next separator, raw, or encoded when
/// `encoded` (an origin that decodes before it cuts path parameters splits there too).
fn segment_end(bytes: &[u8], mut i: usize, encoded: bool) -> usize {
    while i < bytes.len() {
        let escaped_separator = encoded
            && bytes[i] == b'%'
            && matches!(
                bytes.get(i + 1..i + 3),
                Some([b'2', b'f' | b'F'] | [b'5', b'c' | b'C'])
            );
        if matches!(bytes[i], b'/' | b'\\') || escaped_separator {
            return i;
        }
        i += 1;
    }
    i
}

/// Whether a query is already canonical, as [`canonical_query`] would write it: plain bytes, and
/// escapes in their canonical form (the common case: no allocation).
fn is_canonical_query(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match escaped_byte(bytes, i) {
                Some(v) if !is_unreserved(v) && bytes[i..i + 3] == escape_of(v) => i += 3,
                _ => return false,
            }
        } else if plain_in_query(bytes[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// A byte a query holds raw in canonical form.
fn plain_in_query(b: u8) -> bool {
    b.is_ascii() && b != b'\\' && b != b'%' && (b == b'?' || !needs_escape(b))
}

/// The byte the escape at `bytes[i]` (a `%`) stands for, if it is a valid one.
fn escaped_byte(bytes: &[u8], i: usize) -> Option<u8> {
    let hex = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    match bytes.get(i + 1..i + 3)? {
        [h, l] => Some((hex(*h)? << 4) | hex(*l)?),
        _ => None,
    }
}

/// `b`'s escape as RFC 3986 §6.2.2.1 writes it: `%` and two upper-case digits.
fn escape_of(b: u8) -> [u8; 3] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]
}

/// Appends `b`'s escape.
fn push_escape(out: &mut String, b: u8) {
    out.extend(escape_of(b).map(char::from));
}

/// Ends a run of percent-escapes: it must have decoded to UTF-8.
fn check_run(run: &mut Vec<u8>, ambiguous: &mut Option<Ambiguous>) {
    if !run.is_empty() && std::str::from_utf8(run).is_err() {
        ambiguous.get_or_insert(Ambiguous::NotUtf8);
    }
    run.clear();
}

/// Already canonical: starts with `/`, no escape, no backslash, no dot or empty segment (but a
/// trailing slash).
fn is_plain(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest
        .bytes()
        .any(|b| b == b'%' || b == b'\\' || b == b';' || !b.is_ascii() || needs_escape(b))
    {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg == "." || seg == ".." || (seg.is_empty() && !last) {
            return false;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// An ASCII byte a path may not hold raw (RFC 3986 §3.3: neither a `pchar` nor `/`; `%` and `\`
/// are handled apart).
fn needs_escape(b: u8) -> bool {
    b.is_ascii()
        && !is_unreserved(b)
        && !matches!(
            b,
            b'/' | b'%'
                | b'\\'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{OwnedKey, RouteId};

    #[test]
    fn rfc3986_6_2_2_paths_are_normalised() {
        let cases = [
            ("/items/6", "/items/6", None),
            ("/items/%36", "/items/6", None),
            ("/%6cegacy/x", "/legacy/x", None),
            ("/a/%7e/%2d", "/a/~/-", None),
            ("/a%3a%3Ab", "/a%3A%3Ab", None),
            ("/a/./b/../c", "/a/c", None),
            ("/a/%2e%2E/b", "/b", None),
            ("/..", "/", None),
            ("/a/b/..", "/a/", None),
            ("/a/.", "/a/", None),
            ("/", "/", None),
            ("/a/", "/a/", None),
            ("/caf%C3%A9", "/caf%C3%A9", None),
            ("//legacy/x", "/legacy/x", Some(Ambiguous::EmptySegment)),
            ("/a//b", "/a/b", Some(Ambiguous::EmptySegment)),
            ("/a%2Fb", "/a/b", Some(Ambiguous::EncodedSeparator)),
            ("/a%5cb", "/a/b", Some(Ambiguous::EncodedSeparator)),
            ("/a\\b", "/a/b", Some(Ambiguous::EncodedSeparator)),
            ("/a%FF", "/a%FF", Some(Ambiguous::NotUtf8)),
            ("/a%C3", "/a%C3", Some(Ambiguous::NotUtf8)),
            ("/a%zz", "/a%25zz", Some(Ambiguous::NotUtf8)),
            (
                "/legacy;x/items/1",
                "/legacy;x/items/1",
                Some(Ambiguous::PathParameter),
            ),
            (
                "/static/..;/legacy",
                "/static/..;/legacy",
                Some(Ambiguous::PathParameter),
            ),
            ("/caf\u{e9}", "/caf\u{e9}", Some(Ambiguous::NotUtf8)),
        ];
        for (input, want, why) in cases {
            let (got, amb) = canonical_path(input);
            assert_eq!((got.as_ref(), amb), (want, why), "{input}");
        }
        assert!(matches!(canonical_path("/plain/path").0, Cow::Borrowed(_)));
    }

    #[test]
    fn raw_characters_and_their_escapes_are_one_path_and_one_query() {
        for (raw, escaped) in [
            ("/items/a|b", "/items/a%7cb"),
            ("/items/{x}", "/items/%7B%78%7D"),
            ("/a\"b^`[]", "/a%22b%5E%60%5B%5D"),
        ] {
            let (a, why_a) = canonical_path(raw);
            let (b, why_b) = canonical_path(escaped);
            assert_eq!((a.as_ref(), why_a), (b.as_ref(), why_b), "{raw} {escaped}");
            assert_eq!(why_a, None);
        }
        assert_eq!(canonical_path("/items/a|b").0, "/items/a%7Cb");
        for (raw, want) in [
            ("id=6", "id=6"),
            ("id=%36", "id=6"),
            ("a=%2b&b=%2B+c", "a=%2B&b=%2B+c"),
            ("q=caf\u{e9}", "q=caf%C3%A9"),
            ("q=caf%c3%a9", "q=caf%C3%A9"),
            ("x=|{}", "x=%7C%7B%7D"),
            ("x=%zz&y=%", "x=%25zz&y=%25"),
            ("x=a\\b", "x=a%5Cb"),
            ("x=a%5cb", "x=a%5Cb"),
            ("a/b?c=d", "a/b?c=d"),
            ("", ""),
        ] {
            assert_eq!(canonical_query(raw), want, "{raw}");
            assert_eq!(canonical_query(want), want, "idempotent: {want}");
        }
        for canonical in ["a=1&b=2", "q=a%20b&r=%C3%A9", "x=%2F%3F"] {
            assert!(
                matches!(canonical_query(canonical), Cow::Borrowed(_)),
                "{canonical}"
            );
        }
    }

    #[test]
    fn every_reading_of_an_ambiguous_path_is_offered() {
        let has = |path: &str, want: &str| {
            let r = path_readings(path);
            assert!(r.contains(&want.to_string()), "{path}: {r:?} lacks {want}");
            assert_eq!(r[0], canonical_path(path).0, "the lenient reading first");
        };
        // A servlet container cuts path parameters: `..;` is `..`.
        has("/static/..;/legacy/items/1", "/legacy/items/1");
        has("/legacy;x/items/1", "/legacy/items/1");
        has("/static/..%3B/legacy/items/1", "/legacy/items/1");
        has("/static/..%3B%2F..%2Flegacy/items/1", "/legacy/items/1");
        has("/static/..;%2F..%2Flegacy/items/1", "/legacy/items/1");
        assert_eq!(
            canonical_path("/a%3bx").1,
            Some(Ambiguous::PathParameter),
            "an encoded ';' too"
        );
        // A server that keeps empty segments lets `..` remove one of them.
        has("/legacy//../items/1", "/legacy/items/1");
        has("/legacy//../items/1", "/items/1");
        // Encoded separators split, or kept in one segment.
        has("/a%2Fb", "/a/b");
        has("/a%2Fb", "/a%2Fb");
        has("/a\\b", "/a%5Cb");
        assert_eq!(path_readings("/plain/path"), ["/plain/path"]);
        assert_eq!(path_readings("/a/%7e"), ["/a/~"]);
    }

    #[test]
    fn hosts_drop_case_the_default_port_and_a_trailing_dot() {
        for (input, want) in [
            ("Test.Local", "test.local"),
            ("test.local:80", "test.local"),
            ("test.local.", "test.local"),
            ("test.local:8080", "test.local"),
            ("test.local.:1", "test.local"),
            ("[::1]:80", "[::1]"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
        ] {
            assert_eq!(canonical_host(input), want, "{input}");
        }
    }

    fn segment() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-zA-Z0-9._~-]{0,6}",
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%41".to_string()),
            Just("%7E".to_string()),
            Just("%3a".to_string()),
            Just("%C3%A9".to_string()),
            Just("%2F".to_string()),
            Just("%FF".to_string()),
        ]
    }

    proptest::proptest! {
        /// Normalisation is idempotent, and the canonical form is itself unambiguous.
        #[test]
        fn canonical_paths_are_idempotent(segs in proptest::collection::vec(segment(), 0..8)) {
            let path = format!("/{}", segs.join("/"));
            let (once, why) = canonical_path(&path);
            let (twice, why2) = canonical_path(&once);
            proptest::prop_assert_eq!(once.as_ref(), twice.as_ref());
            if why.is_none() {
                proptest::prop_assert_eq!(why2, None);
            }
        }

        /// Spelling an unreserved character as an escape, in either case, names the same
        /// resource: one key.
        #[test]
        fn spellings_that_normalise_equal_give_one_key(
            segs in proptest::collection::vec("[a-z0-9._~-]{1,6}", 1..6),
            mask in proptest::prelude::any::<u64>(),
            upper in proptest::prelude::any::<bool>(),
        ) {
            let plain = format!("/{}", segs.join("/"));
            let mut spelled = String::new();
            for (i, c) in plain.chars().enumerate() {
                if c != '/' && mask & (1 << (i % 64)) != 0 {
                    let e = format!("%{:02x}", c as u32);
                    spelled.push_str(&if upper { e.to_uppercase() } else { e });
                } else {
                    spelled.push(c);
                }
            }
            let (a, _) = canonical_path(&plain);
            let (b, why) = canonical_path(&spelled);
            proptest::prop_assert_eq!(why, None);
            proptest::prop_assert_eq!(a.as_ref(), b.as_ref());
            let state = std::collections::hash_map::RandomState::new();
            let ka = OwnedKey::new(RouteId(1), "h", &a, Some("q=1"));
            let kb = OwnedKey::new(RouteId(1), &canonical_host("H:80"), &b, Some("q=1"));
            proptest::prop_assert_eq!(&ka, &kb);
            proptest::prop_assert_eq!(ka.as_key().hash_with(&state), kb.as_key().hash_with(&state));
        }
    }
}
