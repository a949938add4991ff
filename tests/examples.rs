//! The examples in examples/ run as written against the simulator: the Makefile with
//! make, and the CI workflows' shell steps extracted from their YAML (never copied into
//! this file), so they cannot rot. What is substituted, and why:
//! - `APP_DIR` / `LOG_DIR` point into the simulated instances' homes instead of /opt and
//!   /var/log of this machine (the simulator's processes run here);
//! - `AWS_REGION` is the simulator's region;
//! - the install step is not run (it builds ssmcp from a git URL); the ssmcp under test
//!   is on PATH instead;
//! - GitHub's `configure-aws-credentials` action is replaced by the credentials it
//!   would export; GitLab's OIDC token goes through the simulator's STS
//!   AssumeRoleWithWebIdentity, as it would through AWS's.

mod common;
use common::*;
use ssm_sim::config::InstanceConfig;
use ssm_sim::SimConfig;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

const OTHER: &str = "i-0bbbbbbbbbbbbbbb2";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Two web instances; the first is `name:web-1`. `sudo` and `systemctl` record what a
/// deploy asks of them in the instance's home.
fn web_fleet() -> SimConfig {
    let sudo = "#!/bin/sh\nexec \"$@\"\n";
    let systemctl = "#!/bin/sh\necho \"$*\" >> \"$HOME/systemctl.log\"\n";
    let web = |id: &str, name: &str| {
        InstanceConfig::new(id)
            .tag("Name", name)
            .tag("Role", "web")
            .command("sudo", sudo)
            .command("systemctl", systemctl)
    };
    SimConfig {
        instances: vec![web(INSTANCE, "web-1"), web(OTHER, "web-2")],
        ..fast()
    }
}

/// A project directory with a build in dist/.
fn project(h: &Harness) -> PathBuf {
    let dir = h.local().join("project");
    std::fs::create_dir_all(dir.join("dist/assets")).unwrap();
    std::fs::write(dir.join("dist/index.html"), b"<h1>v1</h1>\n").unwrap();
    std::fs::write(dir.join("dist/assets/app.js"), pattern(5, 50_000)).unwrap();
    std::fs::write(dir.join("dist/old.css"), b"body{}\n").unwrap();
    dir
}

