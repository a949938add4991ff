//! Helpers for end-to-end tests: the real `ssmcp` binary against an in-process ssm-sim,
//! started from a cleared environment so nothing of the machine's AWS setup leaks in.

#![allow(dead_code)]

pub mod sshd;

use sha2::{Digest, Sha256};
use ssm_sim::{Sim, SimConfig};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

pub const INSTANCE: &str = ssm_sim::config::DEFAULT_INSTANCE;

pub fn fast() -> SimConfig {
    SimConfig {
        pacing: false,
        ..SimConfig::default()
    }
}

pub struct Harness {
    pub sim: Sim,
    pub home: tempfile::TempDir,
    /// Where the simulated instances' home directories live.
    pub instances: tempfile::TempDir,
}

impl Harness {
    pub async fn new(config: SimConfig) -> Harness {
        let instances = tempfile::tempdir().unwrap();
        let config = SimConfig {
            home_root: config
                .home_root
                .clone()
                .or_else(|| Some(instances.path().to_path_buf())),
            ..config
        };
        Harness {
            sim: Sim::start(config).await.expect("simulator starts"),
            home: tempfile::tempdir().unwrap(),
            instances,
        }
    }

    /// The default instance's home directory (the remote side of copies), created.
    pub fn remote(&self) -> std::path::PathBuf {
        let p = self.instances.path().join(INSTANCE);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A scratch directory on "this machine".
    pub fn local(&self) -> std::path::PathBuf {
        let p = self.home.path().join("work");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn ssmcp(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ssmcp"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.sim.env())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        with_default_signals(&mut c);
        c
    }

    /// Run ssmcp to completion: (exit code, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_env(&[], args).await
    }

    /// Upload `file` to the default instance's home through the S3 transport and the
    /// simulator's default bucket: (exit code, stdout, stderr).
    pub async fn upload_via_s3(&self, file: &Path) -> (i32, String, String) {
        self.run(&[
            "--transport",
            "s3",
            "--bucket",
            ssm_sim::config::DEFAULT_BUCKET,
            file.to_str().unwrap(),
            &format!("{INSTANCE}:"),
        ])
        .await
    }

    /// `run` with environment changes: `Some(v)` sets a variable, `None` removes it.
    pub async fn run_env(
        &self,
        env: &[(&str, Option<&str>)],
        args: &[&str],
    ) -> (i32, String, String) {
        let mut cmd = self.ssmcp();
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = tokio::time::timeout(Duration::from_secs(300), cmd.args(args).output())
            .await
            .expect("ssmcp finished in time")
            .expect("ssmcp ran");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        check_events(&stdout);
        (
            out.status.code().unwrap_or(-1),
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Start `ssmcp forward` and wait for its "Port N opened" line.
    pub async fn forward(&self, args: &[&str]) -> (Child, u16) {
        let mut child = self
            .ssmcp()
            .arg("forward")
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ssmcp forward");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("ssmcp: Port ") {
                    return rest
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .parse::<u16>()
                        .unwrap();
                }
                eprintln!("ssmcp: {line}");
            }
            panic!("ssmcp forward exited before opening its port");
        })
        .await
        .expect("forward ready in time");
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[forward] {line}");
            }
        });
        (child, port)
    }

    pub async fn assert_no_sessions_left(&self) {
        assert!(
            self.sim.wait_sessions_closed(Duration::from_secs(10)).await,
            "sessions left open: {:?}",
            self.sim.stats()
        );
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A server that, per connection, sends `pattern(seed, n)` while reading `n` bytes, and
/// reports the SHA-256 of what it read.
pub async fn exchange_server(n: usize, seed: u64) -> (u16, tokio::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let send = tokio::spawn(async move {
                    let data = pattern(seed, n);
                    let _ = w.write_all(&data).await;
                    w
                });
                let mut got = vec![0u8; n];
                if r.read_exact(&mut got).await.is_ok() {
                    let _ = tx.send(sha(&got)).await;
                }
                let _w = send.await; // keep the socket open until both directions finish
            });
        }
    });
    (port, rx)
}

/// The client side of `exchange_server`: returns the SHA-256 of what it read.
pub async fn exchange_client(port: u16, n: usize, seed: u64) -> String {
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let send = tokio::spawn(async move {
        w.write_all(&pattern(seed, n)).await.unwrap();
        w
    });
    let mut got = vec![0u8; n];
    r.read_exact(&mut got)
        .await
        .expect("read the server's bytes");
    let _w = send.await.unwrap();
    sha(&got)
}

/// SIGINT, as a user's Ctrl-C.
pub fn interrupt(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGINT,
        );
    }
}

/// Start `cmd` with the signal actions of a program started from a terminal. ssmcp
/// keeps a signal ignored when it started (nohup's contract), and a test run started as
/// a background job of a non-interactive shell ignores SIGINT: without this, every ^C
/// test would depend on how the tests were started.
pub fn with_default_signals(cmd: &mut Command) {
    // SAFETY: signal(2) with SIG_DFL is async-signal-safe and installs no handler.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}

/// Start ssmcp with `args` and return once the remote side has staged something (a
/// `.ssmcp-` temporary appears in `staged_in`), so the copy is known to be under way.
pub async fn interrupt_midway(h: &Harness, args: &[&str], staged_in: &std::path::Path) -> Child {
    start_until(h, args, "the copy never started", || {
        std::fs::read_dir(staged_in)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".ssmcp-"))
            })
            .unwrap_or(false)
    })
    .await
}

