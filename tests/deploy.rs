//! The deploy kit (issue 13), each file exercised: the Kubernetes sidecar example (its embedded
//! configuration passes precond's validation; probes, ports and termination grace agree with
//! it), the container entrypoint (checks the file before it runs, and a bad file stops it with
//! the line), the Containerfile's contract, and the systemd unit (`systemd-analyze verify`
//! where the machine has it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_addr, TempDir};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seconds(d: Duration) -> i64 {
    d.as_secs() as i64
}

/// `y[k1][k2]…`, or a panic naming the path.
fn at<'a>(y: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(y, |y, k| {
        let v = &y[*k];
        assert!(!v.is_badvalue(), "no {path:?} in the manifest");
        v
    })
}

#[test]
fn the_kubernetes_sidecar_example_is_consistent() {
    let text =
        std::fs::read_to_string(root().join("deploy/kubernetes/precond-sidecar.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("the manifest is valid YAML");
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k}"))
    };
    // The embedded configuration is one precond accepts.
    let toml = at(kind("ConfigMap"), &["data", "precond.toml"])
        .as_str()
        .unwrap();
    let config = precond::config::parse(toml).unwrap_or_else(|e| panic!("{e}"));
    let admin = config
        .admin
        .listen
        .expect("the probes need the admin listener");
    assert!(
        config.admin.token_file.is_some(),
        "a non-loopback admin port needs a token"
    );
    let spec = at(kind("Deployment"), &["spec", "template", "spec"]);
    let precond = spec["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("precond"))
        .expect("a precond container");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = at(precond, &[probe, "httpGet"]);
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            get["port"].as_i64(),
            Some(i64::from(admin.port())),
            "{probe} targets the admin port"
        );
    }
    let ports: Vec<i64> = precond["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    assert!(ports.contains(&i64::from(config.server.listen[0].port())));
    assert!(ports.contains(&i64::from(admin.port())));
    // The termination grace covers preStop, then grace_period, then the shutdown timeout.
    let pre_stop = at(precond, &["lifecycle", "preStop", "sleep", "seconds"])
        .as_i64()
        .unwrap();
    let grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap();
    let needed = pre_stop
        + seconds(config.server.grace_period)
        + seconds(config.server.graceful_shutdown_timeout);
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds {grace} <= {needed}"
    );
    // The file precond reads is where the ConfigMap is mounted, and so is the token.
    let env = precond["env"].as_vec().unwrap();
    let file = env
        .iter()
        .find(|e| e["name"].as_str() == Some("PRECOND_CONFIG"))
        .and_then(|e| e["value"].as_str())
        .unwrap();
    let mounts = precond["volumeMounts"].as_vec().unwrap();
    let mounted = |path: &Path| {
        mounts.iter().any(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|dir| path.parent() == Some(Path::new(dir)))
        })
    };
    assert!(mounted(Path::new(file)), "{file} is in a mounted directory");
    assert!(mounted(config.admin.token_file.as_deref().unwrap()));
    assert!(
        mounted(&config.server.upgrade_sock),
        "upgrade_sock's directory is writable"
    );
    assert_eq!(
        at(precond, &["securityContext", "runAsNonRoot"]).as_bool(),
        Some(true)
    );
    // The shipped token is a placeholder precond refuses (shorter than 16 bytes).
    let token = at(kind("Secret"), &["stringData", "token"])
        .as_str()
        .unwrap();
    assert!(token.len() < 16, "the placeholder must not pass as a token");
}

#[test]
fn the_entrypoint_checks_the_file_before_it_runs() {
    let bin = env!("CARGO_BIN_EXE_precond");
    let dir = TempDir::new("deploy");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = [\"127.0.0.1:1\"]\nthreads = \"two\"\n",
    )
    .unwrap();
    let out = Command::new("sh")
        .arg(root().join("deploy/entrypoint.sh"))
        .env("PRECOND_CONFIG", &bad)
        .env("PRECOND_BIN", bin)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bad file stops the container");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:", bad.display())),
        "names the line: {err}"
    );

    let listen = free_addr();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[server]\nlisten = [\"{listen}\"]\ngrace_period = \"0s\"\n\n[[upstream]]\nname = \"a\"\n\
             servers = [\"127.0.0.1:9\"]\n\n[[route]]\nupstream = \"a\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new("sh")
        .arg(root().join("deploy/entrypoint.sh"))
        .env("PRECOND_CONFIG", &good)
        .env("PRECOND_BIN", bin)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "precond did not start");
        assert!(child.try_wait().unwrap().is_none(), "the entrypoint exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_containerfile_builds_in_two_stages_and_runs_unprivileged_through_the_check() {
    let text = std::fs::read_to_string(root().join("deploy/Containerfile")).unwrap();
    let from = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(from, 2, "a build stage and a runtime stage");
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "{user}"
    );
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/precond-entrypoint\"]"));
    assert!(text.contains("COPY deploy/entrypoint.sh /usr/local/bin/precond-entrypoint"));
    assert!(
        text.contains("--locked"),
        "the lock file decides the dependencies"
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit is not verified here");
        return;
    };
    assert!(found.status.success());
    // Verified with the binary where this build put it (the unit names /usr/local/bin).
    let unit = std::fs::read_to_string(root().join("deploy/precond.service"))
        .unwrap()
        .replace("/usr/local/bin/precond", env!("CARGO_BIN_EXE_precond"));
    let dir = TempDir::new("unit");
    let path = dir.join("precond.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