/// The environment a CI runner or a shell would give these steps: the simulator's
/// endpoints and credentials, and the ssmcp under test first on PATH.
fn shell(h: &Harness, dir: &Path, env: &[(String, String)]) -> tokio::process::Command {
    let bin = Path::new(env!("CARGO_BIN_EXE_ssmcp")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = tokio::process::Command::new("bash");
    c.current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", h.home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(h.sim.env())
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn run(mut c: tokio::process::Command, what: &str) -> String {
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .unwrap_or_else(|_| panic!("{what} finished in time"))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {text}");
    text
}

fn deployed(h: &Harness) -> PathBuf {
    h.remote().join("app")
}

fn assert_deployed(h: &Harness, dir: &Path, restarts: usize) {
    assert_eq!(
        snapshot(&dir.join("dist"), false),
        snapshot(&deployed(h), false),
        "the instance has exactly the build"
    );
    let log = std::fs::read_to_string(h.remote().join("systemctl.log")).unwrap();
    assert_eq!(log, "restart app\n".repeat(restarts));
}

#[tokio::test]
async fn the_makefile_deploys_redeploys_and_fetches_logs() {
    let h = Harness::new(web_fleet()).await;
    let dir = project(&h);
    let make = |target: &str| {
        let mut c = shell(&h, &dir, &[]);
        c.arg("-c").arg(format!(
            "make -f {} {target} APP_DIR=app LOG_DIR=log/app",
            repo().join("examples/Makefile").display()
        ));
        c
    };
    run(make("deploy"), "make deploy").await;
    assert_deployed(&h, &dir, 1);
    // The next build drops a file and changes one: --delete and --sync at work.
    std::fs::remove_file(dir.join("dist/old.css")).unwrap();
    std::fs::write(dir.join("dist/index.html"), b"<h1>v2</h1>\n").unwrap();
    run(make("deploy"), "make deploy again").await;
    assert_deployed(&h, &dir, 2);
    assert!(!deployed(&h).join("old.css").exists());
    assert_no_temporaries(&h.remote());

    for (id, line) in [(INSTANCE, "one\n"), (OTHER, "two\n")] {
        let logs = h.instances.path().join(id).join("log/app");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("app.log"), line).unwrap();
    }
    run(make("logs"), "make logs").await;
    for (id, line) in [(INSTANCE, "one\n"), (OTHER, "two\n")] {
        let got = walkdir::WalkDir::new(dir.join("logs").join(id))
            .into_iter()
            .filter_map(Result::ok)
            .find(|e| e.file_name() == "app.log")
            .unwrap_or_else(|| panic!("no app.log from {id}"));
        assert_eq!(std::fs::read_to_string(got.path()).unwrap(), line);
    }
    h.assert_no_sessions_left().await;
    assert_eq!(h.sim.stats().protocol_violations(), 0);
}

fn yaml(file: &str) -> Yaml {
    let text = std::fs::read_to_string(repo().join("examples").join(file)).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .remove(0)
}

/// A YAML mapping of strings as environment pairs.
fn vars(map: &Yaml) -> Vec<(String, String)> {
    map.as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        other => panic!("unexpected value {other:?}"),
                    };
                    (k.as_str().unwrap().to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The example's variables with the substitutions this file's header lists.
fn substituted(mut env: Vec<(String, String)>, h: &Harness) -> Vec<(String, String)> {
    let region = h
        .sim
        .env()
        .into_iter()
        .find(|(k, _)| k == "AWS_REGION")
        .map(|(_, v)| v)
        .unwrap();
    for (k, v) in &mut env {
        match k.as_str() {
            "APP_DIR" => *v = "app".into(),
            "AWS_REGION" => *v = region.clone(),
            _ => {}
        }
    }
    env
}

fn assert_events(dir: &Path) {
    let events = std::fs::read_to_string(dir.join("deploy-events.jsonl")).unwrap();
    let summary = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary event: {events}"));
    assert_eq!(summary["direction"], "upload", "{summary}");
}

#[tokio::test]
async fn the_github_actions_workflow_deploys() {
    let h = Harness::new(web_fleet()).await;
    let dir = project(&h);
    let doc = yaml("github-actions.yml");
    let job = &doc["jobs"]["deploy"];
    let env = substituted(vars(&job["env"]), &h);
    let steps = job["steps"].as_vec().unwrap();
    let uses: Vec<&str> = steps.iter().filter_map(|s| s["uses"].as_str()).collect();
    assert!(
        uses.iter()
            .any(|u| u.starts_with("aws-actions/configure-aws-credentials@")),
        "credentials come from OIDC: {uses:?}"
    );
    assert_eq!(doc["permissions"]["id-token"].as_str(), Some("write"));
    let mut ran = 0;
    for step in steps {
        let Some(script) = step["run"].as_str() else {
            continue;
        };
        if step["id"].as_str() == Some("install") {
            assert!(script.contains("cargo install --locked"), "{script}");
            continue;
        }
        // GitHub runs `run:` with bash -e (and pipefail).
        let mut c = shell(&h, &dir, &env);
        c.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script]);
        run(c, step["name"].as_str().unwrap_or("a step")).await;
        ran += 1;
    }
    assert_eq!(ran, 1, "the deploy step ran");
    assert_deployed(&h, &dir, 1);
    assert_events(&dir);
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn the_gitlab_job_deploys_with_web_identity_credentials() {
    let h = Harness::new(web_fleet()).await;
    let dir = project(&h);
    let doc = yaml("gitlab-ci.yml");
    let job = &doc["deploy"];
    assert_eq!(
        job["id_tokens"]["AWS_ID_TOKEN"]["aud"].as_str(),
        Some("sts.amazonaws.com")
    );
    let before = job["before_script"].as_vec().unwrap();
    assert!(before
        .iter()
        .all(|l| l.as_str().unwrap().contains("cargo install --locked")));
    let mut env = substituted(vars(&job["variables"]), &h);
    env.push((
        "AWS_ID_TOKEN".into(),
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJnaXRsYWIifQ.c2ln".into(),
    ));
    // No static keys: the SDK must take the web identity route.
    let script: Vec<&str> = job["script"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let mut c = shell(&h, &dir, &env);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["-e", "-c", &script.join("\n")]);
    run(c, "the GitLab job's script").await;
    assert_deployed(&h, &dir, 1);
    assert_events(&dir);
    h.assert_no_sessions_left().await;
}
