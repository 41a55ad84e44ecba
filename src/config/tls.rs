//! Validation of `[server]`'s HTTPS keys: `tls_listen`, `tls_cert`, `tls_key`.
//!
//! Invariant: HTTPS listeners exist only with both files named, and files are named only for
//! them (a key set by mistake is an error, not ignored). The files themselves are read by the
//! app at start, by `precond check` and on reload.

use toml::Spanned;

use super::file::RawServer;
use super::settings::TlsListen;
use super::validate::{ConfigError, Validator};

impl Validator<'_> {
    /// The HTTPS listeners of `[server]`, if any.
    pub(super) fn tls_listen(&self, s: &RawServer) -> Result<Option<TlsListen>, ConfigError> {
        let file = |v: &Option<Spanned<String>>| {
            v.as_ref()
                .map(|p| (p.span(), std::path::PathBuf::from(p.get_ref().trim())))
        };
        match (s.tls_listen.first(), file(&s.tls_cert), file(&s.tls_key)) {
            (None, None, None) => Ok(None),
            (None, Some((span, _)), _) | (None, None, Some((span, _))) => Err(self.err(
                span,
                "server.tls_cert and server.tls_key apply to server.tls_listen, which is empty",
            )),
            (Some(first), cert, key) => {
                let (Some((_, cert)), Some((_, key))) = (cert, key) else {
                    return Err(self.err(
                        first.span(),
                        "server.tls_listen needs server.tls_cert and server.tls_key (PEM files)",
                    ));
                };
                let listen = s
                    .tls_listen
                    .iter()
                    .map(|a| self.addr(a, "server.tls_listen"))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some(TlsListen { listen, cert, key }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str = "[[upstream]]\nname = \"api\"\nservers = [\"127.0.0.1:9000\"]\n\n[[route]]\nupstream = \"api\"\n";

    #[test]
    fn listeners_need_both_files_and_files_need_listeners() {
        let ok = format!(
            "[server]\ntls_listen = [\"127.0.0.1:8443\"]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n{BASE}"
        );
        let tls = parse(&ok).unwrap().server.tls.unwrap();
        assert_eq!(tls.listen.len(), 1);
        assert_eq!(tls.cert, std::path::PathBuf::from("/c.pem"));
        let no_key =
            format!("[server]\ntls_listen = [\"127.0.0.1:8443\"]\ntls_cert = \"/c.pem\"\n{BASE}");
        let e = parse(&no_key).unwrap_err().to_string();
        assert!(e.contains("tls_key") && e.contains(":2:"), "{e}");
        let no_listen = format!("[server]\ntls_cert = \"/c.pem\"\n{BASE}");
        assert!(parse(&no_listen)
            .unwrap_err()
            .to_string()
            .contains("tls_listen"));
    }

    #[test]
    fn upstream_tls_names_the_first_server_and_its_keys_need_tls() {
        let tls = BASE.replace(
            "servers = [\"127.0.0.1:9000\"]",
            "servers = [\"API.internal:443\"]\ntls = true",
        );
        let u = &parse(&tls).unwrap().upstreams[0];
        assert_eq!(u.tls.as_ref().unwrap().sni, "api.internal");
        assert_eq!(u.tls.as_ref().unwrap().ca_file, None);
        let ip = BASE.replace(
            "servers = [\"127.0.0.1:9000\"]",
            "servers = [\"127.0.0.1:9000\"]\ntls = true",
        );
        let e = parse(&ip).unwrap_err().to_string();
        assert!(
            e.contains("upstream.sni"),
            "an IP address needs a name: {e}"
        );
        let sni = BASE.replace(
            "servers = [\"127.0.0.1:9000\"]",
            "servers = [\"127.0.0.1:9000\"]\nsni = \"x\"",
        );
        assert!(parse(&sni).unwrap_err().to_string().contains("tls = true"));
        let ca = BASE.replace(
            "servers = [\"127.0.0.1:9000\"]",
            "servers = [\"127.0.0.1:9000\"]\nca_file = \"/ca.pem\"",
        );
        assert!(parse(&ca).unwrap_err().to_string().contains("tls = true"));
    }
}
