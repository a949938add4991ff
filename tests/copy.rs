//! `ssmcp SRC… DEST` end to end: the real binary, the embedded receiver running as a real
//! python3 process "on the instance" (the simulator's agent), real port sessions.

mod common;
use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

fn remote_arg(path: &str) -> String {
    format!("{INSTANCE}:{path}")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Nested directories, odd names, symlinks (inside and pointing out), modes and mtimes.
fn make_tree(root: &Path, small_files: usize) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::write(root.join("a/b/c/deep.txt"), b"deep").unwrap();
    std::fs::write(root.join("with space.txt"), b"space").unwrap();
    std::fs::write(root.join("new\nline"), b"newline").unwrap();
    std::fs::write(root.join(OsStr::from_bytes(b"latin1-\xe9t\xe9")), b"bytes").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("mid.bin"), pattern(7, 3 * 1024 * 1024 + 17)).unwrap();
    let script = root.join("a/run.sh");
    std::fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o751)).unwrap();
    std::os::unix::fs::symlink("b/c/deep.txt", root.join("a/inside")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("outside")).unwrap();
    std::os::unix::fs::symlink("missing", root.join("dangling")).unwrap();
    for i in 0..small_files {
        let d = root.join(format!("many/{:02}", i % 40));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), pattern(i as u64, 200 + i % 700)).unwrap();
    }
    let old = filetime::FileTime::from_unix_time(1_500_000_000, 123_456_789);
    for e in walkdir::WalkDir::new(root).contents_first(true) {
        let e = e.unwrap();
        filetime::set_symlink_file_times(e.path(), old, old).unwrap();
    }
}

#[tokio::test]
async fn one_file_up_and_back_down() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("report.csv");
    std::fs::write(&src, pattern(1, 100_000)).unwrap();
    let (code, _, err) = h.run(&[s(&src), &remote_arg("")]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        sha(&std::fs::read(h.remote().join("report.csv")).unwrap()),
        sha(&pattern(1, 100_000))
    );
    let back = h.local().join("back.csv");
    let (code, _, err) = h.run(&[&remote_arg("report.csv"), s(&back)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&back).unwrap(), pattern(1, 100_000));
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn a_tree_of_two_thousand_files_round_trips_with_modes_and_times() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("site");
    make_tree(&src, 2000);
    let (code, _, err) = h.run(&["-r", "-p", s(&src), &remote_arg("")]).await;
    assert_eq!(code, 0, "{err}");
    let up = h.remote().join("site");
    assert_eq!(snapshot(&src, true), snapshot(&up, true));
    assert_no_temporaries(&h.remote());

    let down = h.local().join("down");
    let (code, _, err) = h
        .run(&["-r", "-p", "--parallel", "3", &remote_arg("site"), s(&down)])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(snapshot(&src, true), snapshot(&down, true));
    assert_no_temporaries(&h.local());
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn without_p_modes_follow_the_umask_and_times_are_new() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("t");
    make_tree(&src, 0);
    let (code, _, err) = h.run(&["-r", s(&src), &remote_arg("t")]).await;
    assert_eq!(code, 0, "{err}");
    let m = std::fs::metadata(h.remote().join("t/a/run.sh")).unwrap();
    assert_eq!(m.mode() & 0o777, 0o751 & !0o022);
    assert!(m.mtime() > 1_600_000_000);
    assert_eq!(
        snapshot(&src, false),
        snapshot(&h.remote().join("t"), false)
    );
}

