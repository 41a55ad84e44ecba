//! `guard` mode end to end: a real precond in front of a real origin, over real sockets.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use precond::demo::DemoOrigin;

fn demo() -> DemoOrigin {
    DemoOrigin::start(
        "127.0.0.1:0".parse().unwrap(),
        precond::demo::Tags::Strong,
        "",
    )
    .unwrap()
}

fn origin_requests(o: &DemoOrigin) -> u64 {
    o.stats.requests.load(Ordering::SeqCst)
}

fn origin_connections(o: &DemoOrigin) -> u64 {
    o.stats.connections.load(Ordering::SeqCst)
}

/// Learns the current tag of `/items/1`, writes with it (forwarded), and returns
/// (tag that is now replaced, current tag).
fn learn_then_write(p: std::net::SocketAddr) -> (String, String) {
    let old = request(p, "GET", "/items/1", &[], "").etag();
    let r = request(
        p,
        "PUT",
        "/items/1",
        &[("If-Match", &old)],
        r#"{"stock":9}"#,
    );
    assert_eq!(r.status, 200, "a write with the current tag is forwarded");
    (old, r.etag())
}

#[test]
fn stale_if_match_gets_412_at_the_edge_without_contacting_the_origin() {
    let o = demo();
    let p = proxy(&guard_config("superseded"), o.addr);
    let (old, current) = learn_then_write(p.addr);

    let (reqs, conns) = (origin_requests(&o), origin_connections(&o));
    let r = request(
        p.addr,
        "PUT",
        "/items/1",
        &[("If-Match", &old)],
        r#"{"stock":0}"#,
    );
    assert_eq!(r.status, 412);
    assert_eq!(origin_requests(&o), reqs, "the origin saw no request");
    assert_eq!(
        origin_connections(&o),
        conns,
        "no connection was opened to the origin"
    );

    // The answer explains itself.
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("etag"), Some(current.as_str()));
    assert!(r.header("last-modified").is_some());
    assert!(r.header("date").is_some());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("precond-decision").unwrap().contains("superseded"));
    let body = r.json();
    assert_eq!(body["status"], 412);
    assert_eq!(body["title"], "Precondition Failed");
    assert_eq!(body["precondition"], "If-Match");
    assert_eq!(body["reason"], "superseded");
    assert_eq!(body["sent"][0], old.as_str());
    assert_eq!(body["current_etag"], current.as_str());
    assert!(body["next_step"].as_str().unwrap().contains("If-Match"));

    // Counted.
    let metrics = p.state.metrics.render(Default::default(), &[]);
    assert!(
        metrics
            .contains("precond_rejected_total{precondition=\"If-Match\",reason=\"superseded\"} 1"),
        "{metrics}"
    );
}

