//! Per-resource write serialisation for `enforce` routes.
//!
//! Owns: [`KeyedLocks`], one async mutex per resource key, created on demand and dropped when
//! nobody holds or waits for it.
//!
//! Invariants:
//! - Two holders of the same key never overlap; different keys never wait for each other (no
//!   striping, no hash collisions: the key itself is the map key).
//! - A waiter gives up after the given timeout and gets `None`, never hangs.
//! - The map holds only keys that are held or waited for: memory is bounded by concurrency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::identity::OwnedKey;

/// The set of per-key locks.
#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<OwnedKey, Arc<AsyncMutex<()>>>>,
}

/// A held lock; releases (and forgets the key when nobody else wants it) on drop.
pub struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    key: OwnedKey,
    locks: Arc<KeyedLocks>,
}

impl std::fmt::Debug for KeyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGuard").field("key", &self.key).finish()
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.locks.forget_if_idle(&self.key);
    }
}

impl KeyedLocks {
    /// Waits at most `wait` for the lock of `key`.
    pub async fn lock(self: &Arc<Self>, key: &OwnedKey, wait: Duration) -> Option<KeyGuard> {
        let mutex = {
            let mut map = self.map.lock().expect("keyed-lock map never poisoned");
            map.entry(key.clone()).or_default().clone()
        };
        match tokio::time::timeout(wait, mutex.lock_owned()).await {
            Ok(guard) => Some(KeyGuard {
                guard: Some(guard),
                key: key.clone(),
                locks: self.clone(),
            }),
            Err(_) => {
                self.forget_if_idle(key);
                None
            }
        }
    }

    /// Removes the key's mutex when only the map refers to it.
    fn forget_if_idle(&self, key: &OwnedKey) {
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
    use crate::identity::{ResourceKey, RouteId};

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
        let locks = Arc::new(KeyedLocks::default());
        let g = locks
            .lock(&key("/a"), Duration::from_secs(1))
            .await
            .unwrap();
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
        let locks = Arc::new(KeyedLocks::default());
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
}
