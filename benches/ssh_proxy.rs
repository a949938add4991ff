//! OpenSSH through `ssmcp proxy` under the realistic profile (20 ms one way, 150 ms per
//! StartSession, the agent's per-message costs; docs/simulator.md), against a real sshd
//! on 127.0.0.1: scp up and down, `ssh host true`, beside ssmcp's own copy and `exec`.
//!
//! Run: `cargo bench --bench ssh_proxy` (release build; needs openssh-server, which
//! scripts/test installs). Prints a Markdown table; docs/benchmarks.md records it.

mod common;
#[path = "../tests/common/sshd.rs"]
mod sshd;

use common::{write_file, Bench, INSTANCE, MIB};
use ssm_sim::SimConfig;
use std::time::Instant;

fn user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Seconds `program args` takes with ssmcp as its ProxyCommand.
async fn openssh(b: &Bench, sshd: &sshd::Sshd, program: &str, args: &[String]) -> f64 {
    let port_flag = if program == "ssh" { "-p" } else { "-P" };
    let t = Instant::now();
    let out = tokio::process::Command::new(program)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", b.home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(b.sim.env())
        .args(["-F", "/dev/null", "-i"])
        .arg(sshd.key())
        .args([
            "-o",
            &format!("ProxyCommand={} proxy %h %p", env!("CARGO_BIN_EXE_ssmcp")),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            port_flag,
            &sshd.port.to_string(),
        ])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

async fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn bench() {
    let sshd = sshd::Sshd::start().await;
    let b = Bench::new(SimConfig::realistic()).await;
    let far = tempfile::tempdir().unwrap();
    let up = b.home.path().join("up.bin");
    write_file(&up, 64 * MIB);
    let down = far.path().join("down.bin");
    write_file(&down, 16 * MIB);
    let at = |p: &std::path::Path| format!("{}@{INSTANCE}:{}", user(), p.display());
    let mut rows: Vec<(String, u64, f64)> = Vec::new();

    let scp_up = openssh(
        &b,
        &sshd,
        "scp",
        &[up.display().to_string(), at(&far.path().join("up.bin"))],
    )
    .await;
    rows.push(("scp up, through `ssmcp proxy`".into(), 64 * MIB, scp_up));
    let copy_up = b
        .ssmcp(vec![up.display().to_string(), format!("{INSTANCE}:")])
        .await
        .secs;
    rows.push(("ssmcp up (its own copy)".into(), 64 * MIB, copy_up));

    let back = b.home.path().join("back.bin");
    let scp_down = openssh(&b, &sshd, "scp", &[at(&down), back.display().to_string()]).await;
    rows.push(("scp down, through `ssmcp proxy`".into(), 16 * MIB, scp_down));

    let mut v = Vec::new();
    for _ in 0..5 {
        let host = format!("{}@{INSTANCE}", user());
        v.push(openssh(&b, &sshd, "ssh", &[host, "true".into()]).await);
    }
    rows.push((
        "`ssh host true` through `ssmcp proxy` (median of 5)".into(),
        0,
        median(v).await,
    ));
    let mut v = Vec::new();
    for _ in 0..5 {
        let args = vec!["exec".into(), INSTANCE.into(), "--".into(), "true".into()];
        v.push(b.ssmcp(args).await.secs);
    }
    rows.push((
        "`ssmcp exec -- true` (median of 5)".into(),
        0,
        median(v).await,
    ));

    println!("| case (realistic profile) | size | time | throughput |");
    println!("|---|---:|---:|---:|");
    for (what, bytes, secs) in rows {
        let (size, rate) = if bytes == 0 {
            ("—".to_string(), "—".to_string())
        } else {
            (
                format!("{} MiB", bytes / MIB),
                format!("{:.1} MB/s", bytes as f64 / 1e6 / secs),
            )
        };
        println!("| {what} | {size} | {secs:.2} s | {rate} |");
    }
}

fn main() {
    tokio::runtime::Runtime::new().unwrap().block_on(bench());
}
