//! Test support: a real precond on loopback, real origins, and a raw-socket HTTP/1.1 client.
//!
//! Everything listens on 127.0.0.1 with an ephemeral port and stops when dropped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use precond::app::{spawn, Running};

mod ca;
#[allow(unused_imports)] // Used by the binaries that need certificates.
pub use ca::Ca;
use precond::config;

/// A free loopback port (bound then released), never one this process was given before: two
/// calls in a row may otherwise get the same port from the system (say, an instance's data and
/// admin addresses), and then one of its listeners could not bind.
pub fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        if GIVEN.lock().unwrap().insert(addr.port()) {
            return addr;
        }
    }
}

/// Starts precond with a config where `{listen}` and `{origin}` are filled in.
pub fn proxy(config_text: &str, origin: SocketAddr) -> Running {
    for _ in 0..5 {
        let listen = free_addr();
        let text = config_text
            .replace("{listen}", &listen.to_string())
            .replace("{origin}", &origin.to_string());
        let c = config::parse(&text).expect("test config is valid");
        if let Ok(r) = spawn(c) {
            return r;
        }
    }
    panic!("could not start precond");
}

/// One route in front of `{origin}`: `route` holds the route's lines after `upstream`.
pub fn route_config(route: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{listen}}"]
threads = 2
grace_period = "0s"
graceful_shutdown_timeout = "1s"

[[upstream]]
name = "origin"
servers = ["{{origin}}"]
connect_timeout = "1s"
read_timeout = "5s"

[[route]]
upstream = "origin"
{route}
"#
    )
}

/// A guard route in front of `{origin}` with the given policy.
pub fn guard_config(policy: &str) -> String {
    route_config(&format!("mode = \"guard\"\npolicy = \"{policy}\""))
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn etag(&self) -> String {
        self.header("etag")
            .expect("response has an ETag")
            .to_string()
    }
}

/// One client connection, kept open across requests.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            reader: BufReader::new(s),
        }
    }

    /// The socket, for tests that write and read it by hand.
    pub fn into_stream(self) -> TcpStream {
        self.reader.into_inner()
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Sends a request with the given extra header lines and body.
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test.local\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || matches!(method, "PUT" | "PATCH" | "POST") {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.write_raw(req.as_bytes());
    }

    /// Reads one response (Content-Length framed, chunked, or until close). `head` means the
    /// request was HEAD (no body follows).
    pub fn read_response(&mut self, head: bool) -> Resp {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("bad status line {line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.reader.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if head || status == 204 || status == 304 || status < 200 {
            return resp;
        }
        if let Some(n) = resp.header("content-length") {
            let mut body = vec![0; n.parse().unwrap()];
            self.reader.read_exact(&mut body).unwrap();
            resp.body = body;
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                resp.body.extend_from_slice(&chunk[..n]);
            }
        } else {
            self.reader.read_to_end(&mut resp.body).unwrap();
        }
        resp
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Resp {
        self.send(method, path, headers, body);
        self.read_response(method == "HEAD")
    }

    /// Whether the peer has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// One request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    Conn::open(addr).request(method, path, headers, body)
}

/// What a scripted origin sees of a request.
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

