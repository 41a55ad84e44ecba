//! Partitions: one resource's learned state, split by who was shown it (design.md §9).
//!
//! Owns: [`Parts`] (every partition of one resource, plus what is true of the resource itself),
//! [`Part`] and [`apply_parts`], the pure function that routes one observation to the partitions
//! it concerns. The per-partition rules are [`learn`](super::learn)'s.
//!
//! Invariants:
//! - A read teaches only its own principal's partition: a 404 or a differing 200 shown to one
//!   caller never retires another caller's tag nor marks the resource absent for them.
//! - A write is about the resource: a completed replacement retires the prior tags of every
//!   partition (their current tags become unknown, never the writer's new tag: see
//!   [`apply_foreign`]), unless the route's scope keeps writes in the partition or the origin
//!   marks the resource per-caller ([`Parts::private`], sticky for the record's life); then the
//!   other partitions only forget. Forgetting is always safe, so every write outcome makes the
//!   other partitions forget at least.
//! - Every write stamps [`Parts::changed_at`]; a partition created later starts from that stamp,
//!   so a read that started before a write cannot create a partition showing the older state.
//! - At most [`MAX_PARTS`] partitions per resource; callers beyond them are not admitted (their
//!   requests are forwarded, as for any unknown state): no caller can evict another's partition.
//! - A write the origin refused (no partition changed) stamps, renews and rebuilds nothing.
//! - No partition is created by someone else's write: a caller the origin never answered has no
//!   state, and its requests are forwarded.

use crate::identity::Principal;

use super::entry::Entry;
use super::learn::{apply, apply_foreign, Observation, Outcome, Reach, Ticket};

/// Most partitions (principals) remembered per resource.
pub const MAX_PARTS: usize = 16;

/// One principal's partition of a resource's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Whose it is.
    pub principal: Principal,
    /// What that principal was shown.
    pub entry: Entry,
}

/// Every partition of one resource, in the order they were admitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    /// The partitions.
    pub parts: Vec<Part>,
    /// Stamp of the latest write outcome applied to the resource.
    pub changed_at: u64,
    /// The origin marked an answer for this resource per-caller: writes stay in the writer's
    /// partition.
    pub private: bool,
}

impl Parts {
    /// The partition of `who`, if any (its index and state).
    pub fn find(&self, who: Principal) -> Option<(usize, &Entry)> {
        self.parts
            .iter()
            .enumerate()
            .find(|(_, p)| p.principal == who)
            .map(|(i, p)| (i, &p.entry))
    }
}

/// What one observation changes.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// A read confirmed its partition's state without changing it: only the ticket of the latest
    /// confirming read moves (the store records it in place).
    Confirmed(u64),
    /// A new state.
    New(Parts),
}

/// Applies one observation to a resource's partitions. `confirmed_since` is the latest ticket
/// of a read that confirmed a state after it was stored (0 when none).
pub fn apply_parts(
    old: Option<&Parts>,
    confirmed_since: u64,
    obs: &Observation<'_>,
    ticket: Ticket,
    stamp: u64,
) -> Change {
    let who = obs.principal;
    let own = old.and_then(|ps| ps.find(who));
    let blank;
    let base = match own {
        Some((_, e)) => e,
        None => {
            // A new partition starts from the resource's last write.
            blank = Entry {
                changed_at: old.map_or(0, |ps| ps.changed_at),
                ..Entry::blank()
            };
            &blank
        }
    };
    let own_new = apply(Some(base), confirmed_since, obs, ticket, stamp);
    let own = own.map(|(i, _)| i);
    let was_private = old.is_some_and(|ps| ps.private);
    let marks_private = obs.private && matches!(obs.outcome, Outcome::Status(200..=299 | 304));
    if !obs.method.changes_state() {
        // Reads decide on the borrowed state: the partitions are copied only when they change.
        let Some(mut entry) = own_new else {
            return Change::None;
        };
        if !marks_private || was_private {
            // Only `current_since` moved: a confirmation.
            let since = entry.current_since;
            entry.current_since = base.current_since;
            if own.is_some() && entry == *base {
                return Change::Confirmed(since);
            }
            entry.current_since = since;
        }
        let mut ps = old.cloned().unwrap_or_default();
        ps.private |= marks_private;
        put(&mut ps, own, who, entry);
        return Change::New(ps);
    }
    let mut ps = old.cloned().unwrap_or_default();
    ps.private |= marks_private;
    let retire = obs.reach == Reach::Resource && !ps.private;
    let mut changed = own_new.is_some();
    for p in ps.parts.iter_mut().filter(|p| p.principal != who) {
        if let Some(e) = apply_foreign(&p.entry, obs, retire, stamp) {
            p.entry = e;
            changed = true;
        }
    }
    if !changed {
        // Refused by the origin (401, 403, 409, ...): nothing happened to the resource, so
        // nothing is stamped, renewed or rebuilt (a stream of refused writes must not keep
        // reads from teaching).
        return Change::None;
    }
    ps.changed_at = ps.changed_at.max(stamp);
    if let Some(entry) = own_new {
        put(&mut ps, own, who, entry);
    }
    if old == Some(&ps) {
        Change::None
    } else {
        Change::New(ps)
    }
}

