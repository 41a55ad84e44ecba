//! Upstream pools (issue 11): selection, health checks, no healthy server, retries that never
//! send a write twice, and the admin listener's readiness. Real precond, real origins, sockets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use precond::demo::{DemoOrigin, Tags};

fn demo() -> DemoOrigin {
    DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap()
}

/// A config with one upstream of `servers`, the upstream keys `pool`, and one route of `mode`;
/// `admin`: an admin listener address.
fn pool_config(
    servers: &[SocketAddr],
    pool: &str,
    mode: &str,
    admin: Option<SocketAddr>,
) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let admin = admin.map_or(String::new(), |a| format!("[admin]\nlisten = \"{a}\"\n"));
    format!(
        r#"
[server]
listen = ["{{listen}}"]
threads = 2
grace_period = "0s"
graceful_shutdown_timeout = "1s"

{admin}
[[upstream]]
name = "api"
servers = [{}]
connect_timeout = "1s"
read_timeout = "3s"
{pool}

[[route]]
upstream = "api"
mode = "{mode}"
"#,
        list.join(", ")
    )
}

/// Polls `f` every 50 ms until it holds or `within` has passed.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn consistent_selection_keeps_each_resource_on_one_server() {
    // Two origins that do not share state: a document written through one is found only there.
    let (a, b) = (demo(), demo());
    for (selection, all_found) in [("consistent", true), ("round_robin", false)] {
        let p = proxy(
            &pool_config(
                &[a.addr, b.addr],
                &format!("selection = \"{selection}\""),
                "pass",
                None,
            ),
            a.addr,
        );
        let mut found = 0;
        for i in 0..40 {
            let path = format!("/docs/{selection}-{i}");
            let w = request(p.addr, "PUT", &path, &[], &format!("{{\"n\":{i}}}"));
            assert!(w.status == 201 || w.status == 200, "{}", w.status);
            let r = request(p.addr, "GET", &path, &[], "");
            if r.status == 200 && r.body_str().contains(&format!("\"n\":{i}")) {
                found += 1;
            }
        }
        if all_found {
            assert_eq!(
                found, 40,
                "consistent: every document read back from its server"
            );
            let (wa, wb) = (
                a.stats.writes.load(Ordering::SeqCst),
                b.stats.writes.load(Ordering::SeqCst),
            );
            assert!(wa > 5 && wb > 5, "both servers take a share: {wa} / {wb}");
        } else {
            // The baseline: round robin alternates, so about half are written to one server
            // and read from the other.
            assert!(
                found < 40,
                "round robin found all {found}: the test shows nothing"
            );
        }
    }
}

#[test]
fn weights_share_the_requests() {
    let (a, b) = (demo(), demo());
    let text = pool_config(&[a.addr, b.addr], "", "pass", None).replace(
        &format!("servers = [\"{}\", \"{}\"]", a.addr, b.addr),
        &format!(
            "servers = [\"{}\", {{ addr = \"{}\", weight = 3 }}]",
            a.addr, b.addr
        ),
    );
    let p = proxy(&text, a.addr);
    for _ in 0..80 {
        assert_eq!(request(p.addr, "GET", "/items/1", &[], "").status, 200);
    }
    let (ra, rb) = (
        a.stats.requests.load(Ordering::SeqCst),
        b.stats.requests.load(Ordering::SeqCst),
    );
    assert_eq!(ra + rb, 80);
    assert_eq!((ra, rb), (20, 60), "weight 1 : 3");
}

/// An origin that answers every request (its health check path included) with `status`, until
/// `healthy` is set.
fn switchable_origin(healthy: Arc<AtomicBool>) -> ScriptedOrigin {
    ScriptedOrigin::start(move |_req| {
        let ok = healthy.load(Ordering::SeqCst);
        async move {
            if ok {
                (200, vec![("etag", "\"v1\"".to_string())], "{}".to_string())
            } else {
                (503, vec![], "down".to_string())
            }
        }
    })
}

#[test]
fn an_unhealthy_server_leaves_the_selection_and_comes_back() {
    let good = demo();
    let up = Arc::new(AtomicBool::new(false));
    let sick = switchable_origin(up.clone());
    let admin = free_addr();
    let pool = "health_check = \"http\"\nhealth_check_path = \"/items/1\"\nhealth_check_interval = \"200ms\"\nhealth_check_fall = 1";
    let p = proxy(
        &pool_config(&[good.addr, sick.addr], pool, "guard", Some(admin)),
        good.addr,
    );
    // After a few intervals, the failing server is out: every read is answered by the good one.
    assert!(
        eventually(Duration::from_secs(5), || {
            let r = request(admin, "GET", "/readyz", &[], "");
            r.status == 200 && r.json()["upstreams"][0]["healthy"] == 1
        }),
        "the sick server never left the selection"
    );
    let before = sick.requests();
    for _ in 0..50 {
        assert_eq!(request(p.addr, "GET", "/items/1", &[], "").status, 200);
    }
    // Only health checks reached the sick server (a few in the time 50 reads take).
    let checks = sick.requests() - before;
    assert!(checks < 10, "{checks} requests reached the sick server");
    let m = request(admin, "GET", "/metrics", &[], "").body_str();
    assert!(
        m.contains("precond_upstream_servers{state=\"unhealthy\",upstream=\"api\"} 1"),
        "{m}"
    );
    // It recovers: back in the selection after its checks pass.
    up.store(true, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(5), || {
        request(admin, "GET", "/readyz", &[], "").json()["upstreams"][0]["healthy"] == 2
    }));
    let before = sick.requests();
    for _ in 0..20 {
        assert_eq!(request(p.addr, "GET", "/items/1", &[], "").status, 200);
    }
    assert!(
        sick.requests() - before >= 5,
        "the recovered server takes requests again"
    );
}

