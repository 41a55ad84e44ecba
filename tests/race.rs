//! Guard's race window (issue 17): the in-flight write fence, measured with the lost-update probe
//! (8 clients × 30 read-modify-write updates of one resource) against origins that send tags but
//! never check `If-Match`, and the fence's edges with scripted origins.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use precond::demo::{DemoOrigin, Tags};
use precond::precondition::{Field, Reason};

const CLIENTS: usize = 8;
const UPDATES: u64 = 30;

/// What the probe saw.
#[derive(Debug)]
struct Probe {
    /// Updates the clients saw succeed and the resource does not reflect.
    lost: u64,
    /// Writes refused with 412 (each then retried from a fresh GET).
    refused: u64,
}

/// 8 clients each apply 30 increments to `path`: GET, add one to `n`, PUT with `If-Match` set to
/// the GET's `ETag`; a 412 is retried from a fresh GET. Every client starts at once.
fn probe(proxy: SocketAddr, path: &str) -> Probe {
    let created = request(
        proxy,
        "PUT",
        path,
        &[("Content-Type", "application/json")],
        r#"{"n":0}"#,
    );
    assert!(matches!(created.status, 200 | 201), "{created:?}");
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (start, path) = (start.clone(), path.to_string());
            thread::spawn(move || {
                start.wait();
                let (mut done, mut refused) = (0, 0);
                while done < UPDATES {
                    let r = request(proxy, "GET", &path, &[], "");
                    assert_eq!(r.status, 200, "{r:?}");
                    let n = r.json()["n"].as_u64().unwrap();
                    let put = request(
                        proxy,
                        "PUT",
                        &path,
                        &[
                            ("If-Match", &r.etag()),
                            ("Content-Type", "application/json"),
                        ],
                        &format!(r#"{{"n":{}}}"#, n + 1),
                    );
                    match put.status {
                        200 | 201 | 204 => done += 1,
                        412 => refused += 1,
                        s => panic!("unexpected {s}: {}", put.body_str()),
                    }
                    assert!(refused < 5000, "no progress: {}", put.body_str());
                }
                refused
            })
        })
        .collect();
    let refused = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let n = request(proxy, "GET", path, &[], "").json()["n"]
        .as_u64()
        .unwrap();
    Probe {
        lost: CLIENTS as u64 * UPDATES - n,
        refused,
    }
}

fn edge_412s(p: &precond::app::Running) -> u64 {
    Field::ALL
        .iter()
        .flat_map(|f| Reason::ALL.iter().map(move |r| (*f, *r)))
        .map(|(f, r)| p.state.metrics.rejected(f, r))
        .sum()
}

/// The probes run one at a time: each is 8 busy clients on a 2-core machine.
static ONE_PROBE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn guard_probe(tags: Tags, policy: &str) -> (Probe, u64, u64) {
    let _one = ONE_PROBE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), tags, "").unwrap();
    let p = proxy(&guard_config(policy), origin.addr);
    let result = probe(p.addr, "/race/1");
    let origin_writes = origin.stats.writes.load(Ordering::SeqCst);
    let m = &p.state.metrics;
    eprintln!(
        "fence: {} waited, {} refused after waiting, {} timed out, {} turned away",
        m.fence_waits.get(),
        m.fence_refused.get(),
        m.fence_timeouts.get(),
        m.fence_full.get()
    );
    (result, origin_writes, edge_412s(&p))
}

#[test]
fn guard_superseded_loses_at_most_two_of_240_with_strong_tags() {
    let (probe, origin_writes, edge) = guard_probe(Tags::Strong, "superseded");
    eprintln!("strong, superseded: {probe:?}, origin writes {origin_writes}, edge 412s {edge}");
    assert!(probe.lost <= 2, "{probe:?}");
    // Every refusal was answered at the edge: the origin saw the creating PUT and the 240
    // updates the clients saw succeed, nothing else.
    assert_eq!(edge, probe.refused);
    assert_eq!(origin_writes, 1 + CLIENTS as u64 * UPDATES);
}