#[tokio::test]
async fn trailing_slash_copies_contents_and_several_sources_need_a_directory() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("dist");
    std::fs::create_dir_all(src.join("js")).unwrap();
    std::fs::write(src.join("index.html"), b"i").unwrap();
    std::fs::write(src.join("js/app.js"), b"a").unwrap();
    std::fs::create_dir_all(h.remote().join("app")).unwrap();
    let contents = format!("{}/", src.display());
    let (code, _, err) = h.run(&["-r", &contents, &remote_arg("app")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(h.remote().join("app/index.html").is_file());
    assert!(h.remote().join("app/js/app.js").is_file());

    // Without the slash the directory itself goes inside.
    let (code, _, err) = h.run(&["-r", s(&src), &remote_arg("app")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(h.remote().join("app/dist/js/app.js").is_file());

    // A destination written with a slash is a directory to create and fill.
    let (code, _, err) = h.run(&["-r", s(&src), &remote_arg("fresh/")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(h.remote().join("fresh/dist/js/app.js").is_file());

    // Two files into a name that is not a directory: refused, nothing created.
    let one = h.local().join("one");
    let two = h.local().join("two");
    std::fs::write(&one, b"1").unwrap();
    std::fs::write(&two, b"2").unwrap();
    let (code, _, err) = h.run(&[s(&one), s(&two), &remote_arg("nodir")]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("not a directory"), "{err}");
    assert!(!h.remote().join("nodir").exists());
    // With a slash it is created.
    let (code, _, err) = h.run(&[s(&one), s(&two), &remote_arg("newdir/")]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(h.remote().join("newdir/two")).unwrap(), b"2");
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn bad_input_is_refused_before_any_session_starts() {
    let h = Harness::new(fast()).await;
    let dir = h.local().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![s(&h.local().join("missing")).into(), remote_arg("x")],
            "No such file",
        ),
        (vec![s(&dir).into(), remote_arg("x")], "use -r"),
        (
            vec![s(&dir).into(), s(&h.local().join("y")).into()],
            "neither side",
        ),
        (
            vec![remote_arg("a"), format!("i-12345678:b")],
            "instance to an instance",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = h.run(&args).await;
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(h.sim.stats().sessions_started, 0);
}

#[tokio::test]
async fn destination_problems_are_reported_and_leave_nothing() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("f.txt");
    std::fs::write(&f, b"x").unwrap();
    let (code, _, err) = h.run(&[s(&f), &remote_arg("no/such/dir/f.txt")]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("does not exist"), "{err}");

    // A source missing on the instance.
    let (code, _, err) = h.run(&[&remote_arg("nothing-here"), s(&h.local())]).await;
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("nothing-here") && err.contains("No such file"),
        "{err}"
    );

    // A local destination whose parent is missing: nothing is created.
    std::fs::write(h.remote().join("r.txt"), b"r").unwrap();
    let (code, _, err) = h
        .run(&[&remote_arg("r.txt"), s(&h.local().join("nope/r.txt"))])
        .await;
    assert_eq!(code, 64, "{err}");
    assert!(!h.local().join("nope").exists());
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn unknown_and_offline_targets_exit_with_the_target_class() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("f");
    std::fs::write(&f, b"x").unwrap();
    let (code, _, err) = h.run(&[s(&f), "i-0fffffffffffffff0:/tmp/"]).await;
    assert_eq!(code, 68, "{err}");
    h.sim.set_online(INSTANCE, false);
    let (code, _, err) = h.run(&[s(&f), &remote_arg("/tmp/")]).await;
    assert_eq!(code, 68, "{err}");
    let (code, _, err) = h.run(&[s(&f), "name:no-such-name:/tmp/"]).await;
    assert_eq!(code, 68, "{err}");
    assert!(err.contains("Name tag"), "{err}");
}

#[tokio::test]
async fn name_targets_resolve_through_the_name_tag() {
    let mut cfg = fast();
    cfg.instances = vec![ssm_sim::config::InstanceConfig::new(INSTANCE).tag("Name", "web-1")];
    let h = Harness::new(cfg).await;
    let f = h.local().join("f");
    std::fs::write(&f, b"by name").unwrap();
    let (code, _, err) = h.run(&[s(&f), "name:web-1:"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(h.remote().join("f")).unwrap(), b"by name");
}

#[tokio::test]
async fn special_files_are_skipped_with_a_warning() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("s");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file"), b"f").unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (code, _, err) = h.run(&["-r", s(&src), &remote_arg("")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("skipped") && err.contains("fifo"), "{err}");
    assert!(h.remote().join("s/file").is_file());
    assert!(!h.remote().join("s/fifo").exists());
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_touches_nothing() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("t");
    make_tree(&src, 3);
    let (code, out, err) = h.run(&["-r", "--dry-run", s(&src), &remote_arg("t")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("t/a/b/c/deep.txt"), "{out}");
    assert!(out.contains("would copy"), "{out}");
    assert!(!h.remote().join("t").exists());
    assert_eq!(h.sim.stats().sessions_started, 0);
}

#[tokio::test]
async fn json_reports_plan_files_and_summary() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("data.bin");
    std::fs::write(&f, pattern(3, 50_000)).unwrap();
    let (code, out, err) = h.run(&["--json", s(&f), &remote_arg("")]).await;
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(kinds.contains(&"plan"), "{kinds:?}");
    assert!(kinds.contains(&"file"), "{kinds:?}");
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["bytes"], 50_000);

    let (code, out, _) = h
        .run(&["--json", s(&h.local().join("nope")), &remote_arg("")])
        .await;
    assert_eq!(code, 64);
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "error");
    assert_eq!(last["exit_code"], 64);
}

#[tokio::test]
async fn atomic_replaces_a_tree_at_once() {
    let h = Harness::new(fast()).await;
    let old = h.remote().join("app");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("stale.txt"), b"old").unwrap();
    let src = h.local().join("release");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("new.txt"), b"new").unwrap();
    let contents = format!("{}/", src.display());
    let (code, _, err) = h
        .run(&["-r", "--atomic", &contents, &remote_arg("app")])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(old.join("new.txt")).unwrap(), b"new");
    assert!(!old.join("stale.txt").exists(), "the old tree is gone");
    assert_no_temporaries(&h.remote());
}

