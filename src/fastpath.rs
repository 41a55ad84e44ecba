//! The decision fast path of `guard` routes: header bytes and a resource in, forward-or-412 out.
//!
//! Owns: [`guard_decision`], the one function both the proxy and the benches call.
//!
//! Invariants: no lock and no allocation: the resource is found through the store's lock-free
//! index (a hash of the key parts, verified against the stored key), the precondition lists are
//! scanned in place, and tags are compared as bytes. A refusal is never based on a record past
//! its TTL (the only clock read, on the refusal path).

use crate::precondition::{guard, Conditional, Decision, FieldLines, Policy};
use crate::store::{ResourceKey, Store};

/// Decides a request on a `guard` route.
#[inline]
pub fn guard_decision<'a, L: FieldLines<'a>>(
    store: &Store,
    key: &ResourceKey<'_>,
    cond: &Conditional<L>,
    policy: Policy,
) -> Decision {
    store.with(key, |record| {
        let d = guard(cond, record.map(|r| &r.entry), policy);
        match (d, record) {
            (Decision::PreconditionFailed(_), Some(r)) if !store.is_fresh(r) => Decision::Proceed,
            _ => d,
        }
    })
}
