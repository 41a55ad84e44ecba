//! `guard` on the shared store (issue 12): what one instance learns is refused at another's edge,
//! a stale local store never refuses a tag that is current again, and Redis going away leaves
//! guard deciding on its own knowledge (never a 5xx). Real `redis-server`, real instances, real
//! origins, over loopback.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use precond::demo::{DemoOrigin, Tags};
use precond::telemetry::SharedGuard;

/// A guard instance in front of `origin` with `store` lines (the backend).
fn instance(origin: SocketAddr, store: &str) -> precond::app::Running {
    store_instance(origin, "guard", store)
}

fn redis_store(r: &RedisServer) -> String {
    format!(
        "backend = \"redis\"\nurl = \"{}\"\ntimeout = \"200ms\"",
        r.url()
    )
}

fn count(p: &precond::app::Running, o: SharedGuard) -> u64 {
    p.state.metrics.shared_guarded(o)
}

#[test]
fn a_tag_replaced_through_b_is_refused_at_a_and_a_current_one_is_forwarded() {
    let redis = RedisServer::start();
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    let store = redis_store(&redis);
    let (a, b) = (instance(origin.addr, &store), instance(origin.addr, &store));
    assert_eq!(request(a.addr, "PUT", "/d", &[], r#"{"v":1}"#).status, 201);
    // The client reads through A, another client replaces the document through B.
    let t1 = request(a.addr, "GET", "/d", &[], "").etag();
    let w = request(b.addr, "PUT", "/d", &[("If-Match", &t1)], r#"{"v":2}"#);
    assert_eq!(w.status, 200, "{}", w.body_str());
    let t2 = w.etag();
    assert_ne!(t1, t2);
    // The first client's stale write reaches A, which never saw B's write: refused at the edge.
    let writes = origin.stats.writes.load(Ordering::SeqCst);
    let r = request(a.addr, "PUT", "/d", &[("If-Match", &t1)], r#"{"v":3}"#);
    assert_eq!(r.status, 412, "{}", r.body_str());
    assert!(r.body_str().contains("superseded"), "{}", r.body_str());
    // A's own validators are stale (they name t1 current): none are disclosed.
    assert_eq!(r.header("etag"), None, "{r:?}");
    assert_eq!(
        origin.stats.writes.load(Ordering::SeqCst),
        writes,
        "0 origin writes"
    );
    assert_eq!(count(&a, SharedGuard::Refused), 1);
    // The current tag, which A never saw: forwarded (no false 412).
    let r = request(a.addr, "PUT", "/d", &[("If-Match", &t2)], r#"{"v":4}"#);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(origin.stats.writes.load(Ordering::SeqCst), writes + 1);
    // And a tag it replaced is refused at B's edge, both ways.
    let r = request(b.addr, "PUT", "/d", &[("If-Match", &t2)], r#"{"v":5}"#);
    assert_eq!(r.status, 412, "{}", r.body_str());
    assert_eq!(redis_errors(&a) + redis_errors(&b), 0);
}

fn redis_errors(p: &precond::app::Running) -> u64 {
    p.state.redis.as_ref().unwrap().errors()
}

/// An origin whose tags derive from the content (a revert brings a tag back), honouring
/// `If-Match`; a PUT's new content is its `X-Set` field (the scripted origin drops bodies).
fn content_tagged_origin(first: &str) -> ScriptedOrigin {
    let state = Arc::new(Mutex::new(first.to_string()));
    ScriptedOrigin::start(move |r| {
        let state = state.clone();
        async move {
            let mut cur = state.lock().unwrap();
            let tag = |c: &str| format!("\"{c}\"");
            if r.method == "PUT" {
                if r.headers.get("if-match").is_some_and(|m| *m != tag(&cur)) {
                    return (412, vec![], String::new());
                }
                *cur = r.headers.get("x-set").cloned().unwrap_or_default();
            }
            (200, vec![("etag", tag(&cur))], cur.clone())
        }
    })
}

#[test]
fn a_stale_local_store_does_not_refuse_a_tag_current_again() {
    let redis = RedisServer::start();
    let origin = content_tagged_origin("a");
    let store = redis_store(&redis);
    let (a, b) = (instance(origin.addr, &store), instance(origin.addr, &store));
    assert_eq!(request(a.addr, "GET", "/c", &[], "").etag(), "\"a\"");
    // Through A: "a" → "b". A's own store now holds "a" as replaced.
    let w = request(
        a.addr,
        "PUT",
        "/c",
        &[("If-Match", "\"a\""), ("X-Set", "b")],
        "",
    );
    assert_eq!(w.etag(), "\"b\"");
    // Through B: reverted to "a" (content-derived: the tag "a" is current again).
    let w = request(
        b.addr,
        "PUT",
        "/c",
        &[("If-Match", "\"b\""), ("X-Set", "a")],
        "",
    );
    assert_eq!((w.status, w.etag()), (200, "\"a\"".to_string()));
    // A's store alone would refuse "a"; the shared facts show it current: forwarded, accepted.
    let before = origin.requests();
    let r = request(
        a.addr,
        "PUT",
        "/c",
        &[("If-Match", "\"a\""), ("X-Set", "c")],
        "",
    );
    assert_eq!(r.status, 200, "a false 412: {}", r.body_str());
    assert_eq!(origin.requests(), before + 1);
    assert_eq!(count(&a, SharedGuard::Overruled), 1);
    // The baseline this guards against: the memory backend refuses the current tag.
    let (m1, m2) = (
        instance(origin.addr, "backend = \"memory\""),
        instance(origin.addr, "backend = \"memory\""),
    );
    let cur = request(m1.addr, "GET", "/c", &[], "").etag();
    request(
        m1.addr,
        "PUT",
        "/c",
        &[("If-Match", &cur), ("X-Set", "d")],
        "",
    );
    request(
        m2.addr,
        "PUT",
        "/c",
        &[("If-Match", "\"d\""), ("X-Set", &cur[1..cur.len() - 1])],
        "",
    );
    let r = request(
        m1.addr,
        "PUT",
        "/c",
        &[("If-Match", &cur), ("X-Set", "e")],
        "",
    );
    assert_eq!(
        r.status, 412,
        "the memory baseline refuses a current tag (the case shown)"
    );
}

#[test]
fn redis_down_forwards_guard_writes_and_it_recovers() {
    let mut redis = RedisServer::start();
    let origin = content_tagged_origin("a");
    let store = redis_store(&redis);
    let (a, b) = (instance(origin.addr, &store), instance(origin.addr, &store));
    assert_eq!(request(a.addr, "GET", "/k", &[], "").etag(), "\"a\"");
    // Through A: "a" → "b" (A's own store holds "a" replaced); through B: back to "a".
    let w = request(
        a.addr,
        "PUT",
        "/k",
        &[("If-Match", "\"a\""), ("X-Set", "b")],
        "",
    );
    assert_eq!(w.etag(), "\"b\"");
    let w = request(
        b.addr,
        "PUT",
        "/k",
        &[("If-Match", "\"b\""), ("X-Set", "a")],
        "",
    );
    assert_eq!(w.etag(), "\"a\"");
    redis.stop();
    // Redis is gone: A's store alone would refuse "a", which is current. Forwarded, accepted (no
    // false 412, no 5xx).
    let r = request(
        a.addr,
        "PUT",
        "/k",
        &[("If-Match", "\"a\""), ("X-Set", "c")],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    // A stale write is forwarded too: the origin is the judge.
    let r = request(
        a.addr,
        "PUT",
        "/k",
        &[("If-Match", "\"a\""), ("X-Set", "d")],
        "",
    );
    assert_eq!(r.status, 412, "the origin's own 412: {}", r.body_str());
    assert_eq!(
        r.header("precond-decision"),
        None,
        "the origin decided, not precond"
    );
    assert!(count(&a, SharedGuard::Unavailable) >= 2);
    assert!(redis_errors(&a) > 0);
    // Reads are untouched.
    assert_eq!(request(b.addr, "GET", "/k", &[], "").status, 200);
    // Redis comes back (empty): the instances reconnect on their own and share again.
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let t = request(b.addr, "GET", "/k", &[], "").etag();
        let next = format!("v{n}");
        let w = request(
            b.addr,
            "PUT",
            "/k",
            &[("If-Match", &t), ("X-Set", &next)],
            "",
        );
        assert_eq!(w.status, 200, "{}", w.body_str());
        let r = request(a.addr, "PUT", "/k", &[("If-Match", &t), ("X-Set", "z")], "");
        if r.status == 412 && r.header("precond-decision").is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no recovery");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The facts' rules against a real Redis: stamps order them, not arrival (a replacement published
/// late never outweighs a showing of the tag made after the replacing write was decided, nor
/// survives the loss of the hash); a caller the origin never answered is never refused;
/// admissions and fields are bounded.
#[test]
fn facts_are_ordered_by_stamps_not_by_arrival_against_a_real_redis() {
    use precond::identity::{Principal, ResourceKey, RouteId};
    use precond::precondition::{EntityTag, Knowledge};
    use precond::store::redis::Lesson;
    use precond::store::Tag;
    let server = RedisServer::start();
    block_on(async {
        let redis = store_client(
            server.url(),
            None,
            Duration::from_secs(3),
            Duration::from_secs(60),
        );
        let name = |path: &str| {
            redis.guard_key(&ResourceKey {
                route: RouteId(1),
                host: "h",
                path,
            })
        };
        let (p1, p2, stranger) = (Principal(1), Principal(2), Principal(3));
        let a = EntityTag::parse(b"\"a\"").unwrap();
        let shown = |o: &str| Lesson {
            admit: true,
            current: Some(o.as_bytes().into()),
            ..Lesson::default()
        };
        let replaced = |t: &EntityTag<'_>, now: &str| Lesson {
            admit: true,
            replaced: Some((Tag::from_ref(t), false)),
            current: Some(now.as_bytes().into()),
            ..Lesson::default()
        };

        // In order: "a" shown, then a write decided after it replaces it.
        let k = name("/in-order");
        redis.teach(&k, p1, &shown("a"), None).await.unwrap();
        let w = redis.judge(&k, p1, &[a]).await.unwrap();
        redis
            .teach(&k, p1, &replaced(&a, "b"), Some(w.ticket))
            .await
            .unwrap();
        let f = redis.judge(&k, p1, &[a]).await.unwrap();
        assert!(f.was_replaced(&a) && f.ticket > w.ticket);
        assert!(
            !redis
                .judge(&k, stranger, &[a])
                .await
                .unwrap()
                .was_replaced(&a),
            "never answered"
        );
        assert!(
            !redis.judge(&k, p2, &[a]).await.unwrap().was_replaced(&a),
            "p2 not admitted"
        );
        redis.teach(&k, p2, &shown("b"), None).await.unwrap();
        assert!(
            !redis.judge(&k, p2, &[a]).await.unwrap().was_replaced(&a),
            "p2 admitted, but never shown \"a\": no oracle for another caller's tags"
        );
        // A caller shown "a" before the write, then answered without a tag, is refused; so is
        // the writer, who named it.
        let k = name("/seen");
        redis.teach(&k, p1, &shown("a"), None).await.unwrap();
        redis.teach(&k, p2, &shown("a"), None).await.unwrap();
        let untagged = Lesson {
            admit: true,
            ..Lesson::default()
        };
        redis.teach(&k, p2, &untagged, None).await.unwrap();
        let w = redis.judge(&k, p1, &[a]).await.unwrap();
        redis
            .teach(&k, p1, &replaced(&a, "b"), Some(w.ticket))
            .await
            .unwrap();
        assert!(redis.judge(&k, p2, &[a]).await.unwrap().was_replaced(&a));
        assert!(redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a));
        let k = name("/named");
        redis.teach(&k, p1, &untagged, None).await.unwrap();
        let w = redis.judge(&k, p1, &[a]).await.unwrap();
        redis
            .teach(&k, p1, &replaced(&a, "b"), Some(w.ticket))
            .await
            .unwrap();
        assert!(
            redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a),
            "the writer named it"
        );

        // Out of order: the write is decided, a later write brings "a" back and is published
        // first; the first write's replacement arrives last and must not win.
        let k = name("/late");
        redis.teach(&k, p1, &shown("a"), None).await.unwrap();
        let w = redis.judge(&k, p1, &[a]).await.unwrap();
        redis.teach(&k, p2, &shown("a"), None).await.unwrap();
        redis
            .teach(&k, p1, &replaced(&a, "b"), Some(w.ticket))
            .await
            .unwrap();
        assert!(!redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a));

        // Without a ticket nothing is replaced; a forget voids what came before.
        let k = name("/forget");
        redis.teach(&k, p1, &replaced(&a, "b"), None).await.unwrap();
        assert!(!redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a));
        let w = redis.judge(&k, p1, &[a]).await.unwrap();
        redis
            .teach(&k, p1, &replaced(&a, "b"), Some(w.ticket))
            .await
            .unwrap();
        assert!(redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a));
        let forget = Lesson {
            forget: true,
            ..Lesson::default()
        };
        redis.teach(&k, p1, &forget, None).await.unwrap();
        assert!(!redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a));

        // A hash lost between a write's judgement and its publication (expiry, eviction, a
        // restart) took the showings with it: the late replacement is void.
        let k = name("/lost");
        redis.teach(&k, p1, &shown("a"), None).await.unwrap();
        let w = redis.judge(&k, p1, &[a]).await.unwrap();
        redis.teach(&k, p2, &shown("a"), None).await.unwrap(); // a revert, shown...
        server.command(&["DEL", &k]); // ...and lost
        redis
            .teach(&k, p1, &replaced(&a, "b"), Some(w.ticket))
            .await
            .unwrap();
        assert!(!redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a));
        // Judging creates nothing.
        let k = name("/judged-only");
        redis.judge(&k, p1, &[a]).await.unwrap();
        assert_eq!(server.command(&["EXISTS", &k]), ":0");

        // The empty tag is a tag like any other: shown current, it is not refused.
        let k = name("/empty");
        let empty = EntityTag::parse(b"\"\"").unwrap();
        redis.teach(&k, p1, &shown(""), None).await.unwrap();
        let w = redis.judge(&k, p1, &[empty]).await.unwrap();
        redis
            .teach(&k, p1, &replaced(&empty, "b"), Some(w.ticket))
            .await
            .unwrap();
        assert!(redis
            .judge(&k, p1, &[empty])
            .await
            .unwrap()
            .was_replaced(&empty));
        redis.teach(&k, p2, &shown(""), None).await.unwrap();
        assert!(!redis
            .judge(&k, p1, &[empty])
            .await
            .unwrap()
            .was_replaced(&empty));

        // Admissions are bounded, and a flood of callers voids nobody's replacements.
        let k = name("/crowded");
        redis.teach(&k, p1, &shown("a"), None).await.unwrap();
        let w = redis.judge(&k, p1, &[a]).await.unwrap();
        redis
            .teach(&k, p1, &replaced(&a, "b"), Some(w.ticket))
            .await
            .unwrap();
        for i in 100..400 {
            redis
                .teach(
                    &k,
                    Principal(i),
                    &Lesson {
                        admit: true,
                        ..Lesson::default()
                    },
                    None,
                )
                .await
                .unwrap();
        }
        assert!(
            redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a),
            "p1's replacement kept"
        );
        assert!(
            !redis
                .judge(&k, Principal(399), &[a])
                .await
                .unwrap()
                .was_replaced(&a),
            "not admitted"
        );
        let admitted = server.command(&["HGET", &k, "na"]);
        assert!(
            admitted.ends_with(&format!("{}", precond::store::redis::facts::MAX_ADMITTED)),
            "{admitted}"
        );

        // The bound: a hash past MAX_FIELDS fields loses its replacements and showings.
        let k = name("/bounded");
        redis.teach(&k, p1, &shown("x"), None).await.unwrap();
        let w = redis.judge(&k, p1, &[a]).await.unwrap();
        redis
            .teach(&k, p1, &replaced(&a, "b"), Some(w.ticket))
            .await
            .unwrap();
        assert!(redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a));
        for i in 0..precond::store::redis::facts::MAX_FIELDS {
            redis
                .teach(&k, p2, &shown(&format!("t{i}")), None)
                .await
                .unwrap();
        }
        let len: usize = server
            .command(&["HLEN", &k])
            .trim_start_matches(':')
            .parse()
            .unwrap();
        assert!(
            len <= precond::store::redis::facts::MAX_FIELDS + 1,
            "{len} fields"
        );
        assert!(!redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a));
        assert!(
            server
                .command(&["HGET", &k, &format!("a:{:016x}", 1)])
                .ends_with('1'),
            "admission kept"
        );
        // What p1 knows survives the purge: a later replacement of a tag p1 was shown before it
        // refuses p1's stale write.
        let x = EntityTag::parse(b"\"x\"").unwrap();
        let w = redis.judge(&k, p2, &[x]).await.unwrap();
        redis
            .teach(&k, p2, &replaced(&x, "y"), Some(w.ticket))
            .await
            .unwrap();
        assert!(redis.judge(&k, p1, &[x]).await.unwrap().was_replaced(&x));

        // Each caller knows its newest MAX_KNOWN tags: one shown before them is forwarded.
        let k = name("/known");
        redis.teach(&k, p1, &shown("a"), None).await.unwrap();
        for i in 0..precond::store::redis::facts::MAX_KNOWN {
            redis
                .teach(&k, p1, &shown(&format!("k{i}")), None)
                .await
                .unwrap();
        }
        let w = redis.judge(&k, p2, &[a]).await.unwrap();
        redis
            .teach(&k, p2, &replaced(&a, "b"), Some(w.ticket))
            .await
            .unwrap();
        assert!(!redis.judge(&k, p1, &[a]).await.unwrap().was_replaced(&a));
        let k1 = EntityTag::parse(b"\"k1\"").unwrap();
        let w = redis.judge(&k, p2, &[k1]).await.unwrap();
        redis
            .teach(&k, p2, &replaced(&k1, "c"), Some(w.ticket))
            .await
            .unwrap();
        assert!(redis.judge(&k, p1, &[k1]).await.unwrap().was_replaced(&k1));
        assert_eq!(redis.errors(), 0);
    });
}
