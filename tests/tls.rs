//! TLS on both sides (issue 13), with a CA and certificates generated at run time (`rcgen`):
//! HTTPS termination with ALPN `h2` and `http/1.1` (guard works over both: curl is the client),
//! upstream TLS with SNI and verification (a CA file accepts the origin; the system roots and a
//! wrong name refuse it), and the certificate re-read on reload while the old one keeps serving
//! when the new files are bad.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::*;
use precond::app::Running;
use precond::demo::{DemoOrigin, Tags};

/// `[server]` lines for an HTTPS listener.
fn tls_server(addr: SocketAddr, cert: &Path, key: &Path) -> String {
    format!(
        "tls_listen = [\"{addr}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

/// Starts precond on `config` (with `{listen}` and `{origin}` placeholders) in front of
/// `origin`, with an HTTPS listener too, serving `cert`: the proxy and its HTTPS address.
fn https_proxy(config: &str, cert: &Path, key: &Path, origin: SocketAddr) -> (Running, SocketAddr) {
    let https = free_addr();
    let text = config.replace(
        "[server]\n",
        &format!("[server]\n{}", tls_server(https, cert, key)),
    );
    (proxy(&text, origin), https)
}

/// curl against `https://localhost:PORT{path}` trusting `ca`: (`http_version http_code`,
/// headers, body).
fn curl(addr: SocketAddr, ca: &Path, args: &[&str], path: &str) -> (String, String, String) {
    let dir = TempDir::new("tls-h");
    let headers = dir.join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", addr.port()))
        .arg("-D")
        .arg(&headers)
        .args(["-w", "\n%{http_version} %{http_code}"])
        .args(args)
        .arg(format!("https://localhost:{}{path}", addr.port()))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let h = std::fs::read_to_string(&headers).unwrap_or_default();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (status.to_string(), h, body.to_string())
}

fn etag_of(headers: &str) -> String {
    headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("etag").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no ETag in {headers}"))
}

#[test]
fn https_downstream_speaks_h2_and_http11_and_guard_decides_over_both() {
    let ca = Ca::new("down");
    let (cert, key) = ca.issue("server");
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    let (_p, https) = https_proxy(&guard_config("superseded"), &cert, &key, origin.addr);
    let ca_file = ca.ca_file();
    let (status, ..) = curl(https, &ca_file, &["-X", "PUT", "-d", "{}"], "/items/t9");
    assert_eq!(status, "2 201", "ALPN chose h2");
    let (status, h, _) = curl(https, &ca_file, &[], "/items/t9");
    assert_eq!(status, "2 200");
    let t1 = etag_of(&h);
    let im = format!("If-Match: {t1}");
    let (status, ..) = curl(
        https,
        &ca_file,
        &["--http1.1", "-X", "PUT", "-H", &im, "-d", "{}"],
        "/items/t9",
    );
    assert_eq!(status, "1.1 200", "http/1.1 is offered too");
    // The stale write, over h2: refused at the edge.
    let (status, h, body) = curl(
        https,
        &ca_file,
        &["-X", "PUT", "-H", &im, "-d", "{}"],
        "/items/t9",
    );
    assert_eq!(status, "2 412", "{body}");
    assert!(
        h.to_ascii_lowercase()
            .contains("precond-decision: rejected"),
        "{h}"
    );
    // A client that does not trust the CA cannot talk to it.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--resolve"])
        .arg(format!("localhost:{}:127.0.0.1", https.port()))
        .arg(format!("https://localhost:{}/items/1", https.port()))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an untrusted certificate is refused by curl"
    );
}

#[test]
fn upstream_tls_verifies_the_origin_by_its_ca_and_name() {
    let ca = Ca::new("up");
    let (cert, key) = ca.issue("origin");
    let demo = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    // The TLS origin: a precond (pass) terminating TLS in front of the demo origin.
    let (_origin, origin_tls) =
        https_proxy(&route_config("mode = \"pass\""), &cert, &key, demo.addr);
    let front = |upstream_tls: &str| {
        let text = guard_config("superseded").replace("connect_timeout = \"1s\"", upstream_tls);
        proxy(&text, origin_tls)
    };
    let ca_line = format!("ca_file = \"{}\"", ca.ca_file().display());
    let verified = front(&format!(
        "connect_timeout = \"1s\"\ntls = true\nsni = \"localhost\"\n{ca_line}"
    ));
    assert_eq!(
        request(verified.addr, "PUT", "/items/t9", &[], "{}").status,
        201,
        "through TLS, verified against the CA file"
    );
    let r = request(verified.addr, "GET", "/items/t9", &[], "");
    assert_eq!(r.status, 200);
    let t1 = r.etag();
    let t2 = request(
        verified.addr,
        "PUT",
        "/items/t9",
        &[("If-Match", &t1)],
        "{}",
    )
    .etag();
    assert_ne!(t1, t2);
    assert_eq!(
        request(
            verified.addr,
            "PUT",
            "/items/t9",
            &[("If-Match", &t1)],
            "{}"
        )
        .status,
        412
    );
    // Verification is on without a CA file too: the system roots do not know this CA.
    let system_roots = front("connect_timeout = \"1s\"\ntls = true\nsni = \"localhost\"");
    let r = request(system_roots.addr, "GET", "/items/t9", &[], "");
    assert_eq!(r.status, 502, "{}", r.body_str());
    // And the name is verified: the certificate is not for this one.
    let wrong_name = front(&format!(
        "connect_timeout = \"1s\"\ntls = true\nsni = \"api.example\"\n{ca_line}"
    ));
    assert_eq!(
        request(wrong_name.addr, "GET", "/items/t9", &[], "").status,
        502
    );
}

/// A reload that replaces an upstream's `ca_file` (a CA withdrawn) applies to the next request:
/// a connection pooled while the origin was verified against the old CA is not reused, so an
/// origin the new CA does not vouch for gets no more requests (502), until the old CA is back.
#[test]
fn a_pooled_upstream_connection_is_not_reused_under_other_cas() {
    let ca = Ca::new("pooled");
    let other = Ca::new("pooled-other");
    let (cert, key) = ca.issue("origin");
    let demo = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    let (_origin, origin_tls) =
        https_proxy(&route_config("mode = \"pass\""), &cert, &key, demo.addr);
    let (listen, admin) = (free_addr(), free_addr());
    let file = ca.dir.join("front.toml");
    let front = |trusted: &Ca| {
        format!(
            "[server]\nlisten = [\"{listen}\"]\ngrace_period = \"0s\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
             [[upstream]]\nname = \"origin\"\nservers = [\"{origin_tls}\"]\nidle_timeout = \"60s\"\ntls = true\nsni = \"localhost\"\n\
             ca_file = \"{}\"\n\n[[route]]\nupstream = \"origin\"\nmode = \"guard\"\n",
            trusted.ca_file().display()
        )
    };
    let reload_to = |trusted: &Ca| {
        std::fs::write(&file, front(trusted)).unwrap();
        let r = request(admin, "POST", "/reload", &[], "");
        assert_eq!(r.status, 200, "{}", r.body_str());
    };
    std::fs::write(&file, front(&ca)).unwrap();
    let _p = run_precond(&file, &[listen, admin]);
    assert_eq!(request(listen, "GET", "/items/p1", &[], "").status, 404);
    reload_to(&other);
    let r = request(listen, "GET", "/items/p1", &[], "");
    assert_eq!(
        r.status,
        502,
        "served over a connection the old CA verified: {}",
        r.body_str()
    );
    reload_to(&ca);
    assert_eq!(request(listen, "GET", "/items/p1", &[], "").status, 404);
}

/// The SHA-256 fingerprint of the certificate served on `addr` (openssl s_client).
fn served(addr: SocketAddr) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -servername localhost </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_certificate_is_read_again_on_reload_and_a_bad_one_keeps_the_old() {
    let ca = Ca::new("reload");
    let (first, first_key) = ca.issue("first");
    let (second, second_key) = ca.issue("second");
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    let (listen, https, admin) = (free_addr(), free_addr(), free_addr());
    let (cert, key) = (ca.dir.join("live.pem"), ca.dir.join("live.key"));
    std::fs::copy(&first, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let file = ca.dir.join("precond.toml");
    let text = format!(
        "[server]\nlisten = [\"{listen}\"]\n{}grace_period = \"0s\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
         [[upstream]]\nname = \"origin\"\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"origin\"\nmode = \"guard\"\n",
        tls_server(https, &cert, &key),
        origin.addr
    );
    std::fs::write(&file, text).unwrap();
    let _p = run_precond(&file, &[https, admin]);
    let (fp1, fp2) = (fingerprint(&first), fingerprint(&second));
    assert_ne!(fp1, fp2);
    assert_eq!(served(https), fp1);
    // Renewed files at the same paths: read again on reload (the configuration is unchanged).
    std::fs::copy(&second, &cert).unwrap();
    std::fs::copy(&second_key, &key).unwrap();
    assert_eq!(served(https), fp1, "nothing changes before the reload");
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(served(https), fp2);
    // A key that is not the certificate's: the reload fails and the served pair stays.
    std::fs::copy(&first_key, &key).unwrap();
    let r = request(admin, "POST", "/reload", &[], "");
    assert_eq!(r.status, 422, "{}", r.body_str());
    assert!(
        r.body_str().contains("not the key of the certificate"),
        "{}",
        r.body_str()
    );
    assert_eq!(served(https), fp2);
}

/// Enforce over h2: precond's own probe is sent as HTTP/1.1 with a `Host` (an h2 request has
/// only an authority), so a write on a resource precond never saw is judged, not forwarded
/// unevaluated; and the origin is told the client came over https.
#[test]
fn enforce_judges_h2_writes_with_an_http11_probe() {
    let ca = Ca::new("enforce");
    let (cert, key) = ca.issue("server");
    let origin = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), Tags::Strong, "").unwrap();
    // Created behind precond's back: it knows nothing of this resource.
    assert_eq!(
        request(origin.addr, "PUT", "/items/h2", &[], "{}").status,
        201
    );
    let (_p, https) = https_proxy(
        &route_config("mode = \"enforce\""),
        &cert,
        &key,
        origin.addr,
    );
    let ca_file = ca.ca_file();
    let (status, _, body) = curl(
        https,
        &ca_file,
        &["-X", "PUT", "-H", "If-Match: \"stale\"", "-d", "{}"],
        "/items/h2",
    );
    assert_eq!(status, "2 412", "judged on the probe's answer: {body}");
    let (status, h, _) = curl(https, &ca_file, &[], "/items/h2");
    assert_eq!(status, "2 200", "an enforce read over h2");
    let tag = etag_of(&h);
    let (status, ..) = curl(
        https,
        &ca_file,
        &["-X", "PUT", "-H", &format!("If-Match: {tag}"), "-d", "{}"],
        "/items/h2",
    );
    assert_eq!(status, "2 200");
}

