//! `ssmcp SRC… DEST` against ssm-sim with the agent's realistic 1 ms pacing ON: upload
//! throughput, many small files against one file of the same total, downloads striped
//! over several sessions, and the ssmcp process's peak RSS for each run.
//!
//! Run: `cargo bench --bench copy_throughput` (release build). `SSMCP_BENCH_QUICK=1`
//! uses small sizes. Prints a Markdown table; docs/benchmarks.md records the figures.

mod common;
use common::{row, write_file, Bench, INSTANCE, MIB};

async fn bench(quick: bool) {
    let b = Bench::new(ssm_sim::SimConfig::default()).await; // pacing on, as the real agent
    let local = b.home.path().join("work");
    std::fs::create_dir_all(&local).unwrap();
    let remote = |p: &str| format!("{INSTANCE}:{p}");
    println!("| case | size | time | throughput | ssmcp peak RSS |");
    println!("|---|---:|---:|---:|---:|");

    // Uploads of one big file: the agent does not pace what it receives.
    let sizes: &[u64] = if quick {
        &[64 * MIB]
    } else {
        &[256 * MIB, 1024 * MIB]
    };
    for &n in sizes {
        let f = local.join(format!("big{n}"));
        write_file(&f, n);
        let run = b.ssmcp(vec![f.display().to_string(), remote("")]).await;
        row("upload, one file", n, &run);
        std::fs::remove_file(&f).unwrap();
        std::fs::remove_file(b.remote().join(format!("big{n}"))).unwrap();
    }

    // Many small files against one file of the same total.
    let count = if quick { 2_000 } else { 10_000 };
    let tree = local.join("small");
    for i in 0..count {
        let d = tree.join(format!("{:03}", i % 100));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), vec![(i % 251) as u8; 1024]).unwrap();
    }
    let total = count as u64 * 1024;
    let many = b
        .ssmcp(vec!["-r".into(), tree.display().to_string(), remote("")])
        .await;
    row(&format!("upload, {count} × 1 KiB files"), total, &many);
    let one_file = local.join("same-total");
    write_file(&one_file, total);
    let one = b
        .ssmcp(vec![one_file.display().to_string(), remote("")])
        .await;
    row("upload, one file of the same total", total, &one);
    println!(
        "\nmany small files take {:.2}× the time of one file of the same size\n",
        many.secs / one.secs
    );

    // Downloads: paced per session, so striped over several.
    let n = if quick { 4 * MIB } else { 16 * MIB };
    write_file(&b.remote().join("dl"), n);
    println!("| case | size | time | throughput | ssmcp peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    let mut single = 0.0;
    for parallel in [1, 4] {
        let out = local.join(format!("dl{parallel}"));
        let run = b
            .ssmcp(vec![
                "--parallel".into(),
                parallel.to_string(),
                remote("dl"),
                out.display().to_string(),
            ])
            .await;
        row(&format!("download, --parallel {parallel}"), n, &run);
        if parallel == 1 {
            single = run.secs;
        } else {
            println!(
                "\n--parallel {parallel} is {:.2}× one session\n",
                single / run.secs
            );
        }
    }
}

fn main() {
    let quick = std::env::var_os("SSMCP_BENCH_QUICK").is_some();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bench(quick));
}
