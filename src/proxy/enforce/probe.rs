//! Requests precond sends to an upstream on its own account (`enforce` routes): fetching a
//! representation so that its validators are known, or synthesised, before a decision.
//!
//! Owns: [`fetch`] (one request through Pingora's connector, buffering up to a limit),
//! [`synthesize_etag`] (a strong entity-tag derived from a representation: a keyed MAC, so a
//! disclosed tag does not let anyone test guesses of a body offline), the probe request
//! built from a client's, learning what a fetch showed ([`fetch_and_learn`]), and relaying a
//! fetched response to the client ([`relay`]).
//!
//! Invariants:
//! - Only safe methods (GET, HEAD) are sent, so a request on a pooled connection that turns out
//!   stale is retried once on a fresh one; nothing else is ever retried.
//! - At most `limit` body bytes are buffered; the rest stays in the upstream session for the
//!   caller to stream.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use pingora::connectors::http::Connector;
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use sha2::Sha256;

use crate::config::Route;
use crate::identity::OwnedKey;
use crate::precondition::{EntityTag, Method};
use crate::store::{Observation, Outcome, META_HEADERS};

use crate::proxy::answer::DECISION_HEADER;
use crate::proxy::ctx::Ctx;
use crate::proxy::headers::{client_ip, downstream_tls, etag_trim, header_bytes, set_forwarding};
use crate::proxy::principal::marks_private;
use crate::proxy::select;
use crate::proxy::shared::Shared;

/// Hop-by-hop fields never relayed from a fetched response.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

/// A fetched response: its header, the buffered start of its body, and the session to read the
/// rest from when the body was larger than the limit.
pub struct Fetched {
    /// The upstream's response header.
    pub header: ResponseHeader,
    /// The body, or its first `limit`+ bytes.
    pub body: BytesMut,
    /// Whether `body` is the whole body.
    pub complete: bool,
    rest: Option<HttpSession>,
    rest_done: bool,
}

impl Fetched {
    /// Reads the next chunk of a body that was not buffered whole.
    pub async fn read_more(&mut self) -> Result<Option<Bytes>> {
        match &mut self.rest {
            Some(s) => {
                let chunk = s.read_response_body().await?;
                self.rest_done = chunk.is_none();
                Ok(chunk)
            }
            None => Ok(None),
        }
    }

    /// Returns the connection to the pool (when fully read) or closes it.
    pub async fn finish(mut self, connector: &Connector, peer: &HttpPeer) {
        if let Some(mut s) = self.rest.take() {
            if self.rest_done {
                connector
                    .release_http_session(s, peer, peer.options.idle_timeout)
                    .await;
            } else {
                s.shutdown().await;
            }
        }
    }
}

/// Sends `req` (GET or HEAD, no body) to `peer` and buffers up to `limit` bytes of the answer.
pub async fn fetch(
    connector: &Connector,
    peer: &HttpPeer,
    req: &RequestHeader,
    limit: usize,
) -> Result<Fetched> {
    match fetch_once(connector, peer, req, limit).await {
        Err(e) if e.retry() => fetch_once(connector, peer, req, limit).await,
        other => other,
    }
}

async fn fetch_once(
    connector: &Connector,
    peer: &HttpPeer,
    req: &RequestHeader,
    limit: usize,
) -> Result<Fetched> {
    // Whatever fails here failed on the way to or from the origin: an upstream error (a
    // timeout is a 504, anything else a 502).
    fetch_from(connector, peer, req, limit)
        .await
        .map_err(|e| e.into_up())
}

async fn fetch_from(
    connector: &Connector,
    peer: &HttpPeer,
    req: &RequestHeader,
    limit: usize,
) -> Result<Fetched> {
    let (mut s, reused) = connector.get_http_session(peer).await?;
    s.set_read_timeout(peer.options.read_timeout);
    s.set_write_timeout(peer.options.write_timeout);
    let sent: Result<()> = async {
        s.write_request_header(Box::new(req.clone())).await?;
        s.finish_request_body().await?;
        // Interim answers (103 Early Hints, 100 Continue) come before the final one.
        loop {
            s.read_response_header().await?;
            match s.response_header().map(|h| h.status.as_u16()) {
                Some(100..=199) => continue,
                _ => return Ok(()),
            }
        }
    }
    .await;
    if let Err(mut e) = sent {
        // A safe request that failed on a reused connection may be retried on a fresh one.
        e.retry.decide_reuse(reused);
        return Err(e);
    }
    let header = s
        .response_header()
        .cloned()
        .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response header"))?;
    let mut body = BytesMut::new();
    let mut complete = false;
    while body.len() <= limit {
        match s.read_response_body().await? {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => {
                complete = true;
                break;
            }
        }
    }
    let rest = if complete {
        connector
            .release_http_session(s, peer, peer.options.idle_timeout)
            .await;
        None
    } else {
        Some(s)
    };
    Ok(Fetched {
        header,
        body,
        complete,
        rest,
        rest_done: false,
    })
}

