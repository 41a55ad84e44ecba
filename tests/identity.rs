//! Whose resource is this: canonical targets, methods that fail closed, and forwarding headers
//! that no client can forge. Each test reproduces an attack on a real proxy over sockets.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;

/// A legacy origin that sends no validators and, like most web frameworks, decodes the path
/// before it looks the resource up (so `/items/%36` is `/items/6`). GET answers `v<n>`, any
/// other method bumps `n`. Counts the writes it applied.
struct Legacy {
    origin: ScriptedOrigin,
    writes: Arc<Mutex<Vec<(String, String)>>>,
}

fn legacy() -> Legacy {
    let versions: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let writes: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let w = writes.clone();
    let origin = ScriptedOrigin::start(move |r: SeenRequest| {
        let (versions, writes) = (versions.clone(), w.clone());
        async move {
            let path = decode(&r.path);
            let mut v = versions.lock().unwrap();
            let n = v.entry(path.clone()).or_insert(0);
            if r.method == "GET" || r.method == "HEAD" {
                (200, vec![], format!("v{n}"))
            } else {
                *n += 1;
                writes.lock().unwrap().push((r.method, path));
                (204, vec![], String::new())
            }
        }
    });
    Legacy { origin, writes }
}

/// Percent-decoding and dot segments resolved, as a web server or framework router does.
fn decode(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let decoded = percent_decode(p);
    for seg in decoded.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn percent_decode(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            if let Ok(v) = u8::from_str_radix(&p[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request with a chosen `Host` line, on a fresh connection.
fn with_host(
    addr: std::net::SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n{}");
    let mut c = Conn::open(addr);
    c.write_raw(req.as_bytes());
    c.read_response(method == "HEAD")
}

fn enforce_config() -> String {
    route_config("mode = \"enforce\"\nrequire = [\"PUT\", \"PATCH\", \"DELETE\", \"POST\"]")
}

/// Client A reads one spelling, client B writes another spelling of the same resource with the
/// tag A read, then A writes with that (now stale) tag: the edge must see one resource and
/// refuse A. Before canonical keys, each spelling was its own resource and A's write was a lost
/// update.
fn stale_write_through_an_alias(a: (&str, &str), b: (&str, &str)) {
    let origin = legacy();
    let p = proxy(&enforce_config(), origin.origin.addr);
    let r = with_host(p.addr, "GET", a.0, a.1, &[]);
    assert_eq!(r.status, 200);
    let tag = r.header("etag").expect("a synthesised tag").to_string();
    let r = with_host(p.addr, "PUT", b.0, b.1, &[("If-Match", &tag)]);
    assert_eq!(
        r.status / 100,
        2,
        "B's write with the current tag goes through"
    );
    let r = with_host(p.addr, "PUT", a.0, a.1, &[("If-Match", &tag)]);
    assert_eq!(
        r.status,
        412,
        "A's stale write is refused: {:?}",
        r.body_str()
    );
    assert_eq!(origin.writes.lock().unwrap().len(), 1, "one write applied");
}

#[test]
fn a_percent_encoded_alias_is_the_same_resource() {
    stale_write_through_an_alias(("test.local", "/items/6"), ("test.local", "/items/%36"));
}

#[test]
fn a_host_with_the_default_port_or_in_upper_case_is_the_same_resource() {
    stale_write_through_an_alias(("test.local", "/items/7"), ("TEST.local:80", "/items/7"));
}

#[test]
fn a_host_with_any_port_or_a_trailing_dot_is_the_same_resource() {
    stale_write_through_an_alias(("test.local", "/items/9"), ("test.local.:1", "/items/9"));
}

/// A character RFC 3986 does not allow raw (`|`), which the request line parser lets through,
/// and its escape: origins decode both to one path.
#[test]
fn a_raw_character_and_its_escape_are_the_same_resource() {
    stale_write_through_an_alias(("test.local", "/items/a|b"), ("test.local", "/items/a%7cb"));
}

/// RFC 9110 §4.2.3: an escaped unreserved character in the query is the character.
#[test]
fn an_escaped_query_is_the_same_resource() {
    stale_write_through_an_alias(
        ("test.local", "/items?id=6"),
        ("test.local", "/items?id=%36"),
    );
}

#[test]
fn dot_segments_name_the_same_resource() {
    stale_write_through_an_alias(
        ("test.local", "/items/8"),
        ("test.local", "/x/../items/./8"),
    );
}

/// The concurrent read-modify-write probe: clients that each spell the resource differently and
/// each send their own credentials read, then all write with the tag they read. The origin
/// applies every write it receives, so a lost update is two successful writes that read the same
/// version; through precond there is none (one write lock and one truth per resource, whatever
/// the spelling or the principal).
#[test]
fn aliases_and_principals_lose_no_update_under_concurrent_writers() {
    let origin = legacy();
    let p = proxy(&enforce_config(), origin.origin.addr);
    let spellings = [
        ("test.local", "/items/5"),
        ("TEST.local:80", "/items/%35"),
        ("test.local.", "/items/./5"),
        ("test.local:8080", "/x/../items/5"),
    ];
    let rounds = 6;
    let won: Arc<Mutex<Vec<String>>> = Arc::default();
    let barrier = Arc::new(std::sync::Barrier::new(spellings.len()));
    let threads: Vec<_> = spellings
        .iter()
        .enumerate()
        .map(|(i, (host, path))| {
            let (won, barrier) = (won.clone(), barrier.clone());
            let (host, path) = (host.to_string(), path.to_string());
            let addr = p.addr;
            std::thread::spawn(move || {
                let auth = format!("Bearer client-{i}");
                let h = [("Authorization", auth.as_str())];
                for _ in 0..rounds {
                    let r = with_host(addr, "GET", &host, &path, &h);
                    assert_eq!(r.status, 200);
                    let (read, tag) = (r.body_str(), r.etag());
                    barrier.wait(); // everyone has read before anyone writes
                    let w = [h[0], ("If-Match", tag.as_str())];
                    let r = with_host(addr, "PUT", &host, &path, &w);
                    match r.status {
                        204 => won.lock().unwrap().push(read),
                        412 => {}
                        s => panic!("unexpected {s}: {}", r.body_str()),
                    }
                    barrier.wait();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut won = won.lock().unwrap().clone();
    let applied = origin.writes.lock().unwrap().len();
    assert_eq!(won.len(), applied, "every forwarded write succeeded");
    assert!(
        applied >= rounds,
        "a write per round went through ({applied})"
    );
    won.sort();
    let before = won.len();
    won.dedup();
    assert_eq!(
        won.len(),
        before,
        "two writes based on one version: a lost update"
    );
}

/// `//legacy/…` and `/%6cegacy/…` used to miss the enforce route (routes matched the raw path)
/// and reach the origin through the catch-all route, unserialised and without the 428.
#[test]
fn route_bypass_spellings_reach_their_route_or_a_400() {
    let origin = legacy();
    let config = format!(
        "{}\n[[route]]\npath_prefix = \"/legacy\"\nupstream = \"origin\"\nmode = \"enforce\"\nrequire = [\"PUT\"]\n",
        route_config("mode = \"guard\"")
    );
    let p = proxy(&config, origin.origin.addr);
    let r = request(p.addr, "PUT", "/legacy/items/1", &[], "{}");
    assert_eq!(r.status, 428, "the plain spelling is on the enforce route");
    let r = request(p.addr, "PUT", "/%6cegacy/items/1", &[], "{}");
    assert_eq!(r.status, 428, "an encoded letter is the same route");
    let r = request(p.addr, "PUT", "//legacy/items/1", &[], "{}");
    assert_eq!(r.status, 400, "{}", r.body_str());
    assert_eq!(r.json()["status"], 400);
    assert!(r.header("content-type").unwrap().contains("problem+json"));
    let r = request(p.addr, "PUT", "/legacy%2Fitems/1", &[], "{}");
    assert_eq!(r.status, 400, "an encoded slash is ambiguous");
    for target in [
        "/legacy;x/items/1",
        "/static/..;/legacy/items/1",
        "legacy/items/1",
    ] {
        let r = request(p.addr, "PUT", target, &[], "{}");
        assert_eq!(r.status, 400, "{target}: {}", r.body_str());
    }
    assert!(
        origin.writes.lock().unwrap().is_empty(),
        "no write reached the origin"
    );
    // The plain spellings of the guard route are untouched.
    assert_eq!(request(p.addr, "GET", "/items/1", &[], "").status, 200);
}

/// The lenient reading of an ambiguous target may fall on a pass route while the origin's
/// reading is the enforce route's resource: a servlet container cuts `;` parameters (so
/// `/static/..;/legacy/…` is `/legacy/…` there), a server that keeps empty segments lets `..`
/// remove one (`/legacy//../items/1` is `/legacy/items/1`). Such a target is refused, not
/// forwarded unserialised and without its 428; an ambiguous target no reading of which reaches a
/// strict route is forwarded as sent.
#[test]
fn an_ambiguous_target_cannot_reach_an_enforce_resource_through_a_pass_route() {
    let origin = legacy();
    let config = format!(
        "{}\n[[route]]\npath_prefix = \"/legacy\"\nupstream = \"origin\"\nmode = \"enforce\"\nrequire = [\"PUT\"]\n",
        route_config("mode = \"pass\"")
    );
    let p = proxy(&config, origin.origin.addr);
    for target in [
        "/static/..;/legacy/items/1",
        "/legacy;x/items/1",
        "/legacy//../items/1",
        "/static/..%2F..%2Flegacy/items/1",
        "/static;x/../../legacy/items/1",
        "/static/..%3B/legacy/items/1",
        "/static/..%3B%2F..%2Flegacy/items/1",
    ] {
        let r = request(p.addr, "PUT", target, &[], "{}");
        assert_eq!(r.status, 400, "{target}: {}", r.body_str());
        assert!(r.body_str().contains("cannot tell which resource"));
    }
    assert!(
        origin.writes.lock().unwrap().is_empty(),
        "no write reached the origin"
    );
    // The pass route's own ambiguous targets are still forwarded as sent.
    let r = request(p.addr, "PUT", "/static//x;v=1", &[], "{}");
    assert_eq!(r.status, 204, "{}", r.body_str());
    assert_eq!(origin.writes.lock().unwrap().len(), 1);
}

/// With `strict_targets = false` an ambiguous target is forwarded as the client sent it.
#[test]
fn strict_targets_off_forwards_ambiguous_targets() {
    let origin = legacy();
    let p = proxy(
        &route_config("mode = \"guard\"\nstrict_targets = false"),
        origin.origin.addr,
    );
    let r = request(p.addr, "PUT", "//items/1", &[], "{}");
    assert_eq!(r.status, 204);
    assert_eq!(origin.writes.lock().unwrap().len(), 1);
}

/// RFC 9110 §9.1: methods are case-sensitive, so `put` is not PUT; on an enforce route every
/// method but GET, HEAD and OPTIONS is a write: serialised, required to be conditional, never
/// forwarded around the lock.
#[test]
fn lower_case_and_extension_methods_are_writes_on_enforce_routes() {
    let origin = legacy();
    let p = proxy(&enforce_config(), origin.origin.addr);
    for method in ["put", "PURGE", "MERGE"] {
        let r = request(p.addr, method, "/items/1", &[], "{}");
        assert_eq!(r.status, 428, "{method}: {}", r.body_str());
    }
    // TRACE too: an origin that knows nothing of validators is not trusted to keep it safe.
    let r = request(p.addr, "TRACE", "/items/1", &[], "");
    assert_eq!(r.status, 428, "TRACE: {}", r.body_str());
    assert!(origin.writes.lock().unwrap().is_empty());
    // With a precondition that holds, the write goes through (and is judged like POST).
    let tag = request(p.addr, "GET", "/items/1", &[], "")
        .header("etag")
        .unwrap()
        .to_string();
    let r = request(p.addr, "MERGE", "/items/1", &[("If-Match", &tag)], "{}");
    assert_eq!(r.status, 204, "{}", r.body_str());
    // It changed the resource: the old tag is stale now.
    let r = request(p.addr, "PUT", "/items/1", &[("If-Match", &tag)], "{}");
    assert_eq!(r.status, 412, "{}", r.body_str());
    assert_eq!(origin.writes.lock().unwrap().len(), 1);
}

/// In guard mode an extension method that succeeded makes what precond knew unknown (it may have
/// changed the resource), instead of being ignored.
#[test]
fn an_extension_method_invalidates_in_guard_mode() {
    let origin = ScriptedOrigin::start(|r: SeenRequest| async move {
        match r.method.as_str() {
            "GET" => (200, vec![("ETag", "\"v1\"".to_string())], "one".to_string()),
            _ => (200, vec![], String::new()),
        }
    });
    let p = proxy(&guard_config("mismatch"), origin.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").status, 200);
    let r = request(p.addr, "PUT", "/r", &[("If-Match", "\"other\"")], "{}");
    assert_eq!(r.status, 412, "mismatch refuses a tag that is not current");
    let r = request(p.addr, "FROB", "/r", &[], "{}");
    assert_eq!(r.status, 200);
    let before = origin.requests();
    let r = request(p.addr, "PUT", "/r", &[("If-Match", "\"other\"")], "{}");
    assert_eq!(
        r.status, 200,
        "the current tag is unknown after FROB: forwarded"
    );
    assert_eq!(origin.requests(), before + 1);
}

/// A client-sent `X-Forwarded-Host` (or `Forwarded`, `X-Original-URL`, `X-Rewrite-URL`) could make
/// the origin answer for another tenant or path than the one precond keyed: precond drops them
/// and sets the forwarding fields itself, unless the route trusts them.
#[test]
fn client_forwarding_headers_are_replaced_by_preconds_own() {
    let seen: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
    let s = seen.clone();
    let origin = ScriptedOrigin::start(move |r: SeenRequest| {
        s.lock().unwrap().push(r.headers);
        async { (200, vec![], "ok".to_string()) }
    });
    let forged = [
        ("X-Forwarded-Host", "other-tenant.example"),
        ("Forwarded", "host=other-tenant.example;proto=https"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Forwarded-For", "10.9.8.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X_Forwarded_Host", "other-tenant.example"),
    ];
    for mode in ["guard", "pass", "enforce"] {
        let p = proxy(&route_config(&format!("mode = \"{mode}\"")), origin.addr);
        assert_eq!(request(p.addr, "GET", "/t", &forged, "").status, 200);
        let h = seen.lock().unwrap().pop().unwrap();
        assert_eq!(
            h.get("x-forwarded-host").map(String::as_str),
            Some("test.local"),
            "{mode}"
        );
        assert_eq!(
            h.get("x-forwarded-for").map(String::as_str),
            Some("127.0.0.1"),
            "{mode}"
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(String::as_str),
            Some("http"),
            "{mode}"
        );
        for name in [
            "forwarded",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x_forwarded_host",
        ] {
            assert!(!h.contains_key(name), "{mode}: {name} reached the origin");
        }
    }
    // A route behind a trusted balancer keeps them, and appends the peer to the chain.
    let p = proxy(
        &route_config("mode = \"guard\"\ntrust_forwarded = true"),
        origin.addr,
    );
    assert_eq!(request(p.addr, "GET", "/t", &forged, "").status, 200);
    let h = seen.lock().unwrap().pop().unwrap();
    assert_eq!(h["x-forwarded-host"], "other-tenant.example");
    assert_eq!(h["x-forwarded-for"], "10.9.8.7, 127.0.0.1");
    assert_eq!(h["forwarded"], "host=other-tenant.example;proto=https");
}

/// `Precond-Decision` is precond's word: an origin's is removed, so clients can trust it.
#[test]
fn an_upstream_decision_header_is_removed() {
    let origin = ScriptedOrigin::start(|_| async {
        (
            200,
            vec![("Precond-Decision", "rejected; reason=forged".to_string())],
            "ok".to_string(),
        )
    });
    for mode in ["guard", "pass", "enforce"] {
        let p = proxy(&route_config(&format!("mode = \"{mode}\"")), origin.addr);
        let r = request(p.addr, "GET", "/t", &[], "");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("precond-decision"), None, "{mode}");
    }
}

/// Behind a trusted balancer (`trust_forwarded = true`) the origin answers for the forwarded
/// host: two tenants behind one `Host` are two resources, so one tenant's read never refuses the
/// other's write.
#[test]
fn a_trusted_forwarded_host_is_part_of_the_resource() {
    let origin = ScriptedOrigin::start(|r: SeenRequest| async move {
        let tenant = r
            .headers
            .get("x-forwarded-host")
            .cloned()
            .unwrap_or_default();
        if r.method == "GET" {
            return (200, vec![("etag", format!("\"{tenant}-1\""))], tenant);
        }
        (
            204,
            vec![("etag", format!("\"{tenant}-2\""))],
            String::new(),
        )
    });
    let p = proxy(
        &route_config("mode = \"guard\"\ntrust_forwarded = true"),
        origin.addr,
    );
    let as_tenant = |t: &'static str| [("X-Forwarded-Host", t)];
    let r = request(p.addr, "GET", "/doc", &as_tenant("a.example"), "");
    assert_eq!(r.etag(), "\"a.example-1\"");
    let r = request(p.addr, "GET", "/doc", &as_tenant("b.example"), "");
    assert_eq!(r.etag(), "\"b.example-1\"");
    let h = [
        ("X-Forwarded-Host", "a.example"),
        ("If-Match", "\"a.example-1\""),
    ];
    let r = request(p.addr, "PUT", "/doc", &h, "x");
    assert_eq!(
        r.status,
        204,
        "tenant b's read refused nothing: {}",
        r.body_str()
    );
    // One tenant, one truth: its own stale tag is still refused after its own change.
    let r = request(
        p.addr,
        "GET",
        "/doc",
        &[("X-Forwarded-Host", "A.example")],
        "",
    );
    assert_eq!(r.etag(), "\"A.example-1\"");
    let r = request(p.addr, "PUT", "/doc", &h, "x");
    assert_eq!(
        r.status, 412,
        "a.example-1 was replaced for tenant a.example"
    );
}