#[test]
fn unknown_tags_are_forwarded_with_their_preconditions() {
    let o = demo();
    let p = proxy(&guard_config("superseded"), o.addr);
    learn_then_write(p.addr);
    let before = origin_requests(&o);
    // A tag precond never saw may be newer than what it knows: the origin decides.
    let r = request(
        p.addr,
        "PUT",
        "/items/1",
        &[("If-Match", "\"elsewhere\"")],
        "{}",
    );
    assert_eq!(r.status, 200, "the legacy origin accepted it");
    assert_eq!(origin_requests(&o), before + 1);
    // A list with one unknown tag is forwarded too.
    let r = request(p.addr, "GET", "/items/1", &[], "");
    let cur = r.etag();
    let r = request(
        p.addr,
        "PUT",
        "/items/1",
        &[("If-Match", &format!("{cur}, \"zz\""))],
        "{}",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn preconditions_reach_the_origin_intact() {
    let o = ScriptedOrigin::start(|req| async move {
        let echo = format!(
            "{}|{}|{}",
            req.headers.get("if-match").cloned().unwrap_or_default(),
            req.headers
                .get("if-none-match")
                .cloned()
                .unwrap_or_default(),
            req.headers
                .get("if-unmodified-since")
                .cloned()
                .unwrap_or_default()
        );
        (200, vec![], echo)
    });
    let p = proxy(&guard_config("superseded"), o.addr);
    let r = request(
        p.addr,
        "PUT",
        "/x",
        &[
            ("If-Match", "\"a,b\", W/\"c\""),
            ("If-None-Match", "*"),
            ("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ],
        "{}",
    );
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        "\"a,b\", W/\"c\"|*|Sun, 06 Nov 1994 08:49:37 GMT"
    );
}

/// The README's table "How it decides": what each policy does with each kind of precondition.
#[test]
fn policy_table_if_match_lists_and_weak_tags() {
    for policy in ["superseded", "mismatch"] {
        let o = demo();
        let p = proxy(&guard_config(policy), o.addr);
        let (old, current) = learn_then_write(p.addr);
        // Refresh the store with a GET so that `mismatch` knows the current tag.
        assert_eq!(request(p.addr, "GET", "/items/1", &[], "").etag(), current);

        // Every listed tag replaced: 412 under both.
        let r = request(
            p.addr,
            "PUT",
            "/items/1",
            &[("If-Match", &format!("{old}, {old}"))],
            "{}",
        );
        assert_eq!(r.status, 412, "{policy}: all tags replaced");

        // Only weak tags: superseded forwards, mismatch refuses.
        let weak = format!("W/{current}");
        let before = origin_requests(&o);
        let r = request(p.addr, "PUT", "/items/1", &[("If-Match", &weak)], "{}");
        match policy {
            "superseded" => {
                assert_eq!(r.status, 200, "superseded forwards weak-only If-Match");
                assert_eq!(origin_requests(&o), before + 1);
            }
            _ => {
                assert_eq!(r.status, 412, "mismatch refuses weak-only If-Match");
                assert_eq!(r.json()["reason"], "weak_only");
                assert_eq!(origin_requests(&o), before);
            }
        }

        // A tag the edge never saw while the entry is fresh: only mismatch refuses.
        let current = request(p.addr, "GET", "/items/1", &[], "").etag();
        let r = request(
            p.addr,
            "PUT",
            "/items/1",
            &[("If-Match", "\"never-seen\"")],
            "{}",
        );
        match policy {
            "superseded" => assert_eq!(r.status, 200),
            _ => {
                assert_eq!(r.status, 412);
                assert_eq!(r.json()["reason"], "no_match");
                assert_eq!(r.json()["current_etag"], current.as_str());
            }
        }
    }
}

#[test]
fn policy_table_existence_rows() {
    for policy in ["superseded", "mismatch"] {
        let o = demo();
        let p = proxy(&guard_config(policy), o.addr);

        // If-None-Match: * on a write to a resource seen existing.
        request(p.addr, "GET", "/items/2", &[], "");
        let r = request(p.addr, "PUT", "/items/2", &[("If-None-Match", "*")], "{}");
        match policy {
            "superseded" => assert_eq!(r.status, 200, "superseded: it may have been deleted since"),
            _ => {
                assert_eq!(r.status, 412);
                assert_eq!(r.json()["precondition"], "If-None-Match");
                assert_eq!(r.json()["reason"], "resource_exists");
            }
        }

        // If-Match: * on a resource seen absent (known first: a 404 alone teaches nothing).
        assert_eq!(request(p.addr, "PUT", "/items/404", &[], "{}").status, 201);
        assert_eq!(request(p.addr, "DELETE", "/items/404", &[], "").status, 204);
        assert_eq!(request(p.addr, "GET", "/items/404", &[], "").status, 404);
        let before = origin_requests(&o);
        let r = request(p.addr, "PUT", "/items/404", &[("If-Match", "*")], "{}");
        match policy {
            "superseded" => {
                assert_eq!(r.status, 201, "superseded: it may have been created since");
                assert_eq!(origin_requests(&o), before + 1);
            }
            _ => {
                assert_eq!(r.status, 412);
                assert_eq!(r.json()["reason"], "resource_absent");
                assert_eq!(origin_requests(&o), before);
            }
        }
    }
}

#[test]
fn policy_table_if_unmodified_since() {
    for policy in ["superseded", "mismatch"] {
        let o = demo();
        let p = proxy(&guard_config(policy), o.addr);
        request(p.addr, "GET", "/items/1", &[], "");
        let before = origin_requests(&o);
        // Older than the Last-Modified the edge saw: refused under both policies.
        let r = request(
            p.addr,
            "PUT",
            "/items/1",
            &[("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")],
            "{}",
        );
        assert_eq!(r.status, 412, "{policy}");
        assert_eq!(r.json()["precondition"], "If-Unmodified-Since");
        assert_eq!(origin_requests(&o), before);
        // A future date, an invalid date, a list of dates: forwarded.
        for ius in [
            "Fri, 01 Jan 2100 00:00:00 GMT",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
        ] {
            let r = request(
                p.addr,
                "PUT",
                "/items/1",
                &[("If-Unmodified-Since", ius)],
                "{}",
            );
            assert_eq!(r.status, 200, "{policy}: {ius}");
        }
        // With If-Match present, If-Unmodified-Since is ignored.
        let cur = request(p.addr, "GET", "/items/1", &[], "").etag();
        let r = request(
            p.addr,
            "PUT",
            "/items/1",
            &[
                ("If-Match", &cur),
                ("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
            "{}",
        );
        assert_eq!(r.status, 200, "{policy}: If-Match decides");
    }
}

#[test]
fn malformed_preconditions_are_forwarded_to_the_origin_judge() {
    let o = demo();
    let p = proxy(&guard_config("mismatch"), o.addr);
    learn_then_write(p.addr);
    for (name, value) in [
        ("If-Match", "unquoted"),
        ("If-Match", "*, \"r1\""),
        ("If-None-Match", "\"a\" \"b\""),
        ("If-Unmodified-Since", "not a date"),
    ] {
        let before = origin_requests(&o);
        let r = request(p.addr, "PUT", "/items/1", &[(name, value)], "{}");
        assert_eq!(r.status, 200, "{name}: {value}");
        assert_eq!(origin_requests(&o), before + 1, "{name}: {value}");
    }
}

#[test]
fn delete_teaches_absence_and_404_beats_412() {
    let o = demo();
    let p = proxy(&guard_config("mismatch"), o.addr);
    let tag = request(p.addr, "GET", "/items/2", &[], "").etag();
    assert_eq!(
        request(p.addr, "DELETE", "/items/2", &[("If-Match", &tag)], "").status,
        204
    );
    // DELETE of a missing resource: the origin's 404 takes precedence over If-Match.
    let r = request(p.addr, "DELETE", "/items/2", &[("If-Match", &tag)], "");
    assert_eq!(r.status, 404);
    // PUT with the deleted representation's tag: proven stale.
    let r = request(p.addr, "PUT", "/items/2", &[("If-Match", &tag)], "{}");
    assert_eq!(r.status, 412);
    // Create-only PUT on a resource known absent: forwarded, created.
    let r = request(
        p.addr,
        "PUT",
        "/items/2",
        &[("If-None-Match", "*")],
        "{\"id\":2}",
    );
    assert_eq!(r.status, 201);
}

#[test]
fn expect_100_continue_gets_the_412_before_the_body_is_sent() {
    let o = demo();
    let p = proxy(&guard_config("superseded"), o.addr);
    let (old, _) = learn_then_write(p.addr);
    let before = origin_requests(&o);
    let mut c = Conn::open(p.addr);
    c.write_raw(
        format!(
            "PUT /items/1 HTTP/1.1\r\nHost: test.local\r\nIf-Match: {old}\r\nExpect: 100-continue\r\n\
             Content-Length: 1000\r\n\r\n"
        )
        .as_bytes(),
    );
    // No body sent: the final answer must come anyway, and it is not a 100.
    let r = c.read_response(false);
    assert_eq!(r.status, 412);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        c.is_closed(),
        "the connection is closed cleanly, body never read"
    );
    assert_eq!(origin_requests(&o), before);
}

#[test]
fn small_body_is_drained_and_keep_alive_survives_a_412() {
    let o = demo();
    let p = proxy(&guard_config("superseded"), o.addr);
    let (old, current) = learn_then_write(p.addr);
    let mut c = Conn::open(p.addr);
    let r = c.request(
        "PUT",
        "/items/1",
        &[("If-Match", &old)],
        r#"{"stock":1234}"#,
    );
    assert_eq!(r.status, 412);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    // Same connection: the next request is parsed correctly (the body was not taken for one).
    let r = c.request("GET", "/items/1", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.etag(), current);
    assert!(
        !String::from_utf8_lossy(&r.body).contains("1234"),
        "the refused write was not applied"
    );
}

#[test]
fn large_refused_body_closes_the_connection() {
    let o = demo();
    let p = proxy(&guard_config("superseded"), o.addr);
    let (old, _) = learn_then_write(p.addr);
    let mut c = Conn::open(p.addr);
    // Declares 1 MiB but sends only the headers: precond must not wait for it.
    c.write_raw(
        format!("PUT /items/1 HTTP/1.1\r\nHost: test.local\r\nIf-Match: {old}\r\nContent-Length: 1048576\r\n\r\n")
            .as_bytes(),
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 412);
    assert_eq!(r.header("connection"), Some("close"));
}

/// An origin that answers GETs, and drops the connection in the middle of every write.
fn flaky_write_origin() -> ScriptedOrigin {
    ScriptedOrigin::start(|req| async move {
        if req.method == "GET" {
            (200, vec![("etag", "\"v1\"".to_string())], "{}".to_string())
        } else {
            // Never answer: the test proxy's read timeout is short, see below.
            tokio::time::sleep(Duration::from_secs(30)).await;
            (200, vec![], String::new())
        }
    })
}

#[test]
fn a_write_is_never_sent_twice_to_the_origin() {
    // A raw origin that reads a request, answers GETs with keep-alive, and closes the socket
    // without answering any write: the classic case where a proxy retries on a "stale" reused
    // connection and sends the write again.
    use std::io::{BufReader, Write};
    use std::sync::atomic::AtomicU64;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let writes = Arc::new(AtomicU64::new(0));
    let w2 = writes.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let w3 = w2.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                loop {
                    let Some(line) = read_request(&mut r) else {
                        return;
                    };
                    if line.starts_with("GET") {
                        let _ = r.get_mut().write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: \"v1\"\r\n\r\n{}",
                        );
                    } else {
                        w3.fetch_add(1, Ordering::SeqCst);
                        return; // drop the connection mid-exchange
                    }
                }
            });
        }
    });
    let p = proxy(&guard_config("superseded"), addr);
    for method in ["PUT", "DELETE", "POST", "PATCH"] {
        // Warm the upstream pool so that the write goes out on a reused connection.
        assert_eq!(request(p.addr, "GET", "/r", &[], "").status, 200);
        let before = writes.load(Ordering::SeqCst);
        let r = request(p.addr, method, "/r", &[("If-Match", "\"v1\"")], "{}");
        assert_eq!(r.status, 502, "{method}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            writes.load(Ordering::SeqCst),
            before + 1,
            "{method} reached the origin once"
        );
    }
}