/// Stores `who`'s new state. A caller beyond [`MAX_PARTS`] gets no partition (its requests are
/// forwarded): evicting another caller's partition instead would let one caller with many
/// credential values (junk cookies) erase what protects everyone else.
fn put(ps: &mut Parts, at: Option<usize>, who: Principal, entry: Entry) {
    match at {
        Some(i) => ps.parts[i].entry = entry,
        None if ps.parts.len() < MAX_PARTS => ps.parts.push(Part {
            principal: who,
            entry,
        }),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precondition::{EntityTag, Existence, Knowledge, Method};

    const A: Principal = Principal(11);
    const B: Principal = Principal(22);

    fn obs(
        who: Principal,
        method: Method,
        status: u16,
        etag: Option<&'static str>,
    ) -> Observation<'static> {
        Observation {
            etag: etag.map(str::as_bytes),
            principal: who,
            ..Observation::of(method, Outcome::Status(status))
        }
    }

    struct Sim {
        parts: Option<Parts>,
        seq: u64,
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                parts: None,
                seq: 0,
            }
        }
        fn see(&mut self, o: Observation<'_>) {
            self.seq += 1;
            let ticket = Ticket(self.seq);
            self.seq += 1;
            if let Change::New(p) = apply_parts(self.parts.as_ref(), 0, &o, ticket, self.seq) {
                self.parts = Some(p);
            }
        }
        fn of(&self, who: Principal) -> Option<&Entry> {
            self.parts.as_ref()?.find(who).map(|(_, e)| e)
        }
    }

    fn tag(s: &str) -> EntityTag<'_> {
        EntityTag::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn a_read_teaches_only_its_partition() {
        let mut s = Sim::new();
        s.see(obs(A, Method::Get, 200, Some("\"v1\"")));
        s.see(obs(B, Method::Get, 404, None));
        s.see(obs(B, Method::Get, 200, Some("\"public\"")));
        let a = s.of(A).unwrap();
        assert!(a.is_current_strong(&tag("\"v1\"")));
        assert_eq!(a.existence, Existence::Exists);
        assert!(!s.of(B).unwrap().is_current_strong(&tag("\"v1\"")));
    }

    #[test]
    fn a_write_retires_every_partitions_tags_without_teaching_the_new_one() {
        let mut s = Sim::new();
        s.see(obs(A, Method::Get, 200, Some("\"v1\"")));
        s.see(obs(B, Method::Put, 200, Some("\"v2\"")));
        let a = s.of(A).unwrap();
        assert!(a.was_replaced(&tag("\"v1\"")));
        assert!(!a.current_known(), "A was never shown v2");
        assert!(s.of(B).unwrap().is_current_strong(&tag("\"v2\"")));
        // A stranger gets no partition from someone else's write.
        assert!(s.of(Principal(33)).is_none());
    }

    #[test]
    fn a_tag_made_unknown_is_still_retired_by_another_callers_write() {
        // What made A's current tag unknown: an answer without a validator (a HEAD handler),
        // A's own write refused by the origin or failed, another caller's POST.
        let unknowns = [
            (A, Method::Head, 200),
            (A, Method::Put, 412),
            (A, Method::Put, 503),
            (B, Method::Post, 200),
        ];
        for (who, method, status) in unknowns {
            let mut s = Sim::new();
            s.see(obs(A, Method::Get, 200, Some("\"s0\"")));
            s.see(obs(who, method, status, None));
            assert!(!s.of(A).unwrap().current_known(), "{method:?} {status}");
            s.see(obs(B, Method::Put, 200, Some("\"s1\"")));
            let a = s.of(A).unwrap();
            assert!(a.was_replaced(&tag("\"s0\"")), "{method:?} {status}");
            assert!(!a.current_known());
        }
        // A read showing another tag retires it too; an encoding of it stays unreplaced.
        let mut s = Sim::new();
        s.see(obs(A, Method::Get, 200, Some("\"s0\"")));
        s.see(obs(A, Method::Head, 200, None));
        s.see(obs(A, Method::Get, 200, Some("W/\"s0\"")));
        assert!(!s.of(A).unwrap().was_replaced(&tag("\"s0\"")));
        s.see(obs(A, Method::Head, 200, None));
        s.see(obs(A, Method::Get, 200, Some("\"s9\"")));
        let a = s.of(A).unwrap();
        assert!(a.was_replaced(&tag("W/\"s0\"")) && a.is_current_strong(&tag("\"s9\"")));
        // A caller never shown the tag learns nothing of it (no oracle).
        let mut s = Sim::new();
        s.see(obs(A, Method::Get, 200, Some("\"s0\"")));
        s.see(obs(Principal(33), Method::Get, 200, Some("\"p0\"")));
        s.see(obs(B, Method::Put, 200, Some("\"s1\"")));
        assert!(!s.of(Principal(33)).unwrap().was_replaced(&tag("\"s0\"")));
    }

    #[test]
    fn per_caller_resources_keep_writes_in_the_writers_partition() {
        for (private, reach) in [(true, Reach::Resource), (false, Reach::Partition)] {
            let mut s = Sim::new();
            s.see(Observation {
                private,
                ..obs(A, Method::Get, 200, Some("\"v1\""))
            });
            s.see(Observation {
                reach,
                ..obs(B, Method::Put, 204, Some("\"v2\""))
            });
            let a = s.of(A).unwrap();
            assert!(!a.was_replaced(&tag("\"v1\"")), "{private} {reach:?}");
            assert!(!a.current_known(), "forgotten, not retired");
        }
    }

    #[test]
    fn a_delete_marks_the_resource_absent_for_known_partitions() {
        let mut s = Sim::new();
        s.see(obs(A, Method::Get, 200, Some("\"v1\"")));
        s.see(obs(B, Method::Delete, 204, None));
        assert_eq!(s.of(A).unwrap().existence, Existence::Absent);
        assert_eq!(s.of(B).unwrap().existence, Existence::Absent);
    }

    #[test]
    fn a_read_older_than_a_write_does_not_create_a_partition() {
        let mut s = Sim::new();
        s.see(obs(A, Method::Get, 200, Some("\"v1\"")));
        let slow = Ticket(s.seq + 1); // B's read starts...
        s.seq += 1;
        s.see(obs(A, Method::Put, 200, Some("\"v2\""))); // ...A's write completes...
        let late = apply_parts(
            s.parts.as_ref(),
            0,
            &obs(B, Method::Get, 200, Some("\"v1\"")),
            slow,
            0,
        ); // ...B's read answers with the old state.
        assert_eq!(late, Change::None);
    }

    /// One caller with many credential values (junk cookies) must not evict the partition that
    /// lets another caller's write refuse a stale one.
    #[test]
    fn partitions_are_bounded_and_newcomers_beyond_the_bound_are_not_admitted() {
        let mut s = Sim::new();
        s.see(obs(A, Method::Get, 200, Some("\"v1\"")));
        for i in 0..(MAX_PARTS as u64 + 2) {
            s.see(obs(Principal(100 + i), Method::Get, 200, Some("\"v1\"")));
        }
        let ps = s.parts.as_ref().unwrap();
        assert_eq!(ps.parts.len(), MAX_PARTS);
        assert!(s.of(Principal(100 + MAX_PARTS as u64)).is_none());
        s.see(obs(B, Method::Put, 200, Some("\"v2\"")));
        assert!(s.of(A).unwrap().was_replaced(&tag("\"v1\"")));
    }

    #[test]
    fn a_refused_write_changes_nothing() {
        let mut s = Sim::new();
        s.see(obs(A, Method::Get, 200, Some("\"v1\"")));
        let before = s.parts.clone();
        let c = apply_parts(
            s.parts.as_ref(),
            0,
            &obs(B, Method::Put, 401, None),
            Ticket(50),
            51,
        );
        assert_eq!(c, Change::None);
        assert_eq!(s.parts, before);
    }

    /// Another caller's create or forgetting write: "absent" or "exists" would be stale (a
    /// lost update in enforce, or a disclosure under `mismatch`).
    #[test]
    fn another_callers_create_leaves_existence_unknown() {
        for (private, reach, status) in [
            (true, Reach::Resource, 201),
            (false, Reach::Partition, 201),
            (false, Reach::Resource, 201),
        ] {
            let mut s = Sim::new();
            // A knows the resource (a 404 alone teaches nothing), then sees it gone.
            s.see(Observation {
                private,
                ..obs(A, Method::Get, 200, Some("\"v0\""))
            });
            s.see(Observation {
                private,
                ..obs(A, Method::Get, 404, None)
            });
            assert_eq!(s.of(A).unwrap().existence, Existence::Absent);
            s.see(Observation {
                reach,
                ..obs(B, Method::Put, status, Some("\"v1\""))
            });
            assert_eq!(
                s.of(A).unwrap().existence,
                Existence::Unknown,
                "{private} {reach:?}"
            );
        }
    }

    #[test]
    fn a_confirming_read_is_a_confirmation() {
        let mut s = Sim::new();
        s.see(obs(A, Method::Get, 200, Some("\"v1\"")));
        let c = apply_parts(
            s.parts.as_ref(),
            0,
            &obs(A, Method::Get, 200, Some("\"v1\"")),
            Ticket(99),
            0,
        );
        assert_eq!(c, Change::Confirmed(99));
    }
}
