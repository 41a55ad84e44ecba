//! `observe` routes (issue 14): everything is forwarded; what guard would have refused is counted
//! with the origin's answer; writes without a precondition that overwrite a version their caller
//! had not read are counted as blind overwrites; the census stays within its bytes; the JSON log
//! and `precond report` say so. Real proxies, real origins, over loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use precond::demo::{DemoOrigin, Tags};
use precond::precondition::{Field, Reason};
use precond::telemetry::observe::{Answer, Census};

fn observe_route(extra: &str) -> String {
    route_config("mode = \"observe\"").replace("[[upstream]]", &format!("{extra}\n[[upstream]]"))
}

fn strong_origin() -> DemoOrigin {
    DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap()
}

#[test]
fn a_stale_write_is_forwarded_and_counted_with_the_origins_answer() {
    let origin = strong_origin();
    let p = proxy(&observe_route(""), origin.addr);
    assert_eq!(request(p.addr, "PUT", "/d", &[], r#"{"v":1}"#).status, 201);
    let t1 = request(p.addr, "GET", "/d", &[], "").etag();
    assert_eq!(
        request(p.addr, "PUT", "/d", &[("If-Match", &t1)], r#"{"v":2}"#).status,
        200
    );
    let m = &p.state.metrics.observe;
    assert_eq!(m.would_refused(Field::IfMatch, Reason::Superseded), 0);
    // The stale write: guard would answer 412; observe forwards it and the origin (which never
    // checks) applies it.
    let writes = origin.stats.writes.load(Ordering::SeqCst);
    let r = request(p.addr, "PUT", "/d", &[("If-Match", &t1)], r#"{"v":3}"#);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(r.header("precond-decision").is_none());
    assert_eq!(
        origin.stats.writes.load(Ordering::SeqCst),
        writes + 1,
        "the origin saw it"
    );
    assert_eq!(m.would_refused(Field::IfMatch, Reason::Superseded), 1);
    assert_eq!(m.answered_with(Answer::Success), 1);
    // The same write on a guard route is refused: observe records exactly guard's decision.
    let g = proxy(&guard_config("superseded"), origin.addr);
    let t = request(g.addr, "GET", "/d", &[], "").etag();
    request(g.addr, "PUT", "/d", &[("If-Match", &t)], r#"{"v":4}"#);
    assert_eq!(
        request(g.addr, "PUT", "/d", &[("If-Match", &t)], "{}").status,
        412
    );
}

#[test]
fn two_callers_writing_blind_over_one_read_make_one_blind_overwrite() {
    let origin = strong_origin();
    let p = proxy(&observe_route(""), origin.addr);
    assert_eq!(
        request(p.addr, "PUT", "/doc", &[], r#"{"v":0}"#).status,
        201
    );
    let (alice, bob) = (
        ("Authorization", "Bearer alice"),
        ("Authorization", "Bearer bob"),
    );
    let ta = request(p.addr, "GET", "/doc", &[alice], "").etag();
    let tb = request(p.addr, "GET", "/doc", &[bob], "").etag();
    assert_eq!(ta, tb);
    assert_eq!(
        request(p.addr, "PUT", "/doc", &[alice], r#"{"v":"alice"}"#).status,
        200
    );
    assert_eq!(
        request(p.addr, "PUT", "/doc", &[bob], r#"{"v":"bob"}"#).status,
        200
    );
    let m = &p.state.metrics.observe;
    assert_eq!(m.blind_overwrites(), 1, "bob overwrote alice's version");
    // Bob's own answer is what bob last saw: his next blind write is informed.
    assert_eq!(
        request(p.addr, "PUT", "/doc", &[bob], r#"{"v":"bob2"}"#).status,
        200
    );
    assert_eq!(m.blind_overwrites(), 1);
}

#[test]
fn one_caller_writing_in_sequence_makes_no_blind_overwrite() {
    let origin = strong_origin();
    let p = proxy(&observe_route(""), origin.addr);
    let (alice, bob) = (
        ("Authorization", "Bearer alice"),
        ("Authorization", "Bearer bob"),
    );
    assert_eq!(
        request(p.addr, "PUT", "/seq", &[alice], r#"{"v":0}"#).status,
        201
    );
    for i in 1..=5 {
        request(p.addr, "GET", "/seq", &[alice], "");
        let w = request(p.addr, "PUT", "/seq", &[alice], &format!(r#"{{"v":{i}}}"#));
        assert_eq!(w.status, 200);
        // Bob reads in between: he has seen alice's version, so his write is informed too.
        request(p.addr, "GET", "/seq", &[bob], "");
        let w = request(p.addr, "PUT", "/seq", &[bob], &format!(r#"{{"v":{i}.5}}"#));
        assert_eq!(w.status, 200);
        // Alice's next write comes after bob's, which she has not read: that one is blind.
        if i == 5 {
            request(p.addr, "PUT", "/seq", &[alice], "{}");
        }
    }
    let m = &p.state.metrics.observe;
    assert_eq!(m.blind_overwrites(), 1, "only alice's last write");
    assert_eq!(m.census_count(Census::Informed), 10);
}

/// A scripted origin with version counters: GET shows `"v<n>"`; PUT, PATCH, DELETE and POST
/// increment it and answer 204 *without* `ETag` (as RFC 9110 §9.3.4 often requires); with
/// `private`, every answer carries `Cache-Control: private` and each caller sees its own tag.
fn counter_origin(private: bool) -> ScriptedOrigin {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    ScriptedOrigin::start(move |r| {
        let n = n.clone();
        async move {
            let mut h = vec![];
            if private {
                h.push(("cache-control", "private".to_string()));
            }
            if r.method == "GET" {
                let who = r.headers.get("authorization").cloned().unwrap_or_default();
                let v = n.load(Ordering::SeqCst);
                let tag = if private {
                    format!("\"{who}-{v}\"").replace(' ', "")
                } else {
                    format!("\"v{v}\"")
                };
                h.push(("etag", tag));
                (200, h, "{}".to_string())
            } else {
                n.fetch_add(1, Ordering::SeqCst);
                (204, h, String::new())
            }
        }
    })
}

#[test]
fn write_answers_without_a_tag_still_reveal_the_overwrite() {
    let origin = counter_origin(false);
    let p = proxy(&observe_route(""), origin.addr);
    let (alice, bob) = (
        ("Authorization", "Bearer alice"),
        ("Authorization", "Bearer bob"),
    );
    request(p.addr, "GET", "/doc", &[alice], "");
    request(p.addr, "GET", "/doc", &[bob], "");
    assert_eq!(request(p.addr, "PUT", "/doc", &[alice], "{}").status, 204);
    assert_eq!(request(p.addr, "PUT", "/doc", &[bob], "{}").status, 204);
    let m = &p.state.metrics.observe;
    assert_eq!(m.blind_overwrites(), 1);
    // POST is an action, not a replacement: never classified.
    request(p.addr, "GET", "/doc", &[alice], "");
    request(p.addr, "POST", "/doc", &[bob], "{}");
    assert_eq!(request(p.addr, "POST", "/doc", &[alice], "{}").status, 204);
    assert_eq!(m.blind_overwrites(), 1);
}

#[test]
fn callers_are_told_apart_on_shared_routes_and_per_caller_answers_are_not_classified() {
    // scope = "shared": one partition for the store, but the census still tells callers apart.
    let origin = counter_origin(false);
    let shared = observe_route("").replace(
        "mode = \"observe\"",
        "mode = \"observe\"\nscope = \"shared\"",
    );
    let p = proxy(&shared, origin.addr);
    let (alice, bob) = (
        ("Authorization", "Bearer alice"),
        ("Authorization", "Bearer bob"),
    );
    request(p.addr, "GET", "/doc", &[alice], "");
    request(p.addr, "GET", "/doc", &[bob], "");
    request(p.addr, "PUT", "/doc", &[alice], "{}");
    request(p.addr, "PUT", "/doc", &[bob], "{}");
    assert_eq!(p.state.metrics.observe.blind_overwrites(), 1);
    // Answers marked per caller: alice and bob see their own representations; nothing is blind.
    let origin = counter_origin(true);
    let p = proxy(&observe_route(""), origin.addr);
    request(p.addr, "GET", "/me", &[alice], "");
    request(p.addr, "GET", "/me", &[bob], "");
    request(p.addr, "PUT", "/me", &[alice], "{}");
    request(p.addr, "PUT", "/me", &[bob], "{}");
    let m = &p.state.metrics.observe;
    assert_eq!(m.blind_overwrites(), 0);
    assert_eq!(m.census_count(Census::Unclassified), 2);
}

#[test]
fn observe_log_lines_are_bounded() {
    let origin = strong_origin();
    let p = proxy(&observe_route(""), origin.addr);
    request(p.addr, "PUT", "/d", &[], "{}");
    let t = request(p.addr, "GET", "/d", &[], "").etag();
    request(p.addr, "PUT", "/d", &[("If-Match", &t)], "{}");
    let mut conn = Conn::open(p.addr);
    for _ in 0..400 {
        conn.request("PUT", "/d", &[("If-Match", &t)], "{}");
    }
    let m = &p.state.metrics.observe;
    assert_eq!(m.answered_with(Answer::Success), 400, "every one counted");
    assert!(m.log_suppressed.get() > 0, "but not every one logged");
}

#[test]
fn the_census_stays_within_its_bytes_under_a_flood_of_callers() {
    let origin = strong_origin();
    let budget = 64 * 1024;
    let p = proxy(
        &observe_route("[store]\ncensus_max_bytes = \"64KiB\"\n"),
        origin.addr,
    );
    request(p.addr, "PUT", "/hot", &[], "{}");
    let mut conn = Conn::open(p.addr);
    for i in 0..1500 {
        let who = format!("Bearer caller-{i}");
        let r = conn.request("GET", "/hot", &[("Authorization", &who)], "");
        assert_eq!(r.status, 200);
    }
    let census = p.state.store.census();
    let bytes = census.bytes();
    assert!(bytes <= budget, "{bytes} bytes > {budget}");
    // 1,500 callers' reads would need ten times the budget (each entry's weight is calibrated on
    // resident memory): the census was filled, and older entries forgotten to stay within it.
    assert!(1500 * u64::from(precond::store::census::ENTRY_OVERHEAD) > 10 * budget);
    assert!(bytes > budget / 2, "{bytes}: the census kept little");
}

/// The JSON log (one line per would-be refusal and per blind overwrite, no ANSI) and
/// `precond report` on a live scrape, with the real binary.
#[test]
fn json_log_lines_and_the_report() {
    let origin = strong_origin();
    let (listen, admin) = (free_addr(), free_addr());
    let dir = TempDir::new("observe");
    let file = dir.join("precond.toml");
    let text = observe_route(&format!(
        "[admin]\nlisten = \"{admin}\"\n\n[log]\nformat = \"json\"\naccess_log = true\n"
    ))
    .replace("{listen}", &listen.to_string())
    .replace("{origin}", &origin.addr.to_string())
        + "\n[[route]]\npath_prefix = \"/g\"\nupstream = \"origin\"\nmode = \"guard\"\n";
    std::fs::write(&file, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_precond"))
        .args(["run", "--config"])
        .arg(&file)
        .env("PRECOND_TAG_SECRET", "observe-test-secret-0123456789")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "precond did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (alice, bob) = (
        ("Authorization", "Bearer alice"),
        ("Authorization", "Bearer bob"),
    );
    request(listen, "PUT", "/items/9", &[alice], "{}");
    let t = request(listen, "GET", "/items/9", &[alice], "").etag();
    request(listen, "GET", "/items/9", &[bob], "");
    request(
        listen,
        "PUT",
        "/items/9",
        &[alice, ("If-Match", &t)],
        r#"{"a":1}"#,
    );
    request(listen, "PUT", "/items/9", &[bob], r#"{"b":1}"#); // blind overwrite
    request(
        listen,
        "PUT",
        "/items/9",
        &[alice, ("If-Match", &t)],
        r#"{"a":2}"#,
    ); // would refuse
       // And an edge 412 on the guard route: its decision line.
    request(listen, "PUT", "/g/x", &[], "{}");
    let g = request(listen, "GET", "/g/x", &[], "").etag();
    request(listen, "PUT", "/g/x", &[("If-Match", &g)], "{}");
    assert_eq!(
        request(listen, "PUT", "/g/x", &[("If-Match", &g)], "{}").status,
        412
    );
    let out = Command::new(env!("CARGO_BIN_EXE_precond"))
        .args(["report", "--metrics", &format!("http://{admin}/metrics")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = child.kill();
    let _ = child.wait();
    let mut lines = Vec::new();
    let mut refusals = Vec::new();
    let mut access = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        assert!(
            !line.contains('\u{1b}'),
            "ANSI escape in a non-terminal log: {line}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["target"] == "precond::access" {
            access.push(v.clone());
        }
        if v["decision"] == "412" {
            refusals.push(v.clone());
        }
        if v["target"] == "precond::observe" {
            lines.push(v);
        }
    }
    let events: Vec<&str> = lines.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["blind_overwrite", "would_refuse"], "{lines:?}");
    assert_eq!(lines[1]["reason"], "superseded");
    assert_eq!(lines[1]["origin_status"], 200);
    assert_eq!(lines[0]["path"], "/items/9");
    // One decision line per edge 412, its fields plain strings.
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["path"], "/g/x");
    assert_eq!(refusals[0]["reason"], "superseded");
    assert_eq!(refusals[0]["precondition"], "If-Match");
    assert_eq!(refusals[0]["sent"], g.as_str());
    assert_eq!(refusals[0]["sent_count"], 1);
    assert_eq!(
        (
            refusals[0]["route"].as_str(),
            refusals[0]["upstream"].as_str()
        ),
        (Some("/g"), Some("origin"))
    );
    assert!(refusals[0]["duration_ms"]
        .as_f64()
        .is_some_and(|d| d >= 0.0));
    // access_log: one line per request on the data port (10), the edge's answers by their
    // decision, the others as forwarded.
    assert_eq!(access.len(), 10, "{access:?}");
    let last = &access[9];
    assert_eq!(last["status"], 412);
    assert!(
        last["decision"].as_str().unwrap().starts_with("rejected"),
        "{last}"
    );
    assert_eq!(
        (last["route"].as_str(), last["upstream"].as_str()),
        (Some("/g"), Some("origin"))
    );
    assert!(
        last["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{last}"
    );
    assert!(
        access[..9].iter().all(|v| v["decision"] == "forwarded"),
        "{access:?}"
    );
    assert!(report.contains("Blind overwrites: 1"), "{report}");
    assert!(report.contains("If-Match, superseded: 1"), "{report}");
    assert!(report.contains("the origin accepted 1 of them"), "{report}");
}