/// ^C, then how ssmcp exited and what it said on stderr (at most 30 s).
pub async fn interrupt_and_wait(child: Child) -> (Option<i32>, String) {
    interrupt(&child);
    wait_for(child, Duration::from_secs(30)).await
}

/// How a started ssmcp exited and what it said on stderr, waiting at most `limit`.
pub async fn wait_for(child: Child, limit: Duration) -> (Option<i32>, String) {
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("ssmcp ended in time")
        .expect("ssmcp ran");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Start ssmcp with `args` (stdout discarded, stderr piped) and return once `ready`
/// holds, checked every few ms for at most 60 s (then panic with `never`).
pub async fn start_until(
    h: &Harness,
    args: &[&str],
    never: &str,
    ready: impl FnMut() -> bool,
) -> Child {
    start_cmd_until(h.ssmcp(), args, never, ready).await
}

/// `start_until` for a command set up beforehand (extra environment, say).
pub async fn start_cmd_until(
    mut cmd: Command,
    args: &[&str],
    never: &str,
    mut ready: impl FnMut() -> bool,
) -> Child {
    let child = cmd
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "{never}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child
}

/// Whether the simulator's S3 holds an unfinished multipart upload.
pub fn multipart_under_way(h: &Harness) -> bool {
    h.sim
        .s3_leftovers()
        .iter()
        .any(|l| l.starts_with("upload:"))
}

/// SIGKILL the python receivers whose working directory is `home` (the simulator starts
/// command sessions in the instance's home). Returns how many were found.
pub fn kill_receivers(home: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cwd = std::fs::read_link(e.path().join("cwd")).ok();
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cwd.as_deref() == Some(home) && cmd.windows(7).any(|w| w == b"python3") {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            n += 1;
        }
    }
    n
}

/// What a tree holds, comparable across copies: kind, content hash or link target, and
/// (when `with_meta`) mode and mtime.
pub fn snapshot(root: &Path, with_meta: bool) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let m = e.path().symlink_metadata().unwrap();
        let what = if m.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(e.path()).unwrap())
        } else if m.is_dir() {
            "dir".to_string()
        } else {
            format!("file {}", sha(&std::fs::read(e.path()).unwrap()))
        };
        let meta = if with_meta && m.file_type().is_symlink() {
            format!(" mtime {}.{}", m.mtime(), m.mtime_nsec())
        } else if with_meta && !rel.is_empty() {
            format!(
                " mode {:o} mtime {}.{}",
                m.mode() & 0o7777,
                m.mtime(),
                m.mtime_nsec()
            )
        } else {
            String::new()
        };
        out.insert(rel, what + &meta);
    }
    out
}

pub fn assert_no_temporaries(root: &Path) {
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        let name = e.file_name().as_bytes();
        assert!(
            !name.windows(7).any(|w| w == b".ssmcp-"),
            "temporary left behind: {}",
            e.path().display()
        );
    }
}

/// The machine's real python3 binary (not a shim), for instance-side wrappers.
pub fn real_python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A `python3` for a hostile instance: it runs ssmcp's receiver with each `(old, new)`
/// source replacement applied (every one must apply, or it exits 99 saying which), and
/// anything else with the real python3. Give it to an instance with
/// `InstanceConfig::command("python3", &hostile_python(...))`.
pub fn hostile_python(patches: &[(&str, &str)]) -> String {
    let real = real_python();
    let patches = serde_json::to_string(&patches).unwrap();
    let literal = serde_json::to_string(&patches).unwrap();
    format!(
        r#"#!{real}
import base64, json, os, re, sys, zlib
args = sys.argv[1:]
if len(args) >= 2 and args[0] == "-c" and "b64decode" in args[1]:
    blob = re.search(r'b64decode\("([^"]+)"\)', args[1]).group(1)
    src = zlib.decompress(base64.b64decode(blob)).decode()
    for old, new in json.loads({literal}):
        if old not in src:
            sys.stderr.write("hostile patch does not apply: %r\n" % old)
            sys.exit(99)
        src = src.replace(old, new)
    sys.argv = ["-c"] + args[2:]
    exec(compile(src, "ssmcp-receiver", "exec"), {{"__name__": "__main__"}})
else:
    os.execv({real:?}, [{real:?}] + args)
"#
    )
}

/// Python processes (receivers) whose working directory is `home`.
pub fn receivers_running(home: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<i32>().is_err() {
            continue;
        }
        let cwd = std::fs::read_link(e.path().join("cwd")).ok();
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cwd.as_deref() == Some(home) && cmd.windows(6).any(|w| w == b"python") {
            n += 1;
        }
    }
    n
}

/// `ssmcp doctor --json`'s one document.
pub fn doctor_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).expect("doctor --json prints one JSON document")
}

/// One named check of a doctor report.
pub fn doctor_check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

/// docs/json-events.schema.json, compiled once per test binary.
fn event_schema() -> &'static jsonschema::Validator {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json-events.schema.json");
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).expect("the event schema compiles")
    })
}

/// Every `--json` event line in `stdout` must match the documented schema: every test
/// that runs ssmcp through the harness checks the events it causes.
pub fn check_events(stdout: &str) {
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v.get("event").is_none() {
            continue;
        }
        let errors: Vec<String> = event_schema()
            .iter_errors(&v)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "event {line} does not match docs/json-events.schema.json: {errors:?}"
        );
    }
}
