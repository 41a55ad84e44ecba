//! Shared set-up of the decision benches: a store of N resources, each with a current tag and
//! one replaced tag, and the naive baselines holding the same data.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use precond::identity::{Principal, PrincipalKey, ResourceKey, RouteId};
use precond::precondition::Method;
use precond::store::{Observation, Outcome, Store};

pub const HOST: &str = "api.example.com";

pub fn path(i: usize) -> String {
    format!("/api/v1/orders/{i}")
}

/// The string key of the naive baselines (host and path, as a simple implementation would).
pub fn key(i: usize) -> String {
    format!("{HOST}{}", path(i))
}

/// precond's key for a path on the bench's host.
pub fn rkey(path: &str) -> ResourceKey<'_> {
    ResourceKey {
        route: RouteId(0),
        host: HOST,
        path,
    }
}

pub fn current_tag(i: usize) -> String {
    format!("\"v{i}-2\"")
}

pub fn replaced_tag(i: usize) -> String {
    format!("\"v{i}-1\"")
}

pub fn learn_get(store: &Store, path: &str, tag: &str) {
    learn_get_dated(store, path, tag, None);
}

/// A GET 200 with `tag` and a `Last-Modified` (an HTTP-date), learned by the store.
pub fn learn_get_dated(store: &Store, path: &str, tag: &str, last_modified: Option<&str>) {
    learn_get_as(store, path, tag, last_modified, Principal::SHARED);
}

/// A GET 200 with `tag` shown to `who`, learned by the store.
pub fn learn_get_as(
    store: &Store,
    path: &str,
    tag: &str,
    last_modified: Option<&str>,
    who: Principal,
) {
    store.learn(
        &rkey(path),
        store.ticket(),
        &Observation {
            etag: Some(tag.as_bytes()),
            last_modified: last_modified.map(str::as_bytes),
            principal: who,
            ..Observation::of(Method::Get, Outcome::Status(200))
        },
    );
}

/// The key of principal hashes in the benches.
pub fn principal_key() -> PrincipalKey {
    PrincipalKey::new(*b"bench-secret-key")
}

/// The `Authorization` value of bench user `j`.
pub fn authorization(j: usize) -> String {
    format!("Bearer user-{j}-0123456789abcdef0123456789abcdef")
}

/// The principal of bench user `j` (the default sources: `authorization`, then `cookie`, absent).
pub fn principal_of_user(key: &PrincipalKey, j: usize) -> Principal {
    let auth = authorization(j);
    key.principal([vec![auth.as_bytes()], vec![]])
}

/// Like [`precond_store`], each resource read by `users` principals (`i % users` first).
pub fn precond_store_principals(n: usize, users: usize) -> Store {
    let store = Store::new(n as u64 * 2, Duration::from_secs(3600));
    let key = principal_key();
    let who: Vec<Principal> = (0..users).map(|j| principal_of_user(&key, j)).collect();
    for i in 0..n {
        let p = path(i);
        for w in &who {
            learn_get_as(&store, &p, &replaced_tag(i), None, *w);
            learn_get_as(&store, &p, &current_tag(i), None, *w);
        }
    }
    // Measure the steady state: no eviction or index resize pending.
    store.settle();
    store
}

/// precond's store with `n` resources: tag `-1` seen replaced by tag `-2`.
pub fn precond_store(n: usize) -> Store {
    let store = Store::new(n as u64 * 2, Duration::from_secs(3600));
    for i in 0..n {
        let p = path(i);
        learn_get(&store, &p, &replaced_tag(i));
        learn_get(&store, &p, &current_tag(i));
    }
    // Measure the steady state: no eviction or index resize pending.
    store.settle();
    store
}

/// Baseline: plain moka `get` on String keys, holding the same records as precond.
pub fn moka_baseline(store: &Store, n: usize) -> moka::sync::Cache<String, precond::store::View> {
    let cache = moka::sync::Cache::builder()
        .max_capacity(n as u64 * 2)
        .build();
    for i in 0..n {
        if let Some(r) = store.get(&rkey(&path(i)), Principal::SHARED) {
            cache.insert(key(i), r);
        }
    }
    cache.run_pending_tasks();
    cache
}

/// Baseline: current tag as a String in a `Mutex<HashMap<String, String>>`.
pub fn mutex_baseline(n: usize) -> Mutex<HashMap<String, String>> {
    Mutex::new((0..n).map(|i| (key(i), current_tag(i))).collect())
}

/// Baseline: the same under an `RwLock`.
pub fn rwlock_baseline(n: usize) -> RwLock<HashMap<String, String>> {
    RwLock::new((0..n).map(|i| (key(i), current_tag(i))).collect())
}

/// The naive decision: split the header on commas and compare strings (what many
/// implementations do; wrong for commas inside tags, but a fair speed baseline).
pub fn naive_is_stale(current: Option<&String>, if_match: &str) -> bool {
    match current {
        None => false,
        Some(c) => {
            let v = if_match.trim();
            v != "*" && !v.split(',').map(str::trim).any(|t| t == c)
        }
    }
}

/// A cheap deterministic sequence of indexes for random access.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}