#[tokio::test]
async fn cut_websockets_are_survived() {
    // Realistic pacing: a cut loses what the agent had in flight, and the agent resends
    // only its oldest unacknowledged message per tick (§5.5), so an unpaced agent with
    // thousands in flight would take minutes to recover, on AWS as here.
    let mut cfg = ssm_sim::SimConfig::default();
    cfg.faults.cut_after_bytes = vec![512 * 1024, 1536 * 1024];
    let h = Harness::new(cfg).await;
    let data = pattern(9, 2 * 1024 * 1024);
    std::fs::write(h.remote().join("big"), &data).unwrap();
    let back = h.local().join("big");
    let (code, _, err) = h
        .run(&["--parallel", "1", &remote_arg("big"), s(&back)])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha(&std::fs::read(&back).unwrap()), sha(&data));
    assert_eq!(h.sim.stats().protocol_violations(), 0);
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn sigint_mid_upload_leaves_nothing_and_ends_every_session() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("big");
    std::fs::write(&f, pattern(2, 64 * 1024 * 1024)).unwrap();
    std::fs::write(h.remote().join("big"), b"previous").unwrap();
    let child = interrupt_midway(&h, &["-l", "40000", s(&f), &remote_arg("")], &h.remote()).await;
    let (code, err) = interrupt_and_wait(child).await;
    assert_eq!(code, Some(130), "{err}");
    h.assert_no_sessions_left().await;
    // The receiver cleans up once its connection is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(h.remote()).unwrap().count() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "temporaries left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read(h.remote().join("big")).unwrap(), b"previous");
}

#[tokio::test]
async fn a_receiver_killed_mid_upload_fails_cleanly() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("big");
    std::fs::write(&f, pattern(4, 64 * 1024 * 1024)).unwrap();
    let child = interrupt_midway(&h, &["-l", "40000", s(&f), &remote_arg("")], &h.remote()).await;
    // Kill every python receiver serving this test's instance home.
    let home = h.remote();
    let killed = kill_receivers(&home);
    assert!(killed > 0, "found the receiver");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(err.contains("receiver"), "{err}");
    h.assert_no_sessions_left().await;
    // Killed with SIGKILL, it could not clean up: its temporary is all that may remain,
    // and the destination name itself was never created.
    assert!(!home.join("big").exists());
}