#[test]
fn a_killed_server_leaves_reads_fully_answered() {
    let a = demo();
    let b = demo();
    let admin = free_addr();
    let pool = "health_check = \"tcp\"\nhealth_check_interval = \"200ms\"\nhealth_check_fall = 1";
    let p = proxy(
        &pool_config(&[a.addr, b.addr], pool, "pass", Some(admin)),
        a.addr,
    );
    assert_eq!(request(p.addr, "GET", "/items/1", &[], "").status, 200);
    drop(b);
    // Even before the checks notice, a refused connection is retried on the other server
    // (nothing was sent); afterwards the dead server is not even tried.
    let mut ok = 0;
    for _ in 0..40 {
        ok += u32::from(request(p.addr, "GET", "/items/1", &[], "").status == 200);
    }
    assert_eq!(ok, 40, "every read answered while one server is down");
    assert!(eventually(Duration::from_secs(5), || {
        request(admin, "GET", "/readyz", &[], "").json()["upstreams"][0]["healthy"] == 1
    }));
    for _ in 0..40 {
        assert_eq!(request(p.addr, "GET", "/items/1", &[], "").status, 200);
    }
}

#[test]
fn no_healthy_server_is_a_503_problem_with_retry_after() {
    let down = Arc::new(AtomicBool::new(false));
    let sick = switchable_origin(down);
    let admin = free_addr();
    let pool = "health_check = \"http\"\nhealth_check_interval = \"300ms\"\nhealth_check_fall = 1";
    for mode in ["guard", "enforce"] {
        let p = proxy(
            &pool_config(&[sick.addr], pool, mode, Some(admin)),
            sick.addr,
        );
        assert!(eventually(Duration::from_secs(5), || {
            request(admin, "GET", "/readyz", &[], "").status == 503
        }));
        let before = sick.requests();
        for (method, body) in [("GET", ""), ("PUT", "{}")] {
            let r = request(p.addr, method, "/items/1", &[("If-Match", "\"v1\"")], body);
            assert_eq!(r.status, 503, "{mode} {method}: {}", r.body_str());
            assert_eq!(r.header("retry-after"), Some("1"), "{mode} {method}");
            assert_eq!(r.header("content-type"), Some("application/problem+json"));
            assert_eq!(r.json()["status"], 503);
        }
        // Only health checks reached the origin.
        assert!(sick.requests() - before < 6);
        let m = request(admin, "GET", "/metrics", &[], "").body_str();
        assert!(m.contains("precond_upstream_unavailable_total 2"), "{m}");
        drop(p);
    }
}

/// A raw origin that reads one request per connection, counts it, and closes the connection
/// without answering (a crash after reading a write).
struct Dropper {
    addr: SocketAddr,
    writes: Arc<AtomicU64>,
}

fn dropper() -> Dropper {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let writes = Arc::new(AtomicU64::new(0));
    let w = writes.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { break };
            let w = w.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s);
                let mut line = String::new();
                let mut length = 0usize;
                let mut first = true;
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if first && !line.starts_with("GET") {
                        w.fetch_add(1, Ordering::SeqCst);
                    }
                    first = false;
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                let _ = r.read_exact(&mut body);
                // Dropped: closed without an answer.
            });
        }
    });
    Dropper { addr, writes }
}

#[test]
fn a_write_is_never_resent_to_another_server() {
    // Both servers read the write and drop the connection: one attempt reaches one of them,
    // never both, and the client gets a 502 that says the outcome is unknown.
    let (a, b) = (dropper(), dropper());
    for mode in ["pass", "guard"] {
        let p = proxy(&pool_config(&[a.addr, b.addr], "", mode, None), a.addr);
        for i in 0..6 {
            let before = a.writes.load(Ordering::SeqCst) + b.writes.load(Ordering::SeqCst);
            let r = request(p.addr, "PUT", &format!("/w/{mode}/{i}"), &[], "{}");
            assert_eq!(r.status, 502, "{mode}");
            let after = a.writes.load(Ordering::SeqCst) + b.writes.load(Ordering::SeqCst);
            assert_eq!(
                after - before,
                1,
                "{mode}: the write reached the origins once"
            );
        }
    }
}

