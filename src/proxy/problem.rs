//! RFC 9457 problem details for the answers precond makes itself.
//!
//! Owns: the JSON bodies of edge 412s and 428s (and of the 404/502/503/504 precond makes when it
//! cannot forward), with the extension members clients use to recover. Pure: builds bytes, writes
//! nothing; [`answer`](super::answer) sends them.
//!
//! Every body has `type` `about:blank`, a `title` equal to the status's reason phrase, the numeric
//! `status`, a `detail` for humans, and `decided_by: "precond"`. Extension member names follow
//! RFC 9457 §3.2 (letters, digits, `_`, at least three characters).

use serde_json::{json, Map, Value};

use crate::precondition::{Field, Reason};

/// Media type of every body built here.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// What a client needs to recover from an edge 412.
#[derive(Debug)]
pub struct PreconditionFailed<'a> {
    /// Request method.
    pub method: &'a str,
    /// Request path (and query).
    pub path: &'a str,
    /// The precondition that failed.
    pub field: Field,
    /// Why.
    pub reason: Reason,
    /// The failing field's value(s) as the client sent them (capped, see `telemetry::redact`).
    pub sent: Vec<String>,
    /// Some of `sent` was left out or cut.
    pub sent_truncated: bool,
    /// Current entity-tags, when known and disclosed.
    pub current_etags: Option<Vec<String>>,
    /// Latest `Last-Modified`, when known and disclosed.
    pub current_last_modified: Option<String>,
}

/// The detail for humans; the failing values are in the `sent` member only (echoed once).
fn explain(p: &PreconditionFailed<'_>) -> String {
    match p.reason {
        Reason::Superseded => format!(
            "{} {}: the entity-tag(s) listed in If-Match identify representations that have \
             since been replaced; the write would overwrite changes you have not seen.",
            p.method, p.path
        ),
        Reason::NoMatch => format!(
            "{} {}: no entity-tag in If-Match matches the current representation.",
            p.method, p.path
        ),
        Reason::WeakOnly => format!(
            "{} {}: If-Match lists only weak entity-tags; If-Match uses strong \
             comparison, so a weak tag never matches.",
            p.method, p.path
        ),
        Reason::ResourceAbsent => format!(
            "{} {}: If-Match requires a current representation, and the resource does \
             not exist.",
            p.method, p.path
        ),
        Reason::ResourceExists => format!(
            "{} {}: If-None-Match: * asks to create the resource only if it does not exist, and \
             it exists.",
            p.method, p.path
        ),
        Reason::TagMatches => format!(
            "{} {}: If-None-Match matches the current representation.",
            p.method, p.path
        ),
        Reason::ModifiedSince => format!(
            "{} {}: the resource was modified after the If-Unmodified-Since date.",
            p.method, p.path
        ),
        Reason::Malformed | Reason::NotModifiedSince => format!(
            "{} {}: the {} precondition evaluated to false.",
            p.method,
            p.path,
            p.field.header_name()
        ),
    }
}

/// An action that can succeed against the state that refused the request (issue 17: every 412
/// leads somewhere).
fn next_step(p: &PreconditionFailed<'_>) -> String {
    let path = p.path;
    match p.reason {
        Reason::ResourceExists | Reason::TagMatches => format!(
            "The resource already exists: GET {path} to see it, or send If-Match with its ETag \
             to replace it."
        ),
        Reason::ResourceAbsent => format!(
            "The resource does not exist: to create it, send PUT {path} with If-None-Match: * \
             instead of If-Match."
        ),
        Reason::WeakOnly => format!(
            "This origin issues weak entity-tags, and a weak tag never satisfies If-Match, so \
             no If-Match retry can succeed here. GET {path}, merge your change, and retry with \
             If-Unmodified-Since set to its Last-Modified if it sends one (or with a strong \
             ETag if the API offers one). Operators: policy = \"superseded\", \
             mode = \"enforce\", or strong ETags at the origin remove this refusal."
        ),
        Reason::ModifiedSince => format!(
            "GET {path} to fetch the current representation, merge your change into it, and \
             retry with If-Unmodified-Since set to its Last-Modified (or If-Match set to its \
             ETag)."
        ),
        Reason::Malformed => format!(
            "Send {} as * or a comma-separated list of quoted entity-tags (\"...\" or \
             W/\"...\"), for example the ETag GET {path} returns.",
            p.field.header_name()
        ),
        Reason::Superseded | Reason::NoMatch | Reason::NotModifiedSince => format!(
            "GET {path} to fetch the current representation and its ETag, merge your change \
             into it, and retry with If-Match set to that ETag."
        ),
    }
}