fn sha_file(p: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

#[tokio::test]
async fn a_512_mib_file_up_and_down_on_both_transports() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("disk.img");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let block = pattern(11, 1024 * 1024);
        for i in 0..512u32 {
            f.write_all(&i.to_be_bytes()).unwrap(); // no two MiB alike
            f.write_all(&block[4..]).unwrap();
        }
    }
    let want = sha_file(&src);
    for transport in ["stream", "pty"] {
        let t = ["--transport", transport, "-p"];
        let (code, _, err) = h.run(&[&t[..], &[s(&src), &remote_arg("")]].concat()).await;
        assert_eq!(code, 0, "{transport}: {err}");
        let remote = h.remote().join("disk.img");
        assert_eq!(sha_file(&remote), want, "{transport}");
        let back = h.local().join(format!("back-{transport}.img"));
        let (code, _, err) = h
            .run(&[&t[..], &[&remote_arg("disk.img"), s(&back)]].concat())
            .await;
        assert_eq!(code, 0, "{transport}: {err}");
        assert_eq!(sha_file(&back), want, "{transport}");
        let (m, r) = (
            std::fs::metadata(&back).unwrap(),
            std::fs::metadata(&src).unwrap(),
        );
        assert_eq!(
            (m.mtime(), m.mtime_nsec()),
            (r.mtime(), r.mtime_nsec()),
            "{transport}"
        );
        std::fs::remove_file(&remote).unwrap();
        std::fs::remove_file(&back).unwrap();
    }
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn pty_transport_round_trips_a_tree_with_modes_and_times() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("site");
    make_tree(&src, 2000);
    let (code, _, err) = h
        .run(&["--transport", "pty", "-r", "-p", s(&src), &remote_arg("")])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        snapshot(&src, true),
        snapshot(&h.remote().join("site"), true)
    );
    assert_no_temporaries(&h.remote());
    let down = h.local().join("down");
    let (code, _, err) = h
        .run(&[
            "--transport",
            "pty",
            "-r",
            "-p",
            &remote_arg("site"),
            s(&down),
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(snapshot(&src, true), snapshot(&down, true));
    assert_no_temporaries(&h.local());
    h.assert_no_sessions_left().await;
}

/// Several files named on the command line land side by side in one directory; over the
/// pty their temporaries once shared a name there, and every such copy failed its
/// SHA-256 check (found by the placement table, tests/fixtures/placement.json).
#[tokio::test]
async fn pty_transport_copies_several_files_into_one_directory() {
    let h = Harness::new(fast()).await;
    let a = h.local().join("a.txt");
    let b = h.local().join("b.txt");
    std::fs::write(&a, b"first file").unwrap();
    std::fs::write(&b, b"second").unwrap();
    std::fs::create_dir(h.remote().join("into")).unwrap();
    let (code, _, err) = h
        .run(&["--transport", "pty", s(&a), s(&b), &remote_arg("into")])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(h.remote().join("into/a.txt")).unwrap(),
        b"first file"
    );
    assert_eq!(
        std::fs::read(h.remote().join("into/b.txt")).unwrap(),
        b"second"
    );
    assert_no_temporaries(&h.remote());
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn without_python3_the_copy_falls_back_to_the_pty_and_says_so() {
    let mut cfg = fast();
    cfg.instances = vec![ssm_sim::config::InstanceConfig::new(INSTANCE).without(&["python3"])];
    let h = Harness::new(cfg).await;
    let src = h.local().join("t");
    make_tree(&src, 5);
    let (code, _, err) = h.run(&["-r", s(&src), &remote_arg("")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no python3") && err.contains("pty"), "{err}");
    assert_eq!(
        snapshot(&src, false),
        snapshot(&h.remote().join("t"), false)
    );
    let back = h.local().join("back");
    let (code, _, err) = h.run(&["-r", &remote_arg("t"), s(&back)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(snapshot(&src, false), snapshot(&back, false));
    // Forcing the stream transport is refused clearly instead.
    let (code, _, err) = h
        .run(&["--transport", "stream", "-r", s(&src), &remote_arg("")])
        .await;
    assert_eq!(code, 68, "{err}");
    assert!(err.contains("python3"), "{err}");
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn pty_transport_reports_bad_destinations_and_sources() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("f.txt");
    std::fs::write(&f, b"x").unwrap();
    let pty = ["--transport", "pty"];
    let dest = remote_arg("no/such/dir/f.txt");
    let (code, _, err) = h.run(&[&pty[..], &[s(&f), &dest]].concat()).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("does not exist"), "{err}");
    let src = remote_arg("nothing-here");
    let (code, _, err) = h.run(&[&pty[..], &[&src, s(&h.local())]].concat()).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("No such file"), "{err}");
    assert_no_temporaries(&h.remote());
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn sigint_mid_pty_upload_leaves_nothing() {
    let h = Harness::new(ssm_sim::SimConfig::default()).await;
    let f = h.local().join("big");
    std::fs::write(&f, pattern(2, 16 * 1024 * 1024)).unwrap();
    std::fs::write(h.remote().join("big"), b"previous").unwrap();
    let child = interrupt_midway(
        &h,
        &["--transport", "pty", "-l", "20000", s(&f), &remote_arg("")],
        &h.remote(),
    )
    .await;
    let (code, err) = interrupt_and_wait(child).await;
    assert_eq!(code, Some(130), "{err}");
    h.assert_no_sessions_left().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(h.remote()).unwrap().count() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "temporaries left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read(h.remote().join("big")).unwrap(), b"previous");
}

#[tokio::test]
async fn a_full_disk_on_the_instance_fails_the_copy_and_leaves_nothing() {
    for transport in ["stream", "pty"] {
        let mut cfg = fast();
        cfg.instances =
            vec![ssm_sim::config::InstanceConfig::new(INSTANCE).file_size_limit(256 * 1024)];
        let h = Harness::new(cfg).await;
        let src = h.local().join("t");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("small"), b"fits").unwrap();
        std::fs::write(src.join("large"), pattern(5, 1024 * 1024)).unwrap();
        let (code, _, err) = h
            .run(&["--transport", transport, "-r", s(&src), &remote_arg("")])
            .await;
        assert_eq!(code, 73, "{transport}: {err}");
        let left: Vec<_> = std::fs::read_dir(h.remote()).unwrap().flatten().collect();
        assert!(left.is_empty(), "{transport}: {left:?}");
        h.assert_no_sessions_left().await;
    }
}

#[tokio::test]
async fn permission_denied_on_the_instance_is_a_write_failure() {
    // /sys refuses new files even to root, which the simulated instance runs as.
    for transport in ["stream", "pty"] {
        let h = Harness::new(fast()).await;
        let f = h.local().join("f");
        std::fs::write(&f, b"x").unwrap();
        let (code, _, err) = h
            .run(&["--transport", transport, s(&f), &remote_arg("/sys/kernel/")])
            .await;
        assert_eq!(code, 73, "{transport}: {err}");
        h.assert_no_sessions_left().await;
    }
}

fn summary_of(out: &str) -> serde_json::Value {
    let last = out.lines().last().expect("a summary line");
    serde_json::from_str(last).unwrap()
}

#[tokio::test]
async fn sync_sends_only_what_changed_and_delete_removes_the_rest() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("site");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a"), pattern(1, 1024 * 1024)).unwrap();
    std::fs::write(src.join("b"), b"old b").unwrap();
    std::fs::write(src.join("sub/c"), b"c").unwrap();
    let (code, _, err) = h.run(&["-r", s(&src), &remote_arg("")]).await;
    assert_eq!(code, 0, "{err}");

    // Change one file (same size, so only the hash tells), add one; the instance gains
    // extras of its own.
    std::fs::write(src.join("b"), b"new b").unwrap();
    std::fs::write(src.join("d"), b"d").unwrap();
    let remote = h.remote().join("site");
    std::fs::write(remote.join("extra"), b"x").unwrap();
    std::fs::create_dir_all(remote.join("old/deeper")).unwrap();
    std::fs::write(remote.join("old/deeper/f"), b"f").unwrap();

    let (code, out, err) = h
        .run(&["--json", "--sync", "-r", s(&src), &remote_arg("")])
        .await;
    assert_eq!(code, 0, "{err}");
    let sum = summary_of(&out);
    assert_eq!(
        (sum["files"].as_u64(), sum["unchanged"].as_u64()),
        (Some(2), Some(2)),
        "{sum}"
    );
    assert_eq!(std::fs::read(remote.join("b")).unwrap(), b"new b");
    assert!(
        remote.join("extra").exists(),
        "nothing removed without --delete"
    );

    let (code, out, err) = h
        .run(&[
            "--json",
            "--sync",
            "--delete",
            "-r",
            s(&src),
            &remote_arg(""),
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let sum = summary_of(&out);
    assert_eq!(
        (sum["files"].as_u64(), sum["deleted"].as_u64()),
        (Some(0), Some(2)),
        "{sum}"
    );
    assert_eq!(snapshot(&src, false), snapshot(&remote, false));
    assert_no_temporaries(&h.remote());

    // Downloads refuse the upload-only options plainly.
    let (code, _, err) = h
        .run(&["--sync", "-r", &remote_arg("site"), s(&h.local().join("x"))])
        .await;
    assert_eq!(code, 64, "{err}");
    h.assert_no_sessions_left().await;
}

/// The instance's own `sudo`: passwordless, records who it was asked to run as.
fn recording_sudo(log: &Path) -> String {
    format!(
        "#!/bin/sh\n[ \"$1\" = -n ] || {{ echo 'sudo: expected -n' >&2; exit 1; }}\nshift\nuser=root\nif [ \"$1\" = -u ]; then user=$2; shift 2; fi\necho \"$user\" >> '{}'\nexec \"$@\"\n",
        log.display()
    )
}

#[tokio::test]
async fn sudo_and_user_at_run_the_remote_side_through_sudo() {
    let logs = tempfile::tempdir().unwrap();
    for transport in ["stream", "pty"] {
        let log = logs.path().join(transport);
        let mut cfg = fast();
        cfg.instances =
            vec![ssm_sim::config::InstanceConfig::new(INSTANCE)
                .command("sudo", &recording_sudo(&log))];
        let h = Harness::new(cfg).await;
        let f = h.local().join("f");
        std::fs::write(&f, b"as root").unwrap();
        let t = ["--transport", transport];
        let (code, _, err) = h
            .run(&[&t[..], &["--sudo", s(&f), &remote_arg("")]].concat())
            .await;
        assert_eq!(code, 0, "{transport}: {err}");
        let as_app = format!("app@{}", remote_arg("g"));
        let (code, _, err) = h.run(&[&t[..], &[s(&f), &as_app]].concat()).await;
        assert_eq!(code, 0, "{transport}: {err}");
        assert_eq!(std::fs::read(h.remote().join("g")).unwrap(), b"as root");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "root\napp\n",
            "{transport}"
        );
    }
}

#[tokio::test]
async fn a_sudo_that_wants_a_password_is_an_auth_failure() {
    let sudo = "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n";
    for transport in ["stream", "pty"] {
        let mut cfg = fast();
        cfg.instances = vec![ssm_sim::config::InstanceConfig::new(INSTANCE).command("sudo", sudo)];
        let h = Harness::new(cfg).await;
        let f = h.local().join("f");
        std::fs::write(&f, b"x").unwrap();
        let (code, _, err) = h
            .run(&["--transport", transport, "--sudo", s(&f), &remote_arg("")])
            .await;
        assert_eq!(code, 77, "{transport}: {err}");
        assert!(err.contains("password"), "{transport}: {err}");
        h.assert_no_sessions_left().await;
    }
}

#[tokio::test]
async fn exclude_applies_to_downloads_on_both_transports() {
    let h = Harness::new(fast()).await;
    let tree = h.remote().join("proj");
    std::fs::create_dir_all(tree.join("node_modules/x")).unwrap();
    std::fs::create_dir_all(tree.join("src")).unwrap();
    std::fs::write(tree.join("node_modules/x/big"), pattern(1, 1000)).unwrap();
    std::fs::write(tree.join("src/main.rs"), b"fn main() {}").unwrap();
    std::fs::write(tree.join("src/debug.log"), b"noise").unwrap();
    for transport in ["stream", "pty"] {
        let out = h.local().join(transport);
        let (code, _, err) = h
            .run(&[
                "--transport",
                transport,
                "-r",
                "--exclude",
                "node_modules",
                "--exclude",
                "*.log",
                &remote_arg("proj"),
                s(&out),
            ])
            .await;
        assert_eq!(code, 0, "{transport}: {err}");
        let got: Vec<Vec<u8>> = snapshot(&out, false).into_keys().collect();
        assert_eq!(
            got,
            vec![b"".to_vec(), b"src".to_vec(), b"src/main.rs".to_vec()],
            "{transport}"
        );
    }
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn compression_shrinks_what_crosses_the_wire_both_ways() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("logs");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("app.log"),
        b"GET /index.html 200 0.002s\n".repeat(150_000),
    )
    .unwrap();
    std::fs::write(src.join("random.bin"), pattern(8, 300_000)).unwrap();

    let sent = |h: &Harness| h.sim.stats().client_stream_messages;
    let before = sent(&h);
    let (code, _, err) = h.run(&["-r", s(&src), &remote_arg("plain")]).await;
    assert_eq!(code, 0, "{err}");
    let plain = sent(&h) - before;
    let before = sent(&h);
    let (code, _, err) = h.run(&["-C", "-r", s(&src), &remote_arg("packed")]).await;
    assert_eq!(code, 0, "{err}");
    let packed = sent(&h) - before;
    assert!(
        packed * 3 < plain,
        "compressed {packed} vs plain {plain} messages"
    );
    assert_eq!(
        snapshot(&src, false),
        snapshot(&h.remote().join("packed"), false)
    );

    let received = |h: &Harness| h.sim.stats().agent_stream_messages;
    let before = received(&h);
    let down = h.local().join("down-plain");
    let (code, _, err) = h.run(&["-r", &remote_arg("packed"), s(&down)]).await;
    assert_eq!(code, 0, "{err}");
    let plain = received(&h) - before;
    let before = received(&h);
    let down = h.local().join("down-packed");
    let (code, _, err) = h.run(&["-C", "-r", &remote_arg("packed"), s(&down)]).await;
    assert_eq!(code, 0, "{err}");
    let packed = received(&h) - before;
    assert!(
        packed * 3 < plain,
        "compressed {packed} vs plain {plain} messages"
    );
    assert_eq!(snapshot(&src, false), snapshot(&down, false));
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn a_download_from_several_instances_gives_each_a_directory() {
    let ids: Vec<String> = (1..=3).map(|i| format!("i-{i:017x}")).collect();
    let h = Harness::new(ssm_sim::SimConfig {
        instances: ids
            .iter()
            .map(|id| ssm_sim::InstanceConfig::new(id).tag("Role", "web"))
            .collect(),
        ..fast()
    })
    .await;
    // The same path on every instance, with different contents.
    for id in &ids[..2] {
        let logs = h.instances.path().join(id).join("logs");
        std::fs::create_dir_all(logs.join("old")).unwrap();
        std::fs::write(logs.join("app.log"), format!("from {id}")).unwrap();
        std::fs::write(logs.join("old/app.log.1"), pattern(3, 5000)).unwrap();
    }
    std::fs::create_dir_all(h.instances.path().join(&ids[2])).unwrap();
    let out = h.local().join("out");
    std::fs::create_dir(&out).unwrap();
    let list = ids[..2].join(",");
    let (code, _, err) = h.run(&["-r", &format!("{list}:logs"), s(&out)]).await;
    assert_eq!(code, 0, "{err}");
    for id in &ids[..2] {
        let got = out.join(id).join("logs");
        assert_eq!(
            std::fs::read_to_string(got.join("app.log")).unwrap(),
            format!("from {id}")
        );
        assert_eq!(
            std::fs::read(got.join("old/app.log.1")).unwrap(),
            pattern(3, 5000)
        );
    }

    // By tag, where the third instance lacks the path: it fails with its own class
    // (a missing source), the others arrive, and the table names each.
    let again = h.local().join("again");
    std::fs::create_dir(&again).unwrap();
    let (code, _, err) = h.run(&["-r", "tag:Role=web:logs", s(&again)]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("1 of 3 instances failed"), "{err}");
    assert!(err.contains(&ids[2]), "{err}");
    assert!(out.join(&ids[0]).join("logs/app.log").exists());
    assert!(again.join(&ids[1]).join("logs/app.log").exists());
    assert!(!again.join(&ids[2]).exists(), "an empty directory was left");

    // One at a time with no errors allowed: after the first failure nothing new starts.
    let ordered = h.local().join("ordered");
    std::fs::create_dir(&ordered).unwrap();
    let list = format!("{},{},{}", ids[2], ids[0], ids[1]);
    let (code, _, err) = h
        .run(&[
            "-r",
            "--max-concurrency",
            "1",
            &format!("{list}:logs"),
            s(&ordered),
        ])
        .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("3 of 3 instances failed"), "{err}");
    assert!(err.contains("not started"), "{err}");
    assert!(!ordered.join(&ids[0]).join("logs").exists());

    // The destination must be a directory that exists.
    let (code, _, err) = h
        .run(&["-r", &format!("{list}:logs"), s(&h.local().join("missing"))])
        .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("one subdirectory per instance"), "{err}");
    assert_no_temporaries(&h.local());
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn sigint_mid_download_from_several_instances_leaves_nothing() {
    let ids: Vec<String> = (1..=2).map(|i| format!("i-{i:017x}")).collect();
    let h = Harness::new(ssm_sim::SimConfig {
        instances: ids
            .iter()
            .map(|id| ssm_sim::InstanceConfig::new(id))
            .collect(),
        ..fast()
    })
    .await;
    for id in &ids {
        let home = h.instances.path().join(id);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("big"), pattern(5, 32 << 20)).unwrap();
    }
    let out = h.local().join("out");
    std::fs::create_dir(&out).unwrap();
    let args = ["-l", "40000", &format!("{}:big", ids.join(",")), s(&out)];
    let staging = |dir: &Path| {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".ssmcp-"))
    };
    let child = start_until(&h, &args, "the downloads never started", || staging(&out)).await;
    let (code, err) = interrupt_and_wait(child).await;
    assert_eq!(code, Some(130), "{err}");
    assert!(!staging(&out), "temporaries left");
    for id in &ids {
        assert!(!out.join(id).join("big").exists(), "{id} has a file");
    }
    h.assert_no_sessions_left().await;
}

