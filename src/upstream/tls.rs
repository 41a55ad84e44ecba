//! The CAs an upstream's TLS connections verify against (`ca_file`).
//!
//! Owns: [`Cas`] and [`read_cas`]. Invariant: a CA file that cannot be read, parsed, or holds
//! no certificate is an error at start (and in `precond check`), never an empty trust store.

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
