//! Graceful upgrade (issue 13): `scripts/upgrade` starts a new `precond run --upgrade` and sends
//! SIGQUIT to the running one, under load: the new process takes the listeners over (data port
//! and admin port), the old one exits, and no request fails (a connection accepted by the old
//! process in the instant it shuts down is closed unread: retried once, as a client may).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_addr, TempDir};
use precond::demo::{DemoOrigin, Tags};

/// Kills a pid when dropped (the test's processes never outlive it).
struct Pid(u32);

impl Drop for Pid {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// Why a GET got no status.
#[derive(Debug, PartialEq)]
enum Failed {
    /// The connection was closed before any byte of an answer: the request was never read
    /// (RFC 9112 §9.3.1 lets a client retry it).
    Unanswered(String),
    /// Anything else: a refused connection, a broken or wrong answer.
    Other(String),
}

/// One GET on a fresh connection (`Connection: close`): its status, or why there is none.
fn get(addr: SocketAddr, path: &str) -> Result<u16, Failed> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| Failed::Other(format!("connect: {e}")))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| Failed::Unanswered(format!("send: {e}")))?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Err(e) if out.is_empty() => return Err(Failed::Unanswered(format!("read: {e}"))),
        Err(e) => return Err(Failed::Other(format!("read: {e}"))),
        Ok(0) => return Err(Failed::Unanswered("closed without an answer".into())),
        Ok(_) => {}
    }
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            Failed::Other(format!(
                "no status line in {:?}",
                text.chars().take(80).collect::<String>()
            ))
        })
}

#[test]
fn a_graceful_upgrade_under_load_fails_no_request() {
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let dir = TempDir::new("upgrade");
    // The upgrade socket's directory must be private (precond refuses --upgrade otherwise).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.join("precond.toml");
    let sock = dir.join("upgrade.sock");
    std::fs::write(
        &file,
        format!(
            r#"[server]
listen = ["{listen}"]
threads = 2
grace_period = "1s"
graceful_shutdown_timeout = "1s"
upgrade_sock = "{}"

[admin]
listen = "{admin}"

[[upstream]]
name = "origin"
servers = ["{}"]

[[route]]
upstream = "origin"
mode = "guard"
"#,
            sock.display(),
            origin.addr
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_precond");
    let old: Child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let old_pid = Pid(old.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(listen).is_err() || TcpStream::connect(admin).is_err() {
        assert!(Instant::now() < deadline, "precond did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The resource the load reads.
    let put = |addr| {
        let mut c = common::Conn::open(addr);
        c.request("PUT", "/items/u", &[], "{}").status
    };
    assert_eq!(put(listen), 201);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let retried = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failures, retried) =
                (stop.clone(), ok.clone(), failures.clone(), retried.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    // A connection the old process accepted in the instant its shutdown began
                    // is closed before its request is read (Pingora drops sessions waiting for
                    // a request when it shuts down): the client retries that one once, as
                    // RFC 9112 §9.3.1 allows for an idempotent request; the retry must succeed.
                    let mut answer = get(listen, "/items/u");
                    if let Err(Failed::Unanswered(_)) = answer {
                        retried.fetch_add(1, Ordering::SeqCst);
                        answer = get(listen, "/items/u");
                    }
                    match answer {
                        Ok(200) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();
    let wait_for_more = |n: u64| {
        let before = ok.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ok.load(Ordering::SeqCst) < before + n {
            assert!(Instant::now() < deadline, "the load stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for_more(20);

    // The upgrade: the script returns once the old process has exited.
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/upgrade"))
        .arg(old.id().to_string())
        .arg(&file)
        .arg(bin)
        .env("PRECOND_LOG", dir.join("new.log"))
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let new_pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("upgrade: {}", String::from_utf8_lossy(&out.stderr)));
    let _new = Pid(new_pid);
    assert!(
        out.status.success(),
        "upgrade: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut old = old;
    assert!(
        old.try_wait().unwrap().is_some(),
        "the old process has exited"
    );
    drop(old_pid);

    // The new process serves the data port and the admin port it took over.
    wait_for_more(20);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failed = failures.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok.load(Ordering::SeqCst) > 100, "the load ran");
    let retried = retried.load(Ordering::SeqCst);
    eprintln!(
        "upgrade under load: {} requests answered, {retried} retried once (closed unread)",
        ok.load(Ordering::SeqCst)
    );
    assert!(
        retried <= 3,
        "at most one per client, at the old process's shutdown: {retried}"
    );
    assert_eq!(get(admin, "/healthz"), Ok(200));
    // Ready on the listeners it inherited (none of which it bound itself).
    assert_eq!(get(admin, "/readyz"), Ok(200));
    // A learned store starts empty in the new process, and it learns again.
    assert_eq!(get(listen, "/items/u"), Ok(200));
}

/// `--upgrade` refuses an upgrade socket in a directory other users can reach (they could
/// connect first and hand it their own sockets), before taking anything over.
#[test]
fn an_upgrade_refuses_a_socket_directory_open_to_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("upgrade-open");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.join("precond.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = [\"{}\"]\nupgrade_sock = \"{}\"\n\n[[upstream]]\nname = \"a\"\n\
             servers = [\"127.0.0.1:9\"]\n\n[[route]]\nupstream = \"a\"\n",
            free_addr(),
            dir.join("upgrade.sock").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_precond"))
        .args(["run", "--upgrade", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("open to other users") && err.contains("0700"),
        "{err}"
    );
}