/// What a fetched response's validators are for precond.
pub(super) struct Validators {
    /// The `ETag` precond answers with (raw bytes): the origin's strong tag, else a synthesised
    /// one, else the origin's weak tag.
    pub(super) tag: Option<Vec<u8>>,
    /// `tag` was synthesised.
    pub(super) synthetic: bool,
    /// With a synthesised tag: the origin's own (weak) tag it replaced.
    pub(super) alias: Option<Vec<u8>>,
}

/// Validators of a fetched response: the origin's strong ETag if it sent one, else a synthesised
/// tag when the response is a 200 to a GET whose whole body was read (a HEAD has no body to hash:
/// a tag synthesised from it would never change).
fn validators_of(f: &Fetched, was_get: bool, key: &[u8; 32]) -> Validators {
    let raw = header_bytes(&f.header, "etag");
    let origin = raw.and_then(EntityTag::parse);
    let raw = raw.map(|r| etag_trim(r).to_vec());
    match origin {
        Some(t) if !t.is_weak() => Validators {
            tag: raw,
            synthetic: false,
            alias: None,
        },
        _ if was_get && f.header.status == 200 && f.complete => {
            let ct = header_bytes(&f.header, "content-type").unwrap_or_default();
            let ce = header_bytes(&f.header, "content-encoding").unwrap_or_default();
            Validators {
                tag: Some(synthesize_etag(key, ct, ce, &f.body).into_bytes()),
                synthetic: true,
                alias: raw.filter(|_| origin.is_some()),
            }
        }
        // A weak origin tag that cannot be replaced: keep it (it still serves If-None-Match);
        // it can never satisfy If-Match.
        Some(_) => Validators {
            tag: raw,
            synthetic: false,
            alias: None,
        },
        None => Validators {
            tag: None,
            synthetic: false,
            alias: None,
        },
    }
}

/// The request precond sends to learn a representation: the client's header (credentials,
/// `Accept*`, `Host`) as a GET or HEAD without preconditions, ranges or body framing.
fn probe_request(session: &Session, head: bool, trust_forwarded: bool) -> Result<RequestHeader> {
    let mut req = session.req_header().clone();
    // The probe is sent over HTTP/1.1 whatever the client spoke: an h2 request has no `Host`
    // line (its authority is in the URI), and its version must not be written on an HTTP/1.1
    // connection (the origin would answer 400, and the write would go unjudged).
    if req.version != http::Version::HTTP_11 {
        req.set_version(http::Version::HTTP_11);
    }
    if !req.headers.contains_key(header::HOST) {
        let authority = req
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "a request without Host or authority",
                )
            })?;
        req.insert_header(header::HOST, authority)?;
    }
    req.set_method(if head {
        http::Method::HEAD
    } else {
        http::Method::GET
    });
    for name in [
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::EXPECT,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
    ] {
        req.remove_header(&name);
    }
    set_forwarding(
        &mut req,
        client_ip(session),
        downstream_tls(session),
        trust_forwarded,
    );
    Ok(req)
}

/// Fetches the target for `route` and teaches the store what it showed.
pub(super) async fn fetch_and_learn(
    s: &Shared,
    session: &Session,
    ctx: &Ctx,
    route: &Route,
    key: &OwnedKey,
    head: bool,
) -> Result<(Fetched, HttpPeer, Validators)> {
    // The server the write itself would reach (one server per resource under consistent
    // selection); a probe is not retried elsewhere.
    let live = ctx.live.clone();
    let pool = select::pool(&live, route.upstream)?;
    let mut select_key = None;
    let peer = pool.peer(select::server(
        s,
        pool,
        session.req_header(),
        &mut select_key,
        &[],
    )?);
    let req = probe_request(session, head, route.trust_forwarded)?;
    // The ticket is taken when the fetch starts: a write that completes while the fetch is in
    // flight makes its answer unteachable (store race rule). A probe made under the resource's
    // write lock takes it when the answer is in: no write to the resource can be in flight
    // through this instance, so the answer is as new as anything learned of it (and writes or
    // evictions of other resources sharing its removal watermark do not make it unteachable).
    let started = s.store.ticket();
    let fetched = fetch(&s.connector, &peer, &req, route.enforce.synthesize_max_body).await?;
    let ticket = if ctx.write_lock.is_some() {
        s.store.ticket()
    } else {
        started
    };
    s.metrics.forwarded.inc();
    let v = validators_of(&fetched, !head, &s.keys.tag);
    let h = &fetched.header;
    let meta = META_HEADERS.map(|n| header_bytes(h, n));
    let obs = Observation {
        etag: v.tag.as_deref(),
        alias: v.alias.as_deref(),
        last_modified: header_bytes(h, "last-modified"),
        date: header_bytes(h, "date"),
        vary: h.headers.contains_key(header::VARY),
        synthetic: v.synthetic,
        meta: Some(meta),
        // The probe carried the caller's own credentials: what it shows is theirs.
        principal: ctx.principal,
        private: marks_private(route, &h.headers),
        complete: true,
        ..Observation::of(Method::Get, Outcome::Status(h.status.as_u16()))
    };
    s.store.learn(&key.as_key(), ticket, &obs);
    Ok((fetched, peer, v))
}

