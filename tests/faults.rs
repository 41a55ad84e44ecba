//! Origins that misbehave (issue 10, item 6), over real sockets, on `guard` and `enforce` routes:
//! refused connections, resets mid-response, stalls before the header and mid-body, a connection
//! closed right after a write was read, garbage and oversized response headers, 5xx to writes;
//! and interim (1xx) answers before a final one or before a fault.
//!
//! For each: what the client sees (a problem body with the status `answer::error_status` maps the
//! failure to, or the origin's own answer when it had started one), within the configured timeouts;
//! that a write reaches the origin at most once (counted at the origin); that the store learned
//! nothing from the broken exchange; and that the proxy keeps serving.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use precond::app::Running;
use precond::identity::{OwnedKey, Principal};

/// The upstream `read_timeout` of every test here.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// What may come on top of a configured timeout before an answer counts as late (loaded CI
/// machines, two threads).
const MARGIN: Duration = Duration::from_millis(1500);
/// A failure that involves no timeout (refused, reset, closed, garbage) is answered within this.
const PROMPT: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// A raw origin: a thread per connection, scripted per request, counting what it read.
// ---------------------------------------------------------------------------------------------

/// One request as a raw origin read it (head and `Content-Length` body).
struct RawReq {
    method: String,
    path: String,
    body: String,
}

/// What a raw origin's connection does after the handler ran.
enum Then {
    /// Read the next request.
    Keep,
    /// Close the connection (FIN).
    Close,
    /// Abort the connection (RST: `SO_LINGER` 0).
    Reset,
    /// Send nothing more and wait, reading, until the proxy gives up and closes.
    Stall,
}

type Handler = dyn Fn(&RawReq, &mut TcpStream) -> Then + Send + Sync;

/// A loopback origin speaking raw bytes; every request read in full is logged before the handler
/// runs (so a write is counted even when the origin then breaks the exchange).
struct RawOrigin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
}

impl RawOrigin {
    fn start(handler: impl Fn(&RawReq, &mut TcpStream) -> Then + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { break };
                let (handler, seen) = (handler.clone(), seen2.clone());
                std::thread::spawn(move || serve_raw(stream, &*handler, &seen));
            }
        });
        RawOrigin { addr, seen, stop }
    }

    /// Requests read in full with this method.
    fn count(&self, method: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|(m, _)| m == method).count()
    }

    /// Requests read in full whose method is not GET or HEAD.
    fn writes(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(m, _)| m != "GET" && m != "HEAD")
            .count()
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn serve_raw(stream: TcpStream, handler: &Handler, seen: &Mutex<Vec<(String, String)>>) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let Some(req) = read_raw_request(&mut r) else {
            return;
        };
        seen.lock()
            .unwrap()
            .push((req.method.clone(), req.path.clone()));
        match handler(&req, &mut w) {
            Then::Keep => {}
            Then::Close => {
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            Then::Reset => {
                drop(r);
                let s = tokio::net::TcpSocket::from_std_stream(w);
                let _ = s.set_zero_linger();
                drop(s);
                return;
            }
            Then::Stall => {
                // Until the proxy closes its side (its read timeout), bounded in case it never does.
                let s = r.get_mut();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// One request from a raw origin's connection, or `None` at its end.
fn read_raw_request(r: &mut BufReader<TcpStream>) -> Option<RawReq> {
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(RawReq {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A complete response with a `Content-Length`.
fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Whatever");
    let mut v = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, val) in headers {
        v.push_str(&format!("{k}: {val}\r\n"));
    }
    v.push_str("\r\n");
    v.push_str(body);
    v.into_bytes()
}

fn send(w: &mut TcpStream, bytes: &[u8]) {
    let _ = w.write_all(bytes);
    let _ = w.flush();
}

/// The healthy part of every raw origin: `/ok` answers 200 with a strong tag.
fn healthy(req: &RawReq, w: &mut TcpStream) -> Option<Then> {
    (req.path == "/ok").then(|| {
        send(w, &reply(200, &[("ETag", "\"ok\"")], "fine"));
        Then::Keep
    })
}

/// The start of a response whose header promises 100 bytes of body (with `ETag: "v2"` when
/// `tagged`), and 10 of them.
fn truncated_200(tagged: bool) -> Vec<u8> {
    let etag = if tagged { "ETag: \"v2\"\r\n" } else { "" };
    format!("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n{etag}\r\n0123456789").into_bytes()
}

/// Not HTTP at all.
const GARBAGE: &[u8] = b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 this is not a status line\r\n\r\n";

/// A response header of `n` bytes (one huge field), body "big".
fn huge_header(n: usize) -> Vec<u8> {
    let mut v = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nETag: \"big\"\r\nX-Padding: ".to_vec();
    v.extend(std::iter::repeat_n(b'a', n));
    v.extend_from_slice(b"\r\n\r\nbig");
    v
}

// ---------------------------------------------------------------------------------------------
// Configurations, the client side, assertions.
// ---------------------------------------------------------------------------------------------

/// `route_config(route)` with the short read timeout.
fn config(route: &str) -> String {
    let text = route_config(route);
    assert!(text.contains("read_timeout = \"5s\""));
    text.replace(
        "read_timeout = \"5s\"",
        &format!("read_timeout = \"{}ms\"", READ_TIMEOUT.as_millis()),
    )
}

/// A guard route with `policy`, every caller in one partition (so the store can be inspected).
fn guard(policy: &str) -> String {
    config(&format!(
        "mode = \"guard\"\npolicy = \"{policy}\"\nscope = \"shared\""
    ))
}

/// An enforce route with extra lines.
fn enforce(extra: &str) -> String {
    config(&format!("mode = \"enforce\"\nscope = \"shared\"\n{extra}"))
}

/// `route` in front of `{origin}` at `/`, and the same route lines on `/dead` in front of `dead`,
/// an address nothing listens on.
fn with_dead_route(route: &str, dead: SocketAddr) -> String {
    format!(
        "{}\n[[upstream]]\nname = \"dead\"\nservers = [\"{dead}\"]\nconnect_timeout = \"1s\"\n\
         read_timeout = \"500ms\"\n\n[[route]]\npath_prefix = \"/dead\"\nupstream = \"dead\"\n{route}\n",
        config(route)
    )
}

/// One request on a fresh connection: its final answer, and how long it took.
fn timed(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (Resp, Duration) {
    let start = Instant::now();
    let mut c = Conn::open(addr);
    c.send(method, path, headers, body);
    // Interim (1xx) answers are skipped: the final one is what the client is told.
    let r = loop {
        let r = c.read_response(method == "HEAD");
        if r.status >= 200 {
            break r;
        }
    };
    (r, start.elapsed())
}

/// A response read until the proxy closes the connection (for answers cut short).
struct Cut {
    status: u16,
    content_length: Option<usize>,
    body_len: usize,
    /// The proxy closed the connection (EOF or reset) rather than leaving it hanging.
    closed: bool,
    elapsed: Duration,
}

/// Sends one request and reads until the connection ends (or 10 s pass).
fn cut_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Cut {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test.local\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                break !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    };
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, _) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response header: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let content_length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().unwrap())
    });
    let body_len = got.len() - head.len() - 4;
    Cut {
        status,
        content_length,
        body_len,
        closed,
        elapsed,
    }
}

