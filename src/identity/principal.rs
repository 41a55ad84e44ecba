//! Who is asking, as far as the store's partitions go: a [`Principal`] is a keyed hash of the
//! credential values a route names (`principal = ["authorization", "cookie"]` by default).
//!
//! Owns: [`Principal`], [`PrincipalSource`] (one configured credential: a header field, or one
//! cookie) and [`PrincipalKey`] (the keyed hash). Pure: it hashes the values it is given; reading
//! them from a request is the proxy's business.
//!
//! Invariants:
//! - Equal credential values give equal principals under one key; the hash is keyed (SipHash-1-3
//!   with a key derived from the deployment secret), so a client cannot compute another
//!   client's principal, nor aim a collision without knowing the key.
//! - Every source is framed (its index, then each value with its length), so values cannot be
//!   shifted between sources to produce another caller's input.
//! - A request without any configured credential is the anonymous principal, which is not
//!   [`Principal::SHARED`] (the single partition of `scope = "shared"` routes).

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// A caller's partition of what the store learned, or [`Principal::SHARED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Principal(pub u64);

impl Principal {
    /// The one partition of routes whose answers never depend on the caller (`scope = "shared"`).
    pub const SHARED: Principal = Principal(0);
}

/// One credential a route identifies callers by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalSource {
    /// Every value of a header field (lower-case name), e.g. `authorization`.
    Header(String),
    /// The values of one cookie, by name, from the `Cookie` field(s): `cookie:NAME`.
    Cookie(String),
}

impl PrincipalSource {
    /// Reads a configured source: `"cookie:NAME"` or a header field name (any case). `None` when
    /// the text is neither (an empty name, or characters a field or cookie name cannot hold).
    pub fn parse(text: &str) -> Option<PrincipalSource> {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        match text.split_once(':') {
            Some((c, name)) if c.eq_ignore_ascii_case("cookie") && token(name) => {
                Some(PrincipalSource::Cookie(name.to_owned()))
            }
            None if token(text) => Some(PrincipalSource::Header(text.to_ascii_lowercase())),
            _ => None,
        }
    }
}

/// The keyed hash that turns credential values into a [`Principal`].
#[derive(Clone)]
pub struct PrincipalKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for PrincipalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrincipalKey(..)")
    }
}

impl PrincipalKey {
    /// A key from 16 secret bytes.
    pub fn new(key: [u8; 16]) -> PrincipalKey {
        let (a, b) = key.split_at(8);
        PrincipalKey {
            k0: u64::from_le_bytes(a.try_into().unwrap_or_default()),
            k1: u64::from_le_bytes(b.try_into().unwrap_or_default()),
        }
    }

    /// The principal of a caller whose credentials are `values`: for each configured source, in
    /// order, the values the request carries for it (an empty iterator when it carries none).
    pub fn principal<'a, S, V>(&self, values: S) -> Principal
    where
        S: IntoIterator<Item = V>,
        V: IntoIterator<Item = &'a [u8]>,
    {
        let mut h = self.hasher();
        for (i, source) in values.into_iter().enumerate() {
            for v in source {
                h.add(i, v);
            }
        }
        h.finish()
    }

    /// A hasher to feed credential values one at a time (no allocation).
    pub fn hasher(&self) -> PrincipalHasher {
        PrincipalHasher(SipHasher13::new_with_keys(self.k0, self.k1))
    }
}

/// Credential values being hashed into a [`Principal`] (see [`PrincipalKey::hasher`]).
pub struct PrincipalHasher(SipHasher13);

impl PrincipalHasher {
    /// Adds one value of the configured source at index `source`.
    pub fn add(&mut self, source: usize, value: &[u8]) {
        self.0.write_u64(source as u64);
        self.0.write_u64(value.len() as u64);
        self.0.write(value);
    }

    /// The principal.
    pub fn finish(self) -> Principal {
        match self.0.finish() {
            // Never the shared partition's id (a 2^-64 chance, taken care of anyway).
            0 => Principal(1),
            p => Principal(p),
        }
    }
}

/// The values of cookie `name` in one `Cookie` field value (`a=1; b=2`), in order.
pub fn cookie_values<'a>(field: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    field.split(|b| *b == b';').filter_map(move |pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &PrincipalKey, sources: &[&[&str]]) -> Principal {
        key.principal(sources.iter().map(|s| s.iter().map(|v| v.as_bytes())))
    }

    #[test]
    fn equal_credentials_equal_principals_and_sources_are_framed() {
        let k = PrincipalKey::new([7; 16]);
        let alice = p(&k, &[&["Bearer alice"], &[]]);
        assert_eq!(alice, p(&k, &[&["Bearer alice"], &[]]));
        assert_ne!(alice, p(&k, &[&["Bearer bob"], &[]]));
        // The same bytes under another source, or split differently, are another caller.
        assert_ne!(alice, p(&k, &[&[], &["Bearer alice"]]));
        assert_ne!(p(&k, &[&["ab"], &[]]), p(&k, &[&["a", "b"], &[]]));
        let anonymous = p(&k, &[&[], &[]]);
        assert_ne!(anonymous, Principal::SHARED);
        assert_ne!(anonymous, alice);
        // Another key, other principals.
        assert_ne!(
            alice,
            p(&PrincipalKey::new([8; 16]), &[&["Bearer alice"], &[]])
        );
    }

    #[test]
    fn sources_parse() {
        assert_eq!(
            PrincipalSource::parse("Authorization"),
            Some(PrincipalSource::Header("authorization".into()))
        );
        assert_eq!(
            PrincipalSource::parse("cookie:session_id"),
            Some(PrincipalSource::Cookie("session_id".into()))
        );
        for bad in ["", "cookie:", "x y", "a:b", "cookie:a b", "é"] {
            assert_eq!(PrincipalSource::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cookie_values_are_found_by_exact_name() {
        let field = b"a=1; session=xyz ;sessionid=no; session = two";
        let got: Vec<&[u8]> = cookie_values(field, "session").collect();
        assert_eq!(got, vec![&b"xyz"[..], &b"two"[..]]);
        assert_eq!(cookie_values(b"", "a").count(), 0);
        assert_eq!(cookie_values(b"novalue; a", "a").count(), 0);
    }
}
