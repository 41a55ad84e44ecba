//! Every file in `config/` is valid, and `precond check` reports errors with their line.

mod common;

use std::path::Path;
use std::process::Command;

use common::TempDir;

#[test]
fn every_shipped_config_file_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            precond::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 2, "config/ holds the example and demo files");
}

#[test]
fn version_names_the_commit_and_check_warns_about_metrics_listen() {
    let out = Command::new(env!("CARGO_BIN_EXE_precond"))
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with(&format!("precond {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let dir = TempDir::new("deprecated");
    let file = dir.join("old.toml");
    std::fs::write(
        &file,
        "[server]\nmetrics_listen = \"127.0.0.1:9091\"\n\n[[upstream]]\nname = \"api\"\nservers = [\"127.0.0.1:9000\"]\n\n[[route]]\nupstream = \"api\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_precond"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "still accepted for one release");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics_listen is deprecated") && err.contains("[admin] listen"),
        "{err}"
    );
}

#[test]
fn check_command_accepts_a_good_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_precond"))
        .args(["check", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn check_command_rejects_a_bad_file_naming_the_line() {
    let dir = TempDir::new("check");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[[upstream]]\nname = \"api\"\nservers = [\"127.0.0.1:9000\"]\n\n[[route]]\nupstream = \"api\"\npolicy = \"sometimes\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_precond"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:7:"), "{err}");
    assert!(err.contains("sometimes"), "{err}");
}

#[test]
fn check_command_reports_a_missing_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_precond"))
        .args(["check", "--config", "/nonexistent/precond.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// `config/defaults.toml` lists every key at its default: it parses to exactly what the same file
/// without its optional keys parses to (the parser's own defaults), and every key the parser
/// accepts is listed there (commented out when it has no default) and named in the README.
#[test]
fn config_defaults_are_documented_and_equal_the_parsers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/defaults.toml")).unwrap();
    let full = precond::config::parse(&text).unwrap_or_else(|e| panic!("{e}"));

    // The same file with only the keys that have no default (and what tells the routes apart).
    let mut doc: toml::Table = text.parse().unwrap();
    let keep = |table: &mut toml::Table, keys: &[&str]| table.retain(|k, _| keys.contains(&k));
    doc.retain(|k, _| k == "upstream" || k == "route");
    for up in doc["upstream"].as_array_mut().unwrap() {
        keep(up.as_table_mut().unwrap(), &["name", "servers"]);
    }
    let routes = doc["route"].as_array_mut().unwrap();
    keep(routes[0].as_table_mut().unwrap(), &["upstream"]);
    for r in &mut routes[1..] {
        keep(
            r.as_table_mut().unwrap(),
            &["upstream", "mode", "path_prefix"],
        );
    }
    let minimal = precond::config::parse(&toml::to_string(&doc).unwrap()).unwrap();
    assert_eq!(
        full, minimal,
        "config/defaults.toml differs from the parser's defaults"
    );
    assert_eq!(full.routes.len(), 2);

    // Every key the parser accepts, per table, as its unknown-key error lists them.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let sections = sections_of(&text);
    for table in [
        "", "server", "store", "edge", "log", "admin", "upstream", "route",
    ] {
        let bogus = match table {
            "" => format!("zz_bogus = 1\n{text}"),
            t => text.replacen(
                &sections[t].0,
                &format!("{}\nzz_bogus = 1", sections[t].0),
                1,
            ),
        };
        let err = precond::config::parse(&bogus).unwrap_err().message;
        let accepted: Vec<&str> = err
            .split_once("expected")
            .unwrap_or_else(|| panic!("{table}: {err}"))
            .1
            .split('`')
            .skip(1)
            .step_by(2)
            .collect();
        assert!(!accepted.is_empty(), "{table}: {err}");
        for key in accepted {
            let listed = if table.is_empty() {
                sections.contains_key(key)
            } else {
                sections[table].1.lines().any(|l| {
                    let l = l.trim_start().trim_start_matches('#').trim_start();
                    l.split('=').next().is_some_and(|k| k.trim() == key) && l.contains('=')
                })
            };
            assert!(listed, "config/defaults.toml does not list {table}.{key}");
            assert!(
                table.is_empty() || readme.contains(&format!("{key}`")),
                "the README's configuration reference does not name {table}.{key}"
            );
        }
    }
}

/// Section name → (its header line, the text of every section with that name).
fn sections_of(text: &str) -> std::collections::HashMap<String, (String, String)> {
    let mut out: std::collections::HashMap<String, (String, String)> = Default::default();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']').to_string();
            out.entry(name.clone())
                .or_insert_with(|| (t.to_string(), String::new()));
            current = Some(name);
        } else if let Some(c) = &current {
            let s = &mut out.get_mut(c).unwrap().1;
            s.push_str(line);
            s.push('\n');
        }
    }
    out
}
