//! A compromised instance: its receiver (or its `find`) lies. Whatever it sends, a
//! download creates, replaces or deletes nothing the request did not name, on every
//! transport, and ssmcp's memory and the sessions it opened stay bounded.

mod common;

use common::*;
use ssm_sim::config::{InstanceConfig, DEFAULT_BUCKET};
use ssm_sim::SimConfig;
use std::path::Path;
use std::time::Duration;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The receiver lists one more top-level file, `.bashrc`, served from `evil.txt`.
const EXTRA_TOP_ENTRY: (&str, &str) = (
    "    key = manifests.add(files)\n",
    "    evil = os.path.join(home(), b\"evil.txt\")\n    files.append(evil)\n    records.append(b\"M\" + bytes16(b\".bashrc\") + meta_of(os.stat(evil)) + U64.pack(os.stat(evil).st_size))\n    key = manifests.add(files)\n",
);

/// The receiver declares a size for each file that no disk holds.
fn lying_size(size: u64) -> (&'static str, String) {
    (
        "records.append(b\"M\" + bytes16(top) + meta_of(st) + U64.pack(st.st_size))",
        format!("records.append(b\"M\" + bytes16(top) + meta_of(st) + U64.pack({size}))"),
    )
}

fn hostile(patches: &[(&str, &str)]) -> SimConfig {
    SimConfig {
        instances: vec![InstanceConfig::new(INSTANCE).command("python3", &hostile_python(patches))],
        ..fast()
    }
}

/// A home-like local directory: `.bashrc` and `victim` that nothing may touch.
fn local_home(h: &Harness) -> std::path::PathBuf {
    let dir = h.local().join("me");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".bashrc"), b"mine").unwrap();
    std::fs::write(dir.join("victim"), b"mine too").unwrap();
    dir
}

fn assert_untouched(dir: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [".bashrc", "victim"],
        "nothing added or left in {dir:?}"
    );
    assert_eq!(std::fs::read(dir.join(".bashrc")).unwrap(), b"mine");
    assert_eq!(std::fs::read(dir.join("victim")).unwrap(), b"mine too");
}

fn remote_files(h: &Harness) {
    let d = h.remote().join("d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("real.txt"), b"real").unwrap();
    std::fs::write(d.join("sub/inner.txt"), b"inner").unwrap();
    std::fs::write(h.remote().join("evil.txt"), b"export EVIL=1\n").unwrap();
}

#[tokio::test]
async fn an_extra_listing_entry_is_refused_on_every_transport() {
    let h = Harness::new(hostile(&[EXTRA_TOP_ENTRY])).await;
    remote_files(&h);
    let dest = local_home(&h);
    let one = format!("{INSTANCE}:d/real.txt");
    let tree = format!("{INSTANCE}:d");
    let cases: [&[&str]; 4] = [
        &["--transport", "stream", &one],
        &["--transport", "stream", "-r", &tree],
        &["--transport", "s3", "--bucket", DEFAULT_BUCKET, &one],
        &["--transport", "s3", "--bucket", DEFAULT_BUCKET, "-r", &tree],
    ];
    for args in cases {
        let (code, _, err) = h.run(&[args, &[s(&dest)]].concat()).await;
        assert_eq!(code, 76, "{args:?}: {err}");
        assert!(
            err.contains("outside the requested sources"),
            "{args:?}: {err}"
        );
        assert_untouched(&dest);
    }
    h.assert_no_sessions_left().await;
    assert!(
        h.sim.s3_leftovers().is_empty(),
        "{:?}",
        h.sim.s3_leftovers()
    );
}

#[tokio::test]
async fn a_lying_find_cannot_add_entries_to_a_pty_download() {
    // The pty transport lists with find; this one answers a listing with a top-level
    // `.bashrc` (4 bytes, served from the real source) instead of the real entries, as a
    // compromised instance could.
    let find = r#"#!/bin/sh
case "$*" in
  *-printf*) printf 'T0\000.bashrc\000f 644 0.0 4 \000\000' ;;
  *) exec /usr/bin/find "$@" ;;
