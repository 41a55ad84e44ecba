//! Learning from overlapping writes and recurring tags (content-hash ETags, reverts, idempotent
//! re-PUTs) without proving stale a tag the origin may hold current: each case was a false 412
//! found in review of the fence's learning rules.

use std::time::Duration;

use precond::identity::{Principal, ResourceKey, RouteId};
use precond::precondition::{Conditional, Decision, EntityTag, Method, Policy};
use precond::store::{guard_decision, Observation, Outcome, Store};

fn key() -> ResourceKey<'static> {
    ResourceKey {
        route: RouteId(0),
        host: "h",
        path: "/r",
    }
}

fn obs(who: Principal, m: Method, status: u16, etag: Option<&'static str>) -> Observation<'static> {
    Observation {
        etag: etag.map(str::as_bytes),
        principal: who,
        ..Observation::of(m, Outcome::Status(status))
    }
}

fn named(o: Observation<'static>, tag: &'static str) -> Observation<'static> {
    Observation {
        named: EntityTag::parse(tag.as_bytes()),
        ..o
    }
}

/// guard's decision on `PUT If-Match: tag` by `who`, superseded policy.
fn put_if_match(s: &Store, who: Principal, tag: &'static str) -> Decision {
    let im: [&[u8]; 1] = [tag.as_bytes()];
    let none: [&[u8]; 0] = [];
    let cond = Conditional {
        method: Method::Put,
        if_match: &im[..],
        if_none_match: &none[..],
        if_modified_since: &none[..],
        if_unmodified_since: &none[..],
        no_cache: false,
    };
    guard_decision(s, &key(), who, &cond, Policy::Superseded)
}

const P: Principal = Principal(7);

/// An overlapping write's late answer brings back a tag replaced before it started.
/// H: `If-Match "v2"` -> 200 "v3"; X (no precondition, in flight at the same time) reverts the
/// content -> 200 "v1" (content-hash tags), answered after H. If X was applied after H (its
/// answer came last), "v1" is current at the origin; the store keeps it "replaced" and refuses
/// X's own client's next write.
#[test]
fn overlapping_revert_learned_last_stays_replaced_false_412() {
    let s = Store::new(100, Duration::from_secs(60));
    s.learn(
        &key(),
        s.ticket(),
        &obs(P, Method::Get, 200, Some("\"v1\"")),
    );
    s.learn(
        &key(),
        s.ticket(),
        &named(obs(P, Method::Put, 200, Some("\"v2\"")), "\"v1\""),
    );
    // Both in flight:
    let (th, tx) = (s.ticket(), s.ticket());
    s.learn(
        &key(),
        th,
        &named(obs(P, Method::Put, 200, Some("\"v3\"")), "\"v2\""),
    );
    s.learn(&key(), tx, &obs(P, Method::Put, 200, Some("\"v1\"")));
    // The order at the origin is unknown (the store says so itself: current = None), so nothing
    // about "v1" is proven; yet:
    assert_eq!(
        put_if_match(&s, P, "\"v1\""),
        Decision::Proceed,
        "false 412: \"v1\" may be current (X applied last) but the store keeps it replaced"
    );
}

/// The tag an overlapping write named is not retired once the resource's tags are known to recur.
/// (Before any recurrence was seen, an origin whose tags never recur is assumed: the first revert
/// racing a write can cost one false 412, until the next read shows the tag current again.)
/// X (no precondition) re-PUTs the content of "v1" -> 200 "v1"; H `If-Match "v1"` -> 200 "v2";
/// X's answer is learned first, H's late. Origin order H then X leaves "v1" current.
#[test]
fn named_tag_retired_by_a_late_overlapping_answer_false_412() {
    let s = Store::new(100, Duration::from_secs(60));
    s.learn(
        &key(),
        s.ticket(),
        &obs(P, Method::Get, 200, Some("\"v1\"")),
    );
    // The resource's tags were seen to come back (a write replaced v1 with v2, then a read
    // showed v1 again): content-derived.
    s.learn(
        &key(),
        s.ticket(),
        &named(obs(P, Method::Put, 200, Some("\"v2\"")), "\"v1\""),
    );
    s.learn(
        &key(),
        s.ticket(),
        &obs(P, Method::Get, 200, Some("\"v1\"")),
    );
    let (th, tx) = (s.ticket(), s.ticket());
    s.learn(&key(), tx, &obs(P, Method::Put, 200, Some("\"v1\"")));
    s.learn(
        &key(),
        th,
        &named(obs(P, Method::Put, 200, Some("\"v2\"")), "\"v1\""),
    );
    assert_eq!(
        put_if_match(&s, P, "\"v1\""),
        Decision::Proceed,
        "false 412: order unknown, \"v1\" may be current"
    );
}

