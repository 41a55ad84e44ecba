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
use super::{ms, Redis, SharedError};

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

/// One resource as one caller sees it in Redis: its keys and the caller's snapshot field, named
/// once per write (the id is a keyed hash).
#[derive(Clone, Debug)]
pub struct Resource {
    lease_key: String,
    state_key: String,
    field: String,
}

impl Redis {
    /// The Redis names of `key` for `principal`.
    pub fn resource(&self, key: &ResourceKey<'_>, principal: Principal) -> Resource {
        let id = self.resource_id(key);
        Resource {
            lease_key: format!("precond:{{{id}}}:lease"),
            state_key: format!("precond:{{{id}}}:state"),
            field: format!("p:{:016x}", principal.0),
        }
    }

    /// The caller's snapshot of `res` as of now, without taking the lease: only when the last
    /// holder published and no write has been forwarded since (otherwise `None`). A write may be
    /// refused on it; anything else must take the lease.
    pub async fn peek(&self, res: &Resource) -> Result<Option<Snapshot>, SharedError> {
        let got: Option<Vec<u8>> = self
            .run(
                "peek",
                &self.scripts.peek,
                &[&res.lease_key, &res.state_key],
                &[res.field.as_bytes()],
            )
            .await?;
        Ok(got.as_deref().and_then(Snapshot::decode))
    }

    /// Ends a lease with a result (the `PUBLISH` script); 1 when published.
    async fn publish_raw(
        &self,
        lease_key: &str,
        state_key: &str,
        token: &str,
        fence: i64,
        changed: bool,
        snapshot: Option<(&str, &[u8])>,
    ) -> Result<i64, SharedError> {
        let mode: &[u8] = if changed { b"changed" } else { b"unchanged" };
        let (field, encoded) = snapshot.unwrap_or_default();
        self.run(
            "publish",
            &self.scripts.publish,
            &[lease_key, state_key],
            &[
                token.as_bytes(),
                fence.to_string().as_bytes(),
                mode,
                field.as_bytes(),
                encoded,
                &ms(self.settings.state_ttl),
                crate::store::MAX_PARTS.to_string().as_bytes(),
            ],
        )
        .await
    }

    /// Ends a lease without a result (the `RELEASE` script: compare-and-delete).
    async fn release_raw(&self, lease_key: &str, token: &str) -> Result<i64, SharedError> {
        self.run(
            "release",
            &self.scripts.release,
            &[lease_key],
            &[token.as_bytes()],
        )
        .await
    }

    /// Waits (polling, backing off from 2 ms to 50 ms) until the lease of `res` is this caller's,
    /// or `deadline` passes (`Ok(None)`).
    pub async fn acquire(
        self: &Arc<Self>,
        res: Resource,
        deadline: Instant,
    ) -> Result<Option<Lease>, SharedError> {
        let Resource {
            lease_key,
            state_key,
            field,
        } = res;
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
        // A holder that found the chain broken cannot vouch for other partitions' snapshots.
        let published = self
            .redis
            .publish_raw(
                &self.lease_key,
                &self.state_key,
                &self.token,
                self.fence,
                changed || !self.clean,
                encoded.as_deref().map(|e| (self.field.as_str(), e)),
            )
            .await?;
        Ok(published == 1)
    }

    /// Ends the lease without a result, leaving the chain broken: the next holder waits out the
    /// bound recorded by the last write forwarded, then probes the origin.
    pub async fn release(mut self) -> Result<(), SharedError> {
        self.stop_renewal();
        self.done = true;
        self.redis
            .release_raw(&self.lease_key, &self.token)
            .await
            .map(|_| ())
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