/// The first port session starts alongside the receiver (#17, start-up): with a current
/// agent (mux mode, which dials the receiver per stream, after it listens) that session
/// carries the copy, so a one-file upload still takes exactly two sessions.
#[tokio::test]
async fn the_port_session_started_alongside_the_receiver_carries_the_copy() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("one.txt");
    std::fs::write(&src, b"one").unwrap();
    let (code, _, err) = h.run(&[s(&src), &remote_arg("")]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(h.remote().join("one.txt")).unwrap(), b"one");
    assert_eq!(
        h.sim.stats().sessions_started,
        2,
        "receiver + one port session"
    );
    h.assert_no_sessions_left().await;
}

/// An old agent forwards in basic mode and dials at session start, perhaps before the
/// receiver listens: the session started alongside is ended unused and a new one carries
/// the copy, both ways.
#[tokio::test]
async fn with_an_old_agent_the_early_port_session_is_given_up_and_copies_still_work() {
    let cfg = ssm_sim::SimConfig {
        instances: vec![ssm_sim::InstanceConfig::new(INSTANCE).agent_version("3.0.161.0")],
        ..fast()
    };
    let h = Harness::new(cfg).await;
    let src = h.local().join("old.bin");
    std::fs::write(&src, pattern(7, 300_000)).unwrap();
    let (code, _, err) = h.run(&[s(&src), &remote_arg("")]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(h.remote().join("old.bin")).unwrap(),
        pattern(7, 300_000)
    );
    assert_eq!(
        h.sim.stats().sessions_started,
        3,
        "receiver, the unused early session, the one used"
    );
    let back = h.local().join("back.bin");
    let (code, _, err) = h.run(&[&remote_arg("old.bin"), s(&back)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&back).unwrap(), pattern(7, 300_000));
    h.assert_no_sessions_left().await;
}