/// A 2xx without a tag retires nothing, in the writer's partition or any other.
#[test]
fn a_tagless_2xx_still_retires_other_partitions_false_412() {
    let (a, b) = (Principal(11), Principal(22));
    let s = Store::new(100, Duration::from_secs(60));
    s.learn(
        &key(),
        s.ticket(),
        &obs(a, Method::Get, 200, Some("\"v1\"")),
    );
    s.learn(
        &key(),
        s.ticket(),
        &obs(b, Method::Get, 200, Some("\"v1\"")),
    );
    // B's idempotent no-op PUT, answered 204 without ETag.
    s.learn(&key(), s.ticket(), &obs(b, Method::Put, 204, None));
    assert_eq!(
        put_if_match(&s, b, "\"v1\""),
        Decision::Proceed,
        "writer: unknown, forwarded"
    );
    assert_eq!(
        put_if_match(&s, a, "\"v1\""),
        Decision::Proceed,
        "false 412: the same no-op proves nothing for A either"
    );
}

/// A write answered W/"x" (an encoding of the same representation) leaves "x" current in every
/// partition.
#[test]
fn weak_encoding_answer_retires_strong_tag_in_other_partitions_false_412() {
    let (a, b) = (Principal(11), Principal(22));
    let s = Store::new(100, Duration::from_secs(60));
    s.learn(&key(), s.ticket(), &obs(a, Method::Get, 200, Some("\"x\"")));
    s.learn(&key(), s.ticket(), &obs(b, Method::Get, 200, Some("\"x\"")));
    s.learn(
        &key(),
        s.ticket(),
        &obs(b, Method::Put, 200, Some("W/\"x\"")),
    );
    assert_eq!(
        put_if_match(&s, b, "\"x\""),
        Decision::Proceed,
        "writer keeps \"x\" current"
    );
    assert_eq!(
        put_if_match(&s, a, "\"x\""),
        Decision::Proceed,
        "false 412 for A"
    );
}

/// A tag shown current again by an answer marked `no-store` is not refused: forgetting that it
/// was replaced is not learning it (found by the `decision` fuzz target).
#[test]
fn a_revert_under_no_store_is_not_refused() {
    let s = Store::new(100, Duration::from_secs(600));
    s.learn(&key(), s.ticket(), &obs(P, Method::Get, 200, Some("\"a\"")));
    s.learn(
        &key(),
        s.ticket(),
        &named(obs(P, Method::Put, 200, Some("\"b\"")), "\"a\""),
    );
    assert!(matches!(
        put_if_match(&s, P, "\"a\""),
        Decision::PreconditionFailed(_)
    ));
    let revert = Observation {
        no_store: true,
        ..named(obs(P, Method::Put, 200, Some("\"a\"")), "\"b\"")
    };
    s.learn(&key(), s.ticket(), &revert);
    assert_eq!(put_if_match(&s, P, "\"a\""), Decision::Proceed);
    // And a read marked no-store showing it current does the same.
    let s2 = Store::new(100, Duration::from_secs(600));
    s2.learn(
        &key(),
        s2.ticket(),
        &obs(P, Method::Get, 200, Some("\"a\"")),
    );
    s2.learn(
        &key(),
        s2.ticket(),
        &named(obs(P, Method::Put, 200, Some("\"b\"")), "\"a\""),
    );
    let read = Observation {
        no_store: true,
        ..obs(P, Method::Get, 200, Some("\"a\""))
    };
    s2.learn(&key(), s2.ticket(), &read);
    assert_eq!(put_if_match(&s2, P, "\"a\""), Decision::Proceed);
}
