//! The load-balancer tier (issue 11, items 2 and 3): the shipped balancer configurations
//! (`deploy/haproxy.cfg`, `deploy/nginx-lb.conf`) checked by the real tools, and a real tier run
//! through them: one legacy origin without validators, two precond enforce instances (the binary,
//! sharing one deployment secret, each with an admin listener), and HAProxy or nginx in front,
//! running the shipped file with only addresses, ports, paths (and, for HAProxy, check
//! intervals) substituted.
//!
//! Measured with a lost-update probe like tests/race.rs (8 clients × 30 read-modify-write updates
//! of one document), where every update appends its own id to the document: an update the client
//! saw succeed and whose id is missing at the end was lost; an update whose client saw an error
//! has an unknown outcome (its id may or may not be there).
//!
//! With the shared store (issue 12: `[store] backend = "redis"`, a real `redis-server` on a
//! loopback port), the same probe through HAProxy with `balance roundrobin`; and what a killed
//! instance's lease does to the next writer, against an origin whose writes are slow.
//!
//! HAProxy, nginx and redis-server must be installed (`scripts/setup` installs them;
//! `scripts/test` runs it).

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{free_addr, RedisServer, Resp, TempDir};
use precond::demo::{DemoOrigin, Tags};

const CLIENTS: usize = 8;
const UPDATES: u64 = 30;
/// The deployment secret every instance of the tier shares.
const SECRET: &str = "tier-test-secret-0123456789abcdef";

/// The tier tests start several processes each and measure races: one at a time.
static ONE_TIER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_TIER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Tools, files and processes.

/// The path of a system tool (also looked for in the sbin directories, which a user's PATH may
/// lack); fails the test when it is missing.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(PathBuf::from)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for dir in dirs {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed. The tier tests run the real HAProxy and nginx: run \
         scripts/setup (it installs haproxy and nginx), then `cargo test --test tier`"
    );
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn shipped(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `text` with the one occurrence of `from` replaced by `to`: a shipped file that no longer
/// has exactly one `from` fails the test rather than being run unsubstituted.
fn swap(text: &str, from: &str, to: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(
        n, 1,
        "expected `{from}` once in the shipped config, found {n}"
    );
    text.replace(from, to)
}

/// A child process, stopped when dropped; its output goes to `log`.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Stop with SIGTERM first (nginx: the master stops its workers), SIGKILL otherwise.
    term_first: bool,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf, term_first: bool) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
            term_first,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the process's output unless it is still running.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }

    fn kill(&mut self) {
        if self.term_first {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `f` holds, at most `within`.
fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// A client that reports failures instead of panicking: during a failover, connections break.

/// One request on a fresh connection (`Connection: close`); `Err` when the connection fails or
/// breaks before a whole response arrived.
fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Resp, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: tier.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "PUT" | "PATCH" | "POST") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    parse(&raw).ok_or_else(|| format!("incomplete response ({} bytes)", raw.len()))
}

fn parse(raw: &[u8]) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut at = 0;
        loop {
            let line_end = at + rest[at..].windows(2).position(|w| w == b"\r\n")?;
            let size = std::str::from_utf8(&rest[at..line_end]).ok()?;
            let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if n == 0 {
                break;
            }
            resp.body.extend_from_slice(rest.get(at..at + n)?);
            at += n + 2;
        }
    } else if let Some(n) = resp.header("content-length") {
        let n: usize = n.parse().ok()?;
        resp.body = rest.get(..n)?.to_vec();
    } else {
        resp.body = rest.to_vec();
    }
    Some(resp)
}

// ---------------------------------------------------------------------------------------------
// The tier's parts.

/// A precond binary in enforce mode in front of `origin`, with an admin listener (and, with
/// [`Instance::start_with`], a `[store]` section).
struct Instance {
    data: SocketAddr,
    admin: SocketAddr,
    proc: Proc,
    _dir: TempDir,
}

impl Instance {
    /// With `store` as the lines of a `[store]` section (none when empty).
    fn start_with(origin: SocketAddr, store: &str) -> Instance {
        Instance::start_tuned(origin, store, "read_timeout = \"5s\"", "")
    }

    /// With `upstream` lines (timeouts) and `route` lines added to the config.
    fn start_tuned(origin: SocketAddr, store: &str, upstream: &str, route: &str) -> Instance {
        let dir = TempDir::new("precond");
        let (data, admin) = (free_addr(), free_addr());
        let store = if store.is_empty() {
            String::new()
        } else {
            format!("[store]\n{store}\n")
        };
        let config = format!(
            r#"
{store}
[server]
listen = ["{data}"]
threads = 2
grace_period = "0s"
graceful_shutdown_timeout = "1s"

[admin]
listen = "{admin}"

[[upstream]]
name = "origin"
servers = ["{origin}"]
connect_timeout = "1s"
{upstream}

[[route]]
path_prefix = "/"
upstream = "origin"
mode = "enforce"
{route}
"#
        );
        let file = dir.join("precond.toml");
        std::fs::write(&file, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_precond"));
        cmd.args(["run", "--config"])
            .arg(&file)
            .env("PRECOND_TAG_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1");
        let mut proc = Proc::spawn("precond", &mut cmd, dir.join("precond.log"), false);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            proc.assert_alive();
            if send(admin, "GET", "/readyz", &[], "").is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "precond never became ready");
            thread::sleep(Duration::from_millis(50));
        }
        Instance {
            data,
            admin,
            proc,
            _dir: dir,
        }
    }
}

/// One origin and two instances.
struct Tier {
    origin: DemoOrigin,
    instances: [Instance; 2],
}

impl Tier {
    fn start() -> Tier {
        Tier::start_with("")
    }

    /// With `store` as each instance's `[store]` lines.
    fn start_with(store: &str) -> Tier {
        let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::None, "").unwrap();
        let instances = [
            Instance::start_with(origin.addr, store),
            Instance::start_with(origin.addr, store),
        ];
        Tier { origin, instances }
    }
    fn origin_writes(&self) -> u64 {
        self.origin.stats.writes.load(Ordering::SeqCst)
    }
}

/// HAProxy running `deploy/haproxy.cfg` in the foreground.
struct Haproxy {
    addr: SocketAddr,
    socket: PathBuf,
    proc: Proc,
    _dir: TempDir,
}

/// The shipped file's affinity lines (the baseline replaces them with `balance roundrobin`).
const AFFINITY: &str = "    balance uri path-only\n";
const HASH_TYPE: &str = "    hash-type consistent\n";

