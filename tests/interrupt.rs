//! ^C at any instant of a copy — inside StartSession, the handshake, the receiver's
//! start, the first bytes, the commit — leaves nothing behind: no partial file, no
//! session Active or Connecting (checked at once, not after an idle timeout), no
//! receiver still running, nothing in S3 and no journal entry. SIGKILL cannot clean up;
//! after it, `ssmcp gc` and the next run do.

mod common;

use common::*;
use ssm_sim::config::{InstanceConfig, DEFAULT_BUCKET};
use ssm_sim::SimConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Instants (ms after spawn) at which ^C lands: dense over start-up, sparser after.
fn instants() -> Vec<u64> {
    (0..16)
        .map(|i| i * 40)
        .chain([700, 900, 1200, 1600])
        .collect()
}

struct Case<'a> {
    name: &'a str,
    args: Vec<String>,
    /// Must not exist after an interrupted run.
    dest: PathBuf,
    /// Where temporaries would be.
    temps_in: Vec<PathBuf>,
    /// The destination's size when a copy did finish.
    len: u64,
    /// Temporaries of a killed process are acceptable: Run Command's cancel kills the
    /// instance's receiver with SIGKILL (the agent kills the process group), and the
    /// next copy into that directory removes them (checked after the sweep).
    reapable: bool,
}

/// Temporaries under `root`; with `reapable`, only those whose owner still runs count
/// (a dead owner's are removed by the next copy into that directory).
fn has_temporaries(root: &Path, reapable: bool) -> bool {
    use std::os::unix::ffi::OsStrExt;
    walkdir::WalkDir::new(root).into_iter().flatten().any(|e| {
        let name = e.file_name().as_bytes();
        let ours = name.windows(7).any(|w| w == b".ssmcp-");
        let dead =
            ssmcp::copy::leftovers::owner(name).is_some_and(|p| !ssmcp::copy::leftovers::alive(p));
        ours && !(reapable && dead)
    })
}

