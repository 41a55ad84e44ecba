//! Fair, bounded write serialisation on `enforce` routes (issue 10, item 2): a slow upload cannot
//! hold a resource's lock past `write_body_timeout`, refused writes never hold it while their
//! answer is written or their body drained, and refusals that do not depend on the resource's
//! state never wait for it.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use precond::demo::{DemoOrigin, Tags};

fn legacy() -> DemoOrigin {
    DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::None, "").unwrap()
}

fn enforce(extra: &str, origin: SocketAddr) -> precond::app::Running {
    proxy(
        &route_config(&format!("mode = \"enforce\"\n{extra}")),
        origin,
    )
}

/// Starts a PUT of `/items/1` that declares a 100-byte body and sends one byte every 300 ms,
/// on its own thread; returns the status it got (0 if the connection closed without one).
fn trickle(p: SocketAddr, if_match: String) -> thread::JoinHandle<u16> {
    thread::spawn(move || {
        let mut c = Conn::open(p);
        c.write_raw(
            format!(
                "PUT /items/1 HTTP/1.1\r\nHost: test.local\r\nIf-Match: {if_match}\r\n\
                 Content-Length: 100\r\n\r\n"
            )
            .as_bytes(),
        );
        let started = Instant::now();
        let mut s = c.into_stream();
        while started.elapsed() < Duration::from_secs(8) {
            thread::sleep(Duration::from_millis(300));
            if s.write_all(b" ").is_err() {
                break;
            }
        }
        read_status(&mut s)
    })
}

#[test]
fn a_trickled_body_cannot_hold_the_lock_past_write_body_timeout() {
    let o = legacy();
    let p = enforce("write_body_timeout = \"1s\"\nwrite_wait = \"4s\"", o.addr);
    let tag = request(p.addr, "GET", "/items/1", &[], "").etag();
    let slow = trickle(p.addr, tag.clone());
    thread::sleep(Duration::from_millis(200));
    // A valid write behind it gets its turn once the slow one is aborted.
    let started = Instant::now();
    let r = request(
        p.addr,
        "PUT",
        "/items/1",
        &[("If-Match", &tag)],
        r#"{"n":1}"#,
    );
    let waited = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(waited < Duration::from_millis(2500), "waited {waited:?}");
    let slow = slow.join().unwrap();
    assert!(matches!(slow, 408 | 0), "the trickling write got {slow}");
}

#[test]
fn refused_writes_do_not_hold_the_lock_while_their_body_is_drained() {
    let o = legacy();
    let p = enforce("write_wait = \"1s\"", o.addr);
    let stale = request(p.addr, "GET", "/items/1", &[], "").etag();
    assert_eq!(
        request(
            p.addr,
            "PUT",
            "/items/1",
            &[("If-Match", &stale)],
            r#"{"n":0}"#
        )
        .status,
        200
    );
    // Four refused writes that declare 60 KB (under edge.drain_limit) and send nothing: each
    // is drained for up to edge.drain_timeout (2 s).
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut c = Conn::open(p.addr);
        c.write_raw(
            format!(
                "PUT /items/1 HTTP/1.1\r\nHost: test.local\r\nIf-Match: {stale}\r\n\
                 Content-Length: 60000\r\n\r\n"
            )
            .as_bytes(),
        );
        idle.push(c);
    }
    thread::sleep(Duration::from_millis(200));
    let before = o.stats.writes.load(Ordering::SeqCst);
    for i in 0..4 {
        let tag = request(p.addr, "GET", "/items/1", &[], "").etag();
        let r = request(
            p.addr,
            "PUT",
            "/items/1",
            &[("If-Match", &tag)],
            &format!(r#"{{"n":{i}}}"#),
        );
        assert_eq!(r.status, 200, "valid write {i}: {}", r.body_str());
    }
    assert_eq!(o.stats.writes.load(Ordering::SeqCst), before + 4);
    drop(idle);
}

#[test]
fn a_428_does_not_wait_for_the_lock() {
    let o = legacy();
    let p = enforce(
        "require = [\"PUT\"]\nwrite_body_timeout = \"3s\"\nwrite_wait = \"2s\"",
        o.addr,
    );
    let tag = request(p.addr, "GET", "/items/1", &[], "").etag();
    let slow = trickle(p.addr, tag);
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let r = request(p.addr, "PUT", "/items/1", &[], r#"{"n":1}"#);
    assert_eq!(r.status, 428, "{}", r.body_str());
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    let _ = slow.join();
}

/// The status line of the response on `s`, 0 if it closed without one.
fn read_status(s: &mut std::net::TcpStream) -> u16 {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 12 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    std::str::from_utf8(&got)
        .ok()
        .and_then(|t| t.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
