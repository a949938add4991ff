//! `ssmcp exec -- cat FILE` under the realistic profile: the output of one command, by
//! way of the exec helper (stdout apart, base64 frames) and of a terminal (`-t`).
//!
//! Run: `cargo bench --bench exec_output` (release build, about a minute).
//! docs/benchmarks.md records the figures.

mod common;
use common::{write_file, Bench, INSTANCE, MIB};
use ssm_sim::SimConfig;

async fn bench() {
    let b = Bench::new(SimConfig::realistic()).await;
    let n = 16 * MIB;
    write_file(&b.remote().join("out.bin"), n);
    println!("| `exec -- cat` of 16 MiB (realistic profile) | time | throughput | agent output messages | peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    for (what, flags) in [
        ("helper (stdout apart)", &["-n"][..]),
        ("terminal (`-t`)", &["-t"]),
    ] {
        let before = b.sim.stats().agent_stream_messages;
        let mut args = vec!["exec".to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        args.extend([INSTANCE.to_string(), "--".into(), "cat out.bin".into()]);
        let run = b.ssmcp(args).await;
        let messages = b.sim.stats().agent_stream_messages - before;
        println!(
            "| {what} | {:.2} s | {:.2} MB/s | {messages} | {:.1} MiB |",
            run.secs,
            n as f64 / 1e6 / run.secs,
            run.peak_rss_kib as f64 / 1024.0
        );
    }
}

fn main() {
    tokio::runtime::Runtime::new().unwrap().block_on(bench());
}
