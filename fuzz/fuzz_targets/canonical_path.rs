//! Canonical targets (`identity::canonical_path`, `canonical_host`) and resource keys: arbitrary
//! bytes, read as UTF-8 (lossily: `�` for invalid bytes).
//!
//! What the module promises, and so what is asserted:
//! - `canonical_path` returns a path starting with `/`, borrowed only when the input already is
//!   that path; every `%` in it starts an upper-case escape of a byte that is not unreserved
//!   (RFC 3986 §6.2.2.1-2); no segment is `.` or `..` (§6.2.2.3). An unambiguous result has no
//!   empty segment but a trailing one.
//! - Normalisation is idempotent: the canonical path is its own canonical path, and the
//!   canonical form of an unambiguous path is unambiguous (as `identity`'s property test states).
//! - `canonical_host` returns no ASCII upper case and never grows; for a syntactically valid host
//!   (reg-name, IPv4 or `[IPv6]`, optional `:port`) it is the host in lower case without port and
//!   trailing dot, and a fixed point. (Invalid hosts such as `a:1:2` or `a..` are not promised a
//!   fixed point: `a:1:2` gives `a:1`.)
//! - Keys: hosts compare and hash case-insensitively; an `OwnedKey` borrows back the same resource.
#![no_main]

use std::borrow::Cow;
use std::hash::BuildHasher;

use libfuzzer_sys::fuzz_target;
use precond::identity::{
    canonical_host, canonical_path, Ambiguous, OwnedKey, ResourceKey, RouteId,
};

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

fn check_path(input: &str) {
    let (once, why) = canonical_path(input);
    assert!(once.starts_with('/'), "{input:?} -> {once:?}");
    if let Cow::Borrowed(b) = &once {
        assert_eq!(*b, input, "borrowed only when unchanged");
        assert_eq!(why, None, "a borrowed path is unambiguous");
    }
    let bytes = once.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            assert!(
                hex.is_some_and(|h| h.iter().all(|&c| is_upper_hex(c))),
                "{input:?} -> {once:?}: escape at {i} not two upper-case hex digits"
            );
            let h = hex.unwrap();
            let v = u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap();
            assert!(
                !is_unreserved(v),
                "{input:?} -> {once:?}: an unreserved character left encoded"
            );
        }
    }
    let segments: Vec<&str> = once[1..].split('/').collect();
    let n = segments.len();
    for (i, seg) in segments.iter().enumerate() {
        assert!(
            *seg != "." && *seg != "..",
            "{input:?} -> {once:?}: dot segment"
        );
        if why.is_none() {
            assert!(
                !seg.is_empty() || i + 1 == n,
                "{input:?} -> {once:?}: empty segment in an unambiguous path"
            );
        }
    }
    let (twice, why2) = canonical_path(&once);
    assert_eq!(
        once.as_ref(),
        twice.as_ref(),
        "{input:?} ({why:?}): not idempotent"
    );
    if why.is_none() {
        assert_eq!(why2, None, "{input:?}: the canonical form became ambiguous");
    }
    if let Some(w) = why {
        assert!(!w.explain().is_empty());
    }
    let _ = Ambiguous::EmptySegment; // (the type is part of the public surface exercised)
}

/// `reg-name / IPv4address / "[" IPv6-ish "]"`, then an optional `:port` (RFC 3986 §3.2.2-3).
fn valid_host(s: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        let (h, rest) = s.split_at(end + 1);
        match rest {
            "" => (h, None),
            r => (h, Some(r.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let ok = if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        // One trailing dot (a fully qualified name), then labels: no empty label.
        let name = host.strip_suffix('.').unwrap_or(host);
        !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            })
    };
    ok.then_some((host, port))
}

fn check_host(input: &str) {
    let c = canonical_host(input);
    assert!(
        !c.bytes().any(|b| b.is_ascii_uppercase()),
        "{input:?} -> {c:?}: upper case"
    );
    assert!(c.len() <= input.len(), "{input:?} -> {c:?}: grew");
    if let Some((host, _port)) = valid_host(input) {
        let want = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        assert_eq!(c.as_ref(), want, "{input:?}");
        assert_eq!(
            canonical_host(&c).as_ref(),
            c.as_ref(),
            "{input:?}: not a fixed point"
        );
    }
}

fn check_keys(host: &str, path: &str) {
    let state = std::collections::hash_map::RandomState::new();
    let route = RouteId::of(Some(host), path);
    let a = ResourceKey { route, host, path };
    let upper = host.to_ascii_uppercase();
    let b = ResourceKey {
        route,
        host: &upper,
        path,
    };
    assert!(a.same_resource(&b));
    assert_eq!(a.hash_with(&state), b.hash_with(&state), "case-folded hash");
    let owned = a.to_owned_key();
    let back = owned.as_key();
    assert!(
        back.same_resource(&a),
        "the owned key borrows back the same resource"
    );
    assert_eq!(back.hash_with(&state), a.hash_with(&state));
    assert_eq!(owned.len(), host.len() + path.len());
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let with_query = OwnedKey::new(route, host, p, path.contains('?').then_some(q));
    assert_eq!(with_query, owned, "path and query in one key");
    assert_eq!(state.hash_one(&with_query), state.hash_one(&owned));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_path(&text);
    check_host(&text);
    // A request's parts: `host` up to the first `/`, then the target (path and query).
    let (host, target) = text.split_at(text.find('/').unwrap_or(text.len()));
    check_host(host);
    let path = target.split('?').next().unwrap_or("");
    check_path(path);
    check_keys(host, target);
});
