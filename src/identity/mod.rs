//! Which resource a request names, and who is asking: the resource key the store is indexed by,
//! and the principal whose partition of it a request reads and teaches ([`principal`]). Pure: no
//! I/O, no Pingora types; imports nothing of the crate.
//!
//! Owns: [`RouteId`] (a route's stable name in keys), [`ResourceKey`] (a borrowed key, built once
//! per request from the fields it is made of, hashed without allocating) and [`OwnedKey`] (the same
//! key in one allocation, kept in a request's context until the origin's answer is learned).
//!
//! Invariants:
//! - Two keys name the same resource exactly when their route ids are equal, their hosts are equal
//!   ignoring ASCII case, and their paths (with query) are equal byte for byte.
//! - [`ResourceKey::hash_with`] agrees with that equality: keys that name the same resource hash
//!   the same (the host is folded to lower case before hashing).
//! - A [`RouteId`] depends only on what the route matches (its host and path prefix), never on its
//!   position in the file, so a reloaded configuration keeps the store's keys valid.
//!
//! Matching a key against a stored record is the store's business (`store::index`), not the
//! key's: the key only says what it is made of.
//!
//! Canonical targets ([`target`]): one function decides which resource a request names, so that
//! every spelling of one resource gives one key (and one write lock).

pub mod principal;
pub mod target;

pub use principal::{cookie_values, Principal, PrincipalHasher, PrincipalKey, PrincipalSource};
pub use target::{canonical_host, canonical_path, canonical_query, path_readings, Ambiguous};

use std::hash::{BuildHasher, Hasher};

/// A route's stable identity in resource keys: a 64-bit FNV-1a hash of its host (or none) and path
/// prefix. Routes that match the same requests share an id, and so share learned state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteId(pub u64);

impl RouteId {
    /// The id of a route matching `host` (lower case, `None` for any host) and `path_prefix`.
    pub fn of(host: Option<&str>, path_prefix: &str) -> RouteId {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = OFFSET;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(PRIME);
            }
        };
        match host {
            Some(host) => {
                eat(b"h");
                eat(host.as_bytes());
            }
            None => eat(b"*"),
        }
        eat(&[0]);
        eat(path_prefix.as_bytes());
        RouteId(h)
    }
}

/// Identifies a resource without allocating: its route, host (compared case-insensitively) and
/// path with query.
#[derive(Clone, Copy, Debug)]
pub struct ResourceKey<'a> {
    /// The route the request matched.
    pub route: RouteId,
    /// Host, as received (any case, port included when sent).
    pub host: &'a str,
    /// Path and query, as received.
    pub path: &'a str,
}

impl ResourceKey<'_> {
    /// The key in one allocation, host folded to lower case.
    pub fn to_owned_key(&self) -> OwnedKey {
        OwnedKey::new(self.route, self.host, self.path, None)
    }

    /// Whether two keys name the same resource (see the module invariants).
    #[inline]
    pub fn same_resource(&self, other: &ResourceKey<'_>) -> bool {
        self.route == other.route
            && self.path == other.path
            && (self.host == other.host || self.host.eq_ignore_ascii_case(other.host))
    }

    /// The key's 64-bit hash under `state` (case-folded host: equal keys hash equal).
    #[inline]
    pub fn hash_with(&self, state: &impl BuildHasher) -> u64 {
        let mut h = state.build_hasher();
        h.write_u64(self.route.0);
        let host = self.host.as_bytes();
        // `fold` rather than `any`: no early exit, so the check is vectorised.
        if host.iter().fold(false, |up, b| up | b.is_ascii_uppercase()) {
            for chunk in host.chunks(64) {
                let mut buf = [0u8; 64];
                for (d, s) in buf.iter_mut().zip(chunk) {
                    *d = s.to_ascii_lowercase();
                }
                h.write(&buf[..chunk.len()]);
            }
        } else {
            for chunk in host.chunks(64) {
                h.write(chunk);
            }
        }
        h.write_u8(0x1f);
        h.write(self.path.as_bytes());
        h.finish()
    }
}

/// A [`ResourceKey`] that owns its bytes: host (lower case) and path in one string. Its derived
/// equality is resource equality, since the host is stored in lower case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnedKey {
    route: RouteId,
    /// Where the path starts in `text`.
    path_at: usize,
    text: Box<str>,
}

impl OwnedKey {
    /// A key from its parts, in one allocation: `host` folded to lower case, `query` (when there is
    /// one) appended to `path` after a `?`.
    pub fn new(route: RouteId, host: &str, path: &str, query: Option<&str>) -> OwnedKey {
        let query_len = query.map_or(0, |q| q.len() + 1);
        let mut text = String::with_capacity(host.len() + path.len() + query_len);
        text.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        text.push_str(path);
        if let Some(q) = query {
            text.push('?');
            text.push_str(q);
        }
        OwnedKey {
            route,
            path_at: host.len(),
            text: text.into_boxed_str(),
        }
    }

    /// Borrows it as a [`ResourceKey`].
    #[inline]
    pub fn as_key(&self) -> ResourceKey<'_> {
        let (host, path) = self.text.split_at(self.path_at);
        ResourceKey {
            route: self.route,
            host,
            path,
        }
    }

    /// Bytes held: host, path and query (for accounting, and what `store.max_key_bytes` bounds).
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether host and path are both empty.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl std::fmt::Display for OwnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = self.as_key();
        write!(f, "{}{}", k.host, k.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(route: u64, host: &'a str, path: &'a str) -> ResourceKey<'a> {
        ResourceKey {
            route: RouteId(route),
            host,
            path,
        }
    }

    #[test]
    fn hosts_compare_and_hash_case_insensitively() {
        let state = std::collections::hash_map::RandomState::new();
        let a = key(1, "API.example.com", "/x?y=1");
        let b = key(1, "api.example.com", "/x?y=1");
        assert!(a.same_resource(&b));
        assert_eq!(a.hash_with(&state), b.hash_with(&state));
        assert!(!a.same_resource(&key(1, "api.example.com", "/x?y=2")));
        assert!(!a.same_resource(&key(2, "api.example.com", "/x?y=1")));
    }

    #[test]
    fn the_owned_key_borrows_back_the_same_resource() {
        let a = key(7, "Host:8080", "/items/1?q");
        let owned = a.to_owned_key();
        let back = owned.as_key();
        assert!(a.same_resource(&back));
        assert_eq!(back.host, "host:8080");
        assert_eq!(back.path, "/items/1?q");
        assert_eq!(owned.to_string(), "host:8080/items/1?q");
    }

    #[test]
    fn route_ids_depend_on_what_the_route_matches_only() {
        assert_eq!(RouteId::of(None, "/api"), RouteId::of(None, "/api"));
        assert_ne!(RouteId::of(None, "/api"), RouteId::of(None, "/ap"));
        assert_ne!(RouteId::of(Some("a"), "/"), RouteId::of(None, "/"));
        assert_ne!(RouteId::of(Some("a"), "/b"), RouteId::of(Some("a/"), "b"));
    }
}
