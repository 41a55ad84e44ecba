//! Per-key async locks, for the two places a proxy role makes requests wait for each other:
//! `enforce` serialises every write to a resource, `guard` fences writes naming one tag.
//!
//! Owns: [`KeyedLocks`], one async mutex per key, created on demand and dropped when nobody holds
//! or waits for it, each guarding a small value (`()` for `enforce`; the last holder's outcome
//! for the guard fence) that the next holder reads.
//!
//! Invariants:
//! - Two holders of the same key never overlap; different keys never wait for each other (no
//!   striping: the key itself is the map key). Waiters acquire in arrival order (tokio's mutex
//!   is fair).
//! - A waiter gives up after the given timeout, never hangs; with a waiter cap, a request that
//!   would exceed it does not wait at all.
//! - The map holds only keys that are held or waited for: memory is bounded by concurrency, and a
//!   key's value lives only while someone holds or waits for it.

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// The set of per-key locks.
pub struct KeyedLocks<K, V = ()> {
    map: Mutex<HashMap<K, Arc<AsyncMutex<V>>>>,
}

impl<K, V> Default for KeyedLocks<K, V> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// A held lock; releases (and forgets the key when nobody else wants it) on drop.
pub struct KeyGuard<K: Hash + Eq + Clone, V = ()> {
    guard: Option<OwnedMutexGuard<V>>,
    waited: bool,
    key: K,
    locks: Arc<KeyedLocks<K, V>>,
}

/// Why a lock was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotTaken {
    /// The wait lasted its whole budget.
    TimedOut,
    /// The key already had as many waiters as allowed: the request did not wait.
    Full,
}

impl<K: Hash + Eq + Clone + std::fmt::Debug, V> std::fmt::Debug for KeyGuard<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGuard").field("key", &self.key).finish()
    }
}

impl<K: Hash + Eq + Clone, V> KeyGuard<K, V> {
    /// Whether the lock was held by someone else when it was asked for.
    pub fn waited(&self) -> bool {
        self.waited
    }
}

impl<K: Hash + Eq + Clone, V> Deref for KeyGuard<K, V> {
    type Target = V;
    fn deref(&self) -> &V {
        self.guard.as_ref().expect("held until drop")
    }
}

impl<K: Hash + Eq + Clone, V> DerefMut for KeyGuard<K, V> {
    fn deref_mut(&mut self) -> &mut V {
        self.guard.as_mut().expect("held until drop")
    }
}

impl<K: Hash + Eq + Clone, V> Drop for KeyGuard<K, V> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.locks.forget_if_idle(&self.key);
    }
}

impl<K: Hash + Eq + Clone, V: Default> KeyedLocks<K, V> {
    /// Waits at most `wait` for the lock of `key`.
    pub async fn lock(self: &Arc<Self>, key: &K, wait: Duration) -> Option<KeyGuard<K, V>> {
        self.lock_bounded(key, wait, usize::MAX, || {}).await.ok()
    }

    /// Waits at most `wait` for the lock of `key`, unless `max_waiters` requests already wait
    /// for it (the holder is not counted). `on_wait` is called when the request starts waiting.
    pub async fn lock_bounded(
        self: &Arc<Self>,
        key: &K,
        wait: Duration,
        max_waiters: usize,
        on_wait: impl FnOnce(),
    ) -> Result<KeyGuard<K, V>, NotTaken> {
        // Declared before `mutex`, so dropped after it: whether this future times out or is
        // cancelled while waiting, the key is forgotten once nobody refers to it.
        let mut forget = Forget {
            locks: self,
            key,
            armed: true,
        };
        let mutex = {
            let mut map = self.map.lock().expect("keyed-lock map never poisoned");
            let m = map.entry(key.clone()).or_default();
            // References: the map's, then the holder's and one per waiter, if any.
            let others = Arc::strong_count(m) - 1;
            if others > max_waiters {
                return Err(NotTaken::Full);
            }
            m.clone()
        };
        let (locked, waited) = match mutex.clone().try_lock_owned() {
            Ok(guard) => {
                drop(mutex);
                (Ok(guard), false)
            }
            Err(_) => {
                on_wait();
                (tokio::time::timeout(wait, mutex.lock_owned()).await, true)
            }
        };
        match locked {
            Ok(guard) => {
                forget.armed = false;
                Ok(KeyGuard {
                    guard: Some(guard),
                    waited,
                    key: key.clone(),
                    locks: self.clone(),
                })
            }
            Err(_) => Err(NotTaken::TimedOut),
        }
    }
}

