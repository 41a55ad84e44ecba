//! Whose truth: what one caller's exchanges teach never refuses, or is shown to, another caller
//! (design.md §9). Each test is an attack from issue 9 on a real proxy over sockets, in front of
//! an origin with users; each failed on the main before principals.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use precond::app::Running;

const OWNER: &str = "Bearer owner-token";
const OTHER: &str = "Bearer other-token";

/// An API with users that never checks `If-Match` (the case guard exists for). Per path:
/// - `/private/..`: only `OWNER` may see or change it; anyone else gets 404 (existence hidden);
/// - `/view/..`: `OWNER` sees the full representation (`"full<n>"`), anyone else a public view
///   (`"pub<n>"`);
/// - `/shared/..`: any authenticated caller reads (`"s<n>"`) and writes; anonymous gets 401;
/// - `/mine/..`: a per-user resource behind one URL (`Cache-Control: private`): each caller has
///   their own version counter; `/varied/..` the same, marked by `Vary: Authorization` instead.
/// - `/nostore/..`: like `/shared/`, its answers marked `Cache-Control: no-store`.
/// - `/bare/..`: like `/shared/`, but a HEAD is answered without `ETag` (a HEAD handler that
///   drops it).
///
/// Writes bump the version and answer 200 with the new tag. Counts the writes it applied.
struct Api {
    origin: ScriptedOrigin,
    writes: Arc<Mutex<Vec<(String, String)>>>,
}