/// An answer precond made itself for a failed exchange: `status`, a problem body saying the same
/// status, and the decision header.
#[track_caller]
fn assert_problem(r: &Resp, status: u16, decision: &str) {
    assert_eq!(r.status, status, "{}", r.body_str());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{r:?}"
    );
    assert_eq!(r.json()["status"], status, "{}", r.body_str());
    assert_eq!(r.header("precond-decision"), Some(decision), "{r:?}");
}

/// The enforce 503 for a write whose resource's state could not be established.
#[track_caller]
fn assert_state_unknown(r: &Resp) {
    assert_problem(r, 503, "state-unknown");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
}

#[track_caller]
fn assert_within(elapsed: Duration, bound: Duration, what: &str) {
    assert!(
        elapsed < bound,
        "{what}: answered after {elapsed:?}, bound {bound:?}"
    );
}

/// The proxy still serves a healthy path of the same origin.
#[track_caller]
fn assert_still_serving(p: &Running) {
    let (r, took) = timed(p.addr, "GET", "/ok", &[], "");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body_str(), "fine");
    assert_within(took, PROMPT, "healthy GET after the fault");
}

/// The current tags the store holds for `path` (one partition: `scope = "shared"`); `None` when
/// it knows no current tag (or nothing at all).
fn current_tags(p: &Running, path: &str) -> Option<Vec<String>> {
    let (_, route) = p.state.config.route_for(Some("test.local"), path).unwrap();
    let key = OwnedKey::new(route.id, "test.local", path, None);
    let entry = p.state.store.get(&key.as_key(), Principal::SHARED)?;
    entry.current.as_ref()?;
    Some(entry.current_tags().map(|t| t.to_display()).collect())
}

/// The tags the store holds replaced for `path` (one partition).
fn replaced_tags(p: &Running, path: &str) -> Vec<String> {
    let (_, route) = p.state.config.route_for(Some("test.local"), path).unwrap();
    let key = OwnedKey::new(route.id, "test.local", path, None);
    p.state
        .store
        .get(&key.as_key(), Principal::SHARED)
        .map(|e| e.replaced.iter().map(|t| t.as_ref().to_display()).collect())
        .unwrap_or_default()
}

/// Lets anything still in flight at the origin arrive before it is counted.
fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

// ---------------------------------------------------------------------------------------------
// The faults, as what an origin does instead of answering.
// ---------------------------------------------------------------------------------------------

/// (b) Part of a response header, then a reset.
fn reset_in_header(w: &mut TcpStream) -> Then {
    send(w, b"HTTP/1.1 200 OK\r\nETag: \"v2\"\r\nContent-Le");
    Then::Reset
}

/// (b) A whole header promising 100 bytes, 10 of them, then a reset.
fn reset_in_body(w: &mut TcpStream) -> Then {
    send(w, &truncated_200(true));
    Then::Reset
}

/// (c) Nothing at all: the exchange stalls before the header.
fn stall_before_header(_: &mut TcpStream) -> Then {
    Then::Stall
}

/// (b) As [`reset_in_body`], from a legacy origin (no `ETag`).
fn reset_in_untagged_body(w: &mut TcpStream) -> Then {
    send(w, &truncated_200(false));
    Then::Reset
}

/// (d) As [`stall_in_body`], from a legacy origin (no `ETag`).
fn stall_in_untagged_body(w: &mut TcpStream) -> Then {
    send(w, &truncated_200(false));
    Then::Stall
}

/// (d) A whole header promising 100 bytes, 10 of them, then nothing.
fn stall_in_body(w: &mut TcpStream) -> Then {
    send(w, &truncated_200(true));
    Then::Stall
}

/// (e) The request was read; the connection is closed without an answer.
fn close_unanswered(_: &mut TcpStream) -> Then {
    Then::Close
}

