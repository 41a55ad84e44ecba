//! The configuration: typed settings, and how a file becomes them.
//!
//! Owns: [`load`] / [`parse`] (file → [`Config`] or a [`ConfigError`] that names the line). Files:
//! `settings.rs`, the typed settings the rest of precond reads; `file.rs`, the file's schema and
//! the one copy of every default (`config/defaults.toml` lists them and a test keeps both equal);
//! `validate.rs`, raw file → typed settings with `FILE:LINE:COL` errors; `reload.rs`, which
//! changes a running process can take; `tls.rs`, the HTTPS keys. Nothing here holds runtime state.
//!
//! Invariant: unknown keys are errors, not silently ignored.

mod file;
mod listeners;
mod reload;
mod settings;
mod store;
mod tls;
mod upstream;
mod validate;

use std::path::Path;

pub use settings::{
    AdminSettings, Backend, Config, EdgeSettings, EnforceSettings, FenceSettings, HealthCheck,
    HealthProbe, LogFormat, LogSettings, Mode, Policy, Probe, Route, Scope, SecretSource,
    Selection, Server, ServerSettings, StoreSettings, TlsListen, Upstream, UpstreamTls,
};
pub use validate::ConfigError;

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.display().to_string()),
        position: None,
        message: format!("cannot read the file: {e}"),
    })?;
    parse(&text).map_err(|mut e| {
        e.file = Some(path.display().to_string());
        e
    })
}

/// Parses and validates configuration text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let raw: file::RawFile = toml::from_str(text).map_err(|e| {
        let mut message = e.message().trim().to_string();
        if message.is_empty() {
            // The TOML parser names no reason for some syntax errors (a key without a value at
            // the end of the file, a lone carriage return): say what is expected there.
            message = "invalid TOML here: expected a value, a line feed or a comment".to_string();
        }
        ConfigError {
            file: None,
            position: e.span().map(|s| validate::line_col(text, s.start)),
            message,
        }
    })?;
    validate::Validator { text }.validate(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MINIMAL: &str = r#"
[[upstream]]
name = "api"
servers = ["127.0.0.1:9000"]

[[route]]
upstream = "api"
"#;

    #[test]
    fn minimal_file_gets_safe_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.routes[0].mode, Mode::Guard);
        assert_eq!(c.routes[0].policy, Policy::Superseded);
        assert_eq!(c.server.grace_period, Duration::from_secs(5));
        assert!(c.edge.disclose_validators);
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let text = format!("{MINIMAL}colour = \"red\"\n");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
    }

    #[test]
    fn sizes_are_bytes_or_strings_with_a_unit() {
        for (v, want) in [
            ("268435456", Some(268_435_456)),
            ("\"256MiB\"", Some(256 << 20)),
            ("\"1 GB\"", Some(1_000_000_000)),
            ("\"2048KiB\"", Some(2 << 20)),
            ("\"10 parsecs\"", None),
            ("\"1KiB\"", None),
            ("-5", None),
        ] {
            let text = format!("[store]\nmax_bytes = {v}\n{MINIMAL}");
            match (parse(&text), want) {
                (Ok(c), Some(n)) => assert_eq!(c.store.max_bytes, n, "{v}"),
                (Err(e), None) => {
                    assert!(e.message.contains("store.max_bytes"), "{v}: {e}");
                    assert_eq!(e.position.map(|p| p.0), Some(2), "{v}: {e}");
                }
                (r, _) => panic!("{v}: {r:?}"),
            }
        }
    }

    #[test]
    fn toml_syntax_errors_always_say_something() {
        // Found by fuzzing: the TOML parser gives no message for these.
        for text in [
            "[store]\nttl = ",
            "\r[[route]]\nupstream = \"api\"\n",
            "a = ",
        ] {
            let e = parse(text).unwrap_err();
            assert!(!e.message.is_empty(), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn undefined_upstream_names_the_line() {
        let text = MINIMAL.replace("upstream = \"api\"", "upstream = \"apx\"");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("\"apx\""), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(7), "{e}");
    }

    #[test]
    fn bad_duration_and_bad_address_are_located() {
        let text = MINIMAL.replace(
            "servers = [\"127.0.0.1:9000\"]",
            "servers = [\"127.0.0.1:9000\"]\nread_timeout = \"soon\"",
        );
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("read_timeout"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(5));
        let text = MINIMAL.replace("127.0.0.1:9000", "no-port");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
    }

    #[test]
    fn an_upgrade_socket_path_must_fit_a_unix_socket_address() {
        let at = |path: &str| format!("[server]\nupgrade_sock = \"{path}\"\n{MINIMAL}");
        let longest = format!("/run/precond/{}", "s".repeat(107 - 13));
        assert_eq!(longest.len(), 107);
        assert!(parse(&at(&longest)).is_ok());
        let e = parse(&at(&format!("{longest}s"))).unwrap_err();
        assert!(e.message.contains("108 bytes long"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
    }

    #[test]
    fn enforce_settings_are_validated() {
        let text = format!(
            "{MINIMAL}mode = \"enforce\"\nrequire = [\"PUT\", \"DELETE\"]\nprobe = \"head\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.routes[0].enforce.probe, Probe::Head);
        assert_eq!(c.routes[0].enforce.require.len(), 2);
        let text = format!("{MINIMAL}mode = \"enforce\"\nrequire = [\"GET\"]\n");
        assert!(parse(&text).unwrap_err().message.contains("GET"));
        let text = format!("{MINIMAL}require = [\"PUT\"]\n");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("only to mode = \"enforce\""), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(8));
    }

    #[test]
    fn route_selection_prefers_host_then_longest_prefix() {
        let text = r#"
[[upstream]]
name = "a"
servers = ["127.0.0.1:1"]
[[route]]
upstream = "a"
[[route]]
path_prefix = "/api"
upstream = "a"
mode = "pass"
[[route]]
host = "Example.com"
path_prefix = "/"
upstream = "a"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.route_for(None, "/api/x").unwrap().0, 1);
        assert_eq!(c.route_for(None, "/apix").unwrap().0, 0);
        assert_eq!(
            c.route_for(Some("example.com:8080"), "/api/x").unwrap().0,
            2
        );
        assert_eq!(c.route_for(Some("other"), "/").unwrap().0, 0);
    }
}