/// Sends a fetched response to the client, with `etag` added when it was synthesised.
pub(super) async fn relay(
    s: &Shared,
    session: &mut Session,
    mut fetched: Fetched,
    peer: &HttpPeer,
    etag: Option<Vec<u8>>,
) -> Result<()> {
    let mut resp = fetched.header.clone();
    for name in HOP_BY_HOP {
        resp.remove_header(name);
    }
    resp.remove_header(DECISION_HEADER);
    if let Some(tag) = etag {
        let v = HeaderValue::from_bytes(&tag)
            .map_err(|e| Error::because(ErrorType::InternalError, "etag", e))?;
        resp.insert_header(header::ETAG, v)?;
    }
    if fetched.complete {
        resp.remove_header(&header::TRANSFER_ENCODING);
        resp.insert_header(header::CONTENT_LENGTH, fetched.body.len().to_string())?;
    }
    let head = session.req_header().method == http::Method::HEAD;
    let no_body = head || (fetched.complete && fetched.body.is_empty());
    session
        .write_response_header(Box::new(resp), no_body)
        .await?;
    if !no_body {
        let first = std::mem::take(&mut fetched.body).freeze();
        session
            .write_response_body(Some(first), fetched.complete)
            .await?;
        if !fetched.complete {
            loop {
                let chunk = fetched.read_more().await?;
                let end = chunk.is_none();
                session
                    .write_response_body(Some(chunk.unwrap_or_else(Bytes::new)), end)
                    .await?;
                if end {
                    break;
                }
            }
        }
    }
    fetched.finish(&s.connector, peer).await;
    Ok(())
}

/// A strong entity-tag for a representation: HMAC-SHA-256, under the deployment's tag key, of
/// its content coding, media type and bytes (strong validators must differ between encodings,
/// RFC 9110 §8.8.3.3), first 128 bits in hex, prefixed `s-` so that synthesised tags are
/// recognisable. Returned with its quotes. Without the key, a tag is not a function of the body
/// alone: a small private body cannot be recovered by hashing guesses.
pub fn synthesize_etag(
    key: &[u8; 32],
    content_type: &[u8],
    content_encoding: &[u8],
    body: &[u8],
) -> String {
    use hmac::Mac;
    let mut h = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for part in [content_encoding, content_type] {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(body);
    let digest = h.finalize().into_bytes();
    let mut tag = String::with_capacity(36);
    tag.push_str("\"s-");
    for b in &digest[..16] {
        use std::fmt::Write;
        let _ = write!(tag, "{b:02x}");
    }
    tag.push('"');
    tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precondition::EntityTag;
    use sha2::Digest;

    #[test]
    fn synthesised_tag_is_stable_valid_and_content_sensitive() {
        let k = &[1u8; 32];
        let a = synthesize_etag(k, b"application/json", b"", b"{\"n\":1}");
        assert_eq!(
            a,
            synthesize_etag(k, b"application/json", b"", b"{\"n\":1}")
        );
        assert_ne!(
            a,
            synthesize_etag(k, b"application/json", b"", b"{\"n\":2}")
        );
        assert_ne!(
            a,
            synthesize_etag(k, b"application/json", b"gzip", b"{\"n\":1}")
        );
        assert_ne!(a, synthesize_etag(k, b"text/plain", b"", b"{\"n\":1}"));
        // Keyed: another deployment secret, another tag; and not the plain hash of the body.
        assert_ne!(
            a,
            synthesize_etag(&[2u8; 32], b"application/json", b"", b"{\"n\":1}")
        );
        let mut plain = Sha256::new();
        for part in [&b""[..], b"application/json"] {
            plain.update((part.len() as u64).to_be_bytes());
            plain.update(part);
        }
        plain.update(b"{\"n\":1}");
        let plain: String = plain.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!a.contains(&plain));
        let t = EntityTag::parse(a.as_bytes()).expect("a valid entity-tag");
        assert!(!t.is_weak());
        assert_eq!(t.opaque().len(), 34);
    }
}