#[test]
fn broken_write_makes_precond_forget_the_current_tag() {
    let o = flaky_write_origin();
    let text =
        guard_config("mismatch").replace("read_timeout = \"5s\"", "read_timeout = \"300ms\"");
    let p = proxy(&text, o.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
    // Under mismatch, an unknown tag is refused while the current tag is known...
    assert_eq!(
        request(p.addr, "PUT", "/r", &[("If-Match", "\"v0\"")], "{}").status,
        412
    );
    // ...a write times out: its outcome is unknown (504), and precond forgets what it believed.
    let r = request(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "{}");
    assert_eq!(r.status, 504);
    let before = o.requests();
    let r = request(p.addr, "PUT", "/r", &[("If-Match", "\"v0\"")], "{}");
    assert_eq!(r.status, 504, "forwarded, not refused from stale knowledge");
    assert_eq!(o.requests(), before + 1);
}

#[test]
fn an_in_flight_get_does_not_roll_back_a_completed_write() {
    // GET /r answers "v1" — slowly for the second GET. PUT answers "v2".
    let gets = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (g2, rel2) = (gets.clone(), release.clone());
    let o = ScriptedOrigin::start(move |req| {
        let (gets, release) = (g2.clone(), rel2.clone());
        async move {
            if req.method == "GET" {
                if gets.fetch_add(1, Ordering::SeqCst) == 1 {
                    release.notified().await; // held until the write has completed
                }
                (200, vec![("etag", "\"v1\"".to_string())], "old".to_string())
            } else {
                (200, vec![("etag", "\"v2\"".to_string())], "new".to_string())
            }
        }
    });
    let p = proxy(&guard_config("superseded"), o.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
    let addr = p.addr;
    let slow_get = std::thread::spawn(move || request(addr, "GET", "/r", &[], ""));
    while gets.load(Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The write completes while the GET is in flight.
    assert_eq!(
        request(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "new").status,
        200
    );
    release.notify_one();
    assert_eq!(slow_get.join().unwrap().etag(), "\"v1\"");
    // The late GET must not have made "v1" current again.
    let before = o.requests();
    let r = request(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "newer");
    assert_eq!(r.status, 412, "v1 is still known replaced");
    assert_eq!(r.json()["current_etag"], "\"v2\"");
    assert_eq!(o.requests(), before);
}

#[test]
fn pass_routes_learn_and_refuse_nothing() {
    let o = demo();
    let text = guard_config("superseded").replace(
        "mode = \"guard\"\npolicy = \"superseded\"",
        "mode = \"pass\"",
    );
    let p = proxy(&text, o.addr);
    let (old, _) = learn_then_write(p.addr);
    let r = request(p.addr, "PUT", "/items/1", &[("If-Match", &old)], "{}");
    assert_eq!(r.status, 200, "pass mode forwards everything");
}

#[test]
fn reads_are_forwarded_even_with_stale_preconditions() {
    let o = demo();
    let p = proxy(&guard_config("mismatch"), o.addr);
    let (old, _) = learn_then_write(p.addr);
    let before = origin_requests(&o);
    let r = request(p.addr, "GET", "/items/1", &[("If-Match", &old)], "");
    assert_eq!(r.status, 200, "guard leaves reads to the origin");
    assert_eq!(origin_requests(&o), before + 1);
}

#[test]
fn no_route_and_dead_upstream_get_problem_bodies() {
    let dead = free_addr();
    let text = guard_config("superseded").replace(
        "upstream = \"origin\"\nmode",
        "path_prefix = \"/api\"\nupstream = \"origin\"\nmode",
    );
    let p = proxy(&text, dead);
    let r = request(p.addr, "GET", "/elsewhere", &[], "");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("precond-decision"), Some("no-route"));
    assert_eq!(r.json()["status"], 404);
    let r = request(p.addr, "GET", "/api/x", &[], "");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["status"], 502);
}

/// A raw origin: answers GETs with the `ETag` bytes `tags[n]` for its n-th GET (the last one
/// repeats) and any other method with 204.
fn raw_tag_origin(tags: Vec<Vec<u8>>) -> std::net::SocketAddr {
    use std::io::{BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let (tags, gets) = (tags.clone(), gets.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                loop {
                    let Some(line) = read_request(&mut r) else {
                        return;
                    };
                    let resp = if line.starts_with("GET") {
                        let n = gets.fetch_add(1, Ordering::SeqCst).min(tags.len() - 1);
                        let mut v = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: ".to_vec();
                        v.extend_from_slice(&tags[n]);
                        v.extend_from_slice(b"\r\n\r\n{}");
                        v
                    } else {
                        b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
                    };
                    let _ = r.get_mut().write_all(&resp);
                }
            });
        }
    });
    addr
}

