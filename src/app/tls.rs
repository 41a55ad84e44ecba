//! HTTPS termination: the certificate the `tls_listen` listeners present, read from
//! `server.tls_cert` / `server.tls_key` (PEM) at start and again on every reload.
//!
//! Owns: [`Certificates`] (Pingora's `TlsAccept` callback over an `arc-swap`ped chain and key)
//! and [`listener_settings`] (Mozilla's intermediate profile, ALPN `h2` then `http/1.1`).
//!
//! Invariants:
//! - A handshake always gets a complete, matching chain and key: a new pair is swapped in only
//!   once both files parse and the key is the certificate's; otherwise the old pair stays and
//!   the reload reports the error.
//! - Nothing here logs key material or file contents, only paths and OpenSSL's reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::tls::ext;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::SslRef;
use pingora::tls::x509::X509;

use crate::config::TlsListen;

/// A certificate chain (leaf first) and its private key.
struct Pair {
    chain: Vec<X509>,
    key: PKey<Private>,
}

/// The certificate HTTPS listeners present, reloadable.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<Pair>,
}

/// Reads and checks a chain and its key.
fn load(cert: &Path, key: &Path) -> Result<Pair, String> {
    let pem =
        std::fs::read(cert).map_err(|e| format!("server.tls_cert {}: {e}", cert.display()))?;
    let chain = X509::stack_from_pem(&pem).map_err(|e| {
        format!(
            "server.tls_cert {}: not a PEM certificate chain ({e})",
            cert.display()
        )
    })?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("server.tls_cert {}: no certificate in it", cert.display()))?;
    let pem = std::fs::read(key).map_err(|e| format!("server.tls_key {}: {e}", key.display()))?;
    let key_pem = PKey::private_key_from_pem(&pem).map_err(|e| {
        format!(
            "server.tls_key {}: not a PEM private key ({e})",
            key.display()
        )
    })?;
    let matches = leaf
        .public_key()
        .is_ok_and(|public| public.public_eq(&key_pem));
    if !matches {
        return Err(format!(
            "server.tls_key {} is not the key of the certificate in {}",
            key.display(),
            cert.display()
        ));
    }
    Ok(Pair {
        chain,
        key: key_pem,
    })
}

impl Certificates {
    /// Reads the files of `tls`.
    pub fn load(tls: &TlsListen) -> Result<Arc<Certificates>, String> {
        let pair = load(&tls.cert, &tls.key)?;
        Ok(Arc::new(Certificates {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            current: ArcSwap::from_pointee(pair),
        }))
    }

    /// Reads the files again and, when they are valid, presents them from the next handshake
    /// on (connections already established keep theirs).
    pub fn reload(&self) -> Result<(), String> {
        let pair = load(&self.cert, &self.key)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }

    fn present(&self, ssl: &mut SslRef) -> Result<(), pingora::tls::error::ErrorStack> {
        let pair = self.current.load();
        let (leaf, intermediates) = pair.chain.split_first().expect("a loaded chain has a leaf");
        ext::ssl_use_certificate(ssl, leaf)?;
        for c in intermediates {
            ext::ssl_add_chain_cert(ssl, c)?;
        }
        ext::ssl_use_private_key(ssl, &pair.key)
    }
}

/// Pingora's per-handshake callback, over the shared [`Certificates`].
struct Present(Arc<Certificates>);

#[async_trait]
impl TlsAccept for Present {
    async fn certificate_callback(&self, ssl: &mut SslRef) {
        if let Err(e) = self.0.present(ssl) {
            // The handshake then fails (no certificate): the client sees a TLS alert.
            tracing::warn!(error = %e, "cannot present the TLS certificate");
        }
    }
}

/// The settings of one HTTPS listener: Mozilla's intermediate profile, the reloadable
/// certificate, ALPN `h2` preferred and `http/1.1` accepted.
pub fn listener_settings(certs: &Arc<Certificates>) -> std::io::Result<TlsSettings> {
    let mut tls = TlsSettings::with_callbacks(Box::new(Present(certs.clone())))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tls.enable_h2();
    Ok(tls)
}
