//! `enforce` mode end to end: precond as the judge in front of origins that know no ETags.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use precond::demo::DemoOrigin;

fn enforce_config(extra: &str) -> String {
    route_config(&format!("mode = \"enforce\"\n{extra}"))
}

fn legacy() -> DemoOrigin {
    DemoOrigin::start(
        "127.0.0.1:0".parse().unwrap(),
        precond::demo::Tags::None,
        "",
    )
    .unwrap()
}

/// One read-modify-write: GET the counter, add one, PUT it back (with `If-Match` when `tag` is
/// on). Returns whether the write succeeded.
fn increment(addr: std::net::SocketAddr, conditional: bool, pause: &Barrier) -> bool {
    let r = request(addr, "GET", "/counter", &[], "");
    assert_eq!(r.status, 200);
    let n = r.json()["n"].as_u64().unwrap();
    let tag = r.header("etag").map(str::to_string);
    pause.wait(); // every client has read before anyone writes: the classic lost update
    let body = format!("{{\"n\":{}}}", n + 1);
    let mut headers = vec![];
    if conditional {
        headers.push(("If-Match", tag.as_deref().expect("enforce adds an ETag")));
    }
    let r = request(addr, "PUT", "/counter", &headers, &body);
    match r.status {
        200 | 201 => true,
        412 => false,
        other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&r.body)),
    }
}

/// Runs `clients` clients for `rounds` rounds; returns (successful writes, final counter).
fn run_clients(
    addr: std::net::SocketAddr,
    conditional: bool,
    clients: usize,
    rounds: usize,
) -> (u64, u64) {
    assert_eq!(
        request(
            addr,
            "PUT",
            "/counter",
            &[("If-None-Match", "*")],
            r#"{"n":0}"#
        )
        .status
            / 100,
        2
    );
    let ok = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (ok, barrier) = (ok.clone(), barrier.clone());
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    if increment(addr, conditional, &barrier) {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = request(addr, "GET", "/counter", &[], "").json()["n"]
        .as_u64()
        .unwrap();
    (ok.load(Ordering::SeqCst), n)
}

#[test]
fn concurrent_read_modify_write_clients_lose_no_update() {
    let (clients, rounds) = (6, 8);
    // Straight against the legacy origin: updates are lost.
    let direct = legacy();
    let (ok, n) = run_clients(direct.addr, false, clients, rounds);
    assert_eq!(
        ok,
        (clients * rounds) as u64,
        "the origin accepts every write"
    );
    assert!(n < ok, "without precond, updates are lost ({n} < {ok})");

    // Through precond in enforce mode: every successful write counts.
    let o = legacy();
    let p = proxy(&enforce_config("require = [\"PUT\"]"), o.addr);
    let (ok, n) = run_clients(p.addr, true, clients, rounds);
    assert!(
        ok >= rounds as u64,
        "at least one write per round succeeds ({ok})"
    );
    assert!(ok < (clients * rounds) as u64, "stale writes were refused");
    assert_eq!(
        n, ok,
        "final state equals the number of successful writes: zero lost updates"
    );
}

/// An origin without validators that counts GETs and writes, answering writes after `hold`.
struct Counting {
    origin: ScriptedOrigin,
    gets: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
}

fn counting_origin(body: &'static str, cache_control: bool) -> Counting {
    let gets = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let (g, w) = (gets.clone(), writes.clone());
    let origin = ScriptedOrigin::start(move |req| {
        let (g, w) = (g.clone(), w.clone());
        async move {
            let mut headers = vec![("content-type", "application/json".to_string())];
            if cache_control {
                headers.push(("cache-control", "max-age=60".to_string()));
            }
            match req.method.as_str() {
                "GET" | "HEAD" => {
                    g.fetch_add(1, Ordering::SeqCst);
                    if req.path == "/missing" {
                        return (404, vec![], String::new());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await; // widen the window
                    (200, headers, body.to_string())
                }
                _ => {
                    w.fetch_add(1, Ordering::SeqCst);
                    let seen = format!("if-match={:?}", req.headers.get("if-match"));
                    if req.path == "/slow" {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    (if req.path == "/missing" { 404 } else { 200 }, vec![], seen)
                }
            }
        }
    });
    Counting {
        origin,
        gets,
        writes,
    }
}

#[test]
fn a_miss_is_probed_once_for_concurrent_writes() {
    let c = counting_origin("{\"v\":1}", false);
    let p = proxy(&enforce_config(""), c.origin.addr);
    let addr = p.addr;
    let threads: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                request(addr, "PUT", "/r", &[("If-Match", "\"stale\"")], "{}").status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 412);
    }
    assert_eq!(
        c.gets.load(Ordering::SeqCst),
        1,
        "one probe for six concurrent misses"
    );
    assert_eq!(
        c.writes.load(Ordering::SeqCst),
        0,
        "no stale write reached the origin"
    );
}

#[test]
fn synthesised_tags_are_stable_per_body_and_stripped_before_forwarding() {
    let o = legacy();
    let p = proxy(&enforce_config(""), o.addr);
    let t1 = request(p.addr, "GET", "/items/1", &[], "").etag();
    assert!(t1.starts_with("\"s-"), "a strong synthesised tag: {t1}");
    assert_eq!(
        request(p.addr, "GET", "/items/1", &[], "").etag(),
        t1,
        "same body, same tag"
    );
    assert_ne!(
        request(p.addr, "GET", "/items/2", &[], "").etag(),
        t1,
        "different body, different tag"
    );
    let r = request(
        p.addr,
        "PUT",
        "/items/1",
        &[("If-Match", &t1)],
        r#"{"id":1,"stock":1}"#,
    );
    assert_eq!(r.status, 200);
    let t2 = request(p.addr, "GET", "/items/1", &[], "").etag();
    assert_ne!(t1, t2, "new body, new tag");
    // HEAD carries the same tag as GET.
    assert_eq!(request(p.addr, "HEAD", "/items/1", &[], "").etag(), t2);

    // The origin never sees a synthesised tag.
    let c = counting_origin("{}", false);
    let p = proxy(&enforce_config(""), c.origin.addr);
    let t = request(p.addr, "GET", "/x", &[], "").etag();
    let r = request(p.addr, "PUT", "/x", &[("If-Match", &t)], "{}");
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8(r.body).unwrap(), "if-match=None");
}

