//! Live reload (issue 13): the real binary, `SIGHUP` and `POST /reload` on the admin listener.
//! A route's mode changes while a client keeps sending on one keep-alive connection (no request
//! fails, the connection stays open); an invalid file leaves the running configuration in force
//! and says where it is wrong; a change only a restart can make is refused; the store is kept
//! unless the routes key or decide requests differently; a request in flight keeps its
//! configuration; an enforce write waits for the writes of the configuration before.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use precond::demo::{DemoOrigin, Tags};

fn config(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    origin: &str,
    mode: &str,
) -> String {
    format!(
        r#"[server]
listen = ["{listen}"]
threads = 2
grace_period = "0s"
graceful_shutdown_timeout = "1s"

[admin]
listen = "{admin}"

[[upstream]]
name = "origin"
servers = ["{origin}"]

[[route]]
path_prefix = "/items"
upstream = "origin"
mode = "{mode}"
"#
    )
}

fn hangup(p: &Proc) {
    let ok = Command::new("kill")
        .args(["-HUP", &p.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP");
}

/// Waits until `f` holds (reloads are asynchronous to the signal).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn sighup_and_post_reload_swap_routes_under_load_and_refuse_bad_files() {
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    let origin = origin.addr.to_string();
    let (listen, admin) = (free_addr(), free_addr());
    let dir = TempDir::new("reload");
    let file = dir.join("precond.toml");
    std::fs::write(&file, config(listen, admin, &origin, "guard")).unwrap();
    let p = run_precond(&file, &[listen, admin]);

    // A client that keeps reading and writing on one keep-alive connection throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut conn = Conn::open(listen);
            assert_eq!(conn.request("PUT", "/items/load", &[], "{}").status, 201);
            while !stop.load(Ordering::SeqCst) {
                let r = conn.request("GET", "/items/load", &[], "");
                assert_eq!(r.status, 200, "GET during reloads: {}", r.body_str());
                let tag = r.etag();
                let w = conn.request("PUT", "/items/load", &[("If-Match", &tag)], "{}");
                assert_eq!(w.status, 200, "a current-tag write during reloads");
                sent.fetch_add(2, Ordering::SeqCst);
            }
        })
    };

    // The client's requests keep flowing on its connection under each configuration.
    let flowing = || {
        let before = sent.load(Ordering::SeqCst);
        eventually("the client's requests flow", || {
            sent.load(Ordering::SeqCst) >= before + 4
        });
    };
    flowing();

    // guard: a stale write is refused at the edge.
    let t1 = request(listen, "GET", "/items/1", &[], "").etag();
    let t2 = request(listen, "PUT", "/items/1", &[("If-Match", &t1)], "{}").etag();
    assert_ne!(t1, t2);
    let stale = || request(listen, "PUT", "/items/1", &[("If-Match", &t1)], "{}").status;
    assert_eq!(stale(), 412);

    // SIGHUP with mode = "pass": the same stale write is forwarded (the demo origin never
    // checks If-Match).
    std::fs::write(&file, config(listen, admin, &origin, "pass")).unwrap();
    hangup(&p);
    eventually("the pass route is in force", || {
        request(admin, "GET", "/readyz", &[], "").json()["config"]["generation"] == 1
    });
    assert_eq!(stale(), 200, "pass forwards the write");
    flowing();

    // An invalid file: refused with FILE:LINE:COL; the running configuration stays in force.
    std::fs::write(
        &file,
        config(listen, admin, &origin, "pass").replace("mode = \"pass\"", "mode = \"guardd\""),
    )
    .unwrap();
    hangup(&p);
    eventually("the refusal is visible", || {
        request(admin, "GET", "/readyz", &[], "").json()["config"]["last"] == "invalid"
    });
    let ready = request(admin, "GET", "/readyz", &[], "");
    assert_eq!(
        ready.status, 200,
        "still ready on the running configuration"
    );
    assert!(
        ready.json()["config"].get("error").is_none(),
        "/readyz needs no token: it shows no error text"
    );
    assert_eq!(ready.json()["config"]["generation"], 1);
    assert_eq!(stale(), 200, "still pass");
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 422, "{}", r.body_str());
    let at = format!("{}:17:", file.display());
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.starts_with(&at), "names the line: {detail}");

    // A listener change needs a restart: refused, named.
    std::fs::write(&file, config(free_addr(), admin, &origin, "guard")).unwrap();
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 422);
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("[server]") && detail.contains("restart"),
        "{detail}"
    );
    assert_eq!(stale(), 200, "still pass");

    // POST /reload back to guard (and GET /reload is not a reload). The mode changed, so what
    // was learned before may be stale (the pass spell's writes were never seen): the store was
    // forgotten, and the old stale tag is forwarded until precond learns again.
    assert_eq!(request(admin, "GET", "/reload", &[], "").status, 405);
    std::fs::write(&file, config(listen, admin, &origin, "guard")).unwrap();
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["reloaded"], true);
    assert_eq!(r.json()["generation"], 2);
    assert_eq!(stale(), 200, "forgotten: forwarded");
    let t3 = request(listen, "GET", "/items/1", &[], "").etag();
    let t4 = request(listen, "PUT", "/items/1", &[("If-Match", &t3)], "{}").etag();
    assert_ne!(t3, t4);
    let stale3 = || request(listen, "PUT", "/items/1", &[("If-Match", &t3)], "{}").status;
    assert_eq!(stale3(), 412);
    // A reload that keys and decides requests as before (a fence setting) keeps the store.
    std::fs::write(
        &file,
        config(listen, admin, &origin, "guard") + "fence_wait = \"1s\"\n",
    )
    .unwrap();
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.json()["reloaded"], true, "{}", r.body_str());
    assert_eq!(stale3(), 412, "the store was kept");
    flowing();
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.json()["reloaded"], false, "unchanged file");

    stop.store(true, Ordering::SeqCst);
    load.join().expect("no request failed during the reloads");
    assert!(sent.load(Ordering::SeqCst) > 10, "the load ran");
    let m = request(admin, "GET", "/metrics", &[], "").body_str();
    assert!(
        m.contains("precond_config_reloads_total{result=\"ok\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("precond_config_reloads_total{result=\"invalid\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("precond_config_reloads_total{result=\"refused\"} 1"),
        "{m}"
    );
}

fn two_routes(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    origin: &str,
    routes: &str,
) -> String {
    config(listen, admin, origin, "guard").replace(
        "[[route]]\npath_prefix = \"/items\"\nupstream = \"origin\"\nmode = \"guard\"\n",
        routes,
    )
}

/// A request keeps the configuration it started under to its end: its route (index 1 of the
/// old file) is gone from the new one, and it is still answered and counted under it.
#[test]
fn a_request_in_flight_finishes_on_the_configuration_it_started_under() {
    let release = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicBool::new(false));
    let origin = {
        let (release, arrived) = (release.clone(), arrived.clone());
        ScriptedOrigin::start(move |r| {
            let (release, arrived) = (release.clone(), arrived.clone());
            async move {
                if r.path.starts_with("/slow") {
                    arrived.store(true, Ordering::SeqCst);
                    while !release.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                (200, vec![("ETag", "\"s1\"".to_string())], "ok".to_string())
            }
        })
    };
    let (listen, admin) = (free_addr(), free_addr());
    let dir = TempDir::new("reload-inflight");
    let file = dir.join("precond.toml");
    let o = origin.addr.to_string();
    let old = "[[route]]\npath_prefix = \"/a\"\nupstream = \"origin\"\nmode = \"guard\"\n\n\
               [[route]]\npath_prefix = \"/slow\"\nupstream = \"origin\"\nmode = \"guard\"\n";
    std::fs::write(&file, two_routes(listen, admin, &o, old)).unwrap();
    let _p = run_precond(&file, &[listen, admin]);
    let slow = std::thread::spawn(move || request(listen, "GET", "/slow/1", &[], ""));
    eventually("the slow request reached the origin", || {
        arrived.load(Ordering::SeqCst)
    });
    // The new file has one route, of another prefix: index 1 does not exist in it.
    let new = "[[route]]\npath_prefix = \"/b\"\nupstream = \"origin\"\nmode = \"pass\"\n";
    std::fs::write(&file, two_routes(listen, admin, &o, new)).unwrap();
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        request(listen, "GET", "/slow/2", &[], "").status,
        404,
        "the new routes are in force"
    );
    release.store(true, Ordering::SeqCst);
    let r = slow.join().expect("the request in flight was answered");
    assert_eq!(r.status, 200);
    let m = request(admin, "GET", "/metrics", &[], "").body_str();
    let counted = "precond_requests_total{decision=\"forwarded\",mode=\"guard\",route=\"/slow\"} 1";
    eventually("the request is counted under its old route", || {
        request(admin, "GET", "/metrics", &[], "")
            .body_str()
            .contains(counted)
    });
    assert!(!m.contains("route=\"/slow\",decision"), "{m}");
}

