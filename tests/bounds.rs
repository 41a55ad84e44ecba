//! What a client can make precond remember (issue 10, item 1, part): a 404 for a resource nobody
//! knows teaches nothing, and keys longer than `store.max_key_bytes` are never learned.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use precond::demo::{DemoOrigin, Tags};

fn demo(tags: Tags) -> DemoOrigin {
    DemoOrigin::start("127.0.0.1:0".parse().unwrap(), tags, "").unwrap()
}

#[test]
fn a_flood_of_404s_for_made_up_urls_fills_nothing() {
    let o = demo(Tags::Strong);
    let p = proxy(&guard_config("superseded"), o.addr);
    let mut c = Conn::open(p.addr);
    for i in 0..500 {
        let r = c.request(
            "GET",
            &format!("/nothing/{i}?q={}", "x".repeat(1000)),
            &[],
            "",
        );
        assert_eq!(r.status, 404);
    }
    assert_eq!(
        p.state.store.len(),
        0,
        "nothing learned from 404s of unknown resources"
    );
    // A known resource still learns its absence.
    request(p.addr, "GET", "/items/2", &[], "");
    assert_eq!(request(p.addr, "DELETE", "/items/2", &[], "").status, 204);
    assert_eq!(p.state.store.len(), 1);
}

#[test]
fn keys_longer_than_max_key_bytes_are_forwarded_and_never_learned() {
    let o = demo(Tags::Strong);
    let p = proxy(&guard_config("superseded"), o.addr);
    let long = format!("/items/{}", "y".repeat(3000));
    assert_eq!(request(p.addr, "PUT", &long, &[], "{}").status, 201);
    let tag = request(p.addr, "GET", &long, &[], "").etag();
    assert_eq!(
        request(p.addr, "PUT", &long, &[("If-Match", &tag)], "{}").status,
        200
    );
    // Stale, but precond knows nothing of this resource: the origin judges (and, ignoring
    // If-Match, accepts).
    let before = o.stats.writes.load(Ordering::SeqCst);
    assert_eq!(
        request(p.addr, "PUT", &long, &[("If-Match", &tag)], "{}").status,
        200
    );
    assert_eq!(o.stats.writes.load(Ordering::SeqCst), before + 1);
    assert_eq!(p.state.store.len(), 0);
    assert!(p.state.metrics.key_too_long.get() >= 4);
}

#[test]
fn enforce_refuses_writes_it_cannot_serialise_with_414() {
    let o = demo(Tags::None);
    let text = route_config("mode = \"enforce\"").replace(
        "[[upstream]]",
        "[store]\nmax_key_bytes = 256\n\n[[upstream]]",
    );
    let p = proxy(&text, o.addr);
    let long = format!("/items/{}", "z".repeat(300));
    let before = o.stats.requests.load(Ordering::SeqCst);
    let r = request(p.addr, "PUT", &long, &[], "{}");
    assert_eq!(r.status, 414, "{}", r.body_str());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.body_str().contains("max_key_bytes"));
    assert_eq!(
        o.stats.requests.load(Ordering::SeqCst),
        before,
        "the origin never saw it"
    );
    // Reads are forwarded untouched (no synthesised tag: nothing is remembered).
    let r = request(p.addr, "GET", &long, &[], "");
    assert_eq!(r.status, 404);
    assert_eq!(p.state.store.len(), 0);
}

#[test]
fn a_flood_of_distinct_keys_stays_within_max_bytes() {
    // An origin that answers every GET with a tag: every URL is a resource.
    let o = ScriptedOrigin::start(|req| async move {
        (
            200,
            vec![("etag", format!("\"{}\"", req.path.len()))],
            "{}".into(),
        )
    });
    let text = guard_config("superseded").replace(
        "[[upstream]]",
        "[store]\nmax_bytes = \"1MiB\"\ncapacity = 1000000\n\n[[upstream]]",
    );
    let p = proxy(&text, o.addr);
    let mut c = Conn::open(p.addr);
    for i in 0..3000 {
        let path = format!("/flood/{i}/{}", "k".repeat(1500));
        assert_eq!(c.request("GET", &path, &[], "").status, 200);
    }
    let store = &p.state.store;
    let (bytes, entries) = (store.bytes(), store.len());
    assert!(bytes <= 1 << 20, "{bytes} bytes held");
    assert!(entries > 100 && entries < 3000, "{entries} resources held");
    assert!(store.evictions().0 > 0, "evictions by size are counted");
    let metrics = p.state.metrics.render(
        precond::telemetry::StoreGauges {
            entries,
            bytes,
            evicted_size: store.evictions().0,
            evicted_expired: 0,
            census_bytes: 0,
        },
        &[],
    );
    assert!(metrics.contains("precond_store_evictions_total{cause=\"size\"}"));
}