#[test]
fn an_origin_strong_etag_is_kept_and_forwarded() {
    let o = ScriptedOrigin::start(|req| async move {
        match req.method.as_str() {
            "GET" => (
                200,
                vec![("etag", "\"origin-7\"".to_string())],
                "{}".to_string(),
            ),
            _ => (204, vec![], format!("{:?}", req.headers.get("if-match"))),
        }
    });
    let p = proxy(&enforce_config(""), o.addr);
    assert_eq!(request(p.addr, "GET", "/x", &[], "").etag(), "\"origin-7\"");
    let before = o.requests();
    assert_eq!(
        request(p.addr, "PUT", "/x", &[("If-Match", "\"origin-6\"")], "{}").status,
        412
    );
    assert_eq!(o.requests(), before);
    assert_eq!(
        request(p.addr, "PUT", "/x", &[("If-Match", "\"origin-7\"")], "{}").status,
        204
    );
}

#[test]
fn precondition_required_with_and_without_usable_preconditions() {
    let o = legacy();
    let p = proxy(&enforce_config("require = [\"PUT\", \"DELETE\"]"), o.addr);
    let before = o.stats.writes.load(Ordering::SeqCst);
    let r = request(p.addr, "PUT", "/items/1", &[], "{}");
    assert_eq!(r.status, 428);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["status"], 428);
    assert!(r.json()["detail"].as_str().unwrap().contains("If-Match"));
    // An unusable date counts as absent; so does a malformed If-Match.
    for (name, value) in [
        ("If-Unmodified-Since", "tomorrow"),
        ("If-Match", "unquoted"),
    ] {
        assert_eq!(
            request(p.addr, "PUT", "/items/1", &[(name, value)], "{}").status,
            428,
            "{name}"
        );
    }
    assert_eq!(
        o.stats.writes.load(Ordering::SeqCst),
        before,
        "nothing reached the origin"
    );
    let metrics = p.state.metrics.render(Default::default(), &[]);
    assert!(metrics.contains("precond_required_total 3"), "{metrics}");
    // PATCH is not listed: allowed without precondition.
    assert_eq!(
        request(p.addr, "PATCH", "/items/1", &[], r#"{"x":1}"#).status,
        200
    );
    // A usable precondition passes.
    let t = request(p.addr, "GET", "/items/1", &[], "").etag();
    assert_eq!(
        request(p.addr, "PUT", "/items/1", &[("If-Match", &t)], "{\"id\":1}").status,
        200
    );
    // Create-only PUT.
    assert_eq!(
        request(
            p.addr,
            "PUT",
            "/items/9",
            &[("If-None-Match", "*")],
            "{\"id\":9}"
        )
        .status,
        201
    );
    assert_eq!(
        request(
            p.addr,
            "PUT",
            "/items/9",
            &[("If-None-Match", "*")],
            "{\"id\":9}"
        )
        .status,
        412
    );
}

