//! The S3 transport against ssm-sim's S3 (s3s-fs) on loopback: one 1 GiB upload staged
//! through S3 to one instance and back down (one PUT, then presigned parts), a payload
//! fanned out to 1, 10 and 50 instances (Run Command, --max-concurrency 10, the
//! default), and downloaded back from 10. Each instance verifies every SHA-256, so the
//! times include their work too.
//!
//! Run: `cargo bench --bench s3_fanout` (release build). `SSMCP_BENCH_QUICK=1` uses
//! small sizes. Prints Markdown; docs/benchmarks.md records the figures.

mod common;
use common::{row, write_file, Bench, INSTANCE, MIB};
use ssm_sim::config::{InstanceConfig, DEFAULT_BUCKET};
use ssm_sim::SimConfig;

/// `n` instances tagged Fleet=n<n>; `group` keeps the ids of different fleets apart.
fn fleet(group: usize, n: usize) -> Vec<InstanceConfig> {
    (0..n)
        .map(|i| {
            InstanceConfig::new(&format!("i-{group:x}{i:016x}")).tag("Fleet", &format!("n{n}"))
        })
        .collect()
}

async fn bench(quick: bool) {
    let mut instances = vec![InstanceConfig::new(INSTANCE)];
    for (group, n) in [1, 10, 50].into_iter().enumerate() {
        instances.extend(fleet(group + 1, n));
    }
    let b = Bench::new(SimConfig {
        instances,
        ..SimConfig::default()
    })
    .await;
    let local = b.home.path().join("work");
    std::fs::create_dir_all(&local).unwrap();
    let s3 = |mut extra: Vec<String>| {
        let mut v: Vec<String> = ["--transport", "s3", "--bucket", DEFAULT_BUCKET]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.append(&mut extra);
        v
    };

    println!("| case | size | time | throughput | ssmcp peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    let n = if quick { 64 * MIB } else { 1024 * MIB };
    let f = local.join("big");
    write_file(&f, n);
    let run = b
        .ssmcp(s3(vec![f.display().to_string(), format!("{INSTANCE}:big")]))
        .await;
    row("upload via S3, one instance", n, &run);
    std::fs::remove_file(&f).unwrap();

    // Back down: one presigned PUT, then the same through presigned parts (a ceiling
    // lowered to n/3 makes it 4 parts, sent 4 at a time, as a 6 GiB download would be).
    let down = |name: &str| {
        vec![
            format!("{INSTANCE}:big"),
            local.join(name).display().to_string(),
        ]
    };
    let run = b.ssmcp(s3(down("one-put"))).await;
    row("download via S3, one PUT", n, &run);
    let limit = (n / 3).max(6 * MIB).to_string();
    let run = b
        .ssmcp_env(
            vec![("SSMCP_S3_PUT_LIMIT".into(), limit)],
            s3(down("parts")),
        )
        .await;
    row("download via S3, in 4 presigned parts", n, &run);
    std::fs::remove_file(local.join("one-put")).unwrap();
    std::fs::remove_file(local.join("parts")).unwrap();
    std::fs::remove_file(b.remote().join("big")).unwrap();

    let payload = if quick { 4 * MIB } else { 32 * MIB };
    let f = local.join("payload");
    write_file(&f, payload);
    println!(
        "\n| fan-out of {} MiB | time | per instance |",
        payload / MIB
    );
    println!("|---|---:|---:|");
    for n in [1, 10, 50] {
        let run = b
            .ssmcp(s3(vec![
                "--max-concurrency".into(),
                "10".into(),
                f.display().to_string(),
                format!("tag:Fleet=n{n}:payload"),
            ]))
            .await;
        println!(
            "| {n} instance(s) | {:.2} s | {:.2} s |",
            run.secs,
            run.secs / n as f64
        );
        assert!(b.sim.s3_leftovers().is_empty());
    }

    // Downloads from several instances: the 10-instance fleet sends the payload back,
    // each into its own directory, 10 at a time.
    let gathered = local.join("gathered");
    std::fs::create_dir_all(&gathered).unwrap();
    let run = b
        .ssmcp(s3(vec![
            "tag:Fleet=n10:payload".into(),
            gathered.display().to_string(),
        ]))
        .await;
    println!(
        "\n| download of {} MiB from 10 instances via S3 | {:.2} s | {:.2} s per instance |",
        payload / MIB,
        run.secs,
        run.secs / 10.0
    );
}

fn main() {
    let quick = std::env::var_os("SSMCP_BENCH_QUICK").is_some();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bench(quick));
}
