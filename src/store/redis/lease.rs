//! The per-resource lease of `enforce` writes on the shared store.
//!
//! Owns: [`Redis::acquire`] and [`Lease`]. A lease is `SET lease token NX PX ttl`; while it is
//! held a background task renews it every third of its TTL; it ends by [`Lease::publish`] (the
//! holder's result, stored only if the lease is still the holder's) or by a compare-and-delete
//! [`Lease::release`] that leaves the chain broken.
//!
//! A lease dropped without either (the exchange broke: the client left, the body timed out) ends
//! as "changed, state unknown": the chain stays unbroken and the next holder probes the origin at
//! once, as the next write would on one instance. Only a holder that never ends its lease (it
//! died) breaks the chain, and the next holder then waits out the bound its write recorded. A
//! holder that acquired a broken chain and has not waited its bound out yet is released, never
//! published, so that the chain stays broken for the next one.
//!
//! Invariants: a lease ends at most once; the renewal task ends with the lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use tracing::warn;

use crate::identity::{Principal, ResourceKey};

use super::snapshot::Snapshot;
use super::{Redis, SharedError};

/// A held lease on one resource.
pub struct Lease {
    redis: Arc<Redis>,
    lease_key: String,
    state_key: String,
    token: String,
    fence: i64,
    /// The partition's snapshot field.
    field: String,
    /// The snapshot the previous holder left for this partition (only when the chain is
    /// unbroken).
    snapshot: Option<Snapshot>,
    /// With a broken chain: how long until every write an earlier holder forwarded is past
    /// precond's bound on it.
    quiet: Duration,
    /// The chain was unbroken at acquisition (the previous holder published).
    clean: bool,
    renewal: Option<tokio::task::JoinHandle<()>>,
    done: bool,
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    // A failing system RNG leaves a time-based token: still unique per holder in practice.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ms(d: Duration) -> Vec<u8> {
    d.as_millis().max(1).to_string().into_bytes()
}

/// The two keys of a resource id: lease, state.
fn keys_of(id: &str) -> (String, String) {
    (
        format!("precond:{{{id}}}:lease"),
        format!("precond:{{{id}}}:state"),
    )
}

fn field_of(principal: Principal) -> String {
    format!("p:{:016x}", principal.0)
}

impl Redis {
    /// The caller's snapshot of `key` as of now, without taking the lease: only when the last
    /// holder published and no write has been forwarded since (otherwise `None`). A write may be
    /// refused on it; anything else must take the lease.
    pub async fn peek(
        &self,
        key: &ResourceKey<'_>,
        principal: Principal,
    ) -> Result<Option<Snapshot>, SharedError> {
        let (lease_key, state_key) = keys_of(&self.resource_id(key));
        let got: Option<Vec<u8>> = self
            .run(
                "peek",
                &self.scripts.peek,
                &[&lease_key, &state_key],
                &[field_of(principal).as_bytes()],
            )
            .await?;
        Ok(got.as_deref().and_then(Snapshot::decode))
    }

    /// Waits (polling, backing off from 2 ms to 50 ms) until the lease of `key` is this caller's,
    /// or `deadline` passes (`Ok(None)`).
    pub async fn acquire(
        self: &Arc<Self>,
        key: &ResourceKey<'_>,
        principal: Principal,
        deadline: Instant,
    ) -> Result<Option<Lease>, SharedError> {
        let (lease_key, state_key) = keys_of(&self.resource_id(key));
        let field = field_of(principal);
        let token = random_token();
        let ttl = ms(self.settings.lease_ttl);
        let state_ttl = ms(self.settings.state_ttl);
        let mut pause = Duration::from_millis(2);
        loop {
            let got: Option<Vec<Value>> = self
                .run(
                    "acquire",
                    &self.scripts.acquire,
                    &[&lease_key, &state_key],
                    &[token.as_bytes(), &ttl, field.as_bytes(), &state_ttl],
                )
                .await?;
            if let Some(reply) = got {
                let int = |v: Option<&Value>| match v {
                    Some(Value::Int(n)) => Some(*n),
                    _ => None,
                };
                let fence = int(reply.first())
                    .ok_or_else(|| SharedError("acquire: unexpected reply".into()))?;
                let clean = int(reply.get(1)) == Some(1);
                let quiet = Duration::from_millis(int(reply.get(2)).unwrap_or(0).max(0) as u64);
                let snapshot = match reply.get(3) {
                    Some(Value::BulkString(b)) if clean => Snapshot::decode(b),
                    _ => None,
                };
                let mut lease = Lease {
                    redis: self.clone(),
                    lease_key,
                    state_key,
                    token,
                    fence,
                    field,
                    snapshot,
                    quiet,
                    clean,
                    renewal: None,
                    done: false,
                };
                lease.renewal = Some(lease.spawn_renewal());
                return Ok(Some(lease));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("fence", &self.fence)
            .field("snapshot", &self.snapshot.is_some())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// This holder's fence number (every acquisition of the resource's lease gets the next one).
    pub fn fence(&self) -> i64 {
        self.fence
    }

    /// What the previous holder established for this caller's partition, when it published and
    /// nobody broke the chain since.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// How long this holder must wait before forwarding a write: zero when the previous holder
    /// published; otherwise the rest of the bound on the last write an earlier holder forwarded
    /// (a holder that died, or gave up on the origin, may have left it in flight there).
    pub fn quiet(&self) -> Duration {
        self.quiet
    }

    /// The holder waited [`Self::quiet`] out: ending the lease may now mend the chain.
    pub fn waited_out(&mut self) {
        self.quiet = Duration::ZERO;
    }

    /// Records that this holder forwards its write now, in flight at most `hold`. `Ok(false)`:
    /// the lease is no longer this holder's; the write must not be forwarded.
    pub async fn mark_forwarding(&self, hold: Duration) -> Result<bool, SharedError> {
        let r = &self.redis;
        let fence = self.fence.to_string();
        let marked: i64 = r
            .run(
                "mark",
                &r.scripts.mark,
                &[&self.lease_key, &self.state_key],
                &[
                    self.token.as_bytes(),
                    &ms(hold),
                    &ms(r.settings.state_ttl),
                    fence.as_bytes(),
                ],
            )
            .await?;
        Ok(marked == 1)
    }

    fn spawn_renewal(&self) -> tokio::task::JoinHandle<()> {
        let (redis, key, token) = (
            self.redis.clone(),
            self.lease_key.clone(),
            self.token.clone(),
        );
        let ttl = redis.settings.lease_ttl;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let kept: Result<i64, _> = redis
                    .run(
                        "renew",
                        &redis.scripts.renew,
                        &[&key],
                        &[token.as_bytes(), &ms(ttl)],
                    )
                    .await;
                if let Ok(0) = kept {
                    warn!("shared store: a write's lease expired while it was in flight");
                    return;
                }
            }
        })
    }

