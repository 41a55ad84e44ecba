//! Every file in `config/` is valid, and `precond check` reports errors with their line.

use std::path::Path;
use std::process::Command;

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
    let dir = std::env::temp_dir().join(format!("precond-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
    let _ = std::fs::remove_dir_all(&dir);
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