fn journal_entries(h: &Harness) -> usize {
    std::fs::read_dir(h.home.path().join(".local/state/ssmcp/staged"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn sweep(h: &Harness, case: &Case<'_>) {
    for at in instants() {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let child = h
            .ssmcp()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(at)).await;
        let (code, err) = interrupt_and_wait(child).await;
        let what = format!("{} ^C at {at} ms (exit {code:?}): {err}", case.name);
        // None: the ^C came before ssmcp had its handlers (nothing had started yet);
        // 0: it came after the copy had finished, which then stands whole.
        match code {
            Some(0) => {
                assert_eq!(
                    std::fs::metadata(&case.dest).unwrap().len(),
                    case.len,
                    "{what}"
                );
                std::fs::remove_file(&case.dest).unwrap();
            }
            Some(130) | None => assert!(!case.dest.exists(), "{what}: the destination appeared"),
            _ => panic!("{what}"),
        }
        assert!(
            h.sim.wait_sessions_closed(Duration::from_secs(3)).await,
            "{what}: sessions left {:?}",
            h.sim.stats()
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while receivers_running(&h.remote()) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: a receiver is still running"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The instance's side may need a moment (a killed shell's trap, a receiver's
        // abort after its connection closed).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while case
            .temps_in
            .iter()
            .any(|d| has_temporaries(d, case.reapable))
        {
            if tokio::time::Instant::now() > deadline {
                panic!("{what}: temporaries left in {:?}", case.temps_in);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            h.sim.s3_leftovers().is_empty(),
            "{what}: {:?}",
            h.sim.s3_leftovers()
        );
        assert_eq!(journal_entries(h), 0, "{what}: journal entries left");
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

const UP: u64 = 1536 * 1024;
const DOWN: u64 = 1536 * 1024;
const S3_UP: u64 = 24 * 1024 * 1024;

/// A source that takes a few seconds to upload at `-l 4000` (500 kB/s).
fn upload_source(h: &Harness) -> PathBuf {
    let f = h.local().join("up.bin");
    std::fs::write(&f, pattern(3, UP as usize)).unwrap();
    f
}

/// A remote file that takes a few seconds to download from a paced agent.
fn download_source(h: &Harness) {
    std::fs::write(h.remote().join("down.bin"), pattern(5, DOWN as usize)).unwrap();
}

#[tokio::test]
async fn interrupts_during_stream_uploads_leave_nothing() {
    let h = Harness::new(fast()).await;
    let f = upload_source(&h);
    let case = Case {
        name: "stream upload",
        args: vec!["-l".into(), "4000".into(), s(&f), format!("{INSTANCE}:")],
        dest: h.remote().join("up.bin"),
        temps_in: vec![h.remote()],
        len: UP,
        reapable: false,
    };
    sweep(&h, &case).await;
}

/// `nohup ssmcp …`, or `ssmcp … &` in a script: signals ignored when ssmcp started stay
/// ignored, so the terminal closing or a ^C meant for the script's foreground does not
/// stop the copy, which completes.
#[tokio::test]
async fn signals_ignored_at_start_stay_ignored() {
    let h = Harness::new(fast()).await;
    let f = upload_source(&h);
    let mut cmd = h.ssmcp();
    // SAFETY: signal(2) with SIG_IGN is async-signal-safe and installs no handler.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let remote = h.remote();
    let target = format!("{INSTANCE}:");
    let child = start_cmd_until(
        cmd,
        &["-l", "4000", &s(&f), &target],
        "the copy never started",
        || has_temporaries(&remote, false),
    )
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    for sig in [
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGINT,
    ] {
        nix::sys::signal::kill(pid, sig).unwrap();
    }
    let (code, err) = wait_for(child, Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        std::fs::read(h.remote().join("up.bin")).unwrap(),
        pattern(3, UP as usize)
    );
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn interrupts_during_stream_downloads_leave_nothing() {
    let h = Harness::new(SimConfig::default()).await;
    download_source(&h);
    let out = h.local().join("dl");
    std::fs::create_dir_all(&out).unwrap();
    let case = Case {
        name: "stream download",
        args: vec![format!("{INSTANCE}:down.bin"), s(&out)],
        dest: out.join("down.bin"),
        temps_in: vec![out.clone()],
        len: DOWN,
        reapable: false,
    };
    sweep(&h, &case).await;
}

fn no_python() -> SimConfig {
    SimConfig {
        instances: vec![InstanceConfig::new(INSTANCE).without(&["python3"])],
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn interrupts_during_pty_copies_leave_nothing() {
    let h = Harness::new(no_python()).await;
    let f = upload_source(&h);
    download_source(&h);
    let out = h.local().join("dl");
    std::fs::create_dir_all(&out).unwrap();
    let up = Case {
        name: "pty upload",
        args: vec![
            "--transport".into(),
            "pty".into(),
            "-l".into(),
            "4000".into(),
            s(&f),
            format!("{INSTANCE}:"),
        ],
        dest: h.remote().join("up.bin"),
        temps_in: vec![h.remote()],
        len: UP,
        reapable: false,
    };
    sweep(&h, &up).await;
    let down = Case {
        name: "pty download",
        args: vec![
            "--transport".into(),
            "pty".into(),
            format!("{INSTANCE}:down.bin"),
            s(&out),
        ],
        dest: out.join("down.bin"),
        temps_in: vec![out.clone()],
        len: DOWN,
        reapable: false,
    };
    sweep(&h, &down).await;
}

#[tokio::test]
async fn interrupts_during_s3_copies_leave_nothing() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("up.bin");
    std::fs::write(&f, pattern(3, S3_UP as usize)).unwrap();
    download_source(&h);
    let out = h.local().join("dl");
    std::fs::create_dir_all(&out).unwrap();
    let s3 = |v: Vec<String>| {
        [
            vec![
                "--transport".into(),
                "s3".into(),
                "--bucket".into(),
                DEFAULT_BUCKET.into(),
            ],
            v,
        ]
        .concat()
    };
    let up = Case {
        name: "s3 upload",
        args: s3(vec![s(&f), format!("{INSTANCE}:")]),
        dest: h.remote().join("up.bin"),
        temps_in: vec![h.remote()],
        len: S3_UP,
        reapable: true,
    };
    sweep(&h, &up).await;
    let down = Case {
        name: "s3 download",
        args: s3(vec![format!("{INSTANCE}:down.bin"), s(&out)]),
        dest: out.join("down.bin"),
        temps_in: vec![out.clone()],
        len: DOWN,
        reapable: false,
    };
    sweep(&h, &down).await;
    // What cancelled receivers left on the instance goes with the next copy there.
    let small = h.local().join("small");
    std::fs::write(&small, b"x").unwrap();
    let (code, _, err) = h
        .run(
            &s3(vec![s(&small), format!("{INSTANCE}:")])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert_no_temporaries(&h.remote());
}

/// SIGKILL cannot be cleaned up after in the moment; the next run into the same
/// directory removes the temporaries the dead run left, on either side.
#[tokio::test]
async fn after_sigkill_the_next_run_removes_what_was_left() {
    let cfg = SimConfig {
        // The killed client's sessions end at the idle timeout, which ends its receiver.
        idle_timeout: Duration::from_secs(2),
        ..SimConfig::default()
    };
    let h = Harness::new(cfg).await;
    // Upload: killed while the receiver writes its temporary.
    let f = upload_source(&h);
    let child = interrupt_midway(
        &h,
        &["-l", "4000", &s(&f), &format!("{INSTANCE}:")],
        &h.remote(),
    )
    .await;
    kill9(&child);
    let _ = child.wait_with_output().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while receivers_running(&h.remote()) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphaned receiver never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let small = h.local().join("small.txt");
    std::fs::write(&small, b"next").unwrap();
    let (code, _, err) = h.run(&[&s(&small), &format!("{INSTANCE}:")]).await;
    assert_eq!(code, 0, "{err}");
    assert_no_temporaries(&h.remote());
    // Download: killed while its temporary fills; the next download reaps it.
    download_source(&h);
    let out = h.local().join("dl");
    std::fs::create_dir_all(&out).unwrap();
    let child = interrupt_midway(&h, &[&format!("{INSTANCE}:down.bin"), &s(&out)], &out).await;
    kill9(&child);
    let _ = child.wait_with_output().await;
    std::fs::write(h.remote().join("other.txt"), b"other").unwrap();
    let (code, _, err) = h
        .run(&["-v", &format!("{INSTANCE}:other.txt"), &s(&out)])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("left by a killed ssmcp run"), "{err}");
    assert_no_temporaries(&out);
    assert!(!out.join("down.bin").exists());
}

fn kill9(child: &tokio::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
}
