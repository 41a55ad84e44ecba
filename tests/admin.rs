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
    let dir = std::env::temp_dir().join(format!("precond-admin-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
