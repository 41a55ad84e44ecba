//! Requests precond sends to an upstream on its own account (`enforce` routes): fetching a
//! representation so that its validators are known, or synthesised, before a decision.
//!
//! Owns: [`fetch`] (one request through Pingora's connector, buffering up to a limit) and
//! [`synthesize_etag`] (a strong entity-tag derived from a representation).
//!
//! Invariants:
//! - Only safe methods (GET, HEAD) are sent, so a request on a pooled connection that turns out
//!   stale is retried once on a fresh one; nothing else is ever retried.
//! - At most `limit` body bytes are buffered; the rest stays in the upstream session for the
//!   caller to stream.

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use sha2::{Digest, Sha256};

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
    let (mut s, reused) = connector.get_http_session(peer).await?;
    s.set_read_timeout(peer.options.read_timeout);
    s.set_write_timeout(peer.options.write_timeout);
    let sent = async {
        s.write_request_header(Box::new(req.clone())).await?;
        s.finish_request_body().await?;
        s.read_response_header().await
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

/// A strong entity-tag for a representation: SHA-256 over its content coding, media type and
/// bytes (strong validators must differ between encodings, RFC 9110 §8.8.3.3), first 128 bits in
/// hex, prefixed `s-` so that synthesised tags are recognisable. Returned with its quotes.
pub fn synthesize_etag(content_type: &[u8], content_encoding: &[u8], body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [content_encoding, content_type] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(body);
    let digest = h.finalize();
    let mut tag = String::with_capacity(36);
    tag.push_str("\"s-");
    for b in &digest[..16] {
        tag.push_str(&format!("{b:02x}"));
    }
    tag.push('"');
    tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precondition::EntityTag;

    #[test]
    fn synthesised_tag_is_stable_valid_and_content_sensitive() {
        let a = synthesize_etag(b"application/json", b"", b"{\"n\":1}");
        assert_eq!(a, synthesize_etag(b"application/json", b"", b"{\"n\":1}"));
        assert_ne!(a, synthesize_etag(b"application/json", b"", b"{\"n\":2}"));
        assert_ne!(
            a,
            synthesize_etag(b"application/json", b"gzip", b"{\"n\":1}")
        );
        assert_ne!(a, synthesize_etag(b"text/plain", b"", b"{\"n\":1}"));
        let t = EntityTag::parse(a.as_bytes()).expect("a valid entity-tag");
        assert!(!t.is_weak());
        assert_eq!(t.opaque().len(), 34);
    }
}