/// The `-v` note naming how many port sessions carried a download.
fn download_sessions(err: &str) -> usize {
    let note = err
        .lines()
        .find(|l| l.contains("port session(s) for the download"))
        .unwrap_or_else(|| panic!("no session note in: {err}"));
    let words: Vec<&str> = note.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "port").unwrap();
    words[at - 1].parse().unwrap()
}

/// Without --parallel a download takes one session per 512 KiB, up to 8; --parallel N
/// caps it; a small download takes one.
#[tokio::test]
async fn download_sessions_grow_with_the_size_unless_parallel_caps_them() {
    let h = Harness::new(fast()).await;
    std::fs::write(h.remote().join("three"), pattern(3, 3 << 20)).unwrap();
    std::fs::write(h.remote().join("huge"), pattern(5, 9 << 20)).unwrap();
    std::fs::write(h.remote().join("small"), pattern(4, 100_000)).unwrap();
    for (name, flags, want) in [
        ("three", vec![], 6),
        ("huge", vec![], 8),
        ("three", vec!["--parallel", "2"], 2),
        ("small", vec![], 1),
    ] {
        let back = h.local().join(format!("{name}-{want}"));
        let from = remote_arg(name);
        let mut args = vec!["-v"];
        args.extend(flags);
        args.extend([from.as_str(), s(&back)]);
        let (code, _, err) = h.run(&args).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(download_sessions(&err), want, "{name}: {err}");
        assert_eq!(
            std::fs::read(&back).unwrap(),
            std::fs::read(h.remote().join(name)).unwrap()
        );
    }
    h.assert_no_sessions_left().await;
}