/// A client that opens connections to the HTTPS port and speaks no TLS makes Pingora log a
/// failed handshake at `ERROR`, once per connection: those lines pass at most once a second, the
/// others are counted (`precond_log_lines_dropped_total`), and the rest of the log is untouched.
#[test]
fn failed_handshakes_are_logged_at_most_once_a_second() {
    use std::io::{Read, Write};
    let ca = Ca::new("noise");
    let (cert, key) = ca.issue("server");
    let (listen, https, admin) = (free_addr(), free_addr(), free_addr());
    let file = ca.dir.join("precond.toml");
    let text = format!(
        "[server]\nlisten = [\"{listen}\"]\n{}grace_period = \"0s\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
         [[upstream]]\nname = \"origin\"\nservers = [\"127.0.0.1:9\"]\nhealth_check = \"none\"\n\n\
         [[route]]\nupstream = \"origin\"\n",
        tls_server(https, &cert, &key),
    );
    std::fs::write(&file, text).unwrap();
    let log = ca.dir.join("precond.log");
    let _p = Proc(
        Command::new(env!("CARGO_BIN_EXE_precond"))
            .args(["run", "--config"])
            .arg(&file)
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Ready: every listener is bound (asked on the admin port: no stray handshake).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(admin).is_err()
        || request(admin, "GET", "/readyz", &[], "").status != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "precond did not become ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    const CONNECTIONS: u64 = 40;
    let started = std::time::Instant::now();
    for _ in 0..CONNECTIONS {
        let mut c = std::net::TcpStream::connect(https).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n")
            .unwrap();
        let _ = c.read(&mut [0u8; 256]);
    }
    let lines = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(what))
            .count() as u64
    };
    let dropped = || {
        let text = request(admin, "GET", "/metrics", &[], "").body_str();
        text.lines()
            .find_map(|l| l.strip_prefix("precond_log_lines_dropped_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no precond_log_lines_dropped_total in\n{text}"))
    };
    // Every failed handshake is either logged or counted, shortly after the client saw it end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while lines("Downstream handshake error") + dropped() < CONNECTIONS {
        assert!(
            std::time::Instant::now() < deadline,
            "{} logged, {} counted",
            lines("Downstream handshake error"),
            dropped()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let logged = lines("Downstream handshake error");
    assert_eq!(logged + dropped(), CONNECTIONS);
    // One per second begun since the first.
    let most = started.elapsed().as_secs() + 1;
    assert!(
        (1..=most).contains(&logged),
        "{logged} handshake error lines for {CONNECTIONS} connections in {:?}",
        started.elapsed()
    );
    assert!(
        lines("\"level\":\"INFO\"") > 0,
        "the rest of the log passes"
    );
}
