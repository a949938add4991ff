//! What the benchmarks share: a simulator, the release ssmcp run to completion with its
//! own peak RSS (sampled from /proc), test data and Markdown rows.

#![allow(dead_code)]

use ssm_sim::{Sim, SimConfig};
use std::path::Path;
use std::time::Instant;

pub const MIB: u64 = 1 << 20;
pub const INSTANCE: &str = ssm_sim::config::DEFAULT_INSTANCE;

pub struct Bench {
    pub sim: Sim,
    pub home: tempfile::TempDir,
    pub instances: tempfile::TempDir,
}

pub struct Run {
    pub secs: f64,
    pub peak_rss_kib: u64,
    /// What ssmcp printed on stdout (the `--json` events when asked for).
    pub stdout: String,
}

impl Run {
    /// `(messages sent, retransmitted)` from a `--json` run's summary.
    pub fn wire(&self) -> Option<(u64, u64)> {
        self.stdout.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["event"] == "summary").then(|| {
                (
                    v["wire"]["messages_sent"].as_u64().unwrap_or(0),
                    v["wire"]["retransmitted"].as_u64().unwrap_or(0),
                )
            })
        })
    }
}

impl Bench {
    pub async fn new(config: SimConfig) -> Bench {
        let instances = tempfile::tempdir().unwrap();
        let sim = Sim::start(SimConfig {
            home_root: Some(instances.path().to_path_buf()),
            ..config
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

    pub fn remote(&self) -> std::path::PathBuf {
        self.instances.path().join(INSTANCE)
    }

    /// Run the release ssmcp to completion on a blocking thread, sampling its peak RSS.
    ///
    /// Not wait4's `ru_maxrss`: a child spawned from this process starts with a maximum
    /// RSS of this process's (the simulator's) at the moment of exec, so it reports
    /// whichever is bigger. `VmHWM` in /proc belongs to the new program's memory only;
    /// it is read every 2 ms until the process exits, so growth in its last 2 ms could
    /// be missed (copies reach their peak while data flows, not while exiting).
    pub async fn ssmcp(&self, args: Vec<String>) -> Run {
        self.ssmcp_env(Vec::new(), args).await
    }

    /// `ssmcp` with extra environment variables.
    pub async fn ssmcp_env(&self, extra: Vec<(String, String)>, args: Vec<String>) -> Run {
        let mut env = self.sim.env();
        env.extend(extra);
        let home = self.home.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut out = tempfile::tempfile().unwrap();
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ssmcp"))
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", &home)
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .envs(env)
                .args(&args)
                .stdout(out.try_clone().unwrap())
                .spawn()
                .unwrap();
            let t = Instant::now();
            let mut peak = 0;
            let status = loop {
                peak = peak.max(vm_hwm_kib(child.id()));
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            };
            assert!(status.success(), "ssmcp {args:?} failed");
            let secs = t.elapsed().as_secs_f64();
            // Lossy: a command's output (exec) need not be text.
            let mut bytes = Vec::new();
            use std::io::{Read, Seek};
            out.rewind().unwrap();
            out.read_to_end(&mut bytes).unwrap();
            let stdout = String::from_utf8_lossy(&bytes).into_owned();
            Run {
                secs,
                peak_rss_kib: peak,
                stdout,
            }
        })
        .await
        .unwrap()
    }
}

/// The high-water mark of a running process's resident memory, 0 once it has exited.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn write_file(path: &Path, n: u64) {
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

pub fn row(what: &str, bytes: u64, run: &Run) {
    println!(
        "| {what} | {:.1} MiB | {:.2} s | {:.1} MB/s | {:.1} MiB |",
        bytes as f64 / MIB as f64,
        run.secs,
        bytes as f64 / 1e6 / run.secs,
        run.peak_rss_kib as f64 / 1024.0
    );
}
