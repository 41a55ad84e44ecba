//! Every edge 412 leads somewhere (issue 17): for each reason precond can refuse a write with, a
//! client that does what the problem body's `next_step` says reaches an answer other than 412.
//!
//! The client here is literal: it looks for the action the advice names first ("retry with
//! If-Match set to …", "retry with If-Unmodified-Since set to …", "send … If-None-Match: *", …)
//! and performs it, fetching what it needs with a GET as the advice says.

mod common;

use common::*;
use precond::demo::{DemoOrigin, Tags};
use precond::precondition::Reason;

/// What a client following the advice does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// GET the resource, retry with `If-Match` set to its `ETag`.
    IfMatchFromGet,
    /// GET the resource, retry with `If-Unmodified-Since` set to its `Last-Modified`.
    IfUnmodifiedSinceFromGet,
    /// Retry with `If-None-Match: *` (create).
    CreateOnly,
}

/// The first action the advice names.
fn action(advice: &str) -> Action {
    let phrases = [
        ("retry with If-Match set to", Action::IfMatchFromGet),
        ("send If-Match with its ETag", Action::IfMatchFromGet),
        ("the ETag GET", Action::IfMatchFromGet),
        (
            "retry with If-Unmodified-Since set to its Last-Modified",
            Action::IfUnmodifiedSinceFromGet,
        ),
        ("If-None-Match: * instead", Action::CreateOnly),
    ];
    phrases
        .iter()
        .filter_map(|(p, a)| advice.find(p).map(|i| (i, *a)))
        .min_by_key(|(i, _)| *i)
        .unwrap_or_else(|| panic!("the advice names no action: {advice}"))
        .1
}

/// Follows the advice of a 412 to `path`, with the same method and body.
fn follow(p: std::net::SocketAddr, method: &str, path: &str, refusal: &Resp) -> (Action, Resp) {
    let advice = refusal.json()["next_step"].as_str().unwrap().to_string();
    let act = action(&advice);
    let retry = match act {
        Action::IfMatchFromGet => {
            let tag = request(p, "GET", path, &[], "").etag();
            request(p, method, path, &[("If-Match", &tag)], "{}")
        }
        Action::IfUnmodifiedSinceFromGet => {
            let get = request(p, "GET", path, &[], "");
            let lm = get
                .header("last-modified")
                .expect("Last-Modified")
                .to_string();
            request(p, method, path, &[("If-Unmodified-Since", &lm)], "{}")
        }
        Action::CreateOnly => request(p, method, path, &[("If-None-Match", "*")], "{}"),
    };
    (act, retry)
}

/// Header lines of a request.
type Headers = &'static [(&'static str, &'static str)];
/// A request before the refused write: method, path, headers.
type Step = (&'static str, &'static str, Headers);

/// A refusal and the route it happened on.
struct Case {
    reason: Reason,
    tags: Tags,
    route: &'static str,
    /// Requests before the refused write: (method, path, headers).
    setup: &'static [Step],
    path: &'static str,
    /// The refused write's headers (`{tag}`: the ETag of the last setup GET).
    headers: Headers,
}

const GUARD_MISMATCH: &str = "mode = \"guard\"\npolicy = \"mismatch\"";
const GUARD_SUPERSEDED: &str = "mode = \"guard\"\npolicy = \"superseded\"";