/// A scripted origin's answer: status, headers, body.
pub type Reply = (u16, Vec<(&'static str, String)>, String);
type Handler =
    Arc<dyn Fn(SeenRequest) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// A hyper origin whose answers a test scripts, with connection and request counters.
pub struct ScriptedOrigin {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedOrigin {
    pub fn start<F, Fut>(handler: F) -> ScriptedOrigin
    where
        F: Fn(SeenRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |r| Box::pin(handler(r)));
        let std_l = StdListener::bind("127.0.0.1:0").unwrap();
        std_l.set_nonblocking(true).unwrap();
        let addr = std_l.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (c2, r2) = (connections.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(std_l).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        Ok((s, _)) = l.accept() => {
                            c2.fetch_add(1, Ordering::SeqCst);
                            let (h, r2) = (handler.clone(), r2.clone());
                            tokio::spawn(async move {
                                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                                    let (h, r2) = (h.clone(), r2.clone());
                                    async move {
                                        r2.fetch_add(1, Ordering::SeqCst);
                                        let (parts, body) = req.into_parts();
                                        let _ = body.collect().await;
                                        let seen = SeenRequest {
                                            method: parts.method.to_string(),
                                            path: parts.uri.path().to_string(),
                                            headers: parts.headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect(),
                                        };
                                        let (status, headers, body) = h(seen).await;
                                        let mut b = hyper::Response::builder().status(status);
                                        for (k, v) in headers {
                                            b = b.header(k, v);
                                        }
                                        Ok::<_, Infallible>(b.body(Full::new(Bytes::from(body))).unwrap())
                                    }
                                });
                                let _ = http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
                            });
                        }
                    }
                }
            });
        });
        ScriptedOrigin {
            addr,
            connections,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A temporary directory (`precond-WHAT-PID-N` under the system's), removed with everything in
/// it when dropped: tests leave no files behind.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "precond-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file `name` holding `contents` in cargo's scratch directory for integration tests
/// (`target/tmp`, reused by every run: nothing piles up in /tmp). It is written whole under
/// another name and renamed, so a precond reading it meanwhile never sees half a file; a name
/// must always be given the same contents.
pub fn scratch_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("precond-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    let part = dir.join(format!(
        "{name}.{}.{:?}.part",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&part, contents).unwrap();
    std::fs::rename(&part, &file).unwrap();
    file
}

/// A shared-store client on `url`, for tests that call it directly (`ca`: the PEM CAs of a
/// `rediss://` server). Each call waits at most 2 s: these tests are about the store's rules,
/// not timing (a loaded CI machine once took more than 500 ms to connect). Nothing connects
/// before the first call.
pub fn store_client(
    url: String,
    ca: Option<Vec<u8>>,
    lease_ttl: Duration,
    state_ttl: Duration,
) -> Arc<precond::store::redis::Redis> {
    let settings = precond::store::redis::RedisSettings {
        url,
        ca,
        timeout: Duration::from_secs(2),
        lease_ttl,
        state_ttl,
    };
    precond::store::redis::Redis::new(settings, [7; 32]).unwrap()
}

/// Runs `f` to its end on a runtime of its own (one thread).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A secret file every instance of one test binary shares.
pub fn shared_secret_file() -> std::path::PathBuf {
    scratch_file("shared-secret", "a-secret-every-instance-shares-0123\n")
}

/// An instance with one route (`mode`) in front of `origin`, `store` lines as its `[store]`
/// (the backend), and the shared secret: what several instances of a tier run.
pub fn store_instance(origin: SocketAddr, mode: &str, store: &str) -> Running {
    let text = route_config(&format!("mode = \"{mode}\"")).replace(
        "[[upstream]]",
        &format!(
            "[store]\n{store}\n\n[enforce]\ntag_secret_file = \"{}\"\n\n[[upstream]]",
            shared_secret_file().display()
        ),
    );
    proxy(&text, origin)
}

/// A `redis-server` on a loopback port, stopped when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = free_addr().port();
        let mut r = RedisServer { child: None, port };
        r.restart();
        r
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("redis-server is missing: run scripts/setup (it installs the Debian package)");
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One command (arguments without spaces) on a fresh connection: the reply as RESP text
    /// (`:1500`, `*1` then `$N` and the element, `$-1` for nil…), its lines joined by `\n`.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("redis-server is up");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        req.push_str("QUIT\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let reply = out.strip_suffix("+OK\r\n").unwrap_or(&out);
        reply.trim_end().replace("\r\n", "\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `precond run --config FILE` as a child process; killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the precond binary on `file` and waits until every address in `listening` accepts.
pub fn run_precond(file: &std::path::Path, listening: &[SocketAddr]) -> Proc {
    let p = Proc(
        Command::new(env!("CARGO_BIN_EXE_precond"))
            .args(["run", "--config"])
            .arg(file)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while listening.iter().any(|a| TcpStream::connect(a).is_err()) {
        assert!(Instant::now() < deadline, "precond did not start");
        std::thread::sleep(Duration::from_millis(25));
    }
    p
}
