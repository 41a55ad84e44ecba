//! Validation of one `[[upstream]]` table: its servers (written `"host:port"` or
//! `{ addr = "host:port", weight = N }`), selection, health checking and timeouts.
//!
//! Invariants: nothing here touches the network (host names are checked for syntax only; the
//! upstream pool resolves them); every error names the key and, when the value is in the file,
//! its line and column.

use toml::Spanned;

use super::file::RawUpstream;
use super::settings::{HealthCheck, HealthProbe, Selection, Server, Upstream, UpstreamTls};
use super::validate::{ConfigError, Validator};

/// Largest weight of one server (Ketama places `weight` times as many points on its ring).
const MAX_WEIGHT: i64 = 100;

impl Validator<'_> {
    /// The typed upstream of one `[[upstream]]` table.
    pub(super) fn upstream(&self, u: &Spanned<RawUpstream>) -> Result<Upstream, ConfigError> {
        let span = u.span();
        let u = u.get_ref();
        let name = u.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(self.err(u.name.span(), "upstream.name must not be empty"));
        }
        if u.servers.is_empty() {
            return Err(self.err(span, format!("upstream {name:?} has no servers")));
        }
        let mut servers: Vec<Server> = Vec::new();
        for v in &u.servers {
            let server = self.server(v)?;
            if servers
                .iter()
                .any(|s| s.host.eq_ignore_ascii_case(&server.host) && s.port == server.port)
            {
                return Err(self.err(
                    v.span(),
                    format!("upstream {name:?} lists server {server} twice"),
                ));
            }
            servers.push(server);
        }
        let selection = match u.selection.get_ref().trim() {
            "round_robin" => Selection::RoundRobin,
            "consistent" => Selection::Consistent,
            "random" => Selection::Random,
            other => {
                return Err(self.err(
                    u.selection.span(),
                    format!(
                        "upstream.selection: {other:?} is not one of \"round_robin\", \"consistent\", \"random\""
                    ),
                ))
            }
        };
        let probe = match u.health_check.get_ref().trim() {
            "none" => HealthProbe::None,
            "tcp" => HealthProbe::Tcp,
            "http" => HealthProbe::Http {
                path: match &u.health_check_path {
                    None => "/".to_string(),
                    Some(p) => {
                        let path = p.get_ref().trim();
                        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                            return Err(self.err(
                                p.span(),
                                format!("upstream.health_check_path: {path:?} must start with / and hold no spaces or control characters"),
                            ));
                        }
                        path.to_string()
                    }
                },
            },
            other => {
                return Err(self.err(
                    u.health_check.span(),
                    format!(
                    "upstream.health_check: {other:?} is not one of \"none\", \"tcp\", \"http\""
                ),
                ))
            }
        };
        if let (Some(p), false) = (
            &u.health_check_path,
            matches!(probe, HealthProbe::Http { .. }),
        ) {
            return Err(self.err(
                p.span(),
                "upstream.health_check_path applies to health_check = \"http\" only",
            ));
        }
        let interval = self.duration(&u.health_check_interval, "upstream.health_check_interval")?;
        if interval < std::time::Duration::from_millis(100) {
            return Err(self.err(
                u.health_check_interval.span(),
                "upstream.health_check_interval must be at least 100ms",
            ));
        }
        let timeout = self.duration(&u.health_check_timeout, "upstream.health_check_timeout")?;
        if timeout.is_zero() {
            return Err(self.err(
                u.health_check_timeout.span(),
                "upstream.health_check_timeout must be longer than 0s",
            ));
        }
        let resolve_interval = self.duration(&u.resolve_interval, "upstream.resolve_interval")?;
        if resolve_interval < std::time::Duration::from_secs(1) {
            return Err(self.err(
                u.resolve_interval.span(),
                "upstream.resolve_interval must be at least 1s",
            ));
        }
        let tls = match (*u.tls.get_ref(), &u.sni, &u.ca_file) {
            (true, sni, ca) => {
                let sni = match sni {
                    Some(s) => {
                        let s = s.get_ref().trim();
                        if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
                            return Err(self.err(
                                u.sni.as_ref().map_or(span.clone(), |s| s.span()),
                                "upstream.sni must be a host name",
                            ));
                        }
                        s.to_ascii_lowercase()
                    }
                    // The first server's host name. Certificates are verified by name only (an
                    // IP SAN never matches), so an IP address needs `sni` set.
                    None if servers[0].literal().is_some() => {
                        return Err(self.err(
                            u.tls.span(),
                            format!(
                                "upstream {name:?}: tls = true with server {} needs upstream.sni, \
                                 the name its certificate is issued for (certificates are \
                                 verified by name, not by IP address)",
                                servers[0]
                            ),
                        ))
                    }
                    None => servers[0].host.to_ascii_lowercase(),
                };
                let ca_file = ca.as_ref().map(|c| std::path::PathBuf::from(c.get_ref()));
                Some(UpstreamTls { sni, ca_file })
            }
            (false, Some(s), _) => {
                return Err(self.err(s.span(), "upstream.sni applies to tls = true only"))
            }
            (false, None, Some(c)) => {
                return Err(self.err(c.span(), "upstream.ca_file applies to tls = true only"))
            }
            (false, None, None) => None,
        };
        Ok(Upstream {
            tls,
            servers,
            selection,
            health: HealthCheck {
                probe,
                interval,
                timeout,
                rise: self.positive(&u.health_check_rise, "upstream.health_check_rise", 100)?
                    as usize,
                fall: self.positive(&u.health_check_fall, "upstream.health_check_fall", 100)?
                    as usize,
            },
            resolve_interval,
            connect_timeout: self.duration(&u.connect_timeout, "upstream.connect_timeout")?,
            read_timeout: self.duration(&u.read_timeout, "upstream.read_timeout")?,
            write_timeout: self.duration(&u.write_timeout, "upstream.write_timeout")?,
            idle_timeout: self.duration(&u.idle_timeout, "upstream.idle_timeout")?,
            name,
        })
    }

    /// One entry of `servers`.
    fn server(&self, v: &Spanned<toml::Value>) -> Result<Server, ConfigError> {
        let bad = |why: String| self.err(v.span(), format!("upstream.servers: {why}"));
        let (addr, weight) = match v.get_ref() {
            toml::Value::String(s) => (s.as_str(), 1),
            toml::Value::Table(t) => {
                if let Some(k) = t.keys().find(|k| *k != "addr" && *k != "weight") {
                    return Err(bad(format!(
                        "unknown key {k:?} in a server table (expected `addr`, `weight`)"
                    )));
                }
                let addr = t
                    .get("addr")
                    .and_then(toml::Value::as_str)
                    .ok_or_else(|| bad("a server table needs addr = \"host:port\"".into()))?;
                let weight = match t.get("weight") {
                    None => 1,
                    Some(toml::Value::Integer(w)) if (1..=MAX_WEIGHT).contains(w) => *w as usize,
                    Some(w) => {
                        return Err(bad(format!(
                            "weight must be an integer from 1 to {MAX_WEIGHT}, not {w}"
                        )))
                    }
                };
                (addr, weight)
            }
            other => {
                return Err(bad(format!(
                    "expected \"host:port\" or {{ addr = \"host:port\", weight = N }}, not {other}"
                )))
            }
        };
        let (host, port) = split_host_port(addr.trim()).ok_or_else(|| {
            bad(format!(
                "{addr:?} is not host:port (an IP address or a host name, then a port from 1 to 65535; IPv6 in brackets)"
            ))
        })?;
        Ok(Server { host, port, weight })
    }
}

/// `"10.0.0.1:80"`, `"[::1]:80"`, `"api.internal:8080"` → host and port.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        (h.to_string(), p)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        if h.contains(':') {
            return None; // IPv6 without brackets: ambiguous
        }
        (h.to_string(), p)
    };
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let name_ok = |h: &str| {
        !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    if host.contains(':') || host.parse::<std::net::IpAddr>().is_ok() || name_ok(&host) {
        Some((host.to_ascii_lowercase(), port))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("10.0.0.1:80"),
            Some(("10.0.0.1".into(), 80))
        );
        assert_eq!(split_host_port("[::1]:8080"), Some(("::1".into(), 8080)));
        assert_eq!(
            split_host_port("API.internal:9000"),
            Some(("api.internal".into(), 9000))
        );
        for bad in [
            "10.0.0.1",
            "::1:80",
            "host:0",
            "host:70000",
            ":80",
            "a b:80",
            "[x]:80",
            "h..x:80",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }
}