#[test]
fn conditional_get_is_answered_304_at_the_edge() {
    let c = counting_origin("{\"v\":1}", true);
    let p = proxy(&enforce_config(""), c.origin.addr);
    let t = request(p.addr, "GET", "/doc", &[], "").etag();
    let gets = c.gets.load(Ordering::SeqCst);
    let mut conn = Conn::open(p.addr);
    let r = conn.request(
        "GET",
        "/doc",
        &[("If-None-Match", &format!("\"x\", W/{t}"))],
        "",
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.etag(), t, "the current tag");
    assert!(r.header("date").is_some());
    assert_eq!(
        r.header("cache-control"),
        Some("max-age=60"),
        "stored Cache-Control repeated"
    );
    assert!(r.header("content-type").is_none());
    assert!(r.body.is_empty());
    assert_eq!(
        c.gets.load(Ordering::SeqCst),
        gets,
        "the origin was not contacted"
    );
    let metrics = p.state.metrics.render(Default::default(), &[]);
    assert!(
        metrics.contains("precond_not_modified_total{precondition=\"If-None-Match\"} 1"),
        "{metrics}"
    );
    // The connection is still usable (a 304 has no body).
    assert_eq!(conn.request("GET", "/doc", &[], "").status, 200);

    // If-Match failing on GET is a 412, not a 304.
    assert_eq!(
        request(p.addr, "GET", "/doc", &[("If-Match", "\"other\"")], "").status,
        412
    );

    // Cache-Control: no-cache is forwarded to the origin.
    let gets = c.gets.load(Ordering::SeqCst);
    let r = request(
        p.addr,
        "GET",
        "/doc",
        &[("If-None-Match", &t), ("Cache-Control", "no-cache")],
        "",
    );
    assert_eq!(
        c.gets.load(Ordering::SeqCst),
        gets + 1,
        "no-cache reached the origin"
    );
    assert_eq!(r.status, 304, "validated with the origin just now");
}

#[test]
fn a_write_waits_a_bounded_time_then_gets_503() {
    let c = counting_origin("{}", false);
    let p = proxy(&enforce_config("write_wait = \"200ms\""), c.origin.addr);
    let addr = p.addr;
    let slow = std::thread::spawn(move || request(addr, "PUT", "/slow", &[], "{}").status);
    while c.writes.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Same resource: waits 200 ms, then a clear 503.
    let r = request(p.addr, "PUT", "/slow", &[], "{}");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["status"], 503);
    // Another resource: does not wait for /slow.
    assert_eq!(request(p.addr, "PUT", "/other", &[], "{}").status, 200);
    assert_eq!(slow.join().unwrap(), 200);
    assert_eq!(
        c.writes.load(Ordering::SeqCst),
        2,
        "the refused write never reached the origin"
    );
}

