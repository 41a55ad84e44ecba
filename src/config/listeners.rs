//! Validation that no two listeners claim one socket: `server.listen`, `server.tls_listen`,
//! `server.metrics_listen` and `admin.listen`.
//!
//! Invariant: two addresses of one family on the same port (port 0 aside: the system picks) are
//! refused when their IPs are equal or either is the wildcard (`0.0.0.0`, `[::]`): Linux lets only
//! one of them listen, and Pingora would retry the other for half a minute before giving up.
//! Whether `[::]` also takes IPv4 depends on the host (`net.ipv6.bindv6only`), so families are
//! not compared.

use std::net::SocketAddr;

use toml::Spanned;

use super::file::RawFile;
use super::validate::{ConfigError, Validator};

/// Both could not listen at once.
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl Validator<'_> {
    /// Every listener address of `raw` is valid and none overlaps another.
    pub(super) fn distinct_listeners(&self, raw: &RawFile) -> Result<(), ConfigError> {
        let s = &raw.server;
        let named = |v: &'static str| move |a: &Spanned<String>| (a.clone(), v);
        let all = s
            .listen
            .iter()
            .map(named("server.listen"))
            .chain(s.tls_listen.iter().map(named("server.tls_listen")))
            .chain(s.metrics_listen.iter().map(named("server.metrics_listen")))
            .chain(raw.admin.listen.iter().map(named("admin.listen")));
        let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
        for (text, what) in all {
            let addr = self.addr(&text, what)?;
            if let Some((other, other_key)) = seen.iter().find(|(b, _)| overlap(addr, *b)) {
                return Err(self.err(
                    text.span(),
                    format!(
                        "{what} = \"{addr}\" takes the same socket as {other_key} = \"{other}\": \
                         give each listener its own port"
                    ),
                ));
            }
            seen.push((addr, what));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str = "[[upstream]]\nname = \"api\"\nservers = [\"127.0.0.1:9000\"]\n\n[[route]]\nupstream = \"api\"\n";

    fn error(text: &str) -> String {
        parse(&format!("{text}\n{BASE}")).unwrap_err().to_string()
    }

    #[test]
    fn the_admin_listener_may_not_share_the_data_port() {
        let e =
            error("[server]\nlisten = [\"127.0.0.1:8080\"]\n[admin]\nlisten = \"127.0.0.1:8080\"");
        assert!(e.starts_with("config:4:10: "), "{e}");
        assert!(
            e.contains("admin.listen = \"127.0.0.1:8080\" takes the same socket as server.listen"),
            "{e}"
        );
    }

    #[test]
    fn a_wildcard_overlaps_every_address_of_its_family_on_its_port() {
        for (a, b) in [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "0.0.0.0:8080"),
            ("[::]:8080", "[::1]:8080"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
        ] {
            let e = error(&format!(
                "[server]\nlisten = [\"{a}\"]\nmetrics_listen = \"{b}\""
            ));
            assert!(e.contains("server.metrics_listen"), "{a} {b}: {e}");
        }
        let e = error("[server]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]");
        assert!(
            e.contains("server.listen = \"127.0.0.1:8080\" takes the same socket as server.listen"),
            "{e}"
        );
    }

    #[test]
    fn distinct_ports_ips_families_and_port_zero_are_accepted() {
        for (a, b) in [
            ("127.0.0.1:8080", "127.0.0.1:8081"),
            ("127.0.0.1:8080", "127.0.0.2:8080"),
            ("0.0.0.0:8080", "[::1]:8080"),
            ("127.0.0.1:0", "127.0.0.1:0"),
        ] {
            let text = format!("[server]\nlisten = [\"{a}\"]\nmetrics_listen = \"{b}\"\n{BASE}");
            assert!(parse(&text).is_ok(), "{a} {b}: {:?}", parse(&text).err());
        }
    }
}