/// Forgets a key that a request stopped waiting for (timed out, turned away, or cancelled).
struct Forget<'a, K: Hash + Eq + Clone, V> {
    locks: &'a KeyedLocks<K, V>,
    key: &'a K,
    armed: bool,
}

impl<K: Hash + Eq + Clone, V> Drop for Forget<'_, K, V> {
    fn drop(&mut self) {
        if self.armed {
            self.locks.forget_if_idle(self.key);
        }
    }
}

impl<K: Hash + Eq + Clone, V> KeyedLocks<K, V> {
    /// Removes the key's mutex when only the map refers to it.
    fn forget_if_idle(&self, key: &K) {
        let mut map = self.map.lock().expect("keyed-lock map never poisoned");
        if map.get(key).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(key);
        }
    }

    /// Number of keys currently held or waited for.
    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.map
            .lock()
            .expect("keyed-lock map never poisoned")
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{OwnedKey, ResourceKey, RouteId};

    fn key(path: &str) -> OwnedKey {
        ResourceKey {
            route: RouteId(0),
            host: "h",
            path,
        }
        .to_owned_key()
    }

    #[tokio::test]
    async fn same_key_waits_then_times_out() {
        let locks: Arc<KeyedLocks<OwnedKey>> = Arc::default();
        let g = locks
            .lock(&key("/a"), Duration::from_secs(1))
            .await
            .unwrap();
        assert!(!g.waited());
        assert!(locks
            .lock(&key("/a"), Duration::from_millis(50))
            .await
            .is_none());
        drop(g);
        assert!(locks
            .lock(&key("/a"), Duration::from_millis(50))
            .await
            .is_some());
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_and_idle_keys_are_forgotten() {
        let locks: Arc<KeyedLocks<OwnedKey>> = Arc::default();
        let a = locks
            .lock(&key("/a"), Duration::from_secs(1))
            .await
            .unwrap();
        let b = locks.lock(&key("/b"), Duration::from_millis(50)).await;
        assert!(b.is_some());
        assert_eq!(locks.active(), 2);
        drop(a);
        drop(b);
        assert_eq!(locks.active(), 0);
    }

    #[tokio::test]
    async fn the_next_holder_reads_what_the_last_one_left() {
        let locks: Arc<KeyedLocks<u64, u32>> = Arc::default();
        let mut first = locks.lock(&7, Duration::from_secs(1)).await.unwrap();
        assert_eq!(*first, 0, "a fresh key starts from the default");
        let l = locks.clone();
        let second = tokio::spawn(async move {
            let g = l.lock(&7, Duration::from_secs(5)).await.unwrap();
            (*g, g.waited())
        });
        tokio::task::yield_now().await;
        *first = 42;
        drop(first);
        assert_eq!(second.await.unwrap(), (42, true));
        assert_eq!(locks.active(), 0, "the value dies with the last holder");
    }

    #[tokio::test]
    async fn a_waiter_that_times_out_or_is_cancelled_leaves_nothing_behind() {
        let locks: Arc<KeyedLocks<u64>> = Arc::default();
        let held = locks.lock(&1, Duration::from_secs(1)).await.unwrap();
        assert!(locks.lock(&1, Duration::from_millis(10)).await.is_none());
        let l = locks.clone();
        let waiter =
            tokio::spawn(async move { l.lock(&1, Duration::from_secs(60)).await.is_some() });
        tokio::task::yield_now().await;
        drop(held);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(
            locks.active(),
            0,
            "the map holds only keys held or waited for"
        );
    }

    #[tokio::test]
    async fn a_full_key_turns_waiters_away_at_once() {
        let locks: Arc<KeyedLocks<u64>> = Arc::default();
        let held = locks.lock(&1, Duration::from_secs(1)).await.unwrap();
        let l = locks.clone();
        let waiter = tokio::spawn(async move {
            l.lock_bounded(&1, Duration::from_secs(5), 1, || {})
                .await
                .is_ok()
        });
        while Arc::strong_count(locks.map.lock().unwrap().get(&1).unwrap()) < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            locks
                .lock_bounded(&1, Duration::from_secs(5), 1, || {})
                .await
                .err(),
            Some(NotTaken::Full),
            "one waiter allowed, a second one is turned away without waiting"
        );
        assert_eq!(
            locks
                .lock_bounded(&2, Duration::from_secs(1), 0, || {})
                .await
                .err(),
            None,
            "a free key is taken even with no waiters allowed"
        );
        drop(held);
        assert!(waiter.await.unwrap());
    }
}