#[test]
fn missing_resource_404_beats_412() {
    let c = counting_origin("{}", false);
    let p = proxy(&enforce_config(""), c.origin.addr);
    // DELETE with If-Match: * on a missing resource: the origin's 404, not a 412.
    let r = request(p.addr, "DELETE", "/missing", &[("If-Match", "*")], "");
    assert_eq!(r.status, 404);
    // PUT with If-Match: * to a missing resource would create it: 412.
    let r = request(p.addr, "PUT", "/missing", &[("If-Match", "*")], "{}");
    assert_eq!(r.status, 412);
    assert_eq!(r.json()["reason"], "resource_absent");
}

#[test]
fn representations_above_the_synthesis_limit_are_streamed_without_a_tag() {
    let big: String = "x".repeat(200_000);
    let o = ScriptedOrigin::start(move |_req| {
        let big = big.clone();
        async move { (200, vec![("content-type", "text/plain".to_string())], big) }
    });
    let p = proxy(&enforce_config("synthesize_max_body = 1024"), o.addr);
    let mut c = Conn::open(p.addr);
    let r = c.request("GET", "/big", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 200_000, "the whole body is relayed");
    assert!(
        r.header("etag").is_none(),
        "too large to hash: no tag is invented"
    );
    assert_eq!(
        c.request("GET", "/big", &[], "").body.len(),
        200_000,
        "connection reusable"
    );
    // Without a current tag, If-Match cannot match (RFC 9110 §13.1.1).
    let r = request(p.addr, "PUT", "/big", &[("If-Match", "\"anything\"")], "{}");
    assert_eq!(r.status, 412);
    assert_eq!(
        request(p.addr, "PUT", "/big", &[("If-Match", "*")], "{}").status,
        200
    );
}

#[test]
fn a_head_probe_never_synthesises_a_tag() {
    let o = legacy();
    let p = proxy(&enforce_config("probe = \"head\""), o.addr);
    // The HEAD probe shows the resource exists, but has no body to hash: no tag is current, so
    // no If-Match tag can pass, and none is offered as current.
    let r = request(
        p.addr,
        "PUT",
        "/items/1",
        &[("If-Match", "\"bogus\"")],
        "{}",
    );
    assert_eq!(r.status, 412);
    assert!(
        r.header("etag").is_none(),
        "no tag invented from an empty HEAD body"
    );
}

#[test]
fn require_is_not_satisfied_by_preconditions_that_protect_nothing() {
    let o = legacy(); // sends no Last-Modified
    let p = proxy(&enforce_config("require = [\"PUT\"]"), o.addr);
    for (name, value) in [
        ("If-None-Match", "\"x\""),
        ("If-Unmodified-Since", "Sun, 06 Nov 2050 08:49:37 GMT"),
    ] {
        let r = request(p.addr, "PUT", "/items/1", &[(name, value)], "{}");
        assert_eq!(r.status, 428, "{name}: {value}");
    }
}