esac
"#;
    let cfg = SimConfig {
        instances: vec![InstanceConfig::new(INSTANCE)
            .without(&["python3"])
            .command("find", find)],
        ..fast()
    };
    let h = Harness::new(cfg).await;
    remote_files(&h);
    let dest = local_home(&h);
    for args in [
        &["--transport", "pty", &format!("{INSTANCE}:d/real.txt")][..],
        &["--transport", "pty", "-r", &format!("{INSTANCE}:d")][..],
    ] {
        let (code, _, err) = h.run(&[args, &[s(&dest)]].concat()).await;
        assert_eq!(code, 76, "{args:?}: {err}");
        assert_untouched(&dest);
    }
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn one_hostile_instance_of_several_writes_only_its_own_failure() {
    let good = "i-0aaaaaaaaaaaaaaa1";
    let cfg = SimConfig {
        instances: vec![
            InstanceConfig::new(good),
            InstanceConfig::new(INSTANCE).command("python3", &hostile_python(&[EXTRA_TOP_ENTRY])),
        ],
        ..fast()
    };
    let h = Harness::new(cfg).await;
    remote_files(&h);
    let good_home = h.instances.path().join(good);
    std::fs::create_dir_all(&good_home).unwrap();
    std::fs::write(good_home.join("real.txt"), b"good").unwrap();
    std::fs::write(h.remote().join("real.txt"), b"real").unwrap();
    let dest = local_home(&h);
    let (code, _, err) = h
        .run(&[
            &format!("{good},{INSTANCE}:real.txt"),
            &format!("{}/", dest.display()),
        ])
        .await;
    assert_eq!(code, 76, "{err}");
    assert!(err.contains("outside the requested sources"), "{err}");
    assert_eq!(
        std::fs::read(dest.join(good).join("real.txt")).unwrap(),
        b"good"
    );
    std::fs::remove_dir_all(dest.join(good)).unwrap();
    // The hostile one failed inside its own directory and left nothing there.
    let _ = std::fs::remove_dir(dest.join(INSTANCE));
    assert_untouched(&dest);
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn impossible_sizes_are_refused_before_anything_is_allocated() {
    for (size, code) in [(1u64 << 62, 76), (1u64 << 49, 73)] {
        let (old, new) = lying_size(size);
        let h = Harness::new(hostile(&[(old, &new)])).await;
        remote_files(&h);
        let dest = local_home(&h);
        let started = std::time::Instant::now();
        let (got, _, err) = h.run(&[&format!("{INSTANCE}:d/real.txt"), s(&dest)]).await;
        assert_eq!(got, code, "{size}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{size}: took {:?}",
            started.elapsed()
        );
        assert_untouched(&dest);
        h.assert_no_sessions_left().await;
    }
}

#[tokio::test]
async fn a_stalling_receiver_is_stopped_by_sigterm_within_a_second() {
    // Lists, then never sends the bytes it promised.
    let stall = (
        "def send_range(out, files, index, offset, length):\n",
        "def send_range(out, files, index, offset, length):\n    time.sleep(3600)\n",
    );
    let h = Harness::new(hostile(&[stall])).await;
    remote_files(&h);
    let dest = local_home(&h);
    let child = start_until(
        &h,
        &[&format!("{INSTANCE}:d/real.txt"), s(&dest)],
        "the download never staged its file",
        || {
            std::fs::read_dir(&dest)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().contains(".ssmcp-"))
                })
                .unwrap_or(false)
        },
    )
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = std::time::Instant::now();
    let (code, err) = wait_for(child, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(code, Some(130), "{err}");
    assert_untouched(&dest);
    assert!(
        h.sim.wait_sessions_closed(Duration::from_secs(3)).await,
        "{:?}",
        h.sim.stats()
    );
}
