//! Validation of `[store]`'s backend keys: `backend`, `url`, `ca_file`, `timeout`, `lease_ttl`.
//!
//! Invariants: the Redis keys are accepted only with `backend = "redis"`, `ca_file` only with a
//! `rediss://` URL; a URL that could turn TLS verification off (any `#fragment`) is refused; no
//! message repeats the URL (it may hold a password).

use std::time::Duration;

use super::file::RawStore;
use super::settings::Backend;
use super::validate::{ConfigError, Validator};

impl Validator<'_> {
    /// `store.backend` and the keys of the shared store.
    pub(super) fn backend(&self, raw: &RawStore) -> Result<Backend, ConfigError> {
        let timeout = self.duration(&raw.timeout, "store.timeout")?;
        let lease_ttl = self.duration(&raw.lease_ttl, "store.lease_ttl")?;
        match raw.backend.get_ref().trim() {
            "memory" => {
                if let Some(u) = raw.url.as_ref().or(raw.ca_file.as_ref()) {
                    return Err(self.err(
                        u.span(),
                        "store.url and store.ca_file apply to backend = \"redis\" only",
                    ));
                }
                Ok(Backend::Memory)
            }
            "redis" => {
                let Some(u) = &raw.url else {
                    return Err(self.err(
                        raw.backend.span(),
                        "backend = \"redis\" needs store.url, e.g. url = \"redis://127.0.0.1:6379/0\"",
                    ));
                };
                // Messages never repeat the URL: it may hold a password.
                let url = u.get_ref().trim().to_string();
                let tls = url.starts_with("rediss://");
                if !tls && !url.starts_with("redis://") {
                    return Err(self.err(u.span(), "store.url is not a redis:// or rediss:// URL"));
                }
                if url.contains('#') {
                    return Err(self.err(
                        u.span(),
                        "store.url: a #fragment is refused (#insecure would turn off TLS \
                         verification; a # in a password is written %23); name the server's CA \
                         in store.ca_file",
                    ));
                }
                let ca_file = match &raw.ca_file {
                    Some(f) if !tls => {
                        return Err(self.err(
                            f.span(),
                            "store.ca_file applies to a rediss:// (TLS) store.url only",
                        ))
                    }
                    Some(f) if f.get_ref().trim().is_empty() => {
                        return Err(self.err(f.span(), "store.ca_file is empty: name a PEM file"))
                    }
                    Some(f) => Some(std::path::PathBuf::from(f.get_ref().trim())),
                    None => None,
                };
                if timeout.is_zero() || timeout > Duration::from_secs(10) {
                    return Err(self.err(
                        raw.timeout.span(),
                        "store.timeout must be between 1ms and 10s",
                    ));
                }
                if lease_ttl < Duration::from_millis(300) || lease_ttl > Duration::from_secs(300) {
                    return Err(self.err(
                        raw.lease_ttl.span(),
                        "store.lease_ttl must be between 300ms and 300s",
                    ));
                }
                if lease_ttl < timeout * 6 {
                    return Err(self.err(raw.lease_ttl.span(), "store.lease_ttl must be at least 6 × store.timeout (it is renewed every third of it)"));
                }
                Ok(Backend::Redis {
                    url,
                    ca_file,
                    timeout,
                    lease_ttl,
                })
            }
            other => Err(self.err(
                raw.backend.span(),
                format!("store.backend: {other:?} is not one of \"memory\", \"redis\""),
            )),
        }
    }
}
