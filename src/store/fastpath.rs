//! The decision fast path of `guard` routes: header bytes and a resource in, forward-or-412 out.
//!
//! Owns: [`guard_decision`], the one function both the proxy and the benches call.
//!
//! Invariants:
//! - No lock and no allocation: the requester's partition of the resource is found through the
//!   store's lock-free index (a 64-bit hash of the key parts and the principal), the precondition lists are scanned in place, and tags
//!   are compared by their fingerprints in the slot's [`Summary`](super::summary::Summary).
//! - Forwarding needs no proof, a refusal does: a refusal found on the summary is decided again on
//!   the exact record, after comparing its key byte for byte and its principal (a slot found by
//!   hash may be another key's or another caller's, and then this partition is unknown:
//!   forwarding is right) and checking its age against the TTL
//!   (the only clock read, on the refusal path). The answer is therefore the exact `guard`
//!   decision, except that a fingerprint collision (2^-31 per pair of tags) may forward a write
//!   the exact decision would refuse.

use crate::identity::{Principal, ResourceKey};
use crate::precondition::{guard, Conditional, Decision, FieldLines, Policy};

use super::Store;

/// Decides a request of `who` on a `guard` route, on what `who`'s partition knows.
#[inline]
pub fn guard_decision<'a, L: FieldLines<'a>>(
    store: &Store,
    key: &ResourceKey<'_>,
    who: Principal,
    cond: &Conditional<L>,
    policy: Policy,
) -> Decision {
    store.with(key, who, |slot| {
        let Some(slot) = slot else {
            return Decision::Proceed;
        };
        match guard(
            cond,
            Some(&slot.summary().knowledge(store.prints())),
            policy,
        ) {
            Decision::Proceed => Decision::Proceed,
            _ => match slot.entry_for(key, who) {
                Some(entry) if store.is_fresh(slot.record()) => guard(cond, Some(entry), policy),
                _ => Decision::Proceed,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::RouteId;
    use crate::precondition::Method;
    use crate::store::{Observation, Outcome};
    use std::time::Duration;

    fn key(path: &str) -> ResourceKey<'_> {
        ResourceKey {
            route: RouteId(0),
            host: "h",
            path,
        }
    }

    fn learn(store: &Store, path: &str, method: Method, status: u16, etag: Option<&str>) {
        store.learn(
            &key(path),
            store.ticket(),
            &Observation {
                etag: etag.map(str::as_bytes),
                last_modified: Some(b"Sun, 06 Nov 1994 08:49:37 GMT"),
                complete: true,
                ..Observation::of(method, Outcome::Status(status))
            },
        );
    }

    /// The fast path (fingerprints, then the exact record for refusals) decides exactly as
    /// `guard` on the stored entry, for every combination of fields, methods and policies.
    #[test]
    fn agrees_with_guard_on_the_exact_entry() {
        let store = Store::new(100, Duration::from_secs(60));
        learn(&store, "/a", Method::Get, 200, Some("\"v1\""));
        learn(&store, "/a", Method::Put, 204, Some("\"v2\""));
        learn(&store, "/a", Method::Get, 200, Some("W/\"v3\""));
        learn(&store, "/gone", Method::Get, 200, Some("\"g1\""));
        learn(&store, "/gone", Method::Delete, 204, None);
        learn(&store, "/blank", Method::Get, 200, None);
        let tags = [
            "",
            "*",
            "\"v1\"",
            "\"v2\"",
            "W/\"v3\"",
            "\"v3\"",
            "\"v1\", \"v2\"",
            "\"v1\", \"x\"",
            "\"g1\"",
            "\"x\"",
            "W/\"v1\"",
            "v1",
            "*, \"v1\"",
        ];
        let dates = [
            "",
            "Sun, 06 Nov 1994 08:49:36 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ];
        let mut refusals = 0;
        for path in ["/a", "/gone", "/blank", "/unknown"] {
            let key = key(path);
            let exact = store.get(&key, Principal::SHARED);
            for method in [Method::Put, Method::Delete, Method::Post, Method::Get] {
                for policy in [Policy::Superseded, Policy::Mismatch] {
                    for im in tags {
                        for inm in tags {
                            for ius in dates {
                                let line = |v: &'static str| -> Vec<&'static [u8]> {
                                    if v.is_empty() {
                                        vec![]
                                    } else {
                                        vec![v.as_bytes()]
                                    }
                                };
                                let (im, inm, ius) = (line(im), line(inm), line(ius));
                                let cond = Conditional {
                                    method,
                                    if_match: &im[..],
                                    if_none_match: &inm[..],
                                    if_modified_since: &[][..],
                                    if_unmodified_since: &ius[..],
                                    no_cache: false,
                                };
                                let want = guard(&cond, exact.as_deref(), policy);
                                let got =
                                    guard_decision(&store, &key, Principal::SHARED, &cond, policy);
                                assert_eq!(got, want, "{path} {method:?} {policy:?} {cond:?}");
                                refusals += usize::from(got != Decision::Proceed);
                            }
                        }
                    }
                }
            }
        }
        assert!(refusals > 100, "the cases exercise refusals ({refusals})");
    }
}