fn api() -> Api {
    let versions: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let writes: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let w = writes.clone();
    let origin = ScriptedOrigin::start(move |r: SeenRequest| {
        let (versions, writes) = (versions.clone(), w.clone());
        async move {
            let auth = r.headers.get("authorization").cloned().unwrap_or_default();
            let read = r.method == "GET" || r.method == "HEAD";
            let (counter, prefix, extra): (String, &str, Vec<(&'static str, String)>) =
                if r.path.starts_with("/private/") {
                    if auth != OWNER {
                        return (404, vec![], "not found".into());
                    }
                    (r.path.clone(), "v", vec![])
                } else if r.path.starts_with("/view/") {
                    if !read && auth != OWNER {
                        return (403, vec![], "forbidden".into());
                    }
                    let p = if auth == OWNER { "full" } else { "pub" };
                    (r.path.clone(), p, vec![])
                } else if r.path.starts_with("/mine/") || r.path.starts_with("/varied/") {
                    if auth.is_empty() {
                        return (401, vec![], "who are you?".into());
                    }
                    let private = if r.path.starts_with("/mine/") {
                        vec![("cache-control", "private".to_string())]
                    } else {
                        vec![("vary", "Accept-Encoding, authorization".to_string())]
                    };
                    (format!("{auth}{}", r.path), "m", private)
                } else {
                    if auth.is_empty() {
                        return (401, vec![], "who are you?".into());
                    }
                    let extra = if r.path.starts_with("/nostore/") {
                        vec![("cache-control", "no-store".to_string())]
                    } else {
                        vec![]
                    };
                    (r.path.clone(), "s", extra)
                };
            let mut v = versions.lock().unwrap();
            let n = v.entry(counter).or_insert(0);
            if !read {
                *n += 1;
                writes
                    .lock()
                    .unwrap()
                    .push((r.method.clone(), r.path.clone()));
            }
            let mut headers = extra;
            if !(r.method == "HEAD" && r.path.starts_with("/bare/")) {
                headers.push(("etag", format!("\"{prefix}{n}\"")));
            }
            headers.push(("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT".into()));
            (200, headers, format!("{prefix}{n}"))
        }
    });
    Api { origin, writes }
}

impl Api {
    fn writes(&self) -> usize {
        self.writes.lock().unwrap().len()
    }
}

fn as_user(auth: &str) -> Vec<(&str, &str)> {
    if auth.is_empty() {
        vec![]
    } else {
        vec![("Authorization", auth)]
    }
}

/// `method path` by `auth` (empty: anonymous) with `extra` header lines.
fn call(p: &Running, auth: &str, method: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let mut h = as_user(auth);
    h.extend_from_slice(extra);
    request(p.addr, method, path, &h, "")
}

fn guard_proxy(api: &Api, extra: &str) -> Running {
    proxy(
        &route_config(&format!("mode = \"guard\"\n{extra}")),
        api.origin.addr,
    )
}

#[test]
fn an_anonymous_404_does_not_refuse_the_owners_valid_write() {
    for policy in ["superseded", "mismatch"] {
        let api = api();
        let p = guard_proxy(&api, &format!("policy = \"{policy}\""));
        let r = call(&p, OWNER, "GET", "/private/1", &[]);
        assert_eq!((r.status, r.etag().as_str()), (200, "\"v0\""));
        assert_eq!(call(&p, "", "GET", "/private/1", &[]).status, 404);
        let r = call(&p, OWNER, "PUT", "/private/1", &[("If-Match", "\"v0\"")]);
        assert_eq!(
            r.status,
            200,
            "{policy}: forwarded, not refused: {}",
            r.body_str()
        );
        assert_eq!(api.writes(), 1);
    }
}

#[test]
fn an_anonymous_public_view_does_not_refuse_the_owners_valid_write() {
    let api = api();
    let p = guard_proxy(&api, "");
    assert_eq!(call(&p, OWNER, "GET", "/view/1", &[]).etag(), "\"full0\"");
    assert_eq!(call(&p, "", "GET", "/view/1", &[]).etag(), "\"pub0\"");
    let r = call(&p, OWNER, "PUT", "/view/1", &[("If-Match", "\"full0\"")]);
    assert_eq!(r.status, 200, "forwarded: {}", r.body_str());
    assert_eq!(api.writes(), 1);
}

/// The capability principals must keep: A reads, B writes through precond, A's write with the
/// old tag is refused at the edge, though A and B send different `Authorization` values; and
/// the refusal does not show A the tag B's write produced.
#[test]
fn another_callers_write_still_refuses_a_stale_write_without_disclosing_its_tag() {
    let api = api();
    let p = guard_proxy(&api, "");
    assert_eq!(call(&p, OWNER, "GET", "/shared/1", &[]).etag(), "\"s0\"");
    let r = call(&p, OTHER, "PUT", "/shared/1", &[("If-Match", "\"s0\"")]);
    assert_eq!((r.status, r.etag().as_str()), (200, "\"s1\""));
    let r = call(&p, OWNER, "PUT", "/shared/1", &[("If-Match", "\"s0\"")]);
    assert_eq!(r.status, 412, "A's stale write is refused at the edge");
    assert_eq!(r.json()["reason"], "superseded");
    assert_eq!(api.writes(), 1, "the origin never saw A's write");
    assert_eq!(r.header("etag"), None, "A was never shown \"s1\"");
    assert!(!r.body_str().contains("s1"), "{}", r.body_str());
    // Once A reads again, A is shown the new tag, and a 412 may carry it.
    assert_eq!(call(&p, OWNER, "GET", "/shared/1", &[]).etag(), "\"s1\"");
    let r = call(&p, OWNER, "PUT", "/shared/1", &[("If-Match", "\"s0\"")]);
    assert_eq!((r.status, r.header("etag")), (412, Some("\"s1\"")));
}

/// Before principals, an anonymous DELETE with an old tag or date got an edge 412 carrying the
/// resource's current validators: a disclosure before the origin could say 404/401.
#[test]
fn an_unauthenticated_caller_gets_the_origins_answer_and_no_validator() {
    let api = api();
    let p = guard_proxy(&api, "");
    assert_eq!(call(&p, OWNER, "GET", "/private/1", &[]).etag(), "\"v0\"");
    let r = call(&p, OWNER, "PUT", "/private/1", &[("If-Match", "\"v0\"")]);
    assert_eq!(r.etag(), "\"v1\"");
    for (field, value) in [
        ("If-Match", "\"v0\""),
        ("If-Unmodified-Since", "Sat, 01 Jan 1994 00:00:00 GMT"),
    ] {
        let r = call(&p, "", "DELETE", "/private/1", &[(field, value)]);
        assert_eq!(r.status, 404, "{field}: the origin's answer");
        assert_eq!(r.header("etag"), None);
        assert_eq!(r.header("last-modified"), None);
        assert!(!r.body_str().contains("v1"));
    }
    assert_eq!(api.writes(), 1, "the origin refused the anonymous deletes");
}

#[test]
fn a_private_resource_keeps_each_callers_writes_to_themselves() {
    // Marked per-caller by `Cache-Control: private`, or by `Vary` naming the credential.
    for path in ["/mine/1", "/varied/1"] {
        let api = api();
        let p = guard_proxy(&api, "");
        assert_eq!(call(&p, OWNER, "GET", path, &[]).etag(), "\"m0\"");
        // OTHER changes *their* resource behind the same URL.
        let r = call(&p, OTHER, "PUT", path, &[("If-Match", "\"m0\"")]);
        assert_eq!(r.status, 200);
        // The owner's "m0" is still their current tag: forwarded, not refused.
        let r = call(&p, OWNER, "PUT", path, &[("If-Match", "\"m0\"")]);
        assert_eq!(r.status, 200, "{path}: {}", r.body_str());
        assert_eq!(api.writes(), 2);
    }
}

#[test]
fn scope_principal_keeps_writes_in_the_writers_partition() {
    let api = api();
    let p = guard_proxy(&api, "scope = \"principal\"");
    assert_eq!(call(&p, OWNER, "GET", "/shared/1", &[]).etag(), "\"s0\"");
    assert_eq!(call(&p, OTHER, "PUT", "/shared/1", &[]).status, 200);
    let r = call(&p, OWNER, "PUT", "/shared/1", &[("If-Match", "\"s0\"")]);
    assert_eq!(r.status, 200, "the origin judges: {}", r.body_str());
}

#[test]
fn scope_shared_is_one_partition_for_every_caller() {
    let api = api();
    let p = guard_proxy(&api, "scope = \"shared\"");
    assert_eq!(call(&p, OWNER, "GET", "/shared/1", &[]).etag(), "\"s0\"");
    assert_eq!(call(&p, OTHER, "PUT", "/shared/1", &[]).etag(), "\"s1\"");
    let r = call(&p, OWNER, "PUT", "/shared/1", &[("If-Match", "\"s0\"")]);
    assert_eq!(r.status, 412);
    assert_eq!(
        r.header("etag"),
        Some("\"s1\""),
        "shared: one truth for all"
    );
}

#[test]
fn no_store_answers_teach_nothing() {
    let api = api();
    let p = guard_proxy(&api, "");
    assert_eq!(call(&p, OWNER, "GET", "/nostore/1", &[]).etag(), "\"s0\"");
    // A write that bypasses precond: the origin is at s1.
    request(api.origin.addr, "PUT", "/nostore/1", &as_user(OTHER), "");
    assert_eq!(call(&p, OWNER, "GET", "/nostore/1", &[]).etag(), "\"s1\"");
    // Had precond learned from the two reads, s0 would be proven replaced.
    let r = call(&p, OWNER, "PUT", "/nostore/1", &[("If-Match", "\"s0\"")]);
    assert_eq!(r.status, 200, "forwarded to the judge: {}", r.body_str());
}

#[test]
fn a_cookie_principal_tells_callers_apart_by_that_cookie_only() {
    let api = api();
    let p = guard_proxy(&api, "principal = [\"cookie:sid\"]");
    let owner = [("Cookie", "theme=dark; sid=alice")];
    let stranger = [("Cookie", "sid=mallory; theme=dark")];
    assert_eq!(
        call(&p, OWNER, "GET", "/view/1", &owner).etag(),
        "\"full0\""
    );
    assert_eq!(call(&p, "", "GET", "/view/1", &stranger).etag(), "\"pub0\"");
    let r = call(
        &p,
        OWNER,
        "PUT",
        "/view/1",
        &[("If-Match", "\"full0\""), owner[0]],
    );
    assert_eq!(r.status, 200, "another sid's view refused nothing");
    // The same sid with other cookies around it is the same caller: its own stale tag is refused.
    let same = [("Cookie", "sid=alice")];
    let r = call(
        &p,
        OWNER,
        "PUT",
        "/view/1",
        &[("If-Match", "\"full0\""), same[0]],
    );
    assert_eq!(r.status, 412);
}

fn enforce_proxy(api: &Api, secret_file: &std::path::Path) -> Running {
    let text = route_config("mode = \"enforce\"").replace(
        "[[upstream]]",
        &format!(
            "[edge]\ndisclose_validators = false\n\n[enforce]\ntag_secret_file = {:?}\n\n[[upstream]]",
            secret_file.display().to_string()
        ),
    );
    proxy(&text, api.origin.addr)
}

/// The deployment secret file `name` (one name, one secret).
fn secret_file(name: &str, secret: &str) -> std::path::PathBuf {
    scratch_file(&format!("principals-{name}"), secret)
}

/// An origin whose representations carry no validators (enforce synthesises them): `/pin` is
/// the owner's 4-digit PIN; anyone else gets 401.
fn pin_origin() -> ScriptedOrigin {
    ScriptedOrigin::start(|r: SeenRequest| async move {
        if r.headers.get("authorization").map(String::as_str) != Some(OWNER) {
            return (401, vec![], "who are you?".into());
        }
        (
            200,
            vec![("content-type", "text/plain".into())],
            "4711".into(),
        )
    })
}

/// With `disclose_validators = false`, an edge 304 to an `If-None-Match` guess (against the 401
/// the origin would give) told an attacker whether the guess was the owner's current tag.
#[test]
fn if_none_match_guesses_are_answered_by_the_origin() {
    let api = Api {
        origin: pin_origin(),
        writes: Arc::default(),
    };
    let f = secret_file("oracle", "0123456789abcdef0123456789abcdef");
    let p = enforce_proxy(&api, &f);
    let r = call(&p, OWNER, "GET", "/pin", &[]);
    assert_eq!(r.status, 200);
    let tag = r.etag();
    let r = call(&p, OWNER, "GET", "/pin", &[("If-None-Match", &tag)]);
    assert_eq!(r.status, 304, "the owner's own tag: 304 at the edge");
    for guess in [tag.as_str(), "\"s-00\""] {
        let r = call(&p, "", "GET", "/pin", &[("If-None-Match", guess)]);
        assert_eq!(r.status, 401, "the origin's answer, whatever the guess");
    }
}

/// A synthesised tag was SHA-256 of the body: a 4-digit PIN fell to 10 000 hashes. It is now a
/// MAC under the deployment secret: equal for instances sharing a secret, different otherwise,
/// and not the body's plain hash.
#[test]
fn a_synthesised_tag_is_not_a_function_of_the_body_alone() {
    use sha2::{Digest, Sha256};
    let tag_with = |secret: &str, name: &str| {
        let api = Api {
            origin: pin_origin(),
            writes: Arc::default(),
        };
        let p = enforce_proxy(&api, &secret_file(name, secret));
        call(&p, OWNER, "GET", "/pin", &[]).etag()
    };
    let a = tag_with("first-secret-0123456789", "a");
    assert_eq!(
        a,
        tag_with("first-secret-0123456789", "a2"),
        "one secret, one tag"
    );
    assert_ne!(a, tag_with("other-secret-0123456789", "b"));
    // The offline attack: the unkeyed construction over every 4-digit PIN finds no match.
    let unkeyed = |body: &str| {
        let mut h = Sha256::new();
        for part in [&b""[..], b"text/plain"] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(body.as_bytes());
        let d: String = h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("\"s-{d}\"")
    };
    assert!((0..10_000).all(|pin| unkeyed(&format!("{pin:04}")) != a));
}

#[test]
fn an_anonymous_404_does_not_mark_the_resource_absent_for_the_owner_in_enforce() {
    let api = api();
    let f = secret_file("enforce404", "0123456789abcdef0123456789abcdef");
    let p = enforce_proxy(&api, &f);
    let tag = call(&p, OWNER, "GET", "/private/1", &[]).etag();
    assert_eq!(call(&p, "", "GET", "/private/1", &[]).status, 404);
    let r = call(&p, OWNER, "PUT", "/private/1", &[("If-Match", &tag)]);
    assert_eq!(r.status, 200, "not resource_absent: {}", r.body_str());
    assert_eq!(api.writes(), 1);
}

#[test]
fn a_short_secret_file_is_refused_at_start() {
    let f = secret_file("short", "short\n");
    let text = route_config("mode = \"enforce\"").replace(
        "[[upstream]]",
        &format!(
            "[enforce]\ntag_secret_file = {:?}\n\n[[upstream]]",
            f.display().to_string()
        ),
    );
    let c = precond::config::parse(
        &text
            .replace("{listen}", "127.0.0.1:0")
            .replace("{origin}", "127.0.0.1:9"),
    )
    .expect("the file itself is valid");
    let e = precond::app::spawn(c).err().expect("start refused");
    assert!(e.to_string().contains("at least 16"), "{e}");
}

/// The capability that must survive an answer without a validator: the owner read a tag, a HEAD
/// handler then answered without `ETag` (the owner's current tag became unknown), another user
/// wrote: the owner's write with the old tag is still refused at the edge. (Another user's write
/// retired only the tags *known* current, so this one was forwarded: a lost update.)
#[test]
fn a_tag_made_unknown_by_an_untagged_answer_is_still_refused_after_another_users_write() {
    let api = api();
    let p = guard_proxy(&api, "");
    let tag = call(&p, OWNER, "GET", "/bare/1", &[]).etag();
    let r = call(&p, OWNER, "HEAD", "/bare/1", &[]);
    assert_eq!((r.status, r.header("etag")), (200, None));
    let r = call(&p, OTHER, "PUT", "/bare/1", &[("If-Match", &tag)]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let r = call(&p, OWNER, "PUT", "/bare/1", &[("If-Match", &tag)]);
    assert_eq!(r.status, 412, "{}", r.body_str());
    assert!(r.body_str().contains("superseded"), "{}", r.body_str());
    assert_eq!(api.writes(), 1, "the stale write never reached the origin");
}

/// On the shared store too, an edge 412 is decided only on tags the caller was shown (or named):
/// an anonymous caller the origin answered with the public view must not learn, from an edge
/// 412, that a guess was one of the owner's replaced tags; their write goes to the origin (403).
/// The owner's own stale write, through the other instance, is still refused.
#[test]
fn on_the_shared_store_no_edge_412_answers_for_another_users_tags() {
    let redis = RedisServer::start();
    let api = api();
    let store = format!(
        "backend = \"redis\"\nurl = \"{}\"\ntimeout = \"500ms\"",
        redis.url()
    );
    let (a, b) = (
        store_instance(api.origin.addr, "guard", &store),
        store_instance(api.origin.addr, "guard", &store),
    );
    let full0 = call(&a, OWNER, "GET", "/view/1", &[]).etag();
    let pub0 = call(&b, "", "GET", "/view/1", &[]).etag();
    assert_ne!(full0, pub0);
    let r = call(&b, OWNER, "PUT", "/view/1", &[("If-Match", &full0)]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    for p in [&a, &b] {
        let r = call(p, "", "DELETE", "/view/1", &[("If-Match", &full0)]);
        assert_eq!(
            r.status,
            403,
            "the origin's answer, not an edge 412: {}",
            r.body_str()
        );
    }
    let r = call(&a, OWNER, "PUT", "/view/1", &[("If-Match", &full0)]);
    assert_eq!(r.status, 412, "{}", r.body_str());
    assert_eq!(api.writes(), 1);
}
