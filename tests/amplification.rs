//! No amplification (issue 10, item 4): what a client sends is repeated in answers and logs only
//! bounded, once, and without its query string (tokens) unless `log.log_query`; a refused write
//! with a small body keeps the connection for the next (pipelined) request.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use precond::demo::{DemoOrigin, Tags};

fn demo() -> DemoOrigin {
    DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap()
}

/// Makes the current tag of `path` (a demo item) replaced and returns it.
fn replaced_tag(p: std::net::SocketAddr, path: &str) -> String {
    let old = request(p, "GET", path, &[], "").etag();
    let r = request(p, "PUT", path, &[("If-Match", &old)], "{}");
    assert_eq!(r.status, 200);
    old
}

/// A huge `If-Match`: one replaced tag followed by ~0.9 MB of other tags.
fn huge_if_match(old: &str) -> String {
    let mut v = old.to_string();
    for i in 0..60_000 {
        v.push_str(&format!(", \"x{i:09}\""));
    }
    v
}

#[test]
fn a_huge_precondition_gives_a_small_412_that_echoes_it_once_capped() {
    let o = demo();
    let p = proxy(&guard_config("mismatch"), o.addr);
    let old = replaced_tag(p.addr, "/items/1");
    let big = huge_if_match(&old);
    assert!(big.len() > 800_000);
    let before = o.stats.requests.load(Ordering::SeqCst);
    let r = request(p.addr, "PUT", "/items/1", &[("If-Match", &big)], "{}");
    assert_eq!(r.status, 412, "{}", r.body_str());
    assert_eq!(o.stats.requests.load(Ordering::SeqCst), before);
    let size = r.body.len()
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>();
    assert!(
        size < 4096,
        "a {size}-byte answer to a {}-byte field",
        big.len()
    );
    let body = r.json();
    let sent = body["sent"].as_array().unwrap();
    assert!(sent.len() <= 4, "{sent:?}");
    assert_eq!(body["sent_truncated"], true);
    assert!(
        !body["detail"].as_str().unwrap().contains("\"x0000"),
        "the field is echoed once, in `sent`, not in `detail` too"
    );
}

#[test]
fn query_strings_stay_out_of_problem_bodies_unless_asked() {
    for (log_query, shown) in [(false, false), (true, true)] {
        let o = demo();
        let text = guard_config("superseded").replace(
            "[[upstream]]",
            &format!("[log]\nlog_query = {log_query}\n\n[[upstream]]"),
        );
        let p = proxy(&text, o.addr);
        let old = request(p.addr, "GET", "/items/1?token=SECRET123", &[], "").etag();
        let r = request(
            p.addr,
            "PUT",
            "/items/1?token=SECRET123",
            &[("If-Match", &old)],
            "{}",
        );
        assert_eq!(r.status, 200);
        let r = request(
            p.addr,
            "PUT",
            "/items/1?token=SECRET123",
            &[("If-Match", &old)],
            "{}",
        );
        assert_eq!(r.status, 412);
        assert_eq!(
            r.body_str().contains("SECRET123"),
            shown,
            "{}",
            r.body_str()
        );
        assert!(r.body_str().contains("/items/1?"), "{}", r.body_str());
    }
}

#[test]
fn a_refused_write_with_a_drained_body_answers_the_pipelined_request_too() {
    let o = demo();
    let p = proxy(&guard_config("superseded"), o.addr);
    let old = replaced_tag(p.addr, "/items/1");
    let mut c = Conn::open(p.addr);
    let body = r#"{"stock":1234}"#;
    c.write_raw(
        format!(
            "PUT /items/1 HTTP/1.1\r\nHost: test.local\r\nIf-Match: {old}\r\nContent-Length: {}\r\n\r\n{body}\
             GET /items/1 HTTP/1.1\r\nHost: test.local\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let refused = c.read_response(false);
    assert_eq!(refused.status, 412);
    let next = c.read_response(false);
    assert_eq!(
        next.status, 200,
        "the pipelined GET is answered on the same connection"
    );
}

/// Sends a write of `declared` body bytes (the first `sent` of them, in chunks, as a client
/// streaming an upload does) and then reads the answer: what a client that writes its whole body
/// before reading sees. Returns how the upload ended and the answer's head (status line and
/// headers), or the error that ended the read.
fn upload_then_read(
    addr: std::net::SocketAddr,
    head: &str,
    sent: usize,
) -> (std::io::Result<()>, std::io::Result<String>) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut upload = Ok(());
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        if let Err(e) = s.write_all(&chunk[..n]) {
            upload = Err(e);
            break;
        }
        left -= n;
    }
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer).map(|_| {
        let text = String::from_utf8_lossy(&answer);
        text.split("\r\n\r\n").next().unwrap_or("").to_string()
    });
    (upload, read)
}