/// AWS throttles StartSession beyond what the SDK's retries absorb once three sessions
/// have started (the receiver's, the first port session and, if the port ssmcp picked
/// was taken, its replacement; else one extra): the download goes on over the sessions
/// it has, says so on stderr, and leaves none behind.
#[tokio::test]
async fn download_sessions_that_will_not_start_cost_speed_not_the_copy() {
    let h = Harness::new(ssm_sim::SimConfig {
        throttle: vec![ssm_sim::Throttle::after("StartSession", 3, 1000)],
        ..fast()
    })
    .await;
    std::fs::write(h.remote().join("big"), pattern(9, 4 << 20)).unwrap();
    let back = h.local().join("big");
    let (code, _, err) = h.run(&["-v", &remote_arg("big"), s(&back)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&back).unwrap(), pattern(9, 4 << 20));
    let used = download_sessions(&err);
    assert!(used == 1 || used == 2, "{err}");
    let warning = format!(
        "{} of 8 download sessions could not start, continuing with {used}",
        8 - used
    );
    assert!(err.contains(&warning) && err.contains("throttled"), "{err}");
    h.assert_no_sessions_left().await;
}

/// --sync --atomic: the files --sync leaves out (the instance has them) are in the tree
/// that replaces the destination too. The swap used to drop them: the new tree held
/// only what was sent.
#[tokio::test]
async fn sync_with_atomic_keeps_the_unchanged_files() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("site");
    make_tree(&src, 50);
    let dest = remote_arg("site");
    let contents = format!("{}/", s(&src));
    let (code, _, err) = h.run(&["-r", "--atomic", &contents, &dest]).await;
    assert_eq!(code, 0, "{err}");
    std::fs::write(src.join("changed.txt"), b"new content").unwrap();
    let (code, out, err) = h
        .run(&["-r", "--sync", "--atomic", "--json", &contents, &dest])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"unchanged\":"), "{out}");
    let same = snapshot(&src, false) == snapshot(&h.remote().join("site"), false);
    assert!(same, "the instance's tree differs from the source");
    assert_no_temporaries(&h.remote());
    h.assert_no_sessions_left().await;
}