/// (f) Bytes that are not HTTP, then close.
fn garbage(w: &mut TcpStream) -> Then {
    send(w, GARBAGE);
    Then::Close
}

/// (f) A response header of 2 MB (Pingora reads at most 1 MB of header), then close.
fn oversized_header(w: &mut TcpStream) -> Then {
    send(w, &huge_header(2 << 20));
    Then::Close
}

/// (g) A 5xx carrying a new tag (which a 5xx never makes current).
fn answer_5xx<const STATUS: u16>(w: &mut TcpStream) -> Then {
    send(w, &reply(STATUS, &[("ETag", "\"v2\"")], "origin broke"));
    Then::Keep
}

/// An interim 103 (Early Hints) before the final answer: legal HTTP (RFC 9110 §15.2), which
/// precond's own fetches must skip rather than take for the answer. Not a fault, but a
/// misstep for a proxy.
fn early_hints_then_200(w: &mut TcpStream) -> Then {
    let mut v = EARLY_HINTS.to_vec();
    v.extend_from_slice(&reply(200, &[], "one"));
    send(w, &v);
    Then::Keep
}

const EARLY_HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n";

/// An interim 103, then nothing.
fn interim_then_stall(w: &mut TcpStream) -> Then {
    send(w, EARLY_HINTS);
    Then::Stall
}

/// An interim 103, then a reset.
fn interim_then_reset(w: &mut TcpStream) -> Then {
    send(w, EARLY_HINTS);
    Then::Reset
}

/// What the client is to see of an exchange the origin broke.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// precond's problem answer with this status.
    Problem(u16),
    /// The origin's own answer with this status, relayed.
    Relayed(u16),
    /// The origin's 200 header, then a body cut short and the connection closed.
    Cut,
}

/// Sends a request on a fresh connection and checks that the client sees `expect`; how long
/// the answer took.
#[track_caller]
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    expect: Expect,
) -> Duration {
    if let Expect::Cut = expect {
        let c = cut_exchange(addr, method, path, headers, body);
        assert_eq!(c.status, 200);
        assert_eq!(c.content_length, Some(100), "the origin's framing is kept");
        assert!(
            c.body_len < 100,
            "the body is cut short ({} bytes)",
            c.body_len
        );
        assert!(c.closed, "the connection is closed, not left hanging");
        return c.elapsed;
    }
    let (r, took) = timed(addr, method, path, headers, body);
    assert_expected(&r, expect);
    took
}

