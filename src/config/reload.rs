//! Which configuration changes a running proxy can take without a restart.
//!
//! Owns: [`Config::reloadable`]. Pure: two validated configurations in, the sections that differ
//! and need a restart (or a graceful upgrade) out.
//!
//! Invariant: a reload swaps routes (modes, policies, prefixes, hosts, principals, fences,
//! enforce settings), the edge's answers (`[edge]`) and what logs repeat (`log.log_query`,
//! `log.access_log`), and nothing else: listeners, the store and its backend, the deployment
//! secret, the admin listener, log format and level, and upstreams (whose health checks run as
//! services started once) keep what the process started with. Routes may name upstreams only
//! by the names the running process has, so a route's upstream index means the same pool in
//! both.

use super::Config;

impl Config {
    /// `Ok` when `new` can replace `self` in a running process; otherwise what differs, in the
    /// words of the file (each needs a restart or a graceful upgrade).
    pub fn reloadable(&self, new: &Config) -> Result<(), String> {
        let mut fixed = Vec::new();
        if self.server != new.server {
            fixed.push("[server]");
        }
        if self.store != new.store {
            fixed.push("[store]");
        }
        if self.secret != new.secret {
            fixed.push("the deployment secret ([enforce] tag_secret_file)");
        }
        if self.admin != new.admin {
            fixed.push("[admin]");
        }
        if self.log.format != new.log.format || self.log.level != new.log.level {
            fixed.push("log.format or log.level");
        }
        if self.upstreams != new.upstreams {
            fixed.push("[[upstream]]");
        }
        if fixed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} changed: a reload swaps routes, [edge] and log.log_query / log.access_log \
                 only; the rest needs a restart or a graceful upgrade (precond run --upgrade). \
                 The running configuration stays in force",
                fixed.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[[upstream]]
name = "api"
servers = ["127.0.0.1:9000"]

[[route]]
path_prefix = "/"
upstream = "api"
mode = "guard"
"#;

    #[test]
    fn routes_edge_and_log_query_may_change() {
        let a = parse(BASE).unwrap();
        let text = BASE.replace("mode = \"guard\"", "mode = \"enforce\"")
            + "\n[edge]\ndisclose_validators = false\n\n[log]\nlog_query = true\naccess_log = true\n";
        let b = parse(&text).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.reloadable(&b), Ok(()));
    }

    #[test]
    fn listeners_upstreams_and_the_store_need_a_restart() {
        let a = parse(BASE).unwrap();
        for (change, named) in [
            (BASE.replace("127.0.0.1:8080", "127.0.0.1:8081"), "[server]"),
            (
                BASE.replace("127.0.0.1:9000", "127.0.0.1:9001"),
                "[[upstream]]",
            ),
            (BASE.to_string() + "\n[store]\nttl = \"1m\"\n", "[store]"),
            (
                BASE.to_string() + "\n[log]\nformat = \"text\"\n",
                "log.format",
            ),
            (
                BASE.to_string() + "\n[admin]\nlisten = \"127.0.0.1:9901\"\n",
                "[admin]",
            ),
        ] {
            let b = parse(&change).unwrap();
            let e = a.reloadable(&b).unwrap_err();
            assert!(e.contains(named), "{named}: {e}");
            assert!(e.contains("restart"), "{e}");
        }
    }
}