#[test]
fn a_refused_connection_is_retried_on_another_server_for_writes_too() {
    // Nothing listens on `dead`: the connection is refused, nothing was sent, so the write goes
    // to the other server, once.
    let live = demo();
    let dead = free_addr();
    let p = proxy(
        &pool_config(&[dead, live.addr], "", "pass", None),
        live.addr,
    );
    for i in 0..10 {
        let r = request(p.addr, "PUT", &format!("/r/{i}"), &[], "{}");
        assert_eq!(r.status, 201, "{}", r.body_str());
    }
    assert_eq!(live.stats.writes.load(Ordering::SeqCst), 10);
}

#[test]
fn the_admin_listener_answers_health_and_guards_metrics_with_its_token() {
    let o = demo();
    let admin = free_addr();
    let dir = TempDir::new("admin");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-admin-token-0123\n").unwrap();
    let text = pool_config(&[o.addr], "", "guard", Some(admin)).replace(
        "[admin]\n",
        &format!("[admin]\ntoken_file = \"{}\"\n", token.display()),
    );
    let p = proxy(&text, o.addr);
    let r = request(admin, "GET", "/healthz", &[], "");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok\n"));
    let r = request(admin, "GET", "/readyz", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["upstreams"][0]["servers"], 1);
    assert_eq!(request(admin, "GET", "/metrics", &[], "").status, 401);
    let wrong = request(
        admin,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer nope")],
        "",
    );
    assert_eq!(wrong.status, 401);
    let m = request(
        admin,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer s3cret-admin-token-0123")],
        "",
    );
    assert_eq!(m.status, 200);
    assert!(m.body_str().contains("precond_forwarded_total"));
    assert_eq!(request(admin, "GET", "/nope", &[], "").status, 404);
    assert_eq!(request(admin, "POST", "/readyz", &[], "").status, 405);
    // The data port does not answer for the admin paths: they are the API's.
    let r = request(p.addr, "GET", "/healthz", &[], "");
    assert_eq!(
        r.status, 404,
        "forwarded to the origin, which has no such item"
    );
    assert_eq!(o.stats.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn pool_config_errors_are_located_and_clear() {
    let cases = [
        ("selection = \"least_conn\"", "upstream.selection"),
        ("health_check = \"icmp\"", "upstream.health_check"),
        (
            "health_check_path = \"/h\"",
            "applies to health_check = \"http\" only",
        ),
        (
            "health_check = \"http\"\nhealth_check_path = \"h\"",
            "must start with /",
        ),
        ("health_check_interval = \"10ms\"", "at least 100ms"),
        ("health_check_fall = 0", "upstream.health_check_fall"),
    ];
    for (pool, expected) in cases {
        let text = pool_config(&["127.0.0.1:9".parse().unwrap()], pool, "guard", None)
            .replace("{listen}", "127.0.0.1:1");
        let e = precond::config::parse(&text).unwrap_err();
        assert!(e.position.is_some(), "{pool}: {e}");
        assert!(e.message.contains(expected), "{pool}: {e}");
    }
    for (servers, expected) in [
        ("[\"localhost\"]", "is not host:port"),
        (
            "[{ addr = \"127.0.0.1:80\", weight = 0 }]",
            "weight must be",
        ),
        (
            "[{ address = \"127.0.0.1:80\" }]",
            "unknown key \"address\"",
        ),
        ("[\"127.0.0.1:80\", \"127.0.0.1:80\"]", "twice"),
        ("[80]", "expected \"host:port\""),
    ] {
        let text = pool_config(&["127.0.0.1:9".parse().unwrap()], "", "guard", None)
            .replace("{listen}", "127.0.0.1:1")
            .replace(
                "servers = [\"127.0.0.1:9\"]",
                &format!("servers = {servers}"),
            );
        let e = precond::config::parse(&text).unwrap_err();
        assert!(e.message.contains(expected), "{servers}: {e}");
    }
    let text = pool_config(&["127.0.0.1:9".parse().unwrap()], "", "guard", None)
        .replace("{listen}", "127.0.0.1:1")
        .replace(
            "[[upstream]]",
            "[admin]\nlisten = \"0.0.0.0:9901\"\n\n[[upstream]]",
        );
    let e = precond::config::parse(&text).unwrap_err();
    assert!(e.message.contains("admin.token_file"), "{e}");
}

#[test]
fn a_server_name_that_does_not_resolve_stops_the_start_with_its_name() {
    let text = pool_config(&["127.0.0.1:9".parse().unwrap()], "", "guard", None)
        .replace("{listen}", &free_addr().to_string())
        .replace("\"127.0.0.1:9\"", "\"no-such-host.invalid:80\"");
    let c = precond::config::parse(&text).unwrap();
    let e = precond::app::preflight(&c).unwrap_err().to_string();
    assert!(
        e.contains("no-such-host.invalid:80") && e.contains("\"api\""),
        "{e}"
    );
    // A name that resolves (localhost) is fine.
    let c = precond::config::parse(&text.replace("no-such-host.invalid", "localhost")).unwrap();
    precond::app::preflight(&c).unwrap();
    let _ = TcpStream::connect("127.0.0.1:9");
    let _ = std::io::stdout().flush();
}