impl Haproxy {
    /// The shipped file with the tier's addresses; `affinity = false` puts `balance roundrobin`
    /// in place of the hash. The check intervals are shortened (2s → 200ms) to keep the test
    /// short; everything else is as shipped.
    fn start(tier: &Tier, affinity: bool) -> Haproxy {
        let haproxy = tool("haproxy");
        let dir = TempDir::new("haproxy");
        let addr = free_addr();
        let socket = dir.join("admin.sock");
        let [a, b] = &tier.instances;
        let mut text = shipped("deploy/haproxy.cfg");
        text = swap(&text, "bind :80\n", &format!("bind {addr}\n"));
        text = swap(&text, "127.0.0.1:8081 ", &format!("{} ", a.data));
        text = swap(&text, "127.0.0.1:8082 ", &format!("{} ", b.data));
        text = swap(&text, "port 9901\n", &format!("port {}\n", a.admin.port()));
        text = swap(&text, "port 9902\n", &format!("port {}\n", b.admin.port()));
        text = swap(
            &text,
            "/run/haproxy/precond-tier.sock",
            socket.to_str().unwrap(),
        );
        text = swap(
            &text,
            "inter 2s fastinter 500ms downinter 2s",
            "inter 200ms fastinter 100ms downinter 200ms",
        );
        if !affinity {
            text = swap(&text, AFFINITY, "    balance roundrobin\n");
            text = swap(&text, HASH_TYPE, "");
        }
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, &text).unwrap();
        let mut cmd = Command::new(haproxy);
        cmd.arg("-db").arg("-f").arg(&file);
        let proc = Proc::spawn("haproxy", &mut cmd, dir.join("haproxy.log"), false);
        let mut h = Haproxy {
            addr,
            socket,
            proc,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            h.proc.assert_alive();
            // Up, and the last check passed: /readyz answered 200 on each admin port.
            let states = h.states();
            if states.len() == 2 && states.iter().all(|s| s.status == "UP" && s.check == "L7OK") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy never reported both instances up: {states:?}\n{}",
                h.proc.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        h
    }

    /// `show stat` on the stats socket: the backend's servers.
    fn states(&self) -> Vec<Server> {
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return Vec::new();
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if s.write_all(b"show stat\n").is_err() {
            return Vec::new();
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let mut lines = out.lines();
        let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
            return Vec::new();
        };
        let col = |name: &str| header.split(',').position(|c| c == name).unwrap();
        let (px, sv) = (col("pxname"), col("svname"));
        let (status, check, stot) = (col("status"), col("check_status"), col("stot"));
        let last = px.max(sv).max(status).max(check).max(stot);
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > last && f[px] == "precond" && f[sv].starts_with("precond"))
            .map(|f| Server {
                name: f[sv].to_string(),
                status: f[status].to_string(),
                check: f[check].to_string(),
                sessions: f[stot].parse().unwrap_or(0),
            })
            .collect()
    }

    /// Sessions HAProxy has sent to each instance (precond1, precond2).
    fn sessions(&self) -> [u64; 2] {
        let s = self.states();
        let of = |name: &str| s.iter().find(|x| x.name == name).map_or(0, |x| x.sessions);
        [of("precond1"), of("precond2")]
    }

    fn status(&self, index: usize) -> String {
        let name = format!("precond{}", index + 1);
        self.states()
            .into_iter()
            .find(|x| x.name == name)
            .map_or_else(String::new, |x| x.status)
    }
}

/// One server of the backend, as `show stat` reports it.
#[derive(Debug)]
struct Server {
    name: String,
    /// `UP`, `UP 1/2` (going down), `DOWN`, `DOWN 1/2` (coming up), `DRAIN`, `MAINT`.
    status: String,
    /// The last check's result (`L7OK`: the expected status; `L4CON`: connection refused).
    check: String,
    /// Sessions HAProxy has sent to it.
    sessions: u64,
}

/// Which instance received the requests sent by `f`, by the balancer's own count.
fn served_by(h: &Haproxy, f: impl FnOnce()) -> [u64; 2] {
    let before = h.sessions();
    f();
    let after = h.sessions();
    [after[0] - before[0], after[1] - before[1]]
}

/// nginx running `deploy/nginx-lb.conf` (addresses and file paths substituted) in the
/// foreground, as master and workers.
struct Nginx {
    addr: SocketAddr,
    _proc: Proc,
    _dir: TempDir,
}

/// The shipped nginx file with its pid and log paths in `dir`.
fn nginx_text(dir: &TempDir) -> String {
    let mut text = shipped("deploy/nginx-lb.conf");
    text = swap(
        &text,
        "/run/nginx-precond-lb.pid",
        dir.join("nginx.pid").to_str().unwrap(),
    );
    text = swap(
        &text,
        "/var/log/nginx/precond-lb-error.log",
        dir.join("error.log").to_str().unwrap(),
    );
    swap(
        &text,
        "/var/log/nginx/precond-lb-access.log",
        dir.join("access.log").to_str().unwrap(),
    )
}

/// `nginx` with the prefix and startup error log in `dir` (so that neither needs root).
fn nginx_cmd(dir: &TempDir, file: &Path) -> Command {
    let mut cmd = Command::new(tool("nginx"));
    cmd.arg("-p")
        .arg(dir.as_os_str())
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(file);
    cmd
}

impl Nginx {
    fn start(tier: &Tier) -> Nginx {
        let dir = TempDir::new("nginx");
        let addr = free_addr();
        let [a, b] = &tier.instances;
        let mut text = nginx_text(&dir);
        text = swap(&text, "listen 80;", &format!("listen {addr};"));
        text = swap(&text, "127.0.0.1:8081 ", &format!("{} ", a.data));
        text = swap(&text, "127.0.0.1:8082 ", &format!("{} ", b.data));
        let file = dir.join("nginx.conf");
        std::fs::write(&file, text).unwrap();
        let mut cmd = nginx_cmd(&dir, &file);
        cmd.args(["-g", "daemon off;"]);
        let mut proc = Proc::spawn("nginx", &mut cmd, dir.join("nginx.out"), true);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(addr).is_err() {
            proc.assert_alive();
            assert!(Instant::now() < deadline, "nginx did not start");
            thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            addr,
            _proc: proc,
            _dir: dir,
        }
    }
}