const CASES: &[Case] = &[
    Case {
        reason: Reason::Superseded,
        tags: Tags::Strong,
        route: GUARD_SUPERSEDED,
        setup: &[
            ("GET", "/items/1", &[]),
            ("PUT", "/items/1", &[("If-Match", "{tag}")]),
        ],
        path: "/items/1",
        headers: &[("If-Match", "{tag}")],
    },
    Case {
        reason: Reason::Superseded,
        tags: Tags::Weak,
        route: GUARD_SUPERSEDED,
        setup: &[
            ("GET", "/items/1", &[]),
            ("PUT", "/items/1", &[("If-Match", "{tag}")]),
        ],
        path: "/items/1",
        headers: &[("If-Match", "{tag}")],
    },
    Case {
        reason: Reason::NoMatch,
        tags: Tags::Strong,
        route: GUARD_MISMATCH,
        setup: &[("GET", "/items/1", &[])],
        path: "/items/1",
        headers: &[("If-Match", "\"someone-elses\"")],
    },
    Case {
        reason: Reason::WeakOnly,
        tags: Tags::Weak,
        route: GUARD_MISMATCH,
        setup: &[("GET", "/items/1", &[])],
        path: "/items/1",
        headers: &[("If-Match", "{tag}")],
    },
    Case {
        reason: Reason::ResourceExists,
        tags: Tags::Strong,
        route: GUARD_MISMATCH,
        setup: &[("GET", "/items/2", &[])],
        path: "/items/2",
        headers: &[("If-None-Match", "*")],
    },
    Case {
        reason: Reason::TagMatches,
        tags: Tags::Strong,
        route: GUARD_MISMATCH,
        setup: &[("GET", "/items/2", &[])],
        path: "/items/2",
        headers: &[("If-None-Match", "{tag}")],
    },
    Case {
        reason: Reason::ResourceAbsent,
        tags: Tags::Strong,
        route: GUARD_MISMATCH,
        setup: &[("PUT", "/items/404", &[]), ("DELETE", "/items/404", &[])],
        path: "/items/404",
        headers: &[("If-Match", "*")],
    },
    Case {
        reason: Reason::ModifiedSince,
        tags: Tags::Strong,
        route: GUARD_SUPERSEDED,
        setup: &[("GET", "/items/1", &[])],
        path: "/items/1",
        headers: &[("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")],
    },
    Case {
        reason: Reason::Malformed,
        tags: Tags::None,
        route: "mode = \"enforce\"",
        setup: &[("GET", "/items/1", &[])],
        path: "/items/1",
        headers: &[("If-Match", "unquoted")],
    },
];

#[test]
fn following_next_step_reaches_an_answer_other_than_412() {
    let mut covered = Vec::new();
    for case in CASES {
        let o = DemoOrigin::start("127.0.0.1:0".parse().unwrap(), case.tags, "").unwrap();
        let p = proxy(&route_config(case.route), o.addr);
        let mut tag = String::new();
        let fill = |h: &[(&'static str, &'static str)], tag: &str| -> Vec<(&'static str, String)> {
            h.iter()
                .map(|(k, v)| (*k, v.replace("{tag}", tag)))
                .collect()
        };
        for (method, path, headers) in case.setup {
            let h = fill(headers, &tag);
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = request(p.addr, method, path, &h, "{}");
            if *method == "GET" {
                if let Some(t) = r.header("etag") {
                    tag = t.to_string();
                }
            } else {
                assert!(
                    r.status < 300,
                    "{:?} setup {method}: {}",
                    case.reason,
                    r.status
                );
            }
        }
        let h = fill(case.headers, &tag);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let refused = request(p.addr, "PUT", case.path, &h, "{}");
        assert_eq!(
            refused.status,
            412,
            "{:?}: {}",
            case.reason,
            refused.body_str()
        );
        assert_eq!(
            refused.json()["reason"],
            case.reason.code(),
            "{}",
            refused.body_str()
        );
        let (act, retry) = follow(p.addr, "PUT", case.path, &refused);
        assert!(
            retry.status < 300,
            "{:?} ({:?} origin): following {act:?} gave {}: {}",
            case.reason,
            case.tags,
            retry.status,
            retry.body_str()
        );
        if case.reason == Reason::WeakOnly {
            let advice = refused.json()["next_step"].as_str().unwrap().to_string();
            assert_ne!(act, Action::IfMatchFromGet, "{advice}");
            assert!(advice.contains("no If-Match retry can succeed"), "{advice}");
            // And the refusal it would have repeated: a fresh weak tag is refused again.
            let tag = request(p.addr, "GET", case.path, &[], "").etag();
            let again = request(p.addr, "PUT", case.path, &[("If-Match", &tag)], "{}");
            assert_eq!(again.json()["reason"], "weak_only");
        }
        covered.push(case.reason);
    }
    // If-Modified-Since is evaluated for GET and HEAD only (RFC 9110 §13.1.3): its failure is a
    // 304, never a 412.
    let never_412 = [Reason::NotModifiedSince];
    for r in Reason::ALL {
        assert!(
            covered.contains(&r) || never_412.contains(&r),
            "no case follows the advice of {r:?}"
        );
    }
}
