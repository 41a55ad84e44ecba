//! Whose truth an exchange is: the principal a request speaks for, and what the origin's answer
//! says about who may share it (design.md §9).
//!
//! Owns: [`principal_of`] (a request's principal under its route's `principal` and `scope`),
//! [`reach_of`] (how far the route lets a write's effects go), [`marks_private`] and
//! [`no_store`] (what a response's `Cache-Control` and `Vary` say).
//!
//! Invariants:
//! - On `scope = "shared"` routes every request is [`Principal::SHARED`]; on the others a
//!   request without any configured credential is the anonymous principal, never the shared one.
//! - Reading is linear in the bytes of the fields read, which the HTTP parser bounds.

use http::header::{self, HeaderMap};

use crate::config::{Route, Scope};
use crate::identity::{cookie_values, Principal, PrincipalKey, PrincipalSource};
use crate::store::Reach;

/// The principal of a request with header map `headers` on `route`.
pub(crate) fn principal_of(route: &Route, headers: &HeaderMap, key: &PrincipalKey) -> Principal {
    if route.scope == Scope::Shared {
        return Principal::SHARED;
    }
    caller_of(route, headers, key)
}

/// Who sent a request, whatever the route's `scope`: the keyed hash of its configured credential
/// fields (the anonymous principal without any). `observe`'s census tells callers apart with it.
pub(crate) fn caller_of(route: &Route, headers: &HeaderMap, key: &PrincipalKey) -> Principal {
    let mut h = key.hasher();
    for (i, source) in route.principal.iter().enumerate() {
        match source {
            PrincipalSource::Header(name) => {
                for v in headers.get_all(name.as_str()) {
                    h.add(i, v.as_bytes());
                }
            }
            PrincipalSource::Cookie(name) => {
                for field in headers.get_all(header::COOKIE) {
                    for v in cookie_values(field.as_bytes(), name) {
                        h.add(i, v);
                    }
                }
            }
        }
    }
    h.finish()
}

/// How far a write's effects reach on `route`.
pub(crate) fn reach_of(route: &Route) -> Reach {
    match route.scope {
        Scope::Principal => Reach::Partition,
        Scope::Auto | Scope::Shared => Reach::Resource,
    }
}

/// The directives of every `Cache-Control` line, lower-cased names only.
fn cache_directives(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|d| {
            let d = d.trim_ascii();
            d.split(|b| *b == b'=').next().unwrap_or(d).trim_ascii()
        })
}

/// Whether a response says its answer depends on the caller: `Cache-Control: private` (even
/// qualified with field names), or `Vary` naming `*`, `Authorization`, `Cookie` or one of the
/// route's credential fields.
pub(crate) fn marks_private(route: &Route, headers: &HeaderMap) -> bool {
    if cache_directives(headers).any(|d| d.eq_ignore_ascii_case(b"private")) {
        return true;
    }
    headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|f| {
            f == b"*"
                || f.eq_ignore_ascii_case(b"authorization")
                || f.eq_ignore_ascii_case(b"cookie")
                || route.principal.iter().any(|s| match s {
                    PrincipalSource::Header(n) => f.eq_ignore_ascii_case(n.as_bytes()),
                    PrincipalSource::Cookie(_) => false,
                })
        })
}

/// Whether a response carries `Cache-Control: no-store`.
pub(crate) fn no_store(headers: &HeaderMap) -> bool {
    cache_directives(headers).any(|d| d.eq_ignore_ascii_case(b"no-store"))
}
