//! How many sessions a download should use, and what `-C` is worth (#17, item 3):
//! downloads under the realistic profile (20 ms one way, 150 ms per StartSession, the
//! agent pacing each session at 1 KiB per 1.1 ms) with a fixed `--parallel`, with the
//! default (one session per 512 KiB, up to 8), and with `-C` on a log file and on random
//! bytes.
//!
//! Run: `cargo bench --bench download_sessions` (release build, about 2 minutes).
//! `SSMCP_BENCH_QUICK=1` uses a quarter of the sizes. Prints a Markdown table;
//! docs/benchmarks.md records the figures.

mod common;
use common::{write_file, Bench, INSTANCE, MIB};
use ssm_sim::SimConfig;
use std::io::Write;

/// A service's access log: timestamps, levels, request ids, paths, statuses. Compresses
/// about as well as real logs do (zlib -6 takes it to roughly a fifth).
fn write_log(path: &std::path::Path, n: u64) {
    const LEVELS: [&str; 4] = ["INFO", "INFO", "WARN", "DEBUG"];
    const PATHS: [&str; 6] = [
        "/api/v1/items",
        "/api/v1/orders",
        "/healthz",
        "/api/v2/search",
        "/static/app.js",
        "/api/v1/users",
    ];
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut written, mut ms) = (0u64, 0u64);
    while written < n {
        let r = next();
        ms += r % 40;
        let line = format!(
            "2026-11-30T{:02}:{:02}:{:02}.{:03}Z {} [worker-{}] request_id={:016x} method=GET path={}/{} status={} bytes={} duration_ms={}\n",
            (ms / 3_600_000) % 24,
            (ms / 60_000) % 60,
            (ms / 1000) % 60,
            ms % 1000,
            LEVELS[(r % 4) as usize],
            (r >> 8) % 32,
            next(),
            PATHS[((r >> 16) % 6) as usize],
            (r >> 20) % 100_000,
            [200, 200, 200, 304, 404, 500][((r >> 40) % 6) as usize],
            (r >> 24) % 50_000,
            (r >> 48) % 900,
        );
        f.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
    }
    f.flush().unwrap();
    f.get_ref().set_len(n).unwrap();
}

struct Row {
    what: String,
    bytes: u64,
    secs: f64,
    sessions: u64,
    /// Output messages the agent sent (1 KiB of payload at most each).
    agent_messages: u64,
    rss_mib: f64,
}

async fn download(b: &Bench, name: &str, bytes: u64, flags: &[&str], rows: &mut Vec<Row>) {
    let before = b.sim.stats();
    let out = b.home.path().join(format!("out-{}", rows.len()));
    let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    args.push(format!("{INSTANCE}:{name}"));
    args.push(out.display().to_string());
    let run = b.ssmcp(args).await;
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        bytes,
        "{name} {flags:?}"
    );
    std::fs::remove_file(&out).unwrap();
    let after = b.sim.stats();
    let shown = if flags.is_empty() {
        "default".to_string()
    } else {
        flags.join(" ")
    };
    rows.push(Row {
        what: format!("{name}, {shown}"),
        bytes,
        secs: run.secs,
        // One of them is the receiver's command session.
        sessions: after.sessions_started - before.sessions_started - 1,
        agent_messages: after.agent_stream_messages - before.agent_stream_messages,
        rss_mib: run.peak_rss_kib as f64 / 1024.0,
    });
}

async fn bench(quick: bool) {
    let b = Bench::new(SimConfig::realistic()).await;
    let scale = if quick { 4 } else { 1 };
    let random = 16 * MIB / scale;
    let big = 64 * MIB / scale;
    write_file(&b.remote().join("random.bin"), random);
    write_file(&b.remote().join("random-large.bin"), big);
    write_log(&b.remote().join("app.log"), big);
    let mut rows = Vec::new();
    for flags in [
        &["--parallel", "4"][..],
        &["--parallel", "8"],
        &["--parallel", "16"],
        &[],
    ] {
        download(&b, "random.bin", random, flags, &mut rows).await;
    }
    for flags in [
        &["--parallel", "4"][..],
        &[],
        &["--parallel", "16"],
        &["-C"],
        &["-C", "--parallel", "4"],
    ] {
        download(&b, "app.log", big, flags, &mut rows).await;
    }
    for flags in [&[][..], &["-C"]] {
        download(&b, "random-large.bin", big, flags, &mut rows).await;
    }
    println!("| download (realistic profile) | size | time | throughput | port sessions | agent output messages | peak RSS |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} MiB | {:.2} s | {:.1} MB/s | {} | {} | {:.1} MiB |",
            r.what,
            r.bytes as f64 / MIB as f64,
            r.secs,
            r.bytes as f64 / 1e6 / r.secs,
            r.sessions,
            r.agent_messages,
            r.rss_mib
        );
    }
}

fn main() {
    let quick = std::env::var_os("SSMCP_BENCH_QUICK").is_some();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bench(quick));
}
