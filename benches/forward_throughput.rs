//! Throughput and peak memory of `ssmcp forward` against ssm-sim, upload and download
//! measured separately, with the agent's 1 ms pacing on and off.
//!
//! Run: `cargo bench --bench forward_throughput` (release build). Set
//! `SSMCP_BENCH_QUICK=1` for small sizes. Results go to stdout as a Markdown table;
//! docs/benchmarks.md records them.

mod common;
use common::{vm_hwm_kib, MIB};
use ssm_sim::{Sim, SimConfig};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Dir {
    Upload,
    Download,
}

/// A destination "on the instance" that sinks or sources `n` bytes per connection.
async fn destination(dir: Dir, n: u64) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0x5au8; 256 * 1024];
                match dir {
                    Dir::Upload => {
                        let mut left = n;
                        while left > 0 {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => left -= k as u64,
                            }
                        }
                        let _ = s.write_all(b"K").await; // tell the client it all arrived
                        let _ = s.read(&mut buf).await;
                    }
                    Dir::Download => {
                        let mut left = n;
                        while left > 0 {
                            let k = left.min(buf.len() as u64) as usize;
                            if s.write_all(&buf[..k]).await.is_err() {
                                return;
                            }
                            left -= k as u64;
                        }
                        let _ = s.read(&mut buf).await;
                    }
                }
            });
        }
    });
    port
}

async fn run_case(pacing: bool, dir: Dir, n: u64) -> (f64, u64) {
    let sim = Sim::start(SimConfig {
        pacing,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = destination(dir, n).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssmcp"))
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(sim.env())
        .args([
            "forward",
            ssm_sim::config::DEFAULT_INSTANCE,
            &port.to_string(),
        ])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let local: u16 = loop {
        let line = lines.next_line().await.unwrap().expect("forward starts");
        if let Some(rest) = line.strip_prefix("ssmcp: Port ") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    s.set_nodelay(true).unwrap();
    let buf = vec![0xa5u8; 256 * 1024];
    let t = Instant::now();
    match dir {
        Dir::Upload => {
            let mut left = n;
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                s.write_all(&buf[..k]).await.unwrap();
                left -= k as u64;
            }
            let mut ok = [0u8; 1];
            s.read_exact(&mut ok).await.unwrap();
        }
        Dir::Download => {
            let mut rbuf = vec![0u8; 256 * 1024];
            let mut left = n;
            while left > 0 {
                let k = s.read(&mut rbuf).await.unwrap();
                assert!(k > 0, "stream ended early");
                left -= k as u64;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let rss = vm_hwm_kib(pid);
    drop(s);
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    (n as f64 / MIB as f64 / secs, rss)
}

fn main() {
    let quick = std::env::var_os("SSMCP_BENCH_QUICK").is_some();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Paced downloads run at the agent's ~1 MB/s, so they use a smaller size.
    let cases: Vec<(bool, Dir, u64)> = if quick {
        vec![
            (false, Dir::Upload, 16 * MIB),
            (false, Dir::Download, 16 * MIB),
            (true, Dir::Upload, 16 * MIB),
            (true, Dir::Download, 2 * MIB),
        ]
    } else {
        vec![
            (false, Dir::Upload, 64 * MIB),
            (false, Dir::Upload, 1024 * MIB),
            (false, Dir::Download, 64 * MIB),
            (false, Dir::Download, 1024 * MIB),
            (true, Dir::Upload, 64 * MIB),
            (true, Dir::Upload, 1024 * MIB),
            (true, Dir::Download, 16 * MIB),
        ]
    };
    println!("| agent pacing | direction | size | throughput | ssmcp peak RSS |");
    println!("|---|---|---:|---:|---:|");
    for (pacing, dir, n) in cases {
        let (mbps, rss) = rt.block_on(run_case(pacing, dir, n));
        println!(
            "| {} | {} | {} MiB | {:.1} MiB/s | {:.1} MiB |",
            if pacing { "on (1 ms/msg)" } else { "off" },
            match dir {
                Dir::Upload => "upload (client→instance)",
                Dir::Download => "download (instance→client)",
            },
            n / MIB,
            mbps,
            rss as f64 / 1024.0
        );
    }
}
