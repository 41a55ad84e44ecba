//! The CAs an upstream's TLS connections verify against (`ca_file`).
//!
//! Owns: [`Cas`], [`read_cas`] and [`trust_key`]. Invariants: a CA file that cannot be read,
//! parsed, or holds no certificate is an error at start (and in `precond check`), never an empty
//! trust store; upstream connections verified against other CAs are never reused for a peer
//! (Pingora's connection pool tells peers apart by address, SNI and a group key, not by their
//! CAs: [`trust_key`] is that group key).

use std::sync::Arc;

use pingora::tls::x509::X509;

/// The CAs of an upstream's `ca_file`, as Pingora's connector takes them.
pub type Cas = Arc<Box<[X509]>>;

/// Reads `ca_file` (PEM, one or more certificates).
pub fn read_cas(path: &std::path::Path) -> std::io::Result<Cas> {
    let pem = std::fs::read(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("upstream.ca_file {}: {e}", path.display()),
        )
    })?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| {
        std::io::Error::other(format!(
            "upstream.ca_file {}: not PEM certificates ({e})",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(std::io::Error::other(format!(
            "upstream.ca_file {}: no certificate in it",
            path.display()
        )));
    }
    Ok(Arc::new(certs.into_boxed_slice()))
}

/// The group key of peers that verify against `cas` (0: the system's roots), the same for the
/// same certificates: a connection pooled under one set of CAs (say, before a reload that
/// replaced a compromised CA) is not reused by a peer that trusts another.
pub fn trust_key(cas: Option<&Cas>) -> u64 {
    use std::hash::{Hash, Hasher};
    let Some(cas) = cas else {
        return 0;
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for ca in cas.iter() {
        ca.to_der().unwrap_or_default().hash(&mut h);
    }
    h.finish().max(1)
}
