//! `ssmcp SRC… DEST` against ssm-sim with the agent's realistic 1 ms pacing ON: upload
//! throughput, many small files against one file of the same total, downloads striped
//! over several sessions, and the ssmcp process's peak RSS for each run.
//!
//! Run: `cargo bench --bench copy_throughput` (release build). `SSMCP_BENCH_QUICK=1`
//! uses small sizes. Prints a Markdown table; docs/benchmarks.md records the figures.

use ssm_sim::{Sim, SimConfig};
use std::path::Path;
use std::time::Instant;

const MIB: u64 = 1 << 20;
const INSTANCE: &str = ssm_sim::config::DEFAULT_INSTANCE;

struct Bench {
    sim: Sim,
    home: tempfile::TempDir,
    instances: tempfile::TempDir,
}

struct Run {
    secs: f64,
    peak_rss_kib: i64,
}

impl Bench {
    async fn new() -> Bench {
        let instances = tempfile::tempdir().unwrap();
        let sim = Sim::start(SimConfig {
            home_root: Some(instances.path().to_path_buf()),
            ..SimConfig::default() // pacing on, as the real agent
        })
        .await
        .unwrap();
        std::fs::create_dir_all(instances.path().join(INSTANCE)).unwrap();
        Bench {
            sim,
            home: tempfile::tempdir().unwrap(),
            instances,
        }
    }

    fn remote(&self) -> std::path::PathBuf {
        self.instances.path().join(INSTANCE)
    }

    /// Run the release ssmcp to completion on a blocking thread; wait4 gives its own
    /// peak RSS (not the simulator's or the receiver's).
    async fn ssmcp(&self, args: Vec<String>) -> Run {
        let env = self.sim.env();
        let home = self.home.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            #[allow(clippy::zombie_processes)] // reaped with wait4 for its rusage
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_ssmcp"))
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", &home)
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .envs(env)
                .args(&args)
                .spawn()
                .unwrap();
            let t = Instant::now();
            let mut status = 0;
            // SAFETY: plain wait4 on our own child; rusage is fully written by the kernel.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let pid = child.id() as libc::pid_t;
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            assert_eq!(r, pid);
            // Reaped by wait4 above; dropping the handle does not wait again.
            drop(child);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "ssmcp {args:?} failed"
            );
            Run {
                secs: t.elapsed().as_secs_f64(),
                peak_rss_kib: usage.ru_maxrss,
            }
        })
        .await
        .unwrap()
    }
}

fn write_file(path: &Path, n: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; MIB as usize];
    for _ in 0..n.div_ceil(MIB) {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    f.get_ref().set_len(n).unwrap();
}

fn row(what: &str, bytes: u64, run: &Run) {
    println!(
        "| {what} | {:.1} MiB | {:.2} s | {:.1} MB/s | {:.1} MiB |",
        bytes as f64 / MIB as f64,
        run.secs,
        bytes as f64 / 1e6 / run.secs,
        run.peak_rss_kib as f64 / 1024.0
    );
}

async fn bench(quick: bool) {
    let b = Bench::new().await;
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