#[track_caller]
fn assert_expected(r: &Resp, expect: Expect) {
    match expect {
        Expect::Problem(status) => assert_problem(r, status, "upstream-error"),
        Expect::Relayed(status) => {
            assert_eq!(r.status, status, "{}", r.body_str());
            assert_eq!(r.body_str(), "origin broke");
            assert_ne!(r.header("content-type"), Some("application/problem+json"));
            assert_eq!(
                r.header("precond-decision"),
                None,
                "the origin's answer, not precond's"
            );
        }
        Expect::Cut => unreachable!("a cut answer is read with cut_exchange"),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------------------------

/// An origin whose `/ok` is healthy, whose GET /r answers "v1", and whose writes get `fault`.
fn origin_with_broken_writes(fault: fn(&mut TcpStream) -> Then) -> RawOrigin {
    RawOrigin::start(move |req, w| {
        if let Some(then) = healthy(req, w) {
            return then;
        }
        if req.method == "GET" {
            send(w, &reply(200, &[("ETag", "\"v1\"")], "{}"));
            return Then::Keep;
        }
        fault(w)
    })
}

/// A GET on a guard route whose origin breaks it with `fault`: `expect` within `bound`, nothing
/// learned, and the proxy keeps serving.
fn guard_broken_read(fault: fn(&mut TcpStream) -> Then, expect: Expect, bound: Duration) {
    let o = RawOrigin::start(move |req, w| healthy(req, w).unwrap_or_else(|| fault(w)));
    let p = proxy(&guard("mismatch"), o.addr);
    let took = exchange(p.addr, "GET", "/r", &[], "", expect);
    assert_within(took, bound, "GET");
    if !matches!(expect, Expect::Cut) {
        assert_eq!(current_tags(&p, "/r"), None, "nothing learned");
    }
    assert_still_serving(&p);
}

/// A conditional write on a guard route (`policy = "mismatch"`) whose origin breaks it with
/// `fault`, sent on a pooled connection: `expect` within `bound`; the write reached the origin
/// once; the store forgot the tag it believed current, and learned nothing of the answer (neither
/// a new current tag nor the named tag replaced), so a write naming another tag is then forwarded
/// rather than refused at the edge; the proxy keeps serving.
fn guard_broken_write(fault: fn(&mut TcpStream) -> Then, expect: Expect, bound: Duration) {
    let o = origin_with_broken_writes(fault);
    let p = proxy(&guard("mismatch"), o.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
    assert_eq!(current_tags(&p, "/r"), Some(vec!["\"v1\"".to_string()]));
    // While "v1" is known current, a write naming another tag is refused at the edge.
    let r = request(p.addr, "PUT", "/r", &[("If-Match", "\"v0\"")], "{}");
    assert_eq!(r.status, 412);
    assert_eq!(o.writes(), 0);
    for (n, method) in ["PUT", "PATCH", "DELETE", "POST"].into_iter().enumerate() {
        // Relearn "v1" (and warm the upstream pool: the write goes out on a reused connection).
        assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
        let took = exchange(
            p.addr,
            method,
            "/r",
            &[("If-Match", "\"v1\"")],
            "{}",
            expect,
        );
        assert_within(took, bound, method);
        settle();
        assert_eq!(
            o.writes(),
            n + 1,
            "{method} reached the origin exactly once"
        );
        assert_eq!(
            current_tags(&p, "/r"),
            None,
            "{method}: the tag believed current is forgotten"
        );
        assert!(
            !replaced_tags(&p, "/r").contains(&"\"v1\"".to_string()),
            "{method}: a broken write proves nothing replaced"
        );
    }
    // Forgotten, so no longer refused: forwarded to the origin, which breaks it again.
    let took = exchange(p.addr, "PUT", "/r", &[("If-Match", "\"v0\"")], "{}", expect);
    assert_within(took, bound, "follow-up PUT");
    settle();
    assert_eq!(o.writes(), 5, "the follow-up write was forwarded, once");
    assert_still_serving(&p);
}

/// An enforce route whose origin breaks every GET (so every probe) with `fault`, and answers
/// writes 204.
fn origin_with_broken_reads(fault: fn(&mut TcpStream) -> Then) -> RawOrigin {
    RawOrigin::start(move |req, w| {
        if let Some(then) = healthy(req, w) {
            return then;
        }
        if req.method == "GET" {
            return fault(w);
        }
        send(w, &reply(204, &[], ""));
        Then::Keep
    })
}

/// A GET on an enforce route whose origin breaks it with `fault` (precond fetches reads itself):
/// `expect` within `bound`, nothing learned, and the proxy keeps serving.
fn enforce_broken_read(fault: fn(&mut TcpStream) -> Then, expect: Expect, bound: Duration) {
    let o = origin_with_broken_reads(fault);
    let p = proxy(&enforce(""), o.addr);
    let took = exchange(p.addr, "GET", "/r", &[], "", expect);
    assert_within(took, bound, "GET");
    assert_eq!(current_tags(&p, "/r"), None, "nothing learned");
    assert_still_serving(&p);
}

/// Writes on an enforce route whose origin breaks every GET (so every probe) with `fault`: each
/// write that needs the probe gets the 503 with `Retry-After` within `bound`, a required write
/// without any precondition the 428 (no state needed), and none reaches the origin; nothing is
/// learned; the proxy keeps serving.
fn enforce_broken_probe(fault: fn(&mut TcpStream) -> Then, bound: Duration) {
    let o = origin_with_broken_reads(fault);
    let p = proxy(&enforce("require = [\"PUT\"]"), o.addr);
    let writes: [(&str, &[(&str, &str)]); 4] = [
        ("PUT", &[("If-Match", "\"s-0123\"")]),
        ("PUT", &[("If-None-Match", "*")]),
        (
            "PATCH",
            &[("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")],
        ),
        ("DELETE", &[("If-Match", "\"s-0123\"")]),
    ];
    for (method, headers) in writes {
        let (r, took) = timed(p.addr, method, "/r", headers, "{}");
        assert_state_unknown(&r);
        assert_within(took, bound, method);
    }
    let (r, took) = timed(p.addr, "PUT", "/r", &[], "{}");
    assert_problem(&r, 428, "required");
    assert_within(took, PROMPT, "PUT without a precondition");
    settle();
    assert_eq!(o.writes(), 0, "no write was forwarded unprotected");
    assert_eq!(current_tags(&p, "/r"), None, "nothing learned");
    assert_still_serving(&p);
}

/// An enforce route in front of a legacy origin (no validators) that applies every PUT to /r and
/// then breaks the exchange with `fault`: the write gets `expect` within `bound` and reached the
/// origin once; its outcome being unknown, the store forgot the synthesised tag, so a write
/// naming it probes again and gets the 412 the changed resource calls for (a lost update
/// prevented), without reaching the origin; a write waiting for the lock meanwhile is not held
/// past the broken exchange; the proxy keeps serving.
fn enforce_broken_write(fault: fn(&mut TcpStream) -> Then, expect: Expect, bound: Duration) {
    let state = Arc::new(Mutex::new("one".to_string()));
    let st = state.clone();
    let o = RawOrigin::start(move |req, w| {
        if let Some(then) = healthy(req, w) {
            return then;
        }
        if req.method == "GET" {
            let body = st.lock().unwrap().clone();
            send(w, &reply(200, &[], &body));
            return Then::Keep;
        }
        *st.lock().unwrap() = req.body.clone();
        fault(w)
    });
    let p = proxy(
        &enforce("require = [\"PUT\"]\nwrite_wait = \"10s\""),
        o.addr,
    );
    let t1 = request(p.addr, "GET", "/r", &[], "").etag();
    let (addr, tag) = (p.addr, t1.clone());
    let first = std::thread::spawn(move || {
        exchange(addr, "PUT", "/r", &[("If-Match", &tag)], "two", expect)
    });
    // Once the first write is at the origin, a second one naming the same tag queues behind it
    // for the resource's lock (or comes right after it, when the fault is immediate).
    let start = Instant::now();
    while o.writes() == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let tag = t1.clone();
    let queued =
        std::thread::spawn(move || timed(addr, "PUT", "/r", &[("If-Match", &tag)], "three"));
    let took = first.join().unwrap();
    assert_within(took, bound, "PUT");
    let (q, q_took) = queued.join().unwrap();
    settle();
    assert_eq!(o.writes(), 1, "the write reached the origin exactly once");
    assert_eq!(*state.lock().unwrap(), "two");
    // The origin applied "two": the tag the second writer names is stale.
    assert_eq!(q.status, 412, "{}", q.body_str());
    assert_within(q_took, PROMPT, "the write after the broken one");
    assert_eq!(
        o.count("GET"),
        2,
        "the store forgot the tag: the resource was probed again"
    );
    assert_eq!(request(p.addr, "GET", "/r", &[], "").body_str(), "two");
    assert_still_serving(&p);
}

/// The bound for an exchange ended by the upstream read timeout.
fn after_timeout() -> Duration {
    READ_TIMEOUT + MARGIN
}

// ---------------------------------------------------------------------------------------------
// (a) Refused connections.
// ---------------------------------------------------------------------------------------------

#[test]
fn guard_refused_connection_gets_502_problem_and_learns_nothing() {
    let o = RawOrigin::start(|req, w| healthy(req, w).unwrap_or(Then::Close));
    let route = "mode = \"guard\"\npolicy = \"mismatch\"\nscope = \"shared\"";
    let p = proxy(&with_dead_route(route, free_addr()), o.addr);
    let requests: [(&str, &[(&str, &str)]); 4] = [
        ("GET", &[]),
        ("PUT", &[("If-Match", "\"v1\"")]),
        ("PUT", &[]),
        ("DELETE", &[("If-Match", "\"v1\"")]),
    ];
    for (method, headers) in requests {
        let (r, took) = timed(p.addr, method, "/dead/r", headers, "{}");
        assert_problem(&r, 502, "upstream-error");
        assert_within(took, PROMPT, method);
    }
    assert_eq!(current_tags(&p, "/dead/r"), None);
    assert_still_serving(&p);
}

#[test]
fn enforce_refused_connection_fails_closed() {
    let o = RawOrigin::start(|req, w| healthy(req, w).unwrap_or(Then::Close));
    let route = "mode = \"enforce\"\nscope = \"shared\"\nrequire = [\"PUT\"]";
    let p = proxy(&with_dead_route(route, free_addr()), o.addr);
    // A read is fetched by precond itself: the failed fetch is a 502.
    let (r, took) = timed(p.addr, "GET", "/dead/r", &[], "");
    assert_problem(&r, 502, "upstream-error");
    assert_within(took, PROMPT, "GET");
    // Writes that need the resource's state: 503, retry shortly.
    let writes: [(&str, &[(&str, &str)]); 3] = [
        ("PUT", &[("If-Match", "\"s-0123\"")]),
        ("PUT", &[("If-None-Match", "*")]),
        ("PATCH", &[("If-Match", "\"s-0123\"")]),
    ];
    for (method, headers) in writes {
        let (r, took) = timed(p.addr, method, "/dead/r", headers, "{}");
        assert_state_unknown(&r);
        assert_within(took, PROMPT, method);
    }
    // A required write without any precondition needs no state: 428.
    let (r, took) = timed(p.addr, "PUT", "/dead/r", &[], "{}");
    assert_problem(&r, 428, "required");
    assert_within(took, PROMPT, "PUT without a precondition");
    // A write that needs no state (DELETE is not required to be conditional here) is forwarded,
    // and its failure is the proxy's 502.
    let (r, took) = timed(p.addr, "DELETE", "/dead/r", &[], "");
    assert_problem(&r, 502, "upstream-error");
    assert_within(took, PROMPT, "DELETE");
    assert_eq!(current_tags(&p, "/dead/r"), None);
    assert_still_serving(&p);
}

// ---------------------------------------------------------------------------------------------
// (b) Resets mid-response.
// ---------------------------------------------------------------------------------------------

#[test]
fn guard_read_reset_in_header_gets_502() {
    guard_broken_read(reset_in_header, Expect::Problem(502), PROMPT);
}

#[test]
fn guard_write_reset_in_header_gets_502_once_and_is_forgotten() {
    guard_broken_write(reset_in_header, Expect::Problem(502), PROMPT);
}

#[test]
fn guard_read_reset_in_body_is_cut_and_closed() {
    guard_broken_read(reset_in_body, Expect::Cut, PROMPT);
}

#[test]
fn enforce_read_reset_in_header_gets_502() {
    enforce_broken_read(reset_in_header, Expect::Problem(502), PROMPT);
}

#[test]
fn enforce_probe_reset_in_header_gets_503() {
    enforce_broken_probe(reset_in_header, PROMPT);
}

#[test]
fn enforce_read_reset_in_body_gets_502() {
    // precond buffers the body before answering a read: the client gets a problem, not a cut body.
    enforce_broken_read(reset_in_body, Expect::Problem(502), PROMPT);
}

#[test]
fn enforce_probe_reset_in_body_gets_503() {
    enforce_broken_probe(reset_in_body, PROMPT);
}

#[test]
fn enforce_write_reset_in_header_gets_502_once_and_is_forgotten() {
    enforce_broken_write(reset_in_header, Expect::Problem(502), PROMPT);
}

#[test]
fn enforce_write_reset_in_body_is_cut_once_and_is_forgotten() {
    enforce_broken_write(reset_in_untagged_body, Expect::Cut, PROMPT);
}

// ---------------------------------------------------------------------------------------------
// (c) Stalls before the response header; (d) stalls mid-body.
// ---------------------------------------------------------------------------------------------

#[test]
fn guard_read_stalled_before_header_gets_504_in_time() {
    guard_broken_read(stall_before_header, Expect::Problem(504), after_timeout());
}

#[test]
fn guard_write_stalled_before_header_gets_504_once_and_is_forgotten() {
    guard_broken_write(stall_before_header, Expect::Problem(504), after_timeout());
}

#[test]
fn guard_read_stalled_in_body_is_cut_and_closed_in_time() {
    guard_broken_read(stall_in_body, Expect::Cut, after_timeout());
}

#[test]
fn enforce_read_stalled_before_header_gets_504_in_time() {
    enforce_broken_read(stall_before_header, Expect::Problem(504), after_timeout());
}

#[test]
fn enforce_read_stalled_in_body_gets_504_in_time() {
    enforce_broken_read(stall_in_body, Expect::Problem(504), after_timeout());
}

#[test]
fn enforce_probe_stalled_before_header_gets_503_in_time() {
    enforce_broken_probe(stall_before_header, after_timeout());
}

#[test]
fn enforce_probe_stalled_in_body_gets_503_in_time() {
    enforce_broken_probe(stall_in_body, after_timeout());
}

#[test]
fn enforce_write_stalled_before_header_gets_504_once_and_is_forgotten() {
    enforce_broken_write(stall_before_header, Expect::Problem(504), after_timeout());
}

#[test]
fn enforce_write_stalled_in_body_is_cut_once_and_is_forgotten() {
    enforce_broken_write(stall_in_untagged_body, Expect::Cut, after_timeout());
}

// ---------------------------------------------------------------------------------------------
// (e) The connection closed right after the write was read.
// ---------------------------------------------------------------------------------------------

#[test]
fn guard_write_closed_unanswered_gets_502_once_and_is_forgotten() {
    guard_broken_write(close_unanswered, Expect::Problem(502), PROMPT);
}

#[test]
fn enforce_read_closed_unanswered_gets_502() {
    enforce_broken_read(close_unanswered, Expect::Problem(502), PROMPT);
}

#[test]
fn enforce_probe_closed_unanswered_gets_503() {
    enforce_broken_probe(close_unanswered, PROMPT);
}

#[test]
fn enforce_write_closed_unanswered_gets_502_once_and_is_forgotten() {
    enforce_broken_write(close_unanswered, Expect::Problem(502), PROMPT);
}

// ---------------------------------------------------------------------------------------------
// (f) Garbage and oversized response headers.
// ---------------------------------------------------------------------------------------------

#[test]
fn guard_read_answered_garbage_gets_502() {
    guard_broken_read(garbage, Expect::Problem(502), PROMPT);
}

#[test]
fn guard_write_answered_garbage_gets_502_once_and_is_forgotten() {
    guard_broken_write(garbage, Expect::Problem(502), PROMPT);
}

#[test]
fn guard_read_with_oversized_header_gets_502() {
    guard_broken_read(oversized_header, Expect::Problem(502), PROMPT);
}

#[test]
fn guard_write_with_oversized_header_gets_502_once_and_is_forgotten() {
    guard_broken_write(oversized_header, Expect::Problem(502), PROMPT);
}

#[test]
fn enforce_read_answered_garbage_gets_502() {
    enforce_broken_read(garbage, Expect::Problem(502), PROMPT);
}

#[test]
fn enforce_probe_answered_garbage_gets_503() {
    enforce_broken_probe(garbage, PROMPT);
}

#[test]
fn enforce_read_with_oversized_header_gets_502() {
    enforce_broken_read(oversized_header, Expect::Problem(502), PROMPT);
}

#[test]
fn enforce_probe_with_oversized_header_gets_503() {
    enforce_broken_probe(oversized_header, PROMPT);
}

#[test]
fn enforce_write_answered_garbage_gets_502_once_and_is_forgotten() {
    enforce_broken_write(garbage, Expect::Problem(502), PROMPT);
}

#[test]
fn enforce_write_with_oversized_header_gets_502_once_and_is_forgotten() {
    enforce_broken_write(oversized_header, Expect::Problem(502), PROMPT);
}

// ---------------------------------------------------------------------------------------------
// (g) 5xx to writes (and to probes).
// ---------------------------------------------------------------------------------------------

#[test]
fn guard_write_answered_5xx_is_relayed_once_and_teaches_nothing() {
    guard_broken_write(answer_5xx::<500>, Expect::Relayed(500), PROMPT);
    guard_broken_write(answer_5xx::<502>, Expect::Relayed(502), PROMPT);
    guard_broken_write(answer_5xx::<503>, Expect::Relayed(503), PROMPT);
    guard_broken_write(answer_5xx::<504>, Expect::Relayed(504), PROMPT);
}

#[test]
fn enforce_probe_answered_5xx_gets_503() {
    enforce_broken_probe(answer_5xx::<500>, PROMPT);
    enforce_broken_probe(answer_5xx::<502>, PROMPT);
    enforce_broken_probe(answer_5xx::<503>, PROMPT);
    enforce_broken_probe(answer_5xx::<504>, PROMPT);
}

#[test]
fn enforce_read_answered_5xx_is_relayed() {
    enforce_broken_read(answer_5xx::<500>, Expect::Relayed(500), PROMPT);
    enforce_broken_read(answer_5xx::<503>, Expect::Relayed(503), PROMPT);
}

#[test]
fn enforce_write_answered_5xx_is_relayed_once_and_is_forgotten() {
    enforce_broken_write(answer_5xx::<500>, Expect::Relayed(500), PROMPT);
    enforce_broken_write(answer_5xx::<503>, Expect::Relayed(503), PROMPT);
}

// ---------------------------------------------------------------------------------------------
// Beyond one exchange: the fence, the lock, a large but valid header.
// ---------------------------------------------------------------------------------------------

/// A write whose answer was cut short after a complete header: the client sees the cut (the
/// origin's status was already relayed), the write reached the origin once, and the proxy keeps
/// serving.
fn guard_write_cut(fault: fn(&mut TcpStream) -> Then, bound: Duration) {
    let o = origin_with_broken_writes(fault);
    let p = proxy(&guard("superseded"), o.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
    let took = exchange(
        p.addr,
        "PUT",
        "/r",
        &[("If-Match", "\"v1\"")],
        "{}",
        Expect::Cut,
    );
    assert_within(took, bound, "PUT");
    settle();
    assert_eq!(o.writes(), 1, "the write reached the origin exactly once");
    assert_still_serving(&p);
}

#[test]
fn guard_write_reset_in_body_is_cut_once() {
    guard_write_cut(reset_in_body, PROMPT);
}

#[test]
fn guard_write_stalled_in_body_is_cut_once_in_time() {
    guard_write_cut(stall_in_body, after_timeout());
}

/// A write waiting at the fence for a write naming the same tag is let go when that write's
/// exchange breaks (here: times out), not held until `fence_wait`, and is forwarded, not refused.
#[test]
fn guard_fenced_write_goes_on_when_the_write_ahead_stalls() {
    let o = origin_with_broken_writes(stall_before_header);
    let text = guard("superseded").replace(
        "scope = \"shared\"",
        "scope = \"shared\"\nfence_wait = \"10s\"",
    );
    let p = proxy(&text, o.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
    let addr = p.addr;
    let first =
        std::thread::spawn(move || timed(addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "a"));
    let start = Instant::now();
    while o.writes() == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (r, took) = timed(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "b");
    assert_problem(&r, 504, "upstream-error");
    assert_within(
        took,
        READ_TIMEOUT * 2 + MARGIN,
        "the write behind the stalled one",
    );
    let (r, took) = first.join().unwrap();
    assert_problem(&r, 504, "upstream-error");
    assert_within(took, after_timeout(), "the stalled write");
    settle();
    assert_eq!(o.writes(), 2, "each write reached the origin once");
    assert_still_serving(&p);
}

/// 200 KB of response header is within what the proxy reads (1 MB): relayed whole, on both modes.
#[test]
fn a_200_kb_response_header_is_relayed_whole() {
    for mode in ["guard", "enforce"] {
        let o = RawOrigin::start(|req, w| {
            if let Some(then) = healthy(req, w) {
                return then;
            }
            if req.method == "GET" {
                send(w, &huge_header(200 << 10));
            } else {
                send(w, &reply(204, &[("ETag", "\"big2\"")], ""));
            }
            Then::Keep
        });
        let p = proxy(
            &config(&format!("mode = \"{mode}\"\nscope = \"shared\"")),
            o.addr,
        );
        let (r, took) = timed(p.addr, "GET", "/r", &[], "");
        assert_eq!(r.status, 200, "{mode}: {}", r.body_str());
        assert_eq!(r.body_str(), "big", "{mode}");
        assert_eq!(r.etag(), "\"big\"", "{mode}");
        assert_eq!(
            r.header("x-padding").map(str::len),
            Some(200 << 10),
            "{mode}"
        );
        assert_within(took, PROMPT, mode);
        let r = request(p.addr, "PUT", "/r", &[("If-Match", "\"big\"")], "{}");
        assert_eq!(r.status, 204, "{mode}: {}", r.body_str());
        assert_eq!(o.writes(), 1, "{mode}");
        assert_still_serving(&p);
    }
}

/// An enforce read larger than `synthesize_max_body` is relayed while it is read: when the origin
/// breaks it mid-body, the client sees the cut and the connection closed, in time.
#[test]
fn enforce_large_read_broken_mid_body_is_cut_and_closed_in_time() {
    for (fault, bound) in [
        (reset_in_body as fn(&mut TcpStream) -> Then, PROMPT),
        (stall_in_body, after_timeout()),
    ] {
        let o = RawOrigin::start(move |req, w| healthy(req, w).unwrap_or_else(|| fault(w)));
        let p = proxy(&enforce("synthesize_max_body = 4"), o.addr);
        let took = exchange(p.addr, "GET", "/r", &[], "", Expect::Cut);
        assert_within(took, bound, "GET");
        assert_still_serving(&p);
    }
}

/// While a resource's current tag is unknown after tags were seen (here: a write broke), guard
/// lets one conditional write at a time reach the origin (single-flight); when that write's own
/// exchange breaks, the writes waiting behind it are let go (not held until `uncertain_wait`) and
/// forwarded, not refused.
#[test]
fn guard_single_flight_goes_on_when_the_write_in_flight_stalls() {
    let o = RawOrigin::start(|req, w| {
        if let Some(then) = healthy(req, w) {
            return then;
        }
        match (req.method.as_str(), req.body.as_str()) {
            ("GET", _) => send(w, &reply(200, &[("ETag", "\"v1\"")], "{}")),
            (_, "first") => send(w, &reply(200, &[("ETag", "\"v2\"")], "")),
            _ => return Then::Stall,
        }
        Then::Keep
    });
    let text = guard("superseded").replace(
        "scope = \"shared\"",
        "scope = \"shared\"\nuncertain_wait = \"10s\"",
    );
    let p = proxy(&text, o.addr);
    assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
    let r = request(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "first");
    assert_eq!(r.status, 200);
    assert_eq!(current_tags(&p, "/r"), Some(vec!["\"v2\"".to_string()]));
    // A write naming v2 breaks: v2 is forgotten, v1 is still known replaced.
    let (r, _) = timed(p.addr, "PUT", "/r", &[("If-Match", "\"v2\"")], "x");
    assert_problem(&r, 504, "upstream-error");
    settle(); // see `guard_store_forgets_before_the_client_hears_of_a_broken_write`
    assert_eq!(current_tags(&p, "/r"), None);
    assert_eq!(replaced_tags(&p, "/r"), vec!["\"v1\"".to_string()]);
    // One write holds the single-flight and stalls; another, naming another tag, waits for it.
    let addr = p.addr;
    let first =
        std::thread::spawn(move || timed(addr, "PUT", "/r", &[("If-Match", "\"v2\"")], "a"));
    let start = Instant::now();
    while o.writes() < 3 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (r, took) = timed(p.addr, "PUT", "/r", &[("If-Match", "\"v3\"")], "b");
    assert_problem(&r, 504, "upstream-error");
    assert_within(
        took,
        READ_TIMEOUT * 2 + MARGIN,
        "the write behind the stalled one",
    );
    let (r, took) = first.join().unwrap();
    assert_problem(&r, 504, "upstream-error");
    assert_within(took, after_timeout(), "the stalled write");
    settle();
    assert_eq!(o.writes(), 4, "each write reached the origin once");
    // The replaced tag is still refused at the edge.
    let r = request(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "c");
    assert_eq!(r.status, 412);
    assert_eq!(o.writes(), 4);
    assert_still_serving(&p);
}

/// Enforce reads and probes after an interim 103: the final answer is what counts.
#[test]
fn enforce_fetch_skips_an_interim_103() {
    let o = origin_with_broken_reads(early_hints_then_200);
    let p = proxy(&enforce(""), o.addr);
    // A GET-less conditional write: the probe shows "one", whose tag is not the one named.
    let (r, took) = timed(p.addr, "PUT", "/r", &[("If-Match", "\"s-stale\"")], "{}");
    assert_eq!(r.status, 412, "{}", r.body_str());
    assert_within(took, PROMPT, "probed PUT");
    let (r, took) = timed(p.addr, "GET", "/r", &[], "");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body_str(), "one");
    assert!(r.etag().starts_with("\"s-"), "a synthesised tag");
    assert_within(took, PROMPT, "GET");
    let r = request(p.addr, "PUT", "/r", &[("If-Match", &r.etag())], "{}");
    assert_eq!(r.status, 204, "{}", r.body_str());
    assert_eq!(o.writes(), 1);
    assert_still_serving(&p);
}

/// On a guard route an interim 103 is relayed, and the store learns from the final answer.
#[test]
fn guard_relays_an_interim_103_and_learns_from_the_final_answer() {
    let o = RawOrigin::start(|req, w| {
        if let Some(then) = healthy(req, w) {
            return then;
        }
        let mut v = EARLY_HINTS.to_vec();
        if req.method == "GET" {
            v.extend_from_slice(&reply(200, &[("ETag", "\"v1\"")], "{}"));
        } else {
            v.extend_from_slice(&reply(204, &[("ETag", "\"v2\"")], ""));
        }
        send(w, &v);
        Then::Keep
    });
    let p = proxy(&guard("superseded"), o.addr);
    let mut c = Conn::open(p.addr);
    c.send("GET", "/r", &[], "");
    let interim = c.read_response(false);
    assert_eq!(interim.status, 103);
    assert_eq!(interim.header("link"), Some("</s.css>; rel=preload"));
    let r = c.read_response(false);
    assert_eq!((r.status, r.etag().as_str()), (200, "\"v1\""));
    assert_eq!(current_tags(&p, "/r"), Some(vec!["\"v1\"".to_string()]));
    let (r, _) = timed(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "{}");
    assert_eq!(r.status, 204);
    assert_eq!(current_tags(&p, "/r"), Some(vec!["\"v2\"".to_string()]));
    assert_eq!(replaced_tags(&p, "/r"), vec!["\"v1\"".to_string()]);
    let r = request(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "{}");
    assert_eq!(r.status, 412, "v1 is known replaced");
    assert_eq!(o.writes(), 1);
}

/// An exchange that fails after an interim 103 was relayed still gets a final answer: the 1xx
/// committed no status, so the client is owed the problem.
#[test]
fn guard_read_interim_then_reset_gets_502_problem() {
    guard_broken_read(interim_then_reset, Expect::Problem(502), PROMPT);
}

#[test]
fn guard_write_interim_then_stall_gets_504_problem_once_and_is_forgotten() {
    guard_broken_write(interim_then_stall, Expect::Problem(504), after_timeout());
}

#[test]
fn enforce_write_interim_then_stall_gets_504_problem_once_and_is_forgotten() {
    enforce_broken_write(interim_then_stall, Expect::Problem(504), after_timeout());
}

/// The store forgets what a broken write may have invalidated before the client hears of the
/// failure: otherwise a write sent right after the 502 (by anyone) is decided on the old belief,
/// e.g. refused 412 under `policy = "mismatch"` for naming a tag other than the one the broken
/// write may have replaced. Racy by nature: repeated, so that a window shows up.
#[test]
fn guard_store_forgets_before_the_client_hears_of_a_broken_write() {
    for fault in [
        reset_in_header as fn(&mut TcpStream) -> Then,
        close_unanswered,
    ] {
        let o = origin_with_broken_writes(fault);
        let p = proxy(&guard("mismatch"), o.addr);
        let mut stale = 0;
        for _ in 0..50 {
            assert_eq!(request(p.addr, "GET", "/r", &[], "").etag(), "\"v1\"");
            let (r, _) = timed(p.addr, "PUT", "/r", &[("If-Match", "\"v1\"")], "{}");
            assert_problem(&r, 502, "upstream-error");
            if current_tags(&p, "/r").is_some() {
                stale += 1;
            }
        }
        assert_eq!(
            stale, 0,
            "the 502 was answered before the store forgot, {stale} times in 50"
        );
    }
}
