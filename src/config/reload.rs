//! Which configuration changes a running proxy can take without a restart.
//!
//! Owns: [`Config::reloadable`]. Pure: two validated configurations in, the sections that differ
//! and need a restart (or a graceful upgrade) out.
//!
//! Invariants:
//! - A reload swaps routes (modes, policies, prefixes, hosts, principals, fences, enforce
//!   settings), upstreams (servers, selection, health checks, timeouts, TLS: new pools are
//!   built, in the request's snapshot with the routes that index them) and `log.access_log`,
//!   and nothing else: listeners, the store and its backend, the deployment secret, the admin
//!   listener, `[edge]` and the rest of `[log]` keep what the process started with. So the
//!   settings a request reads outside its snapshot are the same in every configuration a
//!   process runs.
//! - An upstream's identity is its name: a route that keeps its upstream's name keeps what was
//!   learned through it (its servers may change: scaling, a move); a route that names another
//!   upstream does not.
//! - With the shared store, a reload may not lengthen the longest enforce write bound past the
//!   state lifetime the process started with (a dead holder's `quiet` must outlive the state
//!   that records it: [`Config::shared_state_ttl`]).

use super::{Backend, Config, Route};

impl Config {
    /// Whether `new` gives every request the same route identity, resource key, mode and
    /// upstream as `self` (same routes in the same order, differing at most in policies, fences
    /// and enforce settings). When it does not, what was learned under `self` may be
    /// stale or another key's under `new`: a reload then forgets the store, and enforce waits
    /// for the writes started before.
    pub fn same_resources(&self, new: &Config) -> bool {
        let shape = |c: &Config, r: &Route| {
            (
                r.id,
                c.upstreams[r.upstream].name.clone(),
                r.host.clone(),
                r.path_prefix.clone(),
                r.mode,
                r.strict_targets,
                r.trust_forwarded,
                r.principal.clone(),
                r.scope,
            )
        };
        self.routes.len() == new.routes.len()
            && self
                .routes
                .iter()
                .zip(&new.routes)
                .all(|(a, b)| shape(self, a) == shape(new, b))
    }

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
        if self.edge != new.edge {
            fixed.push("[edge]");
        }
        if self.log.format != new.log.format
            || self.log.level != new.log.level
            || self.log.log_query != new.log.log_query
        {
            fixed.push("log.format, log.level or log.log_query");
        }
        if !fixed.is_empty() {
            return Err(format!(
                "{} changed: a reload swaps routes, upstreams and log.access_log only; the rest \
                 needs a restart or a graceful upgrade (scripts/upgrade)",
                fixed.join(", ")
            ));
        }
        if matches!(self.store.backend, Backend::Redis { .. }) && !self.same_resources(new) {
            return Err(
                "with store.backend = \"redis\", a reload may not change how requests \
                        are routed, keyed or decided (a route's mode, host, path_prefix, upstream, \
                        principal, scope, strict_targets or trust_forwarded, or the routes' \
                        order): the instances share what was learned under these routes. \
                        Restart the instances one by one instead"
                    .to_string(),
            );
        }
        if let (Some(running), Some(wanted)) = (self.shared_state_ttl(), new.shared_state_ttl()) {
            if wanted > running {
                return Err(format!(
                    "the new routes' longest enforce write bound needs the shared store to keep \
                     a resource's state {wanted:?}, longer than the {running:?} this process \
                     started with: raise store.ttl to at least {wanted:?} and restart, or \
                     shorten the enforce timeouts"
                ));
            }
        }
        Ok(())
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
    fn routes_and_the_access_log_may_change() {
        let a = parse(BASE).unwrap();
        let text =
            BASE.replace("mode = \"guard\"", "mode = \"enforce\"") + "\n[log]\naccess_log = true\n";
        let b = parse(&text).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.reloadable(&b), Ok(()));
    }

    #[test]
    fn a_mode_or_a_prefix_change_changes_the_resources_a_policy_change_does_not() {
        let a = parse(BASE).unwrap();
        let policy = parse(&(BASE.to_string() + "policy = \"mismatch\"\n")).unwrap();
        assert!(a.same_resources(&policy));
        let mode = parse(&BASE.replace("mode = \"guard\"", "mode = \"enforce\"")).unwrap();
        assert!(!a.same_resources(&mode));
        let prefix = parse(&BASE.replace("path_prefix = \"/\"", "path_prefix = \"/a\"")).unwrap();
        assert!(!a.same_resources(&prefix));
        // Another upstream is another origin: what was learned from the first is not the
        // second's.
        let two =
            BASE.to_string() + "\n[[upstream]]\nname = \"b\"\nservers = [\"127.0.0.1:9001\"]\n";
        let on_a = parse(&two).unwrap();
        let on_b = parse(&two.replacen("upstream = \"api\"", "upstream = \"b\"", 1)).unwrap();
        assert!(!on_a.same_resources(&on_b));
    }

    #[test]
    fn listeners_and_the_store_need_a_restart() {
        let a = parse(BASE).unwrap();
        // An upstream's servers may change, and keep what was learned (same name).
        let moved = parse(&BASE.replace("127.0.0.1:9000", "127.0.0.1:9001")).unwrap();
        assert_eq!(a.reloadable(&moved), Ok(()));
        assert!(a.same_resources(&moved));
        for (change, named) in [
            (BASE.replace("127.0.0.1:8080", "127.0.0.1:8081"), "[server]"),
            (BASE.to_string() + "\n[store]\nttl = \"1m\"\n", "[store]"),
            (
                BASE.to_string() + "\n[log]\nformat = \"text\"\n",
                "log.format",
            ),
            (
                BASE.to_string() + "\n[admin]\nlisten = \"127.0.0.1:9901\"\n",
                "[admin]",
            ),
            (
                BASE.to_string() + "\n[edge]\ndisclose_validators = false\n",
                "[edge]",
            ),
            (
                BASE.to_string() + "\n[log]\nlog_query = true\n",
                "log.log_query",
            ),
        ] {
            let b = parse(&change).unwrap();
            let e = a.reloadable(&b).unwrap_err();
            assert!(e.contains(named), "{named}: {e}");
            assert!(e.contains("restart"), "{e}");
        }
    }

    #[test]
    fn with_redis_a_reload_may_not_outgrow_the_state_lifetime() {
        let redis = BASE.to_string()
            + "\n[store]\nttl = \"30s\"\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n";
        let a = parse(&redis).unwrap();
        // An enforce route's bound (timeouts of its upstream) is longer than 30 s.
        let b = parse(&redis.replace("mode = \"guard\"", "mode = \"enforce\"")).unwrap();
        let e = a.reloadable(&b).unwrap_err();
        assert!(
            e.contains("redis"),
            "a mode change is refused with Redis: {e}"
        );
        // A fence change is fine; a longer enforce bound is not.
        let enforce = parse(&redis.replace("mode = \"guard\"", "mode = \"enforce\"")).unwrap();
        let longer = parse(&redis.replace(
            "mode = \"guard\"",
            "mode = \"enforce\"\nwrite_body_timeout = \"120s\"",
        ))
        .unwrap();
        let e = enforce.reloadable(&longer).unwrap_err();
        assert!(e.contains("store.ttl"), "{e}");
        // Without Redis the same change is fine.
        let a = parse(BASE).unwrap();
        let b = parse(&BASE.replace("mode = \"guard\"", "mode = \"enforce\"")).unwrap();
        assert_eq!(a.reloadable(&b), Ok(()));
    }
}
