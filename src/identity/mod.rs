//! Which resource a request names, and who is asking: the resource key the store is indexed by,
//! and the principal whose partition of it a request reads and teaches ([`principal`]). Pure: no
//! I/O, no Pingora types; imports nothing of the crate.
//!
//! Owns: [`RouteId`] (a route's stable name in keys), [`ResourceKey`] (a borrowed key, built once
//! per request from the fields it is made of, hashed without allocating) and [`OwnedKey`] (the same
//! key in one allocation, kept in a request's context until the origin's answer is learned).
//!
//! Invariants:
//! - Two keys name the same resource exactly when their route ids are equal, their hosts are equal
//!   ignoring ASCII case, and their paths (with query) are equal byte for byte.
//! - [`ResourceKey::hash_with`] agrees with that equality: keys that name the same resource hash
//!   the same (the host is folded to lower case before hashing).
//! - A [`RouteId`] depends only on what the route matches (its host and path prefix), never on its
//!   position in the file, so a reloaded configuration keeps the store's keys valid.
//!
//! Matching a key against a stored record is the store's business (`store::index`), not the
//! key's: the key only says what it is made of.
//!
//! Canonical targets ([`canonical_host`], [`canonical_path`]): one function decides which resource
//! a request names, so that every spelling of one resource gives one key (and one write lock):
//! the host in lower case without the default port, the path normalised per RFC 3986 §6.2.2
//! (percent-encoding in upper case, unreserved characters decoded, dot segments removed), the
//! query as sent. Spellings whose meaning depends on the origin (an empty segment `//`, an
//! encoded `/` or `\`, percent-encoded bytes that are not UTF-8, a `\`) are reported as
//! [`Ambiguous`], with a lenient reading for route selection.

pub mod principal;

pub use principal::{cookie_values, Principal, PrincipalHasher, PrincipalKey, PrincipalSource};

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};

/// A route's stable identity in resource keys: a 64-bit FNV-1a hash of its host (or none) and path
/// prefix. Routes that match the same requests share an id, and so share learned state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteId(pub u64);

impl RouteId {
    /// The id of a route matching `host` (lower case, `None` for any host) and `path_prefix`.
    pub fn of(host: Option<&str>, path_prefix: &str) -> RouteId {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = OFFSET;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(PRIME);
            }
        };
        match host {
            Some(host) => {
                eat(b"h");
                eat(host.as_bytes());
            }
            None => eat(b"*"),
        }
        eat(&[0]);
        eat(path_prefix.as_bytes());
        RouteId(h)
    }
}

/// Identifies a resource without allocating: its route, host (compared case-insensitively) and
/// path with query.
#[derive(Clone, Copy, Debug)]
pub struct ResourceKey<'a> {
    /// The route the request matched.
    pub route: RouteId,
    /// Host, as received (any case, port included when sent).
    pub host: &'a str,
    /// Path and query, as received.
    pub path: &'a str,
}

impl ResourceKey<'_> {
    /// The key in one allocation, host folded to lower case.
    pub fn to_owned_key(&self) -> OwnedKey {
        OwnedKey::new(self.route, self.host, self.path, None)
    }

    /// Whether two keys name the same resource (see the module invariants).
    #[inline]
    pub fn same_resource(&self, other: &ResourceKey<'_>) -> bool {
        self.route == other.route
            && self.path == other.path
            && (self.host == other.host || self.host.eq_ignore_ascii_case(other.host))
    }

    /// The key's 64-bit hash under `state` (case-folded host: equal keys hash equal).
    #[inline]
    pub fn hash_with(&self, state: &impl BuildHasher) -> u64 {
        let mut h = state.build_hasher();
        h.write_u64(self.route.0);
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

/// A [`ResourceKey`] that owns its bytes: host (lower case) and path in one string. Its derived
/// equality is resource equality, since the host is stored in lower case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnedKey {
    route: RouteId,
    /// Where the path starts in `text`.
    path_at: usize,
    text: Box<str>,
}

