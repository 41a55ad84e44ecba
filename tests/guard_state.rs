//! What guard's learned state may and may not conclude (issue 9, item 6): each test is a false
//! 412 that the main produced before the fix, on a real proxy over sockets.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;

/// A 200 without `ETag` (a HEAD handler, a compressing middleware, a 206) says nothing of the
/// current tag: it used to *retire* it, and the owner's valid write was refused.
#[test]
fn a_200_without_etag_makes_the_current_tag_unknown_not_replaced() {
    let reads = Arc::new(AtomicU64::new(0));
    let r2 = reads.clone();
    let origin = ScriptedOrigin::start(move |r: SeenRequest| {
        let n = r2.clone();
        async move {
            if r.method == "GET" {
                // The first read carries the tag, the next ones lose it on the way.
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    return (200, vec![("etag", "\"v1\"".into())], "one".into());
                }
                return (200, vec![], "one".into());
            }
            (204, vec![], String::new())
        }
    });
    for policy in ["superseded", "mismatch"] {
        reads.store(0, Ordering::SeqCst);
        let p = proxy(&guard_config(policy), origin.addr);
        assert_eq!(request(p.addr, "GET", "/a", &[], "").etag(), "\"v1\"");
        let r = request(p.addr, "GET", "/a", &[], "");
        assert_eq!((r.status, r.header("etag")), (200, None));
        let r = request(p.addr, "PUT", "/a", &[("If-Match", "\"v1\"")], "x");
        assert_eq!(r.status, 204, "{policy}: forwarded: {}", r.body_str());
    }
}

/// Under `mismatch`, "not among the current tags" proved a mismatch; with `Vary`, the current
/// tags are the variants seen, at most four: a fifth variant pushed a valid tag out.
#[test]
fn vary_variants_never_refuse_a_tag_as_not_current() {
    let origin = ScriptedOrigin::start(|r: SeenRequest| async move {
        if r.method == "GET" {
            let lang = r
                .headers
                .get("accept-language")
                .cloned()
                .unwrap_or_default();
            return (
                200,
                vec![
                    ("etag", format!("\"v1-{lang}\"")),
                    ("vary", "Accept-Language".into()),
                ],
                lang,
            );
        }
        (204, vec![], String::new())
    });
    let p = proxy(&guard_config("mismatch"), origin.addr);
    for lang in ["en", "fr", "de", "it", "es"] {
        let r = request(p.addr, "GET", "/a", &[("Accept-Language", lang)], "");
        assert_eq!(r.etag(), format!("\"v1-{lang}\""));
    }
    let r = request(
        p.addr,
        "PUT",
        "/a",
        &[("If-Match", "\"v1-en\""), ("Accept-Language", "en")],
        "x",
    );
    assert_eq!(r.status, 204, "forwarded: {}", r.body_str());
}