#[test]
fn a_refused_large_upload_gets_its_412_through_a_lingering_close() {
    // 32 MiB declared and sent (more than the socket buffers of both ends hold): without a
    // lingering close precond closes with the body unread, the kernel resets the connection, and
    // the client's upload fails before it ever reads the 412.
    let o = demo();
    let p = proxy(&guard_config("superseded"), o.addr);
    let old = replaced_tag(p.addr, "/items/1");
    let before = o.stats.requests.load(Ordering::SeqCst);
    let size = 32 << 20;
    let head = format!(
        "PUT /items/1 HTTP/1.1\r\nHost: test.local\r\nIf-Match: {old}\r\nContent-Length: {size}\r\n\r\n"
    );
    let (upload, answer) = upload_then_read(p.addr, &head, size);
    assert!(
        upload.is_ok(),
        "the upload was cut off by a reset: {upload:?}"
    );
    let answer = answer.expect("the 412 is read after the upload");
    assert!(answer.starts_with("HTTP/1.1 412"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(o.stats.requests.load(Ordering::SeqCst), before);

    // The same for a chunked upload.
    let head = format!(
        "PUT /items/1 HTTP/1.1\r\nHost: test.local\r\nIf-Match: {old}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let chunk = format!("10000\r\n{}\r\n", "y".repeat(0x10000));
    for _ in 0..512 {
        s.write_all(chunk.as_bytes())
            .expect("the chunked upload was cut off by a reset");
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 412"));
}

#[test]
fn a_client_that_keeps_sending_is_not_waited_for_past_linger_timeout() {
    let o = demo();
    let text = guard_config("superseded").replace(
        "[[upstream]]",
        "[edge]\nlinger_timeout = \"300ms\"\n\n[[upstream]]",
    );
    let p = proxy(&text, o.addr);
    let old = replaced_tag(p.addr, "/items/1");
    // Declares 1 GiB and trickles it: the 412 comes at once, and precond closes the
    // connection once linger_timeout has passed, long before the body could be complete.
    let head = format!(
        "PUT /items/1 HTTP/1.1\r\nHost: test.local\r\nIf-Match: {old}\r\nContent-Length: 1073741824\r\n\r\n"
    );
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let start = Instant::now();
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(10) {
        if s.write_all(b"z").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(closed, "precond kept reading a trickled body for 10 s");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        start.elapsed()
    );
}

/// The precond binary, run as an operator would, with its log captured.
struct Binary {
    child: Child,
    addr: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Binary {
    fn start(origin: std::net::SocketAddr) -> Binary {
        let dir = std::env::temp_dir().join(format!("precond-amp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = free_addr();
        let text = guard_config("mismatch")
            .replace("{listen}", &addr.to_string())
            .replace("{origin}", &origin.to_string());
        let file = dir.join("precond.toml");
        std::fs::write(&file, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_precond"))
            .args(["run", "--config"])
            .arg(&file)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("PRECOND_TAG_SECRET", "0123456789abcdef0123456789abcdef")
            // The log goes to standard output.
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "precond did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Binary { child, addr, dir }
    }

    /// Stops the process and returns everything it logged.
    fn log(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }
}

#[test]
fn log_lines_stay_small_and_keep_tokens_out() {
    let o = demo();
    let b = Binary::start(o.addr);
    let path = format!("/items/1?token=SECRET123&pad={}", "p".repeat(300));
    let old = replaced_tag(b.addr, &path);
    let big = huge_if_match(&old);
    let r = request(b.addr, "PUT", &path, &[("If-Match", &big)], "{}");
    assert_eq!(r.status, 412);
    let log = b.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused at the edge"))
        .collect();
    assert_eq!(refused.len(), 1, "{}", &log[..log.len().min(3000)]);
    assert!(
        refused[0].len() < 2048,
        "a {}-byte log line",
        refused[0].len()
    );
    assert!(!log.contains("SECRET123"), "the query's token was logged");
    assert!(
        log.len() < 16 * 1024,
        "{} bytes logged for a handful of requests",
        log.len()
    );
}