impl OwnedKey {
    /// A key from its parts, in one allocation: `host` folded to lower case, `query` (when there is
    /// one) appended to `path` after a `?`.
    pub fn new(route: RouteId, host: &str, path: &str, query: Option<&str>) -> OwnedKey {
        let query_len = query.map_or(0, |q| q.len() + 1);
        let mut text = String::with_capacity(host.len() + path.len() + query_len);
        text.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        text.push_str(path);
        if let Some(q) = query {
            text.push('?');
            text.push_str(q);
        }
        OwnedKey {
            route,
            path_at: host.len(),
            text: text.into_boxed_str(),
        }
    }

    /// Borrows it as a [`ResourceKey`].
    #[inline]
    pub fn as_key(&self) -> ResourceKey<'_> {
        let (host, path) = self.text.split_at(self.path_at);
        ResourceKey {
            route: self.route,
            host,
            path,
        }
    }

    /// Bytes held: host, path and query (for accounting, and what `store.max_key_bytes` bounds).
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether host and path are both empty.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl std::fmt::Display for OwnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = self.as_key();
        write!(f, "{}{}", k.host, k.path)
    }
}

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
/// a route, never for a key. The input must be the path only (no query). Allocates only when the
/// path is not already canonical.
pub fn canonical_path(path: &str) -> (Cow<'_, str>, Option<Ambiguous>) {
    if is_plain(path) {
        return (Cow::Borrowed(path), None);
    }
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
            } else if !b.is_ascii() {
                ambiguous.get_or_insert(Ambiguous::NotUtf8);
            }
            if b == b'\\' {
                ambiguous.get_or_insert(Ambiguous::EncodedSeparator);
                text.push('/');
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
        let value = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        let Some(v) = value else {
            check_run(&mut run, &mut ambiguous);
            ambiguous.get_or_insert(Ambiguous::NotUtf8);
            text.push_str("%25");
            i += 1;
            continue;
        };
        run.push(v);
        if is_unreserved(v) {
            text.push(char::from(v));
        } else if v == b'/' || v == b'\\' {
            ambiguous.get_or_insert(Ambiguous::EncodedSeparator);
            text.push('/');
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            text.push('%');
            text.push(char::from(HEX[usize::from(v >> 4)]));
            text.push(char::from(HEX[usize::from(v & 15)]));
        }
        i += 3;
    }
    check_run(&mut run, &mut ambiguous);
    // 2. Dot segments (RFC 3986 §5.2.4); empty segments are ambiguous and merged.
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
    (Cow::Owned(canonical), ambiguous)
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
        .any(|b| b == b'%' || b == b'\\' || b == b';' || !b.is_ascii())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(route: u64, host: &'a str, path: &'a str) -> ResourceKey<'a> {
        ResourceKey {
            route: RouteId(route),
            host,
            path,
        }
    }

    #[test]
    fn hosts_compare_and_hash_case_insensitively() {
        let state = std::collections::hash_map::RandomState::new();
        let a = key(1, "API.example.com", "/x?y=1");
        let b = key(1, "api.example.com", "/x?y=1");
        assert!(a.same_resource(&b));
        assert_eq!(a.hash_with(&state), b.hash_with(&state));
        assert!(!a.same_resource(&key(1, "api.example.com", "/x?y=2")));
        assert!(!a.same_resource(&key(2, "api.example.com", "/x?y=1")));
    }

    #[test]
    fn the_owned_key_borrows_back_the_same_resource() {
        let a = key(7, "Host:8080", "/items/1?q");
        let owned = a.to_owned_key();
        let back = owned.as_key();
        assert!(a.same_resource(&back));
        assert_eq!(back.host, "host:8080");
        assert_eq!(back.path, "/items/1?q");
        assert_eq!(owned.to_string(), "host:8080/items/1?q");
    }

    #[test]
    fn route_ids_depend_on_what_the_route_matches_only() {
        assert_eq!(RouteId::of(None, "/api"), RouteId::of(None, "/api"));
        assert_ne!(RouteId::of(None, "/api"), RouteId::of(None, "/ap"));
        assert_ne!(RouteId::of(Some("a"), "/"), RouteId::of(None, "/"));
        assert_ne!(RouteId::of(Some("a"), "/b"), RouteId::of(Some("a/"), "b"));
    }

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
