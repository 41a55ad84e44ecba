//! Reading request and response fields into the pure types: the one place that knows how header
//! maps are laid out.
//!
//! Owns: [`HeaderLines`] (a header's field lines as [`FieldLines`]), [`conditional`] (a request's
//! precondition fields), and small readers of single fields. Nothing here decides anything.
//!
//! Invariant: values are borrowed, never copied or re-encoded (a tag's bytes reach the evaluator
//! as the client sent them, obs-text included).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::precondition::{Conditional, FieldLines, Method};

/// The field lines of one header in a Pingora/`http` header map.
#[derive(Clone, Copy)]
pub(crate) struct HeaderLines<'a> {
    map: &'a HeaderMap,
    name: &'a HeaderName,
}

impl<'a> HeaderLines<'a> {
    /// The field lines of `name` in `map`.
    pub(crate) fn of(map: &'a HeaderMap, name: &'a HeaderName) -> Self {
        HeaderLines { map, name }
    }
}

impl<'a> FieldLines<'a> for HeaderLines<'a> {
    type Iter =
        std::iter::Map<http::header::ValueIter<'a, HeaderValue>, fn(&'a HeaderValue) -> &'a [u8]>;
    fn lines(self) -> Self::Iter {
        self.map
            .get_all(self.name)
            .iter()
            .map(HeaderValue::as_bytes)
    }
}

/// The precondition fields of a request with header map `map` and method `method`.
pub(crate) fn conditional<'a>(map: &'a HeaderMap, method: Method) -> Conditional<HeaderLines<'a>> {
    let lines = |name| HeaderLines { map, name };
    Conditional {
        method,
        if_match: lines(&header::IF_MATCH),
        if_none_match: lines(&header::IF_NONE_MATCH),
        if_modified_since: lines(&header::IF_MODIFIED_SINCE),
        if_unmodified_since: lines(&header::IF_UNMODIFIED_SINCE),
        no_cache: has_no_cache(map),
    }
}

/// `Cache-Control: no-cache` or `Pragma: no-cache` on a request.
fn has_no_cache(map: &HeaderMap) -> bool {
    let has = |name, token: &str| {
        map.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',').any(|d| {
                    d.trim()
                        .split('=')
                        .next()
                        .is_some_and(|d| d.eq_ignore_ascii_case(token))
                })
            })
        })
    };
    has(&header::CACHE_CONTROL, "no-cache") || has(&header::PRAGMA, "no-cache")
}

/// Whether the request carries `If-Unmodified-Since` or `If-Modified-Since`.
pub(crate) fn has_date_precondition(req: &RequestHeader) -> bool {
    let h = &req.headers;
    h.contains_key(header::IF_UNMODIFIED_SINCE) || h.contains_key(header::IF_MODIFIED_SINCE)
}

/// The request's host: the `Host` field, else the authority of an absolute-form target.
pub(crate) fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host())
}

/// The host a trusted balancer says the client asked for: the first `X-Forwarded-Host` value,
/// else the first `host=` parameter of `Forwarded` (RFC 7239). Read only on routes with
/// `trust_forwarded`, where the origin may answer for it rather than for `Host`.
pub(crate) fn forwarded_host(req: &RequestHeader) -> Option<&str> {
    fn first(v: &HeaderValue) -> Option<&str> {
        let s = v.to_str().ok()?.split(',').next()?.trim();
        (!s.is_empty()).then_some(s)
    }
    if let Some(h) = req.headers.get("x-forwarded-host").and_then(first) {
        return Some(h);
    }
    req.headers.get("forwarded").and_then(|v| {
        v.to_str()
            .ok()?
            .split(',')
            .next()?
            .split(';')
            .find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("host")
                    .then(|| v.trim().trim_matches('"'))
            })
            .filter(|h| !h.is_empty())
    })
}

/// The request's path and query, as received (`/` when the target has none).
pub(crate) fn path_and_query(req: &RequestHeader) -> &str {
    req.uri.path_and_query().map_or("/", |p| p.as_str())
}

/// A response field's first value, as bytes.
pub(crate) fn header_bytes<'a>(h: &'a ResponseHeader, name: &str) -> Option<&'a [u8]> {
    h.headers.get(name).map(HeaderValue::as_bytes)
}

/// An `ETag` field value without surrounding whitespace (bytes kept as sent: obs-text allowed).
pub(crate) fn etag_trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Fields a client could use to make the origin answer for another host, tenant, path or method
/// than the one precond keyed and judged the request by (forwarding and method-override fields).
const CLIENT_FORWARDING: [&str; 10] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether header name `name` (lower case, as `http` keeps it) is `field` when `_` is read as `-`.
fn same_field(name: &str, field: &str) -> bool {
    name.len() == field.len()
        && name
            .bytes()
            .zip(field.bytes())
            .all(|(n, f)| n == f || (n == b'_' && f == b'-'))
}

/// Sets the forwarding fields of a request precond sends upstream. Unless `trust` (the route's
/// `trust_forwarded`), the client's own forwarding fields are removed first, so that what the
/// origin answers is about the target precond keyed (and no client can pick the tenant). Then
/// `X-Forwarded-For` (the client's address, appended to a trusted chain), `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (the request's `Host`) are set.
pub(crate) fn set_forwarding(
    req: &mut RequestHeader,
    client: Option<std::net::IpAddr>,
    tls: bool,
    trust: bool,
) {
    if !trust {
        // Also the spellings with `_` (CGI-style gateways read `X_Forwarded_Host` as the same).
        // Names are compared in place: nothing is allocated unless a field is to be removed.
        let forged: Vec<http::header::HeaderName> = req
            .headers
            .keys()
            .filter(|k| CLIENT_FORWARDING.iter().any(|f| same_field(k.as_str(), f)))
            .cloned()
            .collect();
        for name in forged {
            req.remove_header(&name);
        }
    }
    if let Some(ip) = client {
        let lines: Vec<&str> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let chain = if lines.is_empty() {
            ip.to_string()
        } else {
            format!("{}, {ip}", lines.join(", "))
        };
        let _ = req.insert_header("x-forwarded-for", chain);
    }
    if !(trust && req.headers.contains_key("x-forwarded-proto")) {
        let _ = req.insert_header("x-forwarded-proto", if tls { "https" } else { "http" });
    }
    if !(trust && req.headers.contains_key("x-forwarded-host")) {
        if let Some(host) = req.headers.get(header::HOST).cloned() {
            let _ = req.insert_header("x-forwarded-host", host);
        }
    }
}

/// Whether the client's connection is TLS (a `tls_listen` listener): `X-Forwarded-Proto` then
/// says `https`.
pub(crate) fn downstream_tls(session: &pingora::proxy::Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The client's IP address, when the connection is over TCP.
pub(crate) fn client_ip(session: &pingora::proxy::Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}
