//! The admin listener's `/store` (issue 13): what precond knows of one resource, every caller's
//! partition, behind the admin token; and forgetting it, after which a write the store refused is
//! forwarded again. A real proxy and origin over loopback.

mod common;

use common::*;
use precond::demo::{DemoOrigin, Tags};

fn enc(url: &str) -> String {
    url.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn store_shows_what_is_known_of_a_resource_and_forgets_it() {
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    let admin = free_addr();
    let dir = TempDir::new("admin-store");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-admin-token-0123\n").unwrap();
    let text = guard_config("superseded").replace(
        "[[upstream]]",
        &format!(
            "[admin]\nlisten = \"{admin}\"\ntoken_file = \"{}\"\n\n[[upstream]]",
            token.display()
        ),
    );
    let p = proxy(&text, origin.addr);
    let alice = ("Authorization", "Bearer alice");
    let t1 = request(p.addr, "GET", "/items/1", &[alice], "").etag();
    let t2 = request(p.addr, "PUT", "/items/1", &[alice, ("If-Match", &t1)], "{}").etag();
    let auth = ("Authorization", "Bearer s3cret-admin-token-0123");
    let url = format!("/store?url={}", enc("http://test.local/items/1"));
    assert_eq!(
        request(admin, "GET", &url, &[], "").status,
        401,
        "the token is required"
    );
    assert_eq!(request(admin, "DELETE", &url, &[], "").status, 401);
    assert_eq!(request(admin, "POST", "/reload", &[], "").status, 401);
    // With the token: this proxy was not started from a file, so there is nothing to re-read.
    let r = request(admin, "POST", "/reload", &[auth], "");
    assert_eq!(r.status, 422, "{}", r.body_str());
    assert!(r
        .body_str()
        .contains("not started from a configuration file"));
    let r = request(admin, "GET", &url, &[auth], "");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let j = r.json();
    assert_eq!(j["route"]["mode"], "guard");
    let parts = j["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{j}");
    assert_eq!(parts[0]["current"][0], t2.as_str());
    assert_eq!(parts[0]["replaced"][0], t1.as_str());
    assert!(!r.body_str().contains("alice"), "no credential is shown");
    // The stale write is refused at the edge...
    assert_eq!(
        request(p.addr, "PUT", "/items/1", &[alice, ("If-Match", &t1)], "{}").status,
        412
    );
    // ...until the operator forgets the resource: then it is forwarded (the origin is the judge).
    let r = request(admin, "DELETE", &url, &[auth], "");
    assert_eq!(
        (r.status, r.json()["forgotten"].as_bool()),
        (200, Some(true))
    );
    assert_eq!(request(admin, "GET", &url, &[auth], "").status, 404);
    assert_eq!(
        request(p.addr, "PUT", "/items/1", &[alice, ("If-Match", &t1)], "{}").status,
        200
    );
    // Clear answers to bad questions.
    for bad in [
        "/store",
        "/store?url=items%2F1",
        "/store?url=http%3A%2F%2Fh%2Fa%252Fb",
    ] {
        let r = request(admin, "GET", bad, &[auth], "");
        assert_eq!(r.status, 400, "{bad}: {}", r.body_str());
    }
    assert_eq!(
        request(admin, "DELETE", "/metrics", &[auth], "").status,
        405
    );
}

/// A live scrape is accepted by `promtool check metrics` (no lint problem), counts requests by
/// route, mode and decision, times them, and exposes only series that can occur.
#[test]
fn a_live_scrape_passes_promtool_and_counts_decisions() {
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    let admin = free_addr();
    let text = guard_config("superseded").replace(
        "[[upstream]]",
        &format!("[admin]\nlisten = \"{admin}\"\n\n[[upstream]]"),
    );
    let p = proxy(&text, origin.addr);
    let t1 = request(p.addr, "GET", "/items/1", &[], "").etag();
    let t2 = request(p.addr, "PUT", "/items/1", &[("If-Match", &t1)], "{}").etag();
    assert_ne!(t1, t2);
    let stale = request(p.addr, "PUT", "/items/1", &[("If-Match", &t1)], "{}");
    assert_eq!(stale.status, 412);
    // A request is counted once its answer is written (Pingora's `logging` phase, after the
    // client may already have read it): scrape until all three are.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let scrape = loop {
        let r = request(admin, "GET", "/metrics", &[], "");
        assert_eq!(r.status, 200);
        let scrape = r.body_str();
        let counted: f64 = scrape
            .lines()
            .filter(|l| l.starts_with("precond_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if counted >= 3.0 || std::time::Instant::now() > deadline {
            break scrape;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };

    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/setup installs Debian's prometheus package)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{scrape}");
    assert!(said.trim().is_empty(), "promtool found problems: {said}");

    let value = |series: &str| -> f64 {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(r#"precond_requests_total{decision="rejected",mode="guard",route="/"}"#),
        1.0
    );
    assert_eq!(
        value(r#"precond_requests_total{decision="forwarded",mode="guard",route="/"}"#),
        2.0
    );
    assert_eq!(
        value(r#"precond_request_duration_seconds_count{decision="forwarded"}"#),
        2.0
    );
    assert_eq!(
        value(r#"precond_upstream_response_seconds_count{upstream="origin"}"#),
        2.0
    );
    // The forwarded conditional write passed guard's fence (without waiting: nothing was in
    // flight); the stale one was refused before it.
    assert_eq!(
        value(r#"precond_lock_wait_seconds_count{lock="fence"}"#),
        1.0
    );
    assert_eq!(
        value(r#"precond_rejected_total{precondition="If-Match",reason="superseded"}"#),
        1.0
    );
    assert_eq!(value("precond_writes_in_flight"), 0.0);
    assert!(value("precond_store_entries") >= 1.0);
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert_eq!(
        value(r#"precond_upstream_servers{state="healthy",upstream="origin"}"#),
        1.0
    );
    // Combinations that cannot occur (or did not) are absent, not zero.
    assert!(!scrape.contains("precond_not_modified_total{"), "{scrape}");
    assert!(!scrape.contains("reason=\"weak_only\""), "{scrape}");
}

/// `/readyz` answers 503 (`"listening": false`) while the data port is not bound yet: Pingora
/// retries an address in use for about 30 s while the admin listener already answers, and a
/// balancer must not send traffic to an instance that does not listen. Once the address is
/// free, precond binds it, `/readyz` turns 200 and the data port is precond's.
#[test]
fn readyz_is_not_ready_until_the_data_port_is_bound() {
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    let (data, admin) = (free_addr(), free_addr());
    let squatter = std::net::TcpListener::bind(data).expect("the data port is free");
    let dir = TempDir::new("readyz");
    let file = dir.join("precond.toml");
    let text = guard_config("superseded")
        .replace("{listen}", &data.to_string())
        .replace("{origin}", &origin.addr.to_string())
        .replace(
            "[[upstream]]",
            &format!("[admin]\nlisten = \"{admin}\"\n\n[[upstream]]"),
        );
    std::fs::write(&file, text).unwrap();
    let _precond = run_precond(&file, &[admin]);
    let r = request(admin, "GET", "/readyz", &[], "");
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_eq!(r.json()["listening"], false, "{}", r.body_str());
    assert_eq!(r.json()["upstreams"][0]["healthy"], 1, "{}", r.body_str());

    drop(squatter);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let ready = loop {
        let r = request(admin, "GET", "/readyz", &[], "");
        if r.status != 503 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(ready.status, 200, "{}", ready.body_str());
    assert_eq!(ready.json()["listening"], true);
    let r = request(data, "GET", "/items/1", &[], "");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(r.header("ETag").is_some());
}
