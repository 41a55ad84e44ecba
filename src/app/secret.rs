//! The deployment secret: where it comes from, and the keys derived from it.
//!
//! Owns: [`load`] (`[enforce] tag_secret_file`, else the `PRECOND_TAG_SECRET` environment
//! variable, else a secret generated at start with a warning) and the derivation of the two keys
//! the proxy uses: the MAC key of synthesised entity-tags, and the key of principal hashes.
//!
//! Invariants:
//! - A secret is at least [`MIN_SECRET`] bytes; a shorter or unreadable one is an error at start
//!   (and in `precond check`), never a silent fallback to a generated one.
//! - The two keys are independent (HMAC-SHA-256 of the secret under distinct labels): knowing one
//!   tells nothing of the other.
//! - Instances that share a secret synthesise the same tags and compute the same principals;
//!   a generated secret is per process, so several instances must be given one.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::warn;

use crate::config::SecretSource;
use crate::identity::PrincipalKey;
use crate::proxy::Keys;

/// The environment variable read when no `tag_secret_file` is configured.
pub const SECRET_ENV: &str = "PRECOND_TAG_SECRET";

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET: usize = 16;

/// Whether a secret shared by several instances is configured (a file, or the environment
/// variable): without one, each process generates its own.
pub fn is_configured(source: &SecretSource) -> bool {
    matches!(source, SecretSource::File(_)) || std::env::var_os(SECRET_ENV).is_some()
}

/// Reads (or generates) the deployment secret and derives the proxy's keys.
pub fn load(source: &SecretSource) -> std::io::Result<Keys> {
    let secret = read(source)?;
    Ok(derive(&secret))
}

/// The secret's bytes, checked.
pub fn read(source: &SecretSource) -> std::io::Result<Vec<u8>> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
    let (bytes, from) = match source {
        SecretSource::File(path) => {
            let mut b = std::fs::read(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("[enforce] tag_secret_file {}: {e}", path.display()),
                )
            })?;
            while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                b.pop();
            }
            (b, format!("tag_secret_file {}", path.display()))
        }
        SecretSource::EnvOrGenerated => match std::env::var_os(SECRET_ENV) {
            Some(v) => (v.into_encoded_bytes(), SECRET_ENV.to_string()),
            None => {
                let mut b = vec![0u8; 32];
                getrandom::fill(&mut b).map_err(|e| invalid(format!("no randomness: {e}")))?;
                warn!(
                    "no [enforce] tag_secret_file and no {SECRET_ENV}: a secret was generated for \
                     this process. Synthesised ETags and principals change at every restart and \
                     differ between instances: give every instance one secret"
                );
                return Ok(b);
            }
        },
    };
    if bytes.len() < MIN_SECRET {
        return Err(invalid(format!(
            "the secret from {from} is {} bytes long; at least {MIN_SECRET} are needed \
             (e.g. `openssl rand -hex 32`)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// The keys derived from a secret.
pub fn derive(secret: &[u8]) -> Keys {
    let label = |l: &[u8]| -> [u8; 32] {
        // HMAC accepts keys of any length.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
        m.update(l);
        m.finalize().into_bytes().into()
    };
    let p = label(b"precond/principal/v1");
    let mut pk = [0u8; 16];
    pk.copy_from_slice(&p[..16]);
    Keys {
        tag: label(b"precond/etag/v1"),
        principal: PrincipalKey::new(pk),
        shared: label(b"precond/shared-store-names/v1"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_missing_secrets_are_errors_and_keys_are_independent() {
        let dir = std::env::temp_dir().join(format!("precond-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        let e = read(&SecretSource::File(short)).unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
        let e = read(&SecretSource::File(dir.join("absent"))).unwrap_err();
        assert!(e.to_string().contains("tag_secret_file"), "{e}");
        let good = dir.join("good");
        std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
        assert_eq!(
            read(&SecretSource::File(good)).unwrap(),
            b"0123456789abcdef0123"
        );
        let a = derive(b"0123456789abcdef");
        let b = derive(b"0123456789abcdeg");
        assert_ne!(a.tag, b.tag);
        let who = |k: &Keys| k.principal.principal([[&b"Bearer x"[..]]]);
        assert_eq!(who(&a), who(&derive(b"0123456789abcdef")));
        assert_ne!(who(&a), who(&b));
        let _ = std::fs::remove_dir_all(dir);
    }
}