#[test]
fn range_requests_get_the_whole_tagged_representation() {
    let o = legacy();
    let p = proxy(&enforce_config(""), o.addr);
    let t1 = request(p.addr, "GET", "/items/1", &[], "").etag();
    let r = request(
        p.addr,
        "PUT",
        "/items/1",
        &[("If-Match", &t1)],
        r#"{"id":1,"stock":2}"#,
    );
    assert_eq!(r.status, 200);
    let r = request(
        p.addr,
        "GET",
        "/items/1",
        &[("Range", "bytes=5-"), ("If-Range", &t1)],
        "",
    );
    assert_eq!(
        r.status, 200,
        "Range ignored: never a partial body of another version"
    );
    assert_ne!(r.etag(), t1);
    assert_eq!(String::from_utf8(r.body).unwrap(), r#"{"id":1,"stock":2}"#);
}

/// An origin that sends its own weak tag (a compressing server, say): precond answers with a
/// synthesised strong tag, but a client that holds the origin's tag (from before precond, or from
/// a direct path) gets the RFC answer: `If-None-Match` compares weakly, so it is a 304.
#[test]
fn the_origins_own_weak_tag_is_evaluated_as_an_alias() {
    let origin = ScriptedOrigin::start(|r: SeenRequest| async move {
        if r.method == "GET" {
            return (200, vec![("etag", "W/\"o1\"".into())], "body".into());
        }
        (204, vec![], String::new())
    });
    let p = proxy(&enforce_config(""), origin.addr);
    // A fresh fetch (nothing known yet), then the stored state, both honour the alias.
    let r = request(p.addr, "GET", "/doc", &[("If-None-Match", "W/\"o1\"")], "");
    assert_eq!(r.status, 304);
    let synthesised = r.etag();
    assert!(synthesised.starts_with("\"s-"), "{synthesised}");
    let r = request(p.addr, "GET", "/doc", &[("If-None-Match", "W/\"o1\"")], "");
    assert_eq!((r.status, r.etag()), (304, synthesised.clone()));
    assert_eq!(origin.requests(), 1, "the second was answered at the edge");
    // If-Match compares strongly: a weak tag never matches (RFC 9110 §13.1.1).
    let r = request(p.addr, "PUT", "/doc", &[("If-Match", "W/\"o1\"")], "x");
    assert_eq!(r.status, 412);
    let r = request(p.addr, "PUT", "/doc", &[("If-None-Match", "W/\"o1\"")], "x");
    assert_eq!(r.status, 412, "the representation exists under that tag");
}

/// With `Vary`, each variant's tag is a tag of the current state: a writer holding the gzip
/// variant's tag is not stale because another reader fetched the identity variant since (the
/// stored state evaluated only the latest variant's tag: a false 412). After the write, every
/// variant's old tag is stale.
#[test]
fn a_writer_holding_one_variants_tag_is_not_refused_for_another_variant() {
    let version = Arc::new(AtomicU64::new(0));
    let v = version.clone();
    let origin = ScriptedOrigin::start(move |r: SeenRequest| {
        let v = v.clone();
        async move {
            if r.method == "GET" || r.method == "HEAD" {
                let gz = r
                    .headers
                    .get("accept-encoding")
                    .is_some_and(|e| e.contains("gzip"));
                let body = format!(
                    "{}-v{}",
                    if gz { "gzip" } else { "identity" },
                    v.load(Ordering::SeqCst)
                );
                return (200, vec![("vary", "Accept-Encoding".into())], body);
            }
            v.fetch_add(1, Ordering::SeqCst);
            (204, vec![], String::new())
        }
    });
    let p = proxy(&enforce_config(""), origin.addr);
    let gz = request(p.addr, "GET", "/doc", &[("Accept-Encoding", "gzip")], "").etag();
    let id = request(p.addr, "GET", "/doc", &[], "").etag();
    assert_ne!(gz, id);
    let before = origin.requests();
    let r = request(
        p.addr,
        "PUT",
        "/doc",
        &[("If-Match", &gz), ("Accept-Encoding", "gzip")],
        "x",
    );
    assert_eq!(r.status, 204, "{}", r.body_str());
    assert_eq!(origin.requests(), before + 1, "decided on the stored state");
    for (tag, enc) in [(&id, "identity"), (&gz, "gzip")] {
        let r = request(
            p.addr,
            "PUT",
            "/doc",
            &[("If-Match", tag), ("Accept-Encoding", enc)],
            "y",
        );
        assert_eq!(r.status, 412, "{enc}: {}", r.body_str());
    }
    assert_eq!(version.load(Ordering::SeqCst), 1);
}