/// A tag with obs-text bytes (not UTF-8) is shown in the 412's `ETag` field as the origin sent it:
/// a client that copies it into `If-Match` must match. (The JSON body can only show text.)
#[test]
fn the_412_etag_field_carries_the_stored_tag_bytes() {
    use std::io::{Read, Write};
    let old = b"\"\xe9v1\"".to_vec();
    let current = b"\"\xe9v2\"".to_vec();
    let p = proxy(
        &guard_config("superseded"),
        raw_tag_origin(vec![old.clone(), current.clone()]),
    );
    let raw = |req: &[u8]| {
        let mut s = std::net::TcpStream::connect(p.addr).unwrap();
        s.write_all(req).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        resp
    };
    for _ in 0..2 {
        let r = raw(b"GET /r HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
        assert!(r.starts_with(b"HTTP/1.1 200"));
    }
    let mut req = b"PUT /r HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\nContent-Length: 2\r\nIf-Match: ".to_vec();
    req.extend_from_slice(&old);
    req.extend_from_slice(b"\r\n\r\n{}");
    let resp = raw(&req);
    assert!(
        resp.starts_with(b"HTTP/1.1 412"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = &resp[..head_end];
    let mut want = b"etag: ".to_vec();
    want.extend_from_slice(&current);
    let lower: Vec<u8> = head.iter().map(u8::to_ascii_lowercase).collect();
    let want_lower: Vec<u8> = want.iter().map(u8::to_ascii_lowercase).collect();
    assert!(
        lower
            .windows(want_lower.len())
            .any(|w| w == want_lower.as_slice()),
        "{}",
        String::from_utf8_lossy(head)
    );
}

/// One later `Last-Modified` (another server, a variant) used to stay the stored date for good,
/// refusing every `If-Unmodified-Since` write while the resource kept being read. The date is the
/// current representation's.
#[test]
fn a_later_date_seen_once_does_not_refuse_later_dated_writes() {
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = ScriptedOrigin::start(move |r: SeenRequest| {
        let gets = gets.clone();
        async move {
            if r.method != "GET" {
                return (204, vec![], String::new());
            }
            let lm = if gets.fetch_add(1, Ordering::SeqCst) == 0 {
                "Sun, 06 Nov 1994 10:00:00 GMT"
            } else {
                "Sun, 06 Nov 1994 08:00:00 GMT"
            };
            (
                200,
                vec![("Last-Modified", lm.to_string())],
                "{}".to_string(),
            )
        }
    });
    let p = proxy(&guard_config("superseded"), origin.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").status, 200);
    let ius = |d: &str| request(p.addr, "PUT", "/r", &[("If-Unmodified-Since", d)], "{}").status;
    assert_eq!(
        ius("Sun, 06 Nov 1994 09:00:00 GMT"),
        412,
        "10:00 is later than 09:00"
    );
    assert_eq!(request(p.addr, "GET", "/r", &[], "").status, 200);
    assert_eq!(
        ius("Sun, 06 Nov 1994 09:00:00 GMT"),
        204,
        "the current date is 08:00"
    );
    assert_eq!(
        ius("Sun, 06 Nov 1994 07:00:00 GMT"),
        412,
        "still refused before 08:00"
    );
}

/// Reads one request (request line, header, `Content-Length` body) from a raw origin's
/// connection; its request line, or `None` at the end of the connection.
fn read_request(r: &mut std::io::BufReader<std::net::TcpStream>) -> Option<String> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Some(line)
}