/// The body of an edge 412.
pub fn precondition_failed(p: &PreconditionFailed<'_>) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("type".into(), "about:blank".into());
    body.insert("title".into(), "Precondition Failed".into());
    body.insert("status".into(), 412.into());
    body.insert("detail".into(), explain(p).into());
    body.insert("precondition".into(), p.field.header_name().into());
    body.insert("reason".into(), p.reason.code().into());
    body.insert("sent".into(), json!(p.sent));
    if p.sent_truncated {
        body.insert("sent_truncated".into(), true.into());
    }
    if let Some(tags) = &p.current_etags {
        let current = match tags.as_slice() {
            [one] => Value::from(one.as_str()),
            [] => Value::Null,
            many => json!(many),
        };
        body.insert("current_etag".into(), current);
    }
    if let Some(lm) = &p.current_last_modified {
        body.insert("current_last_modified".into(), lm.as_str().into());
    }
    body.insert("next_step".into(), next_step(p).into());
    body.insert("decided_by".into(), "precond".into());
    serde_json::to_vec(&Value::Object(body)).expect("a JSON map always serialises")
}

/// The body of a 428 (RFC 6585 §3: it "SHOULD explain how to resubmit the request").
pub fn precondition_required(method: &str, path: &str) -> Vec<u8> {
    let mut accepted = vec!["If-Match", "If-Unmodified-Since"];
    if method == "PUT" {
        accepted.push("If-None-Match: *");
    }
    serde_json::to_vec(&json!({
        "type": "about:blank",
        "title": "Precondition Required",
        "status": 428,
        "detail": format!(
            "{method} {path} must be conditional: GET {path} first, then send If-Match with the \
             ETag it returned (or If-Unmodified-Since with its Last-Modified{}). This prevents \
             overwriting changes made since you read it.",
            if method == "PUT" { "; to create a new resource, If-None-Match: *" } else { "" }
        ),
        "required_preconditions": accepted,
        "decided_by": "precond",
    }))
    .expect("a JSON object always serialises")
}

/// A body for any other status precond answers itself (no route, no upstream, upstream failure).
pub fn simple(status: u16, title: &str, detail: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "decided_by": "precond",
    }))
    .expect("a JSON object always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9457_3_body_has_standard_and_recovery_members() {
        let p = PreconditionFailed {
            method: "PUT",
            path: "/items/1",
            field: Field::IfMatch,
            reason: Reason::Superseded,
            sent: vec!["\"r1\"".into()],
            sent_truncated: false,
            current_etags: Some(vec!["\"r2\"".into()]),
            current_last_modified: None,
        };
        let v: Value = serde_json::from_slice(&precondition_failed(&p)).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["title"], "Precondition Failed");
        assert_eq!(v["status"], 412);
        assert_eq!(v["precondition"], "If-Match");
        assert_eq!(v["reason"], "superseded");
        assert_eq!(v["sent"][0], "\"r1\"");
        assert_eq!(v["current_etag"], "\"r2\"");
        assert!(v["detail"].as_str().unwrap().contains("/items/1"));
        assert!(v["next_step"].as_str().unwrap().contains("If-Match"));
        assert!(v.get("current_last_modified").is_none());
    }

    /// Each reason's advice names an action that can succeed against the state that refused
    /// the request; for `weak_only` no If-Match retry can, so none is advised.
    #[test]
    fn every_reason_leads_somewhere() {
        let step = |field, reason| {
            next_step(&PreconditionFailed {
                method: "PUT",
                path: "/x",
                field,
                reason,
                sent: vec![],
                sent_truncated: false,
                current_etags: None,
                current_last_modified: None,
            })
        };
        let weak = step(Field::IfMatch, Reason::WeakOnly);
        assert!(!weak.contains("retry with If-Match"), "{weak}");
        assert!(weak.contains("If-Unmodified-Since") && weak.contains("superseded"));
        let absent = step(Field::IfMatch, Reason::ResourceAbsent);
        assert!(absent.contains("If-None-Match: *"), "{absent}");
        let date = step(Field::IfUnmodifiedSince, Reason::ModifiedSince);
        assert!(
            date.contains("If-Unmodified-Since set to its Last-Modified"),
            "{date}"
        );
        for r in [Reason::ResourceExists, Reason::TagMatches] {
            assert!(step(Field::IfNoneMatch, r).contains("If-Match with its ETag"));
        }
        for r in [Reason::Superseded, Reason::NoMatch] {
            assert!(step(Field::IfMatch, r).contains("retry with If-Match"));
        }
    }

    #[test]
    fn rfc6585_3_body_says_how_to_resubmit() {
        let v: Value = serde_json::from_slice(&precondition_required("PUT", "/o/1")).unwrap();
        assert_eq!(v["status"], 428);
        assert_eq!(v["title"], "Precondition Required");
        assert!(v["detail"].as_str().unwrap().contains("If-Match"));
        assert_eq!(v["required_preconditions"][0], "If-Match");
    }

    #[test]
    fn undisclosed_validators_are_left_out() {
        let p = PreconditionFailed {
            method: "PUT",
            path: "/x",
            field: Field::IfUnmodifiedSince,
            reason: Reason::ModifiedSince,
            sent: vec!["Sun, 06 Nov 1994 08:49:37 GMT".into()],
            sent_truncated: false,
            current_etags: None,
            current_last_modified: None,
        };
        let v: Value = serde_json::from_slice(&precondition_failed(&p)).unwrap();
        assert!(v.get("current_etag").is_none());
        assert_eq!(v["precondition"], "If-Unmodified-Since");
    }
}