#[test]
fn guard_superseded_loses_at_most_two_of_240_with_weak_tags() {
    let (probe, origin_writes, edge) = guard_probe(Tags::Weak, "superseded");
    eprintln!("weak, superseded: {probe:?}, origin writes {origin_writes}, edge 412s {edge}");
    assert!(probe.lost <= 2, "{probe:?}");
    assert!(probe.refused > 0, "weak tags seen replaced are refused");
    assert_eq!(edge, probe.refused);
    assert_eq!(origin_writes, 1 + CLIENTS as u64 * UPDATES);
}

#[test]
fn guard_mismatch_loses_at_most_two_of_240_with_strong_tags() {
    let (probe, origin_writes, edge) = guard_probe(Tags::Strong, "mismatch");
    eprintln!("strong, mismatch: {probe:?}, origin writes {origin_writes}, edge 412s {edge}");
    assert!(probe.lost <= 2, "{probe:?}");
    assert_eq!(edge, probe.refused);
    assert_eq!(origin_writes, 1 + CLIENTS as u64 * UPDATES);
}

#[test]
fn enforce_loses_nothing_in_front_of_an_origin_without_tags() {
    let _one = ONE_PROBE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::None, "").unwrap();
    let p = proxy(&route_config("mode = \"enforce\""), origin.addr);
    let probe = probe(p.addr, "/race/1");
    eprintln!("no tags, enforce: {probe:?}");
    assert_eq!(probe.lost, 0, "{probe:?}");
}

/// An origin whose first `PUT` to a resource is held until `release` fires, answered with
/// `first`; later writes are answered at once with `later`. GETs answer `"v1"`.
struct HeldOrigin {
    origin: ScriptedOrigin,
    release: Arc<tokio::sync::Notify>,
    writes: Arc<std::sync::atomic::AtomicU64>,
}

fn held_origin(first: common::Reply, later: common::Reply) -> HeldOrigin {
    let release = Arc::new(tokio::sync::Notify::new());
    let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (r2, w2) = (release.clone(), writes.clone());
    let origin = ScriptedOrigin::start(move |req| {
        let (release, writes, first, later) =
            (r2.clone(), w2.clone(), first.clone(), later.clone());
        async move {
            if req.method == "GET" {
                return (200, vec![("etag", "\"v1\"".to_string())], "{}".to_string());
            }
            if writes.fetch_add(1, Ordering::SeqCst) == 0 {
                release.notified().await;
                first
            } else {
                later
            }
        }
    });
    HeldOrigin {
        origin,
        release,
        writes,
    }
}