/// A reload that turns a `pass` route into `enforce` while a write is in flight under `pass`:
/// the first enforce write waits for it (the old write is not serialised by enforce's locks, and
/// the state it leaves was never learned), so it is judged on the state that write left and the
/// origin never sees two writes at once.
#[test]
fn an_enforce_write_waits_for_the_writes_of_the_configuration_before() {
    let version = Arc::new(AtomicU64::new(1));
    let writing = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let origin = {
        let (version, writing, most) = (version.clone(), writing.clone(), most.clone());
        ScriptedOrigin::start(move |r| {
            let (version, writing, most) = (version.clone(), writing.clone(), most.clone());
            async move {
                if r.method == "PUT" {
                    let now = writing.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    let v = version.fetch_add(1, Ordering::SeqCst) + 1;
                    writing.fetch_sub(1, Ordering::SeqCst);
                    return (204, vec![("ETag", format!("\"v{v}\""))], String::new());
                }
                let v = version.load(Ordering::SeqCst);
                (
                    200,
                    vec![("ETag", format!("\"v{v}\""))],
                    format!("version {v}"),
                )
            }
        })
    };
    let (listen, admin) = (free_addr(), free_addr());
    let dir = TempDir::new("reload-enforce");
    let file = dir.join("precond.toml");
    let o = origin.addr.to_string();
    std::fs::write(&file, config(listen, admin, &o, "pass")).unwrap();
    let _p = run_precond(&file, &[listen, admin]);
    assert_eq!(request(listen, "GET", "/items/1", &[], "").etag(), "\"v1\"");
    // A blind write under pass, held by the origin.
    let first = std::thread::spawn(move || request(listen, "PUT", "/items/1", &[], "{}").status);
    eventually("the pass write is at the origin", || {
        writing.load(Ordering::SeqCst) == 1
    });
    std::fs::write(&file, config(listen, admin, &o, "enforce")).unwrap();
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 200, "{}", r.body_str());
    // The client still holds v1: judged after the pass write finished, it is stale.
    let second = request(listen, "PUT", "/items/1", &[("If-Match", "\"v1\"")], "{}");
    assert_eq!(first.join().unwrap(), 204);
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "the origin saw two writes at once"
    );
    assert_eq!(second.status, 412, "{}", second.body_str());
    assert_eq!(
        version.load(Ordering::SeqCst),
        2,
        "only the first write was applied"
    );
}

