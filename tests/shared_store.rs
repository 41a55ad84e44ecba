//! The shared store on Redis (issue 12): enforce writes serialised across instances by a lease in
//! a real `redis-server` (started here on an ephemeral loopback port), and what happens when Redis
//! goes away and comes back.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use precond::demo::{DemoOrigin, Tags};

const CLIENTS: usize = 8;
const UPDATES: u64 = 30;

/// A enforce instance in front of `origin` with `store` lines (the backend).
fn instance(origin: SocketAddr, store: &str) -> precond::app::Running {
    store_instance(origin, "enforce", store)
}

fn redis_store(r: &RedisServer) -> String {
    format!(
        "backend = \"redis\"\nurl = \"{}\"\ntimeout = \"200ms\"\nlease_ttl = \"2s\"",
        r.url()
    )
}

/// 8 clients × 30 read-modify-write increments of `path`, each GET through one instance and its
/// PUT (with the GET's `ETag` in `If-Match`) through the other, as a balancer without affinity
/// spreads them. Returns the updates lost.
fn probe_across(a: SocketAddr, b: SocketAddr, path: &str) -> u64 {
    let created = request(a, "PUT", path, &[], r#"{"n":0}"#);
    assert!(matches!(created.status, 200 | 201), "{created:?}");
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (start, path) = (start.clone(), path.to_string());
            thread::spawn(move || {
                start.wait();
                let (mut done, mut refused) = (0, 0u64);
                let mut turn = c;
                while done < UPDATES {
                    let (read_via, write_via) = if turn % 2 == 0 { (a, b) } else { (b, a) };
                    turn += 1;
                    let r = request(read_via, "GET", &path, &[], "");
                    assert_eq!(r.status, 200, "{r:?}");
                    let n = r.json()["n"].as_u64().unwrap();
                    let put = request(
                        write_via,
                        "PUT",
                        &path,
                        &[("If-Match", &r.etag())],
                        &format!(r#"{{"n":{}}}"#, n + 1),
                    );
                    match put.status {
                        200 | 201 | 204 => done += 1,
                        412 => refused += 1,
                        s => panic!("unexpected {s}: {}", put.body_str()),
                    }
                    assert!(refused < 5000, "no progress");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let n = request(a, "GET", path, &[], "").json()["n"]
        .as_u64()
        .unwrap();
    CLIENTS as u64 * UPDATES - n
}

#[test]
fn two_enforce_instances_on_one_redis_lose_no_update() {
    let redis = RedisServer::start();
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::None, "").unwrap();
    let store = redis_store(&redis);
    let (a, b) = (instance(origin.addr, &store), instance(origin.addr, &store));
    let lost = probe_across(a.addr, b.addr, "/shared/doc");
    assert_eq!(
        lost, 0,
        "two instances sharing Redis lost {lost} of 240 updates"
    );
    assert_eq!(a.state.redis.as_ref().unwrap().errors(), 0);
}

#[test]
fn without_the_shared_store_two_instances_lose_updates() {
    // The baseline the shared store exists for: each instance serialises alone.
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::None, "").unwrap();
    let (a, b) = (
        instance(origin.addr, "backend = \"memory\""),
        instance(origin.addr, "backend = \"memory\""),
    );
    let lost = probe_across(a.addr, b.addr, "/shared/doc");
    println!("memory backend, two instances: {lost} of 240 updates lost");
    assert!(
        lost > 0,
        "the baseline lost nothing: the probe shows nothing"
    );
}

/// A `redis-server` that speaks only TLS, with a certificate `ca` issued for `sans`; stopped
/// when dropped.
fn tls_redis(ca: &Ca, sans: &[&str]) -> (Proc, u16) {
    let (cert, key) = ca.issue_for(&format!("redis-{}", sans[0]), sans);
    let port = free_addr().port();
    let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("redis-server is missing: run scripts/setup (it installs the Debian package)");
    let mut p = Proc(
        std::process::Command::new(bin)
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--tls-port",
                &port.to_string(),
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(ca.ca_file())
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = p.0.try_wait().unwrap() {
            panic!("redis-server exited ({status}): is it built with TLS?");
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        thread::sleep(Duration::from_millis(20));
    }
    (p, port)
}

/// `[store]` lines for a `rediss://` store on `port` (generous timeouts: the first call also
/// connects, TLS handshake included, on a machine that may be loaded).
fn tls_store(port: u16, ca_file: Option<&std::path::Path>) -> String {
    let mut s = format!(
        "backend = \"redis\"\nurl = \"rediss://127.0.0.1:{port}/0\"\ntimeout = \"2s\"\nlease_ttl = \"12s\""
    );
    if let Some(f) = ca_file {
        s.push_str(&format!("\nca_file = \"{}\"", f.display()));
    }
    s
}

/// Why one call to the `rediss://` store on `port` fails (`None` when it succeeds).
fn tls_failure(port: u16, ca_file: Option<&std::path::Path>) -> Option<String> {
    use precond::identity::{Principal, ResourceKey, RouteId};
    block_on(async {
        let redis = store_client(
            format!("rediss://127.0.0.1:{port}/0"),
            ca_file.map(|f| std::fs::read(f).unwrap()),
            Duration::from_secs(12),
            Duration::from_secs(60),
        );
        let key = ResourceKey {
            route: RouteId(1),
            host: "h",
            path: "/r",
        };
        redis
            .peek(&redis.resource(&key, Principal(1)))
            .await
            .err()
            .map(|e| e.to_string())
    })
}

/// `rediss://`: two instances on a Redis that speaks only TLS, verifying its certificate
/// against `store.ca_file`, lose no update. A server the client cannot verify is refused: one
/// whose CA it does not trust (the system's roots do not know the test CA), and one whose
/// certificate is for another name; an instance that cannot verify the server fails closed
/// (its enforce writes get 503, and none reaches the origin).
#[test]
fn over_tls_two_instances_lose_no_update_and_an_unverified_server_is_refused() {
    let ca = Ca::new("redis");
    let (_redis, port) = tls_redis(&ca, &["localhost", "127.0.0.1"]);
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::None, "").unwrap();
    let trusted = tls_store(port, Some(&ca.ca_file()));
    let (a, b) = (
        instance(origin.addr, &trusted),
        instance(origin.addr, &trusted),
    );
    let lost = probe_across(a.addr, b.addr, "/tls/doc");
    assert_eq!(
        lost, 0,
        "two instances on Redis over TLS lost {lost} of 240 updates"
    );
    assert_eq!(a.state.redis.as_ref().unwrap().errors(), 0);
    assert_eq!(tls_failure(port, Some(&ca.ca_file())), None);

    // The system's roots do not know the test CA.
    let why = tls_failure(port, None).expect("an unknown CA is refused");
    eprintln!("an unknown CA: {why}");
    assert!(why.contains("UnknownIssuer"), "{why}");
    let untrusted = instance(origin.addr, &tls_store(port, None));
    let tag = request(untrusted.addr, "GET", "/tls/doc", &[], "").etag();
    let writes = origin.stats.writes.load(Ordering::SeqCst);
    let r = request(
        untrusted.addr,
        "PUT",
        "/tls/doc",
        &[("If-Match", &tag)],
        r#"{"n":0}"#,
    );
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert!(r.body_str().contains("shared store"), "{}", r.body_str());
    assert_eq!(origin.stats.writes.load(Ordering::SeqCst), writes);

    // A trusted CA, but a certificate for another name than the URL's host.
    let (_other, other_port) = tls_redis(&ca, &["redis.example"]);
    let why = tls_failure(other_port, Some(&ca.ca_file())).expect("another name is refused");
    eprintln!("another name: {why}");
    assert!(why.contains("not valid for name"), "{why}");
}

#[test]
fn a_stale_write_through_the_other_instance_is_refused() {
    let redis = RedisServer::start();
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::None, "").unwrap();
    let store = redis_store(&redis);
    let (a, b) = (instance(origin.addr, &store), instance(origin.addr, &store));
    assert_eq!(request(a.addr, "PUT", "/d", &[], r#"{"v":1}"#).status, 201);
    let t1 = request(a.addr, "GET", "/d", &[], "").etag();
    assert_eq!(
        t1,
        request(b.addr, "GET", "/d", &[], "").etag(),
        "one secret: one tag"
    );
    // A write through B replaces the representation A's client read.
    assert_eq!(
        request(b.addr, "PUT", "/d", &[("If-Match", &t1)], r#"{"v":2}"#).status,
        200
    );
    let writes = origin.stats.writes.load(Ordering::SeqCst);
    // A's client, still holding t1, is refused at A although A never saw B's write.
    let r = request(a.addr, "PUT", "/d", &[("If-Match", &t1)], r#"{"v":3}"#);
    assert_eq!(r.status, 412, "{}", r.body_str());
    assert_eq!(origin.stats.writes.load(Ordering::SeqCst), writes);
    // And the current tag, which A never saw, is accepted.
    let t2 = request(b.addr, "GET", "/d", &[], "").etag();
    assert_ne!(t1, t2);
    assert_eq!(
        request(a.addr, "PUT", "/d", &[("If-Match", &t2)], r#"{"v":4}"#).status,
        200
    );
}

#[test]
fn redis_down_means_503_for_writes_and_recovery_without_a_restart() {
    let mut redis = RedisServer::start();
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::None, "").unwrap();
    let p = instance(origin.addr, &redis_store(&redis));
    assert_eq!(request(p.addr, "PUT", "/r", &[], r#"{"v":1}"#).status, 201);
    let tag = request(p.addr, "GET", "/r", &[], "").etag();
    redis.stop();
    let writes = origin.stats.writes.load(Ordering::SeqCst);
    for body in [r#"{"v":2}"#, r#"{"v":3}"#] {
        let r = request(p.addr, "PUT", "/r", &[("If-Match", &tag)], body);
        assert_eq!(r.status, 503, "{}", r.body_str());
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(r.body_str().contains("shared store"), "{}", r.body_str());
    }
    // Never an unserialised write; reads go on (they need no lease).
    assert_eq!(origin.stats.writes.load(Ordering::SeqCst), writes);
    let m = p.state.metrics.render(Default::default(), &[]);
    assert!(
        m.contains("precond_shared_store_unavailable_total 2\n"),
        "{m}"
    );
    assert_eq!(request(p.addr, "GET", "/r", &[], "").status, 200);
    // Redis comes back: the same process serialises writes again.
    redis.restart();
    let mut ok = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let r = request(p.addr, "PUT", "/r", &[("If-Match", &tag)], r#"{"v":4}"#);
        if r.status == 200 {
            ok = true;
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body_str());
        thread::sleep(Duration::from_millis(200));
    }
    assert!(ok, "writes did not recover after Redis came back");
}

#[test]
fn shared_store_config_is_checked() {
    let base = "[[upstream]]\nname = \"o\"\nservers = [\"127.0.0.1:9\"]\n\n[[route]]\nupstream = \"o\"\nmode = \"enforce\"\n";
    for (store, expected) in [
        ("backend = \"redis\"", "needs store.url"),
        (
            "backend = \"redis\"\nurl = \"rediss://h:1/0#insecure\"",
            "#fragment is refused",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://h:1\"\nca_file = \"/ca.pem\"",
            "rediss:// (TLS) store.url only",
        ),
        (
            "backend = \"memory\"\nca_file = \"/ca.pem\"",
            "apply to backend = \"redis\" only",
        ),
        (
            "backend = \"redis\"\nurl = \"http://h:1\"",
            "not a redis:// or rediss:// URL",
        ),
        (
            "backend = \"memory\"\nurl = \"redis://h:1\"",
            "apply to backend = \"redis\" only",
        ),
        ("backend = \"etcd\"", "store.backend"),
        (
            "backend = \"redis\"\nurl = \"redis://h:1\"\nlease_ttl = \"100ms\"",
            "lease_ttl",
        ),
    ] {
        let e = precond::config::parse(&format!("[store]\n{store}\n\n{base}")).unwrap_err();
        assert!(e.position.is_some(), "{store}: {e}");
        assert!(e.message.contains(expected), "{store}: {e}");
    }
    // `store.ca_file` is read by `precond check` (and at start), a missing file named.
    let c = precond::config::parse(&format!(
        "[store]\nbackend = \"redis\"\nurl = \"rediss://127.0.0.1:1/0\"\nca_file = \"/nonexistent/ca.pem\"\n\n\
         [enforce]\ntag_secret_file = \"{}\"\n\n{base}",
        shared_secret_file().display()
    ))
    .unwrap();
    let e = precond::app::preflight(&c).unwrap_err().to_string();
    assert!(e.contains("store.ca_file /nonexistent/ca.pem"), "{e}");
    // Several instances must name resources alike: a generated secret is refused.
    let c = precond::config::parse(&format!(
        "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\n\n{base}"
    ))
    .unwrap();
    if std::env::var_os("PRECOND_TAG_SECRET").is_none() {
        let e = precond::app::preflight(&c).unwrap_err().to_string();
        assert!(e.contains("secret"), "{e}");
    }
}

/// The lease's chain rules, on the library's API against the real Redis: a snapshot is trusted
/// only when the previous holder published; a holder that found the chain broken cannot vouch
/// for other partitions' snapshots; a holder after a broken chain is told how long the last
/// forwarded write may still be in flight; state that expired is not trusted.
#[test]
fn lease_chain_rules_hold_against_a_real_redis() {
    use precond::identity::{Principal, ResourceKey, RouteId};
    use precond::store::redis::Snapshot;
    let server = RedisServer::start();
    block_on(async {
        let redis = store_client(
            server.url(),
            None,
            Duration::from_secs(3),
            Duration::from_millis(1500),
        );
        let key = ResourceKey {
            route: RouteId(1),
            host: "h",
            path: "/r",
        };
        let deadline = || Instant::now() + Duration::from_secs(2);
        let snap = |tag: &str| Snapshot {
            status: 200,
            tag: Some(tag.as_bytes().to_vec()),
            synthetic: true,
            alias: None,
            last_modified: None,
        };
        let (p1, p2, p3) = (Principal(1), Principal(2), Principal(3));
        // P1 probes and publishes E1 (unchanged): the next holder of P1 trusts it.
        let l = redis
            .acquire(redis.resource(&key, p1), deadline())
            .await
            .unwrap()
            .unwrap();
        assert!(l.snapshot().is_none());
        assert!(l.publish(false, Some(&snap("\"E1\""))).await.unwrap());
        let l = redis
            .acquire(redis.resource(&key, p1), deadline())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.snapshot(), Some(&snap("\"E1\"")));
        assert_eq!(l.quiet(), Duration::ZERO);
        assert_eq!(
            redis.peek(&redis.resource(&key, p1)).await.unwrap(),
            Some(snap("\"E1\"")),
            "a holder that has not forwarded anything leaves the published state current"
        );
        assert!(l.publish(false, None).await.unwrap());
        assert_eq!(
            redis.peek(&redis.resource(&key, p1)).await.unwrap(),
            Some(snap("\"E1\"")),
            "no holder, chain unbroken: the published state"
        );
        // P2 forwards a write (bound 400 ms) and ends without publishing: the chain is broken.
        let l = redis
            .acquire(redis.resource(&key, p2), deadline())
            .await
            .unwrap()
            .unwrap();
        assert!(l.mark_forwarding(Duration::from_millis(400)).await.unwrap());
        assert_eq!(
            redis.peek(&redis.resource(&key, p1)).await.unwrap(),
            None,
            "a write in flight: the published state may be stale"
        );
        l.release().await.unwrap();
        assert_eq!(
            redis.peek(&redis.resource(&key, p1)).await.unwrap(),
            None,
            "chain broken"
        );
        // P3 must wait out P2's bound, and cannot vouch for P1's snapshot.
        let mut l = redis
            .acquire(redis.resource(&key, p3), deadline())
            .await
            .unwrap()
            .unwrap();
        assert!(l.snapshot().is_none());
        assert!(
            l.quiet() > Duration::from_millis(100) && l.quiet() <= Duration::from_millis(400),
            "{:?}",
            l.quiet()
        );
        tokio::time::sleep(l.quiet()).await;
        l.waited_out();
        assert!(l.publish(false, Some(&snap("\"E3\""))).await.unwrap());
        let l = redis
            .acquire(redis.resource(&key, p1), deadline())
            .await
            .unwrap()
            .unwrap();
        assert!(
            l.snapshot().is_none(),
            "P1's snapshot from before the broken chain was trusted again"
        );
        assert!(l.publish(false, None).await.unwrap());
        let l = redis
            .acquire(redis.resource(&key, p3), deadline())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.snapshot(), Some(&snap("\"E3\"")));
        drop(l); // abandoned: ended in the background ("changed")
                 // Idle past the state's TTL: nothing is trusted any more.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let l = redis
            .acquire(redis.resource(&key, p3), deadline())
            .await
            .unwrap()
            .unwrap();
        assert!(l.snapshot().is_none(), "expired state trusted");
        assert!(l.publish(true, None).await.unwrap());
    });
}

/// Every caller partition gets its own snapshot in the resource's state hash; a caller can invent
/// credentials (a new cookie per request, each probing and publishing): past the bound, no new
/// partition's snapshot is stored (its next write probes), so the hash does not grow with them.
#[test]
fn per_caller_snapshots_are_bounded_against_a_real_redis() {
    use precond::identity::{Principal, ResourceKey, RouteId};
    use precond::store::redis::Snapshot;
    let server = RedisServer::start();
    block_on(async {
        let redis = store_client(
            server.url(),
            None,
            Duration::from_secs(3),
            Duration::from_secs(60),
        );
        let key = ResourceKey {
            route: RouteId(1),
            host: "h",
            path: "/flood",
        };
        let snap = Snapshot {
            status: 404,
            tag: None,
            synthetic: false,
            alias: None,
            last_modified: None,
        };
        let deadline = || Instant::now() + Duration::from_secs(2);
        for i in 0..(3 * precond::store::MAX_PARTS as u64) {
            let l = redis
                .acquire(redis.resource(&key, Principal(1000 + i)), deadline())
                .await
                .unwrap()
                .unwrap();
            assert!(l.publish(false, Some(&snap)).await.unwrap());
        }
        let state = format!("precond:{{{}}}:state", redis.resource_id(&key));
        let fields = server.command(&["HKEYS", &state]);
        let snapshots = fields.lines().filter(|l| l.starts_with("p:")).count();
        assert_eq!(snapshots, precond::store::MAX_PARTS, "{fields}");
        // The first callers keep theirs; a caller beyond the bound finds none (it probes).
        let l = redis
            .acquire(redis.resource(&key, Principal(1000)), deadline())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.snapshot(), Some(&snap));
        assert!(l.publish(false, Some(&snap)).await.unwrap());
        let last = Principal(1000 + 3 * precond::store::MAX_PARTS as u64 - 1);
        let l = redis
            .acquire(redis.resource(&key, last), deadline())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.snapshot(), None);
        assert!(l.publish(true, None).await.unwrap());
    });
}

/// `write_wait` bounds a write's whole wait, not each step of it: on instance A, a first write
/// holds A's lock for the resource while it waits for the lease, which instance B holds (B's
/// write is held at the origin); a second write to A waits for that lock, then for the lease.
/// It is answered `503` one `write_wait` after it arrived, not two.
#[test]
fn write_wait_bounds_the_wait_for_the_lock_and_the_lease_together() {
    let redis = RedisServer::start();
    let puts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = puts.clone();
    let origin = ScriptedOrigin::start(move |req| {
        let seen = seen.clone();
        async move {
            if req.method == "PUT" {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(4500)).await;
            }
            (200, vec![("ETag", "\"v1\"".to_string())], "{}".to_string())
        }
    });
    let wait = Duration::from_secs(2);
    let text = route_config("mode = \"enforce\"\nwrite_wait = \"2s\"").replace(
        "[[upstream]]",
        &format!(
            "[store]\n{}\n\n[enforce]\ntag_secret_file = \"{}\"\n\n[[upstream]]",
            redis_store(&redis),
            shared_secret_file().display()
        ),
    );
    let (a, b) = (proxy(&text, origin.addr), proxy(&text, origin.addr));
    let (a, b) = (a.addr, b.addr);
    assert_eq!(request(b, "GET", "/r", &[], "").status, 200);
    let held = thread::spawn(move || request(b, "PUT", "/r", &[("If-Match", "*")], "{}").status);
    let deadline = Instant::now() + Duration::from_secs(5);
    while puts.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "B's write never reached the origin"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let first = thread::spawn(move || request(a, "PUT", "/r", &[("If-Match", "*")], "{}").status);
    // The first write has taken A's lock and waits for the lease.
    thread::sleep(Duration::from_millis(800));
    let sent = Instant::now();
    let second = request(a, "PUT", "/r", &[("If-Match", "*")], "{}");
    let waited = sent.elapsed();
    assert_eq!(second.status, 503, "{}", second.body_str());
    assert_eq!(first.join().unwrap(), 503);
    // One `write_wait` (2 s), with room for a loaded machine. Spent per step, it was the rest of
    // the first write's (1.2 s) for the lock, then a whole one for the lease: 3.2 s.
    assert!(
        waited >= wait - Duration::from_millis(100) && waited < wait + Duration::from_millis(700),
        "the second write waited {waited:?} (write_wait {wait:?})"
    );
    assert_eq!(held.join().unwrap(), 200);
    assert_eq!(
        puts.load(Ordering::SeqCst),
        1,
        "only B's write reached the origin"
    );
}