impl HeldOrigin {
    fn wait_for_writes(&self, n: u64) {
        for _ in 0..500 {
            if self.writes.load(Ordering::SeqCst) >= n {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("the origin never saw {n} writes");
    }
}

/// Starts a `PUT If-Match: tag` on its own thread, returning its status.
fn put_in_background(p: SocketAddr, tag: &'static str) -> thread::JoinHandle<u16> {
    thread::spawn(move || request(p, "PUT", "/r", &[("If-Match", tag)], "{}").status)
}

/// Two writes naming `"v1"`: the first is held at the origin until the second has reached the
/// fence, then answered `first`. Returns the second's status and the origin's write count.
fn second_write_after(first: common::Reply) -> (u16, u64, u64) {
    let o = held_origin(first, (200, vec![("etag", "\"v3\"".into())], "{}".into()));
    let p = proxy(&guard_config("superseded"), o.origin.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
    let a = put_in_background(p.addr, "\"v1\"");
    o.wait_for_writes(1);
    let b = put_in_background(p.addr, "\"v1\"");
    let m = &p.state.metrics;
    while m.fence_waits.get() == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(o.writes.load(Ordering::SeqCst), 1, "the second write waits");
    o.release.notify_one();
    a.join().unwrap();
    let status = b.join().unwrap();
    (
        status,
        o.writes.load(Ordering::SeqCst),
        m.fence_refused.get(),
    )
}

#[test]
fn a_write_waiting_for_one_that_replaced_its_tag_gets_412_superseded() {
    let (status, writes, refused) =
        second_write_after((200, vec![("etag", "\"v2\"".into())], "{}".into()));
    assert_eq!(status, 412);
    assert_eq!(writes, 1, "the refused write never reached the origin");
    assert_eq!(refused, 1);
}

#[test]
fn a_write_waiting_for_a_2xx_without_a_tag_is_forwarded() {
    let (status, writes, refused) = second_write_after((204, vec![], String::new()));
    assert_eq!(
        status, 200,
        "no false 412: a 2xx without a tag proves nothing"
    );
    assert_eq!(writes, 2);
    assert_eq!(refused, 0);
}

#[test]
fn a_write_waiting_for_a_5xx_or_the_same_tag_is_forwarded() {
    for first in [
        (503, vec![], "{}".to_string()),
        (200, vec![("etag", "\"v1\"".into())], "{}".to_string()),
        (200, vec![("etag", "W/\"v1\"".into())], "{}".to_string()),
        (412, vec![("etag", "\"v2\"".into())], "{}".to_string()),
    ] {
        let (status, writes, refused) = second_write_after(first.clone());
        assert_eq!(status, 200, "after {first:?}");
        assert_eq!(writes, 2, "after {first:?}");
        assert_eq!(refused, 0, "after {first:?}");
    }
}

#[test]
fn writes_naming_other_tags_or_no_tag_and_reads_never_wait() {
    let o = held_origin(
        (200, vec![("etag", "\"v2\"".into())], "{}".into()),
        (200, vec![("etag", "\"v3\"".into())], "{}".into()),
    );
    let p = proxy(&guard_config("superseded"), o.origin.addr);
    let a = put_in_background(p.addr, "\"v1\"");
    o.wait_for_writes(1);
    // While the first write is held at the origin:
    assert_eq!(request(p.addr, "GET", "/r", &[], "").status, 200);
    assert_eq!(
        request(p.addr, "PUT", "/r", &[("If-Match", "\"v9\"")], "{}").status,
        200
    );
    assert_eq!(request(p.addr, "PUT", "/r", &[], "{}").status, 200);
    assert_eq!(
        request(p.addr, "PUT", "/r", &[("If-Match", "\"v1\", \"v3\"")], "{}").status,
        200,
        "a list of tags is not fenced"
    );
    assert_eq!(o.writes.load(Ordering::SeqCst), 4);
    assert_eq!(p.state.metrics.fence_waits.get(), 0);
    o.release.notify_one();
    assert_eq!(a.join().unwrap(), 200);
}

#[test]
fn another_callers_write_naming_the_same_tag_does_not_wait() {
    let o = held_origin(
        (200, vec![("etag", "\"v2\"".into())], "{}".into()),
        (200, vec![("etag", "\"v3\"".into())], "{}".into()),
    );
    let p = proxy(&guard_config("superseded"), o.origin.addr);
    let a = thread::spawn({
        let addr = p.addr;
        move || {
            request(
                addr,
                "PUT",
                "/r",
                &[("If-Match", "\"v1\""), ("Authorization", "Bearer alice")],
                "{}",
            )
            .status
        }
    });
    o.wait_for_writes(1);
    let started = std::time::Instant::now();
    let b = request(
        p.addr,
        "PUT",
        "/r",
        &[("If-Match", "\"v1\""), ("Authorization", "Bearer bob")],
        "{}",
    );
    assert_eq!(
        b.status, 200,
        "another partition is not held by alice's write"
    );
    assert_eq!(p.state.metrics.fence_waits.get(), 0);
    assert!(started.elapsed() < Duration::from_secs(1), "bob waited");
    o.release.notify_one();
    assert_eq!(a.join().unwrap(), 200);
}

#[test]
fn the_wait_is_bounded_by_fence_wait_and_fence_waiters() {
    let o = held_origin(
        (200, vec![("etag", "\"v2\"".into())], "{}".into()),
        (200, vec![("etag", "\"v3\"".into())], "{}".into()),
    );
    let text = route_config("mode = \"guard\"\nfence_wait = \"1500ms\"\nfence_waiters = 1");
    let p = proxy(&text, o.origin.addr);
    let m = &p.state.metrics;
    let a = put_in_background(p.addr, "\"v1\"");
    o.wait_for_writes(1);
    // One waiter allowed: it waits out fence_wait, then is forwarded...
    let waiter = put_in_background(p.addr, "\"v1\"");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(o.writes.load(Ordering::SeqCst), 1, "the waiter waits");
    // ...and a second one meanwhile does not wait at all.
    let third = request(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "{}");
    assert_eq!(third.status, 200, "turned away from the fence: forwarded");
    assert_eq!(m.fence_full.get(), 1);
    assert_eq!(m.fence_timeouts.get(), 0);
    assert_eq!(
        waiter.join().unwrap(),
        200,
        "forwarded once fence_wait elapsed"
    );
    assert_eq!(m.fence_timeouts.get(), 1);
    assert_eq!(o.writes.load(Ordering::SeqCst), 3);
    o.release.notify_one();
    assert_eq!(a.join().unwrap(), 200);
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

fn put_step(
    p: std::net::SocketAddr,
    tag: &'static str,
    step: &'static str,
) -> thread::JoinHandle<Resp> {
    thread::spawn(move || request(p, "PUT", "/r", &[("If-Match", tag), ("X-Step", step)], "{}"))
}

/// A write that waited at the fence is ordered after the write it waited for (its ticket is
/// taken when it leaves the fence): a revert sent through the fence makes its tag current again,
/// and the reverting client's next write is not refused.
#[test]
fn a_revert_that_waited_at_the_fence_is_refused_on_its_own_tag() {
    let release = Arc::new(tokio::sync::Notify::new());
    let held = Arc::new(AtomicU64::new(0));
    let (r2, h2) = (release.clone(), held.clone());
    let o = ScriptedOrigin::start(move |req| {
        let (release, held) = (r2.clone(), h2.clone());
        async move {
            let tag = |t: &str| vec![("etag", t.to_string())];
            match req.headers.get("x-step").map(String::as_str) {
                None => (200, tag("\"v1\""), "{}".into()),      // GET
                Some("1") => (200, tag("\"v2\""), "{}".into()), // v1 -> v2
                Some("h") => {
                    held.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    (503, vec![], "{}".into()) // H fails
                }
                Some("w") => (200, tag("\"v1\""), "{}".into()), // W reverts to v1
                Some(_) => (200, tag("\"v9\""), "{}".into()),
            }
        }
    });
    let p = proxy(&guard_config("superseded"), o.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
    assert_eq!(put_step(p.addr, "\"v1\"", "1").join().unwrap().status, 200);
    let h = put_step(p.addr, "\"v2\"", "h");
    wait_until("H at the origin", || held.load(Ordering::SeqCst) == 1);
    let w = put_step(p.addr, "\"v2\"", "w");
    wait_until("W at the fence", || p.state.metrics.fence_waits.get() == 1);
    release.notify_one();
    assert_eq!(h.join().unwrap().status, 503);
    let w = w.join().unwrap();
    assert_eq!((w.status, w.etag()), (200, "\"v1\"".to_string()));
    // The origin's representation is "v1" (W was sent after H's answer): If-Match "v1" is true.
    let next = put_step(p.addr, "\"v1\"", "next").join().unwrap();
    assert_eq!(next.status, 200, "false edge 412: {}", next.body_str());
}

/// After the first write's 5xx, the waiters go to the origin one at a time: the first waiter's
/// 2xx with a new tag refuses the second (no lost update).
#[test]
fn waiters_released_by_a_5xx_race_each_other_at_the_origin() {
    let release = Arc::new(tokio::sync::Notify::new());
    let (held, in_flight, max_in_flight, n) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(1)),
    );
    let (r2, h2, i2, m2, n2) = (
        release.clone(),
        held.clone(),
        in_flight.clone(),
        max_in_flight.clone(),
        n.clone(),
    );
    let o = ScriptedOrigin::start(move |req| {
        let (release, held, in_flight, max, n) =
            (r2.clone(), h2.clone(), i2.clone(), m2.clone(), n2.clone());
        async move {
            match req.headers.get("x-step").map(String::as_str) {
                None => (200, vec![("etag", "\"v1\"".into())], "{}".into()),
                Some("h") => {
                    held.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    (503, vec![], "{}".into())
                }
                Some(_) => {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    // Give a second write 500ms to arrive while this one is being applied.
                    for _ in 0..50 {
                        if in_flight.load(Ordering::SeqCst) >= 2 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let v = n.fetch_add(1, Ordering::SeqCst) + 1;
                    (200, vec![("etag", format!("\"v{v}\""))], "{}".into())
                }
            }
        }
    });
    let p = proxy(&guard_config("superseded"), o.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
    let h = put_step(p.addr, "\"v1\"", "h");
    wait_until("H at the origin", || held.load(Ordering::SeqCst) == 1);
    let w1 = put_step(p.addr, "\"v1\"", "w");
    let w2 = put_step(p.addr, "\"v1\"", "w");
    wait_until("two waiters", || p.state.metrics.fence_waits.get() == 2);
    release.notify_one();
    assert_eq!(h.join().unwrap().status, 503);
    let (s1, s2) = (w1.join().unwrap().status, w2.join().unwrap().status);
    eprintln!(
        "waiters: {s1} {s2}; most writes naming \"v1\" at the origin at once: {}",
        max_in_flight.load(Ordering::SeqCst)
    );
    assert!(
        !(s1 == 200 && s2 == 200),
        "lost update: both writes naming \"v1\" applied (max in flight {})",
        max_in_flight.load(Ordering::SeqCst)
    );
}

/// After the resource's state became unknown (here: a write answered 503), conditional writes
/// naming different tags go to the origin one at a time (single-flight, `uncertain_wait`): the
/// first one's answer makes the state known again, and the others are decided at the edge.
#[test]
fn while_the_state_is_unknown_one_conditional_write_goes_at_a_time() {
    let version = Arc::new(AtomicU64::new(1));
    let writes = Arc::new(AtomicU64::new(0));
    let (v2, w2) = (version.clone(), writes.clone());
    let o = ScriptedOrigin::start(move |req| {
        let (version, writes) = (v2.clone(), w2.clone());
        async move {
            let tag = |v: u64| vec![("etag", format!("\"v{v}\""))];
            if req.method == "GET" {
                return (200, tag(version.load(Ordering::SeqCst)), "{}".into());
            }
            writes.fetch_add(1, Ordering::SeqCst);
            if req.headers.get("x-step").map(String::as_str) == Some("fail") {
                return (503, vec![], "{}".into());
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            let v = version.fetch_add(1, Ordering::SeqCst) + 1;
            (200, tag(v), "{}".into())
        }
    });
    let p = proxy(&guard_config("mismatch"), o.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
    assert_eq!(
        request(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "{}").status,
        200
    );
    // The state becomes unknown: the origin answered a write 503.
    let r = request(
        p.addr,
        "PUT",
        "/r",
        &[("If-Match", "\"v2\""), ("X-Step", "fail")],
        "{}",
    );
    assert_eq!(r.status, 503);
    let before = writes.load(Ordering::SeqCst);
    // Five writes naming five tags the edge cannot judge (the current one is unknown).
    let all: Vec<_> = (0..5)
        .map(|i| {
            let addr = p.addr;
            thread::spawn(move || {
                let tag = format!("\"x{i}\"");
                request(addr, "PUT", "/r", &[("If-Match", &tag)], "{}").status
            })
        })
        .collect();
    let statuses: Vec<u16> = all.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        writes.load(Ordering::SeqCst) - before,
        1,
        "one write went to the origin; its answer decided the others: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        4,
        "{statuses:?}"
    );
}