    fn stop_renewal(&mut self) {
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
    }

    /// Ends the lease with this holder's result: `changed` when the resource was written (every
    /// partition's snapshot is dropped), else unchanged; `snapshot`: what this holder's probe
    /// showed for its partition. `Ok(false)` when the lease was no longer this holder's (it
    /// expired): nothing was published.
    pub async fn publish(
        mut self,
        changed: bool,
        snapshot: Option<&Snapshot>,
    ) -> Result<bool, SharedError> {
        self.stop_renewal();
        self.done = true;
        let encoded = snapshot.and_then(Snapshot::encode);
        let field: &[u8] = if encoded.is_some() {
            self.field.as_bytes()
        } else {
            b""
        };
        let fence = self.fence.to_string();
        // A holder that found the chain broken cannot vouch for other partitions' snapshots.
        let mode: &[u8] = if changed || !self.clean {
            b"changed"
        } else {
            b"unchanged"
        };
        let r = &self.redis;
        let published: i64 = r
            .run(
                "publish",
                &r.scripts.publish,
                &[&self.lease_key, &self.state_key],
                &[
                    self.token.as_bytes(),
                    fence.as_bytes(),
                    mode,
                    field,
                    encoded.as_deref().unwrap_or_default(),
                    &ms(r.settings.state_ttl),
                ],
            )
            .await?;
        Ok(published == 1)
    }

    /// Ends the lease without a result, leaving the chain broken: the next holder waits out the
    /// bound recorded by the last write forwarded, then probes the origin.
    pub async fn release(mut self) -> Result<(), SharedError> {
        self.stop_renewal();
        self.done = true;
        let r = &self.redis;
        let _: i64 = r
            .run(
                "release",
                &r.scripts.release,
                &[&self.lease_key],
                &[self.token.as_bytes()],
            )
            .await?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_renewal();
        if self.done {
            return;
        }
        // An abandoned lease (the exchange broke, the write was given up): ended in the
        // background ("changed, unknown": the next holder probes; or, while a broken chain's
        // bound is not waited out, released so that the chain stays broken). If even that fails,
        // the lease expires after its TTL.
        let (redis, lease_key, state_key, token) = (
            self.redis.clone(),
            std::mem::take(&mut self.lease_key),
            std::mem::take(&mut self.state_key),
            std::mem::take(&mut self.token),
        );
        let (fence, settled) = (self.fence.to_string(), self.quiet.is_zero());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let r = &redis;
                let _: Result<i64, _> = if settled {
                    r.run(
                        "publish",
                        &r.scripts.publish,
                        &[&lease_key, &state_key],
                        &[
                            token.as_bytes(),
                            fence.as_bytes(),
                            b"changed",
                            b"",
                            b"",
                            &ms(r.settings.state_ttl),
                        ],
                    )
                    .await
                } else {
                    r.run(
                        "release",
                        &r.scripts.release,
                        &[&lease_key],
                        &[token.as_bytes()],
                    )
                    .await
                };
            });
        }
    }
}