/// A loopback port that counts the connections made to it (a `tcp` health check's probes).
fn counting_port() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            c.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (addr, count)
}

/// The health checks of the pools built at start stop once a reload replaces those pools (no
/// request uses them any more), as those of a reload's pools do when the next reload replaces
/// them: a replaced upstream is no longer probed.
#[test]
fn a_reload_stops_probing_the_servers_it_replaced() {
    let (a, probes_a) = counting_port();
    let (b, probes_b) = counting_port();
    let (listen, admin) = (free_addr(), free_addr());
    let dir = TempDir::new("reload-probes");
    let file = dir.join("precond.toml");
    let on = |origin: std::net::SocketAddr| {
        config(listen, admin, &origin.to_string(), "guard").replace(
            "servers = [",
            "health_check = \"tcp\"\nhealth_check_interval = \"100ms\"\nservers = [",
        )
    };
    let reload_to = |origin| {
        std::fs::write(&file, on(origin)).unwrap();
        let r = request(admin, "POST", "/reload", &[], "");
        assert_eq!(r.status, 200, "{}", r.body_str());
    };
    // Quiet: no probe for several intervals after a settling time for one in flight.
    let quiet = |probes: &AtomicU64| {
        std::thread::sleep(Duration::from_millis(300));
        let n = probes.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500));
        probes.load(Ordering::SeqCst) == n
    };
    std::fs::write(&file, on(a)).unwrap();
    let _p = run_precond(&file, &[listen, admin]);
    eventually("A is probed", || probes_a.load(Ordering::SeqCst) >= 3);
    reload_to(b);
    eventually("B is probed", || probes_b.load(Ordering::SeqCst) >= 3);
    assert!(quiet(&probes_a), "the pools built at start still probe A");
    reload_to(a);
    let n = probes_a.load(Ordering::SeqCst);
    eventually("A is probed again", || {
        probes_a.load(Ordering::SeqCst) >= n + 3
    });
    assert!(
        quiet(&probes_b),
        "the pools of the first reload still probe B"
    );
}

/// A reload moves an upstream to other servers (new pools, health checks included), keeping
/// what was learned (same upstream name); a server name that does not resolve refuses the file.
#[test]
fn a_reload_moves_an_upstream_to_other_servers() {
    let a = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    let b = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    assert_eq!(request(b.addr, "PUT", "/items/on-b", &[], "{}").status, 201);
    let (listen, admin) = (free_addr(), free_addr());
    let dir = TempDir::new("reload-up");
    let file = dir.join("precond.toml");
    let with_checks = |origin: &str| {
        config(listen, admin, origin, "guard").replace(
            "servers = [",
            "health_check = \"tcp\"\nhealth_check_interval = \"200ms\"\nservers = [",
        )
    };
    std::fs::write(&file, with_checks(&a.addr.to_string())).unwrap();
    let _p = run_precond(&file, &[listen, admin]);
    assert_eq!(
        request(listen, "GET", "/items/on-b", &[], "").status,
        404,
        "on A"
    );
    std::fs::write(&file, with_checks(&b.addr.to_string())).unwrap();
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        request(listen, "GET", "/items/on-b", &[], "").status,
        200,
        "on B"
    );
    let ready = request(admin, "GET", "/readyz", &[], "").json();
    assert_eq!(ready["upstreams"][0]["servers"], 1, "{ready}");
    // B stops: the new pool's health checks take it out (503 for want of a healthy server).
    drop(b);
    eventually("the new pool's checks see B down", || {
        request(admin, "GET", "/readyz", &[], "").status == 503
    });
    // A name that does not resolve: refused, the running pools stay.
    std::fs::write(&file, with_checks("no-such-host.invalid:80")).unwrap();
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 422, "{}", r.body_str());
    assert!(
        r.body_str().contains("no-such-host.invalid"),
        "{}",
        r.body_str()
    );
}
