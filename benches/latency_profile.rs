//! The same copies, `exec` and start-up against ssm-sim twice: on loopback with no delay
//! (what the other benches measure) and with the realistic profile (20 ms one way to the
//! region, 150 ms per StartSession, Run Command delivered after 500 ms; docs/simulator.md).
//! Pacing is on in both, as the real agent's. Loopback flatters every design with many
//! round trips; the realistic column is the one a user sees.
//!
//! Run: `cargo bench --bench latency_profile` (release build). `SSMCP_BENCH_QUICK=1`
//! uses small sizes; `SSMCP_BENCH_INPUT_COST_US=N` changes the realistic agent's work
//! per input message (100 µs by default). Prints a Markdown table; docs/benchmarks.md records the figures.

mod common;
use common::{write_file, Bench, INSTANCE, MIB};
use ssm_sim::SimConfig;
use std::io::Read;
use std::time::Instant;

struct Case {
    what: String,
    bytes: u64,
    secs: [f64; 2],
    /// Messages sent and retransmitted under the realistic profile.
    wire: Option<(u64, u64)>,
    /// Messages the agent received twice under the realistic profile (the simulator's
    /// count, so it is there for any client).
    duplicates: Option<u64>,
    rss_mib: f64,
}

/// Median of `n` runs of `f`.
async fn median<F, Fut>(n: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(f().await);
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds from spawning `ssmcp exec -- echo hi` to the first byte of its stdout.
fn first_byte(b: &Bench) -> f64 {
    let t = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ssmcp"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", b.home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(b.sim.env())
        .args(["exec", INSTANCE, "--", "echo", "hi"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut byte = [0u8; 1];
    let mut out = child.stdout.take().unwrap();
    assert_eq!(out.read(&mut byte).unwrap(), 1);
    let secs = t.elapsed().as_secs_f64();
    assert!(child.wait().unwrap().success());
    secs
}

async fn profile(config: SimConfig, quick: bool, slot: usize, cases: &mut Vec<Case>) {
    let b = Bench::new(config).await;
    let local = b.home.path().join("work");
    std::fs::create_dir_all(&local).unwrap();
    let remote = |p: &str| format!("{INSTANCE}:{p}");
    let mut seen = 0u64;
    let seen_duplicates = &mut seen;
    let mut note = |what: &str, bytes: u64, secs: f64, run: Option<&common::Run>| {
        let i = match cases.iter().position(|c| c.what == what) {
            Some(i) => i,
            None => {
                cases.push(Case {
                    what: what.to_string(),
                    bytes,
                    secs: [0.0; 2],
                    wire: None,
                    duplicates: None,
                    rss_mib: 0.0,
                });
                cases.len() - 1
            }
        };
        let c = &mut cases[i];
        c.secs[slot] = secs;
        if let (1, Some(run)) = (slot, run) {
            c.wire = run.wire();
            c.rss_mib = run.peak_rss_kib as f64 / 1024.0;
            let dup = b.sim.stats().duplicate_client_messages;
            c.duplicates = Some(dup - *seen_duplicates);
            *seen_duplicates = dup;
        }
    };

    let sizes = if quick {
        vec![16 * MIB]
    } else {
        vec![64 * MIB, 1024 * MIB]
    };
    for n in sizes {
        let f = local.join("big");
        write_file(&f, n);
        let run = b
            .ssmcp(vec!["--json".into(), f.display().to_string(), remote("")])
            .await;
        note(
            &format!("upload, one file of {} MiB", n / MIB),
            n,
            run.secs,
            Some(&run),
        );
        std::fs::remove_file(&f).unwrap();
        std::fs::remove_file(b.remote().join("big")).unwrap();
    }

    let counts: &[u64] = if quick { &[2_000] } else { &[2_000, 10_000] };
    for &count in counts {
        let tree = local.join(format!("small-{count}"));
        for i in 0..count {
            let d = tree.join(format!("{:03}", i % 100));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("f{i}")), vec![(i % 251) as u8; 1024]).unwrap();
        }
        let run = b
            .ssmcp(vec![
                "--json".into(),
                "-r".into(),
                tree.display().to_string(),
                remote(""),
            ])
            .await;
        note(
            &format!("upload, {count} × 1 KiB files"),
            count * 1024,
            run.secs,
            Some(&run),
        );
    }

    let n = if quick { 4 * MIB } else { 16 * MIB };
    write_file(&b.remote().join("dl"), n);
    for parallel in [Some(1), Some(4), Some(8), None] {
        let out = local.join(format!("dl{parallel:?}"));
        let mut args = vec!["--json".to_string()];
        if let Some(p) = parallel {
            args.extend(["--parallel".to_string(), p.to_string()]);
        }
        args.extend([remote("dl"), out.display().to_string()]);
        let run = b.ssmcp(args).await;
        let what = match parallel {
            Some(p) => format!("download, --parallel {p}"),
            None => "download, default sessions (8 for 16 MiB)".to_string(),
        };
        note(&what, n, run.secs, Some(&run));
    }

    let runs = if quick { 3 } else { 5 };
    let exec = median(runs, || async {
        b.ssmcp(vec![
            "exec".into(),
            INSTANCE.into(),
            "--".into(),
            "true".into(),
        ])
        .await
        .secs
    })
    .await;
    note("`exec -- true` (median)", 0, exec, None);
    // Start to finish of the smallest copy: what start-up costs (#17, item 2).
    let one = local.join("one-kib");
    std::fs::write(&one, vec![7u8; 1024]).unwrap();
    let upload_one = median(runs, || async {
        b.ssmcp(vec![one.display().to_string(), remote("")])
            .await
            .secs
    })
    .await;
    note("upload, one 1 KiB file (median)", 1024, upload_one, None);
    let mut v: Vec<f64> = (0..runs).map(|_| first_byte(&b)).collect();
    v.sort_by(f64::total_cmp);
    note(
        "`exec -- echo hi` to first byte (median)",
        0,
        v[v.len() / 2],
        None,
    );
}

async fn bench(quick: bool) {
    let mut cases = Vec::new();
    profile(SimConfig::default(), quick, 0, &mut cases).await;
    let mut realistic = SimConfig::realistic();
    // A slower agent (e.g. 250 µs a message) shows what a queue deeper than the RTO's
    // cap does to a client's resends.
    if let Some(us) = std::env::var("SSMCP_BENCH_INPUT_COST_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        realistic.input_cost = std::time::Duration::from_micros(us);
        println!("agent input cost: {us} µs a message\n");
    }
    profile(realistic, quick, 1, &mut cases).await;
    println!("| case | size | loopback | realistic profile | realistic throughput | messages sent / retransmitted (realistic) | received twice by the agent | peak RSS (realistic) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for c in &cases {
        let (size, rate) = if c.bytes == 0 {
            ("—".to_string(), "—".to_string())
        } else {
            (
                format!("{:.1} MiB", c.bytes as f64 / MIB as f64),
                format!("{:.1} MB/s", c.bytes as f64 / 1e6 / c.secs[1]),
            )
        };
        let wire = match c.wire {
            Some((sent, resent)) if sent > 0 => format!(
                "{sent} / {resent} ({:.2} %)",
                100.0 * resent as f64 / sent as f64
            ),
            _ => "—".to_string(),
        };
        let rss = if c.rss_mib > 0.0 {
            format!("{:.1} MiB", c.rss_mib)
        } else {
            "—".to_string()
        };
        let dup = c.duplicates.map_or("—".to_string(), |d| d.to_string());
        println!(
            "| {} | {size} | {:.2} s | {:.2} s | {rate} | {wire} | {dup} | {rss} |",
            c.what, c.secs[0], c.secs[1]
        );
    }
}

fn main() {
    let quick = std::env::var_os("SSMCP_BENCH_QUICK").is_some();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bench(quick));
}