/// precond's count of requests it forwarded to its origin, from its admin `/metrics`.
fn forwarded(i: &Instance) -> u64 {
    let m = send(i.admin, "GET", "/metrics", &[], "").expect("metrics");
    m.body_str()
        .lines()
        .find_map(|l| l.strip_prefix("precond_forwarded_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("precond_forwarded_total")
}

// ---------------------------------------------------------------------------------------------
// The lost-update probe.

/// What one run of the probe saw.
#[derive(Debug, Default)]
struct Probe {
    /// Updates the clients saw succeed (2xx): id, and when their write was sent.
    succeeded: Vec<(String, Instant)>,
    /// Updates whose write got an error status (other than 412) or a broken connection: the
    /// client does not know whether they were applied. Id and what the client saw.
    unknown: Vec<(String, String)>,
    /// Writes refused with 412 (each then retried from a fresh read).
    refused: u64,
    /// Reads that failed (retried): what the client saw.
    failed_reads: Vec<String>,
    /// Clients that completed all their updates.
    finished: usize,
    /// The ids in the document at the end.
    present: HashSet<String>,
}

impl Probe {
    /// Updates the clients saw succeed that the document does not reflect.
    fn lost(&self) -> Vec<&str> {
        self.succeeded
            .iter()
            .filter(|(id, _)| !self.present.contains(id))
            .map(|(id, _)| id.as_str())
            .collect()
    }
    /// Updates with an unknown outcome that were applied.
    fn unknown_applied(&self) -> usize {
        self.unknown
            .iter()
            .filter(|(id, _)| self.present.contains(id))
            .count()
    }
}

/// Creates `path` as `{"n":0,"ids":[]}` through `lb`.
fn create(lb: SocketAddr, path: &str) {
    let r = send(
        lb,
        "PUT",
        path,
        &[("Content-Type", "application/json")],
        r#"{"n":0,"ids":[]}"#,
    )
    .expect("create");
    assert!(matches!(r.status, 200 | 201), "{r:?}");
}

/// 8 clients each apply 30 updates to `path` through `lb`: GET, append a fresh id to `ids` (and
/// add one to `n`), PUT with `If-Match` set to the GET's `ETag`. A 412, an error status or a
/// broken connection is retried as a new read-modify-write cycle with a new id. Every client
/// starts at once; `completed` counts successful updates as they happen. Clients give up after
/// `within`.
fn probe(lb: SocketAddr, path: &str, completed: &Arc<AtomicU64>, within: Duration) -> Probe {
    let start = Arc::new(Barrier::new(CLIENTS));
    let deadline = Instant::now() + within;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (start, path, completed) = (start.clone(), path.to_string(), completed.clone());
            thread::spawn(move || {
                let mut p = Probe::default();
                start.wait();
                let (mut done, mut attempt) = (0, 0);
                while done < UPDATES && Instant::now() < deadline {
                    let doc = match send(lb, "GET", &path, &[], "") {
                        Ok(r) if r.status == 200 => r,
                        failed => {
                            p.failed_reads
                                .push(failed.map_or_else(|e| e, |r| r.status.to_string()));
                            thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    };
                    let mut v: serde_json::Value =
                        serde_json::from_slice(&doc.body).expect("the document is JSON");
                    attempt += 1;
                    let id = format!("c{c}-{attempt}");
                    let n = v["n"].as_u64().unwrap();
                    v["n"] = (n + 1).into();
                    v["ids"].as_array_mut().unwrap().push(id.clone().into());
                    let sent = Instant::now();
                    let put = send(
                        lb,
                        "PUT",
                        &path,
                        &[
                            ("If-Match", &doc.etag()),
                            ("Content-Type", "application/json"),
                        ],
                        &v.to_string(),
                    );
                    match put {
                        Ok(r) if matches!(r.status, 200 | 201 | 204) => {
                            p.succeeded.push((id, sent));
                            done += 1;
                            completed.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) if r.status == 412 => p.refused += 1,
                        Ok(r) => {
                            p.unknown.push((id, format!("{}", r.status)));
                            thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            p.unknown.push((id, e));
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                p.finished = usize::from(done == UPDATES);
                p
            })
        })
        .collect();
    let mut total = Probe::default();
    for c in clients {
        let p = c.join().unwrap();
        total.succeeded.extend(p.succeeded);
        total.unknown.extend(p.unknown);
        total.refused += p.refused;
        total.failed_reads.extend(p.failed_reads);
        total.finished += p.finished;
    }
    let end = send(lb, "GET", path, &[], "").expect("final read");
    assert_eq!(end.status, 200, "{end:?}");
    let v: serde_json::Value = serde_json::from_slice(&end.body).unwrap();
    let ids: Vec<String> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    total.present = ids.iter().cloned().collect();
    assert_eq!(
        total.present.len(),
        ids.len(),
        "an id appears twice: {ids:?}"
    );
    total
}

fn summary(p: &Probe) -> String {
    format!(
        "{} lost of {} succeeded; {} refused (412); {} with an unknown outcome ({} of them \
         applied); {} failed reads; {} of {CLIENTS} clients finished",
        p.lost().len(),
        p.succeeded.len(),
        p.refused,
        p.unknown.len(),
        p.unknown_applied(),
        p.failed_reads.len(),
        p.finished
    )
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn the_shipped_configs_pass_haproxy_and_nginx_checks_and_route_by_resource() {
    let haproxy = shipped("deploy/haproxy.cfg");
    for line in [
        "balance uri path-only",
        "hash-type consistent",
        "option httpchk GET /readyz",
        "http-check expect status 200",
        "check port 9901",
        "check port 9902",
        "no option redispatch",
    ] {
        assert!(haproxy.contains(line), "deploy/haproxy.cfg lacks `{line}`");
    }
    for unsafe_line in ["retry-on", "hash-balance-factor", "balance uri whole"] {
        assert!(
            !haproxy
                .lines()
                .any(|l| l.trim_start().starts_with(unsafe_line)),
            "deploy/haproxy.cfg must not set `{unsafe_line}`"
        );
    }
    let out = Command::new(tool("haproxy"))
        .arg("-c")
        .arg("-f")
        .arg(repo_file("deploy/haproxy.cfg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "haproxy -c -f deploy/haproxy.cfg: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let nginx = shipped("deploy/nginx-lb.conf");
    for line in [
        "hash $uri consistent;",
        "proxy_next_upstream error timeout;",
        "proxy_next_upstream off;",
        "max_fails=",
        "/readyz",
    ] {
        assert!(nginx.contains(line), "deploy/nginx-lb.conf lacks `{line}`");
    }
    assert!(
        !nginx
            .lines()
            .any(|l| l.split('#').next().unwrap().contains("non_idempotent")),
        "deploy/nginx-lb.conf must leave non_idempotent off"
    );
    let dir = TempDir::new("nginx-t");
    let file = dir.join("nginx-lb.conf");
    std::fs::write(&file, nginx_text(&dir)).unwrap();
    let out = nginx_cmd(&dir, &file).arg("-t").output().unwrap();
    assert!(
        out.status.success(),
        "nginx -t -c deploy/nginx-lb.conf (pid and log paths in a temporary directory): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Through HAProxy with the shipped resource affinity, the probe loses nothing: every write to
/// the document reaches one instance, which serialises them. The same tier with
/// `balance roundrobin` spreads one resource's writes over both instances, each serialising
/// alone, and loses updates: the probe can fail.
#[test]
fn through_haproxy_affinity_loses_no_update_and_round_robin_does() {
    let _one = one_at_a_time();
    let tier = Tier::start();

    // The instances share the deployment secret: one representation has one tag on both.
    let [a, b] = &tier.instances;
    let (ta, tb) = (
        send(a.data, "GET", "/items/1", &[], "").unwrap(),
        send(b.data, "GET", "/items/1", &[], "").unwrap(),
    );
    assert_eq!(ta.status, 200);
    assert_eq!(
        ta.etag(),
        tb.etag(),
        "the instances do not share the secret"
    );

    let h = Haproxy::start(&tier, true);
    let path = "/tier/affinity~1";
    let writes_before = tier.origin_writes();
    let by = served_by(&h, || create(h.addr, path));
    let owner = usize::from(by[1] == 1);
    assert_eq!(by[owner], 1, "{by:?}");
    let completed = Arc::new(AtomicU64::new(0));
    let by = {
        let before = h.sessions();
        let p = probe(h.addr, path, &completed, Duration::from_secs(30));
        let after = h.sessions();
        eprintln!("affinity (balance uri path-only): {}", summary(&p));
        assert_eq!(p.finished, CLIENTS, "{}", summary(&p));
        assert!(p.lost().is_empty(), "{}", summary(&p));
        assert!(p.unknown.is_empty(), "{:?}", p.unknown);
        // Nothing was sent twice: the origin received the creating write and the updates the
        // clients saw succeed, nothing else (every refusal was answered at the edge).
        assert_eq!(
            tier.origin_writes() - writes_before,
            1 + p.succeeded.len() as u64
        );
        [after[0] - before[0], after[1] - before[1]]
    };
    assert_eq!(by[1 - owner], 0, "the other instance got requests: {by:?}");

    // Spellings of the document's path that precond reads as the same resource (or a coarser
    // one: the query is not hashed) reach the same instance.
    let spellings = [
        "/tier/%61ffinity~1",
        "/tier/affinity%7e1",
        "/tier/affinity%7E1",
        "/tier/./affinity~1",
        "/tier/x/../affinity~1",
        "/tier/affinity~1?b=2&a=1",
        "/tier/%61ffinity%7e1?a=1&b=2",
        "http://tier.test/tier/affinity~1",
    ];
    let by = served_by(&h, || {
        for s in spellings {
            let r = send(h.addr, "GET", s, &[], "").unwrap();
            assert!(r.status < 500, "{s}: {r:?}");
        }
    });
    assert_eq!(
        by[owner],
        spellings.len() as u64,
        "spellings of one path were split: {by:?}"
    );
    drop(h);

    // The baseline: the same tier and probe with `balance roundrobin` in place of the hash.
    let h = Haproxy::start(&tier, false);
    let path = "/tier/round-robin";
    create(h.addr, path);
    let by = served_by(&h, || {
        let p = probe(h.addr, path, &completed, Duration::from_secs(30));
        eprintln!("baseline (balance roundrobin): {}", summary(&p));
        assert_eq!(p.finished, CLIENTS, "{}", summary(&p));
        assert!(
            !p.lost().is_empty(),
            "round robin lost nothing: the probe cannot tell affinity from its absence; {}",
            summary(&p)
        );
    });
    assert!(by[0] > 0 && by[1] > 0, "{by:?}");
}

/// Failover: the instance that owns the document is killed (SIGKILL) a third of the way through
/// the probe. What the tier guarantees then:
/// - writes in flight on the killed instance get 502 or a broken connection (their outcome is
///   unknown to their clients); writes sent to it before HAProxy marks it down get 503 (HAProxy
///   retries only the connection, on the same instance: nothing is sent elsewhere);
/// - once HAProxy has marked it down, every request for the document goes to the survivor,
///   which has never seen it: it probes the origin under its own lock, and serialises alone: no
///   update sent after the switch is lost;
/// - what can be lost is at most the writes whose clients saw an error: every client that saw
///   success has its update in the document, except for as many updates as there were unknown
///   outcomes. No write is sent twice. Every client finishes (an error is retried as a new
///   read-modify-write cycle).
#[test]
fn a_killed_instance_loses_at_most_the_writes_in_flight_on_it() {
    let _one = one_at_a_time();
    let mut tier = Tier::start();
    let h = Haproxy::start(&tier, true);
    let path = "/tier/failover";
    let by = served_by(&h, || create(h.addr, path));
    let owner = usize::from(by[1] == 1);
    let survivor = 1 - owner;
    let writes_before = tier.origin_writes();
    let survivor_forwarded = forwarded(&tier.instances[survivor]);
    assert_eq!(
        survivor_forwarded, 0,
        "the survivor has not seen the document"
    );

    let completed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let p = thread::scope(|s| {
        let run = s.spawn(|| probe(h.addr, path, &completed, Duration::from_secs(40)));
        let third = CLIENTS as u64 * UPDATES / 3;
        wait_for("a third of the updates", Duration::from_secs(30), || {
            completed.load(Ordering::SeqCst) >= third || run.is_finished()
        });
        let done_at_kill = completed.load(Ordering::SeqCst);
        tier.instances[owner].proc.kill();
        let killed = Instant::now();
        wait_for(
            "HAProxy to mark the killed instance down",
            Duration::from_secs(10),
            || h.status(owner).starts_with("DOWN"),
        );
        let switched = Instant::now();
        eprintln!(
            "killed precond{} after {done_at_kill} updates; HAProxy marked it down {} ms later",
            owner + 1,
            (switched - killed).as_millis()
        );
        (run.join().unwrap(), killed, switched)
    });
    let (p, killed, switched) = p;
    eprintln!(
        "failover: {} ({} s in all)",
        summary(&p),
        started.elapsed().as_secs()
    );
    let unknown: Vec<_> = p.unknown.iter().map(|(_, why)| why.as_str()).collect();
    eprintln!(
        "unknown outcomes: {unknown:?}; failed reads: {:?}",
        p.failed_reads
    );
    assert_eq!(p.finished, CLIENTS, "{}", summary(&p));
    // Clients saw an error for every update that may have been lost.
    assert!(
        p.lost().len() <= p.unknown.len(),
        "lost {:?}; {}",
        p.lost(),
        summary(&p)
    );
    // No update sent after the switch is lost: the survivor serialises alone.
    let lost_after: Vec<_> = p
        .succeeded
        .iter()
        .filter(|(id, sent)| *sent >= switched && !p.present.contains(id))
        .collect();
    assert!(
        lost_after.is_empty(),
        "lost after the switch: {lost_after:?}"
    );
    // The survivor served the updates after the switch.
    let after_switch = p.succeeded.iter().filter(|(_, t)| *t >= switched).count();
    assert!(after_switch > 0, "no update after the switch");
    assert!(forwarded(&tier.instances[survivor]) > 0);
    // Nothing reached the survivor before the switch (150 ms: how late this test may notice it).
    let before_switch_on_survivor = p
        .succeeded
        .iter()
        .filter(|(_, t)| *t > killed && *t + Duration::from_millis(150) < switched)
        .count();
    assert_eq!(before_switch_on_survivor, 0);
    // No write was sent twice: every write the origin received is one a client sent once.
    let origin_writes = tier.origin_writes() - writes_before;
    assert!(
        origin_writes >= p.succeeded.len() as u64
            && origin_writes <= (p.succeeded.len() + p.unknown.len()) as u64,
        "origin writes {origin_writes}; {}",
        summary(&p)
    );
}

/// The same tier through the shipped nginx file: the probe loses nothing, and when the instance
/// that owns a document dies, a write to it is answered 502 and not resent to the other
/// instance (nginx would resend a PUT on `error`), while a read is answered by the survivor.
#[test]
fn through_nginx_affinity_loses_no_update_and_writes_are_never_resent() {
    let _one = one_at_a_time();
    let mut tier = Tier::start();
    let n = Nginx::start(&tier);
    let path = "/tier/nginx";
    let before = [forwarded(&tier.instances[0]), forwarded(&tier.instances[1])];
    create(n.addr, path);
    let after = [forwarded(&tier.instances[0]), forwarded(&tier.instances[1])];
    let owner = usize::from(after[1] > before[1]);
    assert_eq!(after[1 - owner], before[1 - owner]);

    let writes_before = tier.origin_writes();
    let completed = Arc::new(AtomicU64::new(0));
    let p = probe(n.addr, path, &completed, Duration::from_secs(30));
    eprintln!("nginx (hash $uri consistent): {}", summary(&p));
    assert_eq!(p.finished, CLIENTS, "{}", summary(&p));
    assert!(p.lost().is_empty(), "{}", summary(&p));
    assert!(p.unknown.is_empty(), "{:?}", p.unknown);
    assert_eq!(
        tier.origin_writes() - writes_before,
        p.succeeded.len() as u64
    );
    assert_eq!(
        forwarded(&tier.instances[1 - owner]),
        before[1 - owner],
        "the other instance forwarded requests for the document"
    );

    tier.instances[owner].proc.kill();
    let doc = send(n.addr, "GET", path, &[], "").unwrap();
    let writes_before = tier.origin_writes();
    let put = send(
        n.addr,
        "PUT",
        path,
        &[("If-Match", &doc.etag())],
        r#"{"n":0,"ids":[]}"#,
    )
    .unwrap();
    assert_eq!(put.status, 502, "a write to the dead owner: {put:?}");
    assert_eq!(tier.origin_writes(), writes_before, "the write was resent");
    let read = send(n.addr, "GET", path, &[], "").unwrap();
    assert_eq!(read.status, 200, "a read is retried on the survivor");
}

// ---------------------------------------------------------------------------------------------
// The shared store on Redis (issue 12): the same tier with `[store] backend = "redis"`.

/// The `[store]` lines of an instance on `redis` with a lease of `lease_ttl` (each call to Redis
/// bounded by `timeout`; the lease must be at least 6 times that).
fn redis_store(redis: &RedisServer, timeout: &str, lease_ttl: &str) -> String {
    format!(
        "backend = \"redis\"\nurl = \"{}\"\ntimeout = \"{timeout}\"\nlease_ttl = \"{lease_ttl}\"",
        redis.url()
    )
}

/// With the shared store, the tier no longer needs affinity: through the shipped HAProxy file
/// with `balance roundrobin` (the baseline above, which loses updates with the memory store),
/// the two instances serialise every write to the document on its Redis lease.
#[test]
fn through_round_robin_haproxy_two_instances_on_redis_lose_no_update() {
    let _one = one_at_a_time();
    let redis = RedisServer::start();
    let tier = Tier::start_with(&redis_store(&redis, "200ms", "2s"));
    let h = Haproxy::start(&tier, false);
    let path = "/tier/redis-round-robin";
    create(h.addr, path);
    let writes_before = tier.origin_writes();
    let completed = Arc::new(AtomicU64::new(0));
    let by = served_by(&h, || {
        let p = probe(h.addr, path, &completed, Duration::from_secs(40));
        eprintln!("round robin, shared store on Redis: {}", summary(&p));
        assert_eq!(p.finished, CLIENTS, "{}", summary(&p));
        assert!(p.lost().is_empty(), "{}", summary(&p));
        assert!(p.unknown.is_empty(), "{:?}", p.unknown);
        // Every refusal was answered at the edge: the origin received the updates the clients
        // saw succeed, nothing else.
        assert_eq!(
            tier.origin_writes() - writes_before,
            p.succeeded.len() as u64
        );
    });
    // Both instances served the document (round robin), and neither ever lost Redis.
    assert!(by[0] > 0 && by[1] > 0, "{by:?}");
    for i in &tier.instances {
        let m = send(i.admin, "GET", "/metrics", &[], "").expect("metrics");
        assert!(
            m.body_str()
                .contains("precond_shared_store_unavailable_total 0\n"),
            "{}",
            m.body_str()
        );
    }
}

/// What the slow origin saw, in order.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    method: String,
    path: String,
    /// A PUT's body; for a GET, the document it was answered with.
    body: String,
    /// `received` (a PUT's whole request is in: it is held), `applied` (the PUT's body is now
    /// the document; its answer is being sent), `answered` (a GET).
    what: &'static str,
}

/// A legacy origin (no validators, never checks preconditions) holding one document per path,
/// whose writes are slow: a `PUT` is held for `hold` after its whole request arrived, then
/// applied (whether or not its sender is still there) and answered `204`. Reads are answered at
/// once. One thread per connection, keep-alive. Stopped when dropped.
struct SlowOrigin {
    addr: SocketAddr,
    docs: Arc<Mutex<std::collections::HashMap<String, String>>>,
    /// Holds other than the default, by path and body.
    holds: Arc<Mutex<std::collections::HashMap<(String, String), Duration>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl SlowOrigin {
    fn start(hold: Duration) -> SlowOrigin {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let docs = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let holds = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, hs, v, st) = (docs.clone(), holds.clone(), seen.clone(), stop.clone());
        let accept = thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (d, hs, v) = (d.clone(), hs.clone(), v.clone());
                        thread::spawn(move || SlowOrigin::serve(c, hold, &d, &hs, &v));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        SlowOrigin {
            addr,
            docs,
            holds,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    fn serve(
        c: TcpStream,
        hold: Duration,
        docs: &Mutex<std::collections::HashMap<String, String>>,
        holds: &Mutex<std::collections::HashMap<(String, String), Duration>>,
        seen: &Mutex<Vec<Seen>>,
    ) {
        use std::io::BufRead;
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = c.try_clone().unwrap();
        let mut r = std::io::BufReader::new(c);
        let note = |method: &str, path: &str, body: &str, what| {
            seen.lock().unwrap().push(Seen {
                at: Instant::now(),
                method: method.to_string(),
                path: path.to_string(),
                body: body.to_string(),
                what,
            });
        };
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut words = line.split_whitespace();
            let (method, target) = (
                words.next().unwrap_or("").to_string(),
                words.next().unwrap_or("/").to_string(),
            );
            let (mut len, mut chunked, mut close) = (0usize, false, false);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((h, ""));
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
                match k.as_str() {
                    "content-length" => len = v.parse().unwrap_or(0),
                    "transfer-encoding" => chunked = v.contains("chunked"),
                    "connection" => close = v.contains("close"),
                    _ => {}
                }
            }
            let mut body = Vec::new();
            if chunked {
                loop {
                    let mut size = String::new();
                    if r.read_line(&mut size).unwrap_or(0) == 0 {
                        return;
                    }
                    let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
                        .unwrap_or(0);
                    let mut chunk = vec![0; n + 2];
                    if r.read_exact(&mut chunk).is_err() {
                        return;
                    }
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
            } else {
                body.resize(len, 0);
                if r.read_exact(&mut body).is_err() {
                    return;
                }
            }
            let body = String::from_utf8_lossy(&body).into_owned();
            let path = target.split('?').next().unwrap_or("/").to_string();
            let reply = match method.as_str() {
                "PUT" => {
                    note(&method, &path, &body, "received");
                    let held = holds
                        .lock()
                        .unwrap()
                        .get(&(path.clone(), body.clone()))
                        .copied();
                    thread::sleep(held.unwrap_or(hold));
                    docs.lock().unwrap().insert(path.clone(), body.clone());
                    note(&method, &path, &body, "applied");
                    "HTTP/1.1 204 No Content\r\n\r\n".to_string()
                }
                "GET" | "HEAD" => match docs.lock().unwrap().get(&path).cloned() {
                    Some(doc) => {
                        note(&method, &path, &doc, "answered");
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\n\r\n",
                            doc.len()
                        );
                        if method == "GET" {
                            head + &doc
                        } else {
                            head
                        }
                    }
                    None => {
                        note(&method, &path, "", "answered");
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
                    }
                },
                _ => "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n".to_string(),
            };
            if w.write_all(reply.as_bytes()).is_err() || close {
                return;
            }
        }
    }

    fn set(&self, path: &str, doc: &str) {
        self.docs
            .lock()
            .unwrap()
            .insert(path.to_string(), doc.to_string());
    }

    /// Holds a `PUT` of `body` to `path` for `hold` instead.
    fn hold_for(&self, path: &str, body: &str, hold: Duration) {
        self.holds
            .lock()
            .unwrap()
            .insert((path.to_string(), body.to_string()), hold);
    }

    fn doc(&self, path: &str) -> Option<String> {
        self.docs.lock().unwrap().get(path).cloned()
    }

    /// What it saw of `path`.
    fn seen(&self, path: &str) -> Vec<Seen> {
        let all = self.seen.lock().unwrap();
        all.iter().filter(|s| s.path == path).cloned().collect()
    }

    /// When it saw `what` of the PUT of `body` to `path` (first time), if it did.
    fn put(&self, path: &str, body: &str, what: &str) -> Option<Instant> {
        self.seen(path)
            .into_iter()
            .find(|s| s.method == "PUT" && s.body == body && s.what == what)
            .map(|s| s.at)
    }
}

impl Drop for SlowOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// The remaining TTL of the one lease in `redis` (none when no lease is held).
fn lease_left(redis: &RedisServer) -> Option<Duration> {
    let keys = redis.command(&["KEYS", "precond:*:lease"]);
    let key = keys.lines().find(|l| l.starts_with("precond:"))?;
    let ttl = redis.command(&["PTTL", key]);
    let ms: i64 = ttl.strip_prefix(':')?.parse().ok()?;
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

/// Signed milliseconds from `from` to `to`.
fn ms_from(from: Instant, to: Instant) -> i64 {
    if to >= from {
        (to - from).as_millis() as i64
    } else {
        -((from - to).as_millis() as i64)
    }
}

/// How long the slow origin holds a write.
const HOLD: Duration = Duration::from_millis(1500);
/// The lease TTL of the kill tests (`store.timeout` 100 ms: the lease must be 6 times that).
const LEASE_TTL: Duration = Duration::from_secs(1);
/// The writes of the kill tests: A's (through the instance killed) and B's (through the other).
const BODY_A: &str = r#"{"v":"A"}"#;
const BODY_B: &str = r#"{"v":"B"}"#;
/// The document before them.
const BODY_0: &str = r#"{"v":0}"#;

/// What [`kill_mid_write`] measured.
#[derive(Debug)]
struct KillRun {
    /// What A's client got (the connection breaks when A dies).
    a: Result<u16, String>,
    /// The remaining TTL of A's lease in Redis right after the kill.
    lease_left: Duration,
    /// When A was killed.
    killed: Instant,
    /// When B's write was sent, and its answer (or what broke).
    b_sent: Instant,
    b: Result<u16, String>,
    /// When the origin applied A's write.
    a_applied: Instant,
    /// A's writes the origin received.
    a_puts: usize,
    /// B's first request at the origin after B's write was sent (its probe).
    b_probe: Seen,
    /// When the origin received B's write, if it did.
    b_received: Option<Instant>,
    /// The document at the end.
    end: String,
}

impl KillRun {
    /// How long B's write waited before its probe reached the origin: the wait for the lease
    /// (the probe itself is a loopback round trip).
    fn b_wait(&self) -> Duration {
        self.b_probe.at - self.b_sent
    }
    /// When A's lease expired in Redis (at the latest: measured just after the kill).
    fn expired(&self) -> Instant {
        self.killed + self.lease_left
    }
}

/// The scenario of the kill tests, on `path` of `origin` (which holds writes): the document is
/// `{"v":0}`; instance B refuses a stale write first (under the lease it probes and publishes
/// what it saw, so the chain is unbroken); then a new instance A gets a conditional write naming
/// the document's tag (`{"v":"A"}`): decided on B's published snapshot, it is forwarded without
/// a probe. While the origin holds it, A is killed (SIGKILL) `kill_after` after the origin
/// received it, and at once B gets a conditional write naming the same tag (`{"v":"B"}`).
/// Prints the timeline; returns when the origin has applied every write it received.
fn kill_mid_write(
    redis: &RedisServer,
    origin: &SlowOrigin,
    b: &Instance,
    path: &str,
    kill_after: Duration,
) -> KillRun {
    origin.set(path, BODY_0);
    let mut a = killable(origin.addr, redis);
    let t0 = send(a.data, "GET", path, &[], "").unwrap();
    assert_eq!(t0.status, 200, "{t0:?}");
    let t0 = t0.etag();
    assert_eq!(
        send(b.data, "GET", path, &[], "").unwrap().etag(),
        t0,
        "one secret: one tag"
    );
    let r = send(b.data, "PUT", path, &[("If-Match", "\"stale\"")], BODY_B).unwrap();
    assert_eq!(r.status, 412, "{r:?}");
    let setup = origin.seen(path).len();

    let (a_data, tag, target) = (a.data, t0.clone(), path.to_string());
    let sent = Instant::now();
    let a_client =
        thread::spawn(move || send(a_data, "PUT", &target, &[("If-Match", &tag)], BODY_A));
    wait_for(
        "the origin to receive A's write",
        Duration::from_secs(5),
        || origin.put(path, BODY_A, "received").is_some(),
    );
    let a_received = origin.put(path, BODY_A, "received").unwrap();
    // A decided on B's published snapshot: its write is the first thing it sent the origin.
    let by_a: Vec<_> = origin.seen(path)[setup..]
        .iter()
        .map(|s| format!("{} {}", s.method, s.what))
        .collect();
    assert_eq!(by_a, ["PUT received"], "A probed: the chain was broken");
    thread::sleep((a_received + kill_after).saturating_duration_since(Instant::now()));
    a.proc.kill();
    let killed = Instant::now();
    let lease_left = lease_left(redis).expect("A's lease is in Redis after the kill");
    let b_sent = Instant::now();
    let b_put = send(b.data, "PUT", path, &[("If-Match", &t0)], BODY_B);
    let b_answered = Instant::now();
    let a_answer = a_client.join().unwrap();
    wait_for(
        "the origin to apply A's write",
        Duration::from_secs(5),
        || origin.put(path, BODY_A, "applied").is_some(),
    );
    let b_received = origin.put(path, BODY_B, "received");
    if b_received.is_some() {
        wait_for(
            "the origin to apply B's write",
            Duration::from_secs(5),
            || origin.put(path, BODY_B, "applied").is_some(),
        );
    }
    let seen = origin.seen(path);
    eprintln!(
        "{path}: timeline, ms from the kill of A ({} ms after A's client sent its write):",
        ms_from(sent, killed)
    );
    for s in &seen[setup..] {
        eprintln!(
            "  {:>6}  origin: {} {} {}",
            ms_from(killed, s.at),
            s.method,
            s.what,
            s.body
        );
    }
    let run = KillRun {
        a: a_answer.map(|r| r.status),
        lease_left,
        killed,
        b_sent,
        b: b_put.map(|r| r.status),
        a_applied: origin.put(path, BODY_A, "applied").unwrap(),
        a_puts: seen
            .iter()
            .filter(|s| s.method == "PUT" && s.body == BODY_A && s.what == "received")
            .count(),
        b_probe: seen
            .iter()
            .find(|s| s.at >= b_sent && !(s.method == "PUT" && s.body == BODY_A))
            .cloned()
            .expect("B's write reached the origin"),
        b_received,
        end: origin.doc(path).unwrap(),
    };
    eprintln!(
        "  A's client: {:?}; A's lease had {} ms left at the kill; B's write sent at {} ms, \
         answered at {} ms: {:?}; B waited {} ms for the lease ({} ms after it expired)",
        run.a,
        run.lease_left.as_millis(),
        ms_from(killed, b_sent),
        ms_from(killed, b_answered),
        run.b,
        run.b_wait().as_millis(),
        ms_from(run.expired(), run.b_probe.at),
    );
    // What holds in every case: A's client never saw success; the origin received A's write
    // once; B could not take the lease before A's expired (A is dead and no longer renews it:
    // at most `lease_ttl` after its last renewal), then waited out the rest of A's bound in
    // flight (5 s from when A forwarded, see `killable`); and B's write probed the origin (A
    // never published: the chain is broken).
    assert!(!matches!(run.a, Ok(200..=299)), "{:?}", run.a);
    assert_eq!(run.a_puts, 1);
    assert!(run.lease_left <= LEASE_TTL, "{run:?}");
    assert!(
        run.b_probe.at + Duration::from_millis(5) >= run.expired(),
        "B reached the origin before A's lease expired: {run:?}"
    );
    assert!(
        run.b_wait() < LEASE_TTL + Duration::from_secs(5 + 1),
        "B waited {:?}",
        run.b_wait()
    );
    assert_eq!(
        (run.b_probe.method.as_str(), run.b_probe.what),
        ("GET", "answered"),
        "B's write did not probe: {run:?}"
    );
    run
}

/// A write whose instance is killed (SIGKILL) while the origin processes it, and which the
/// origin applies before the dead instance's lease expires (here: the origin needs 300 ms more,
/// the lease has about 800 ms left: A last renewed it ~200 ms before). A conditional write
/// through the other instance naming the tag from before waits for the lease (A is dead and
/// stops renewing it, so it expires at most `lease_ttl` after A's last renewal), then probes the
/// origin (A never published), sees A's result and is refused with 412: no update is lost, and
/// B's write never reaches the origin.
#[test]
fn a_killed_instance_mid_write_blocks_the_resource_until_its_lease_expires_then_the_next_writer_probes(
) {
    let _one = one_at_a_time();
    let redis = RedisServer::start();
    let origin = SlowOrigin::start(HOLD);
    let b = killable(origin.addr, &redis);
    // Killed 1.2 s into the origin's 1.5 s: after A's lease was renewed at least twice.
    let run = kill_mid_write(
        &redis,
        &origin,
        &b,
        "/lease/late",
        Duration::from_millis(1200),
    );
    // The scenario: the origin applied A's write while A's lease still blocked the resource.
    assert!(run.a_applied < run.expired(), "{run:?}");
    assert_eq!(run.b, Ok(412), "{run:?}");
    assert!(
        run.b_probe.at >= run.a_applied && run.b_probe.body == BODY_A,
        "B's probe did not see A's write: {run:?}"
    );
    assert_eq!(run.b_received, None, "B's stale write reached the origin");
    assert_eq!(run.end, BODY_A);
}

/// An instance of the kill tests: lease 1 s; a forwarded write is in flight at most
/// `write_body_timeout` 1 s + `connect_timeout` 1 s (one server) + `write_timeout` 1 s +
/// `read_timeout` 2 s = 5 s (the bound a holder after a dead one waits out); `write_wait` 8 s,
/// so that a writer may wait it out.
fn killable(origin: SocketAddr, redis: &RedisServer) -> Instance {
    Instance::start_tuned(
        origin,
        &redis_store(redis, "100ms", "1s"),
        "read_timeout = \"2s\"\nwrite_timeout = \"1s\"",
        "write_body_timeout = \"1s\"\nwrite_wait = \"8s\"",
    )
}

/// The lease alone bounds how long a dead instance blocks a resource, not how long the origin
/// goes on processing the write that instance had forwarded. So before forwarding, a holder
/// records until when its write may be in flight (its own bound: `write_body_timeout` +
/// `connect_timeout` + `read_timeout`), and a holder after a broken chain waits that out before
/// it probes. Here A is killed 200 ms into the origin's hold (before its first renewal): its lease
/// expires about 0.8 s later, while the origin still holds A's write (1.5 s, or 2.5 s: longer
/// than B's). B takes the lease, waits until A's bound has passed, probes, sees A's write, and its
/// stale write is refused: nothing is lost, whichever order the origin would have applied them in.
/// A writer whose `write_wait` cannot cover the rest of that bound gets a 503 at once.
#[test]
fn a_dead_instances_write_that_outlasts_its_lease_is_waited_out_by_the_next_writer() {
    let _one = one_at_a_time();
    let redis = RedisServer::start();
    let origin = SlowOrigin::start(HOLD);
    let b = killable(origin.addr, &redis);
    for (path, a_hold, b_hold) in [
        ("/lease/early", HOLD, HOLD),
        (
            "/lease/overtaken",
            Duration::from_millis(2500),
            Duration::from_millis(100),
        ),
    ] {
        origin.hold_for(path, BODY_A, a_hold);
        origin.hold_for(path, BODY_B, b_hold);
        let run = kill_mid_write(&redis, &origin, &b, path, Duration::from_millis(200));
        // The scenario: A's lease expired while the origin still held A's write.
        assert!(run.expired() < run.a_applied, "{run:?}");
        // B waited past A's write, saw it, and was refused: no update lost.
        assert!(
            run.b_probe.at >= run.a_applied && run.b_probe.body == BODY_A,
            "B's probe did not see A's write: {run:?}"
        );
        assert_eq!(run.b, Ok(412), "{run:?}");
        assert_eq!(run.b_received, None, "B's stale write reached the origin");
        assert_eq!(run.end, BODY_A, "{run:?}");
        assert_eq!(run.a_puts, 1);
        // Within the lease's TTL plus A's bound in flight (5 s), and a margin.
        assert!(
            run.b_wait() < Duration::from_millis(1000 + 5000 + 2000),
            "{run:?}"
        );
        eprintln!(
            "{path}: B waited {} ms, saw A's write, refused 412",
            run.b_wait().as_millis()
        );
    }
    // A writer that cannot wait that long (write_wait 1 s) gets a 503 at once, and nothing of
    // it reaches the origin.
    let path = "/lease/impatient";
    origin.hold_for(path, BODY_A, Duration::from_millis(2500));
    let c = Instance::start_tuned(
        origin.addr,
        &redis_store(&redis, "100ms", "1s"),
        "read_timeout = \"2s\"\nwrite_timeout = \"1s\"",
        "write_body_timeout = \"1s\"\nwrite_wait = \"1s\"",
    );
    origin.set(path, BODY_0);
    let mut a = killable(origin.addr, &redis);
    let t0 = send(a.data, "GET", path, &[], "").unwrap().etag();
    let (a_data, tag) = (a.data, t0.clone());
    let a_client = thread::spawn(move || {
        send(
            a_data,
            "PUT",
            "/lease/impatient",
            &[("If-Match", &tag)],
            BODY_A,
        )
    });
    wait_for(
        "the origin to receive A's write",
        Duration::from_secs(5),
        || origin.put(path, BODY_A, "received").is_some(),
    );
    a.proc.kill();
    let r = send(c.data, "PUT", path, &[("If-Match", &t0)], BODY_B).unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("earlier write"),
        "{r:?}"
    );
    let _ = a_client.join();
    assert_eq!(origin.put(path, BODY_B, "received"), None);
}
