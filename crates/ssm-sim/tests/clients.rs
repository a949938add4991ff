//! Clients other than the Rust SDK get AWS's answers too: boto3 (installed with moto by
//! scripts/test into target/pyenv), configured only by the variables `Sim::env()`
//! exports, calls SSM (sessions, Run Command, errors), STS, the tagging API and S3.

use ssm_sim::config::{InstanceConfig, DEFAULT_BUCKET, DEFAULT_INSTANCE};
use ssm_sim::{Sim, SimConfig};
use std::path::Path;
use std::time::Duration;

fn python() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs boto3 with moto",
        p.display()
    );
    p
}

#[tokio::test]
async fn boto3_gets_the_answers_aws_gives() {
    let homes = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig {
        instances: vec![InstanceConfig::new(DEFAULT_INSTANCE).tag("Name", "web-1")],
        home_root: Some(homes.path().to_path_buf()),
        pacing: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_round.py");
    let run = tokio::process::Command::new(python())
        .arg(&script)
        .args([DEFAULT_INSTANCE, DEFAULT_BUCKET])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", homes.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(sim.env())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("boto3 finished in time")
        .expect("python ran");
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sim.stats().sessions_open(), 0);
    assert!(sim.s3_leftovers().is_empty());
}
