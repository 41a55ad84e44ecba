//! Live reload (issue 13): the real binary, `SIGHUP` and `POST /reload` on the admin listener.
//! A route's mode changes while a client keeps sending on one keep-alive connection (no request
//! fails, the connection stays open); an invalid file leaves the running configuration in force
//! and says where it is wrong; a change only a restart can make is refused; the store is kept.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use precond::demo::{DemoOrigin, Tags};

/// The proxy process; killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let dir = std::env::temp_dir().join(format!("precond-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("precond.toml");
    std::fs::write(&file, config(listen, admin, &origin, "guard")).unwrap();
    let p = Proc(
        Command::new(env!("CARGO_BIN_EXE_precond"))
            .args(["run", "--config"])
            .arg(&file)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("precond listens", || {
        std::net::TcpStream::connect(listen).is_ok() && std::net::TcpStream::connect(admin).is_ok()
    });

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
    let error = ready.json()["config"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    let at = format!("{}:17:", file.display());
    assert!(error.starts_with(&at), "names the line: {error}");
    assert_eq!(ready.json()["config"]["generation"], 1);
    assert_eq!(stale(), 200, "still pass");
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 422, "{}", r.body_str());
    assert!(r.json()["detail"].as_str().unwrap().contains(&at));

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

    // POST /reload back to guard: the store was kept, so the tag it saw replaced before the
    // pass spell is still refused (and GET /reload is not a reload).
    assert_eq!(request(admin, "GET", "/reload", &[], "").status, 405);
    std::fs::write(&file, config(listen, admin, &origin, "guard")).unwrap();
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["reloaded"], true);
    assert_eq!(r.json()["generation"], 2);
    assert_eq!(
        stale(),
        412,
        "guard again, on the store kept across reloads"
    );
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.json()["reloaded"], false, "unchanged file");

    stop.store(true, Ordering::SeqCst);
    load.join().expect("no request failed during the reloads");
    assert!(sent.load(Ordering::SeqCst) > 10, "the load ran");
    let m = request(admin, "GET", "/metrics", &[], "").body_str();
    assert!(
        m.contains("precond_config_reloads_total{result=\"ok\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("precond_config_reloads_total{result=\"invalid\"} 3"),
        "{m}"
    );
}
