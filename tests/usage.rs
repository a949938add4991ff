//! Command-line mistakes are the usage class (64) with ssmcp's own sentence, before any
//! AWS call; what the SDK logs stays out of sight unless -vv; sources that change while
//! they are read are handled as rsync does.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[tokio::test]
async fn bad_numbers_and_names_are_usage_errors() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("a.txt");
    std::fs::write(&f, b"a").unwrap();
    let f = f.to_str().unwrap();
    let dest = format!("{INSTANCE}:");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--parallel", "0", f, &dest], "parallel"),
        (vec!["--parallel", "10000", f, &dest], "parallel"),
        (vec!["-l", "99999999999999999999999", f, &dest], "limit"),
        (vec!["-l", "0", f, &dest], "limit"),
        (
            vec!["--max-concurrency", "abc%", f, &dest],
            "max-concurrency",
        ),
        (vec!["--max-concurrency", "0", f, &dest], "max-concurrency"),
        (vec!["--max-errors", "101%", f, &dest], "max-errors"),
        (
            vec!["--region", "eu west 1", f, &dest],
            "not an AWS region name",
        ),
        (vec![f, "i-0123456789abcdef0:/tmp/x\n"], "control character"),
    ];
    for (args, says) in cases {
        let (code, _, err) = h.run(&args).await;
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, _, err) = h
        .run_env(&[("AWS_REGION", Some("EU_WEST_1"))], &[f, &dest])
        .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("not an AWS region name"), "{err}");
    // Nothing of these reached the service.
    assert_eq!(h.sim.session_ids().len(), 0);
    // --help still succeeds.
    let (code, out, _) = h.run(&["--help"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Usage"), "{out}");
}

#[tokio::test]
async fn without_credentials_one_plain_line_and_no_sdk_logs() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("a.txt");
    std::fs::write(&f, b"a").unwrap();
    // An SSO profile with no cached token: the SDK's credential chain logs WARN lines
    // on its way to failing.
    let aws = h.home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("config"),
        "[profile sso]\nsso_start_url = https://example.invalid/start\nsso_region = us-east-1\nsso_account_id = 123456789012\nsso_role_name = Dev\n",
    )
    .unwrap();
    let no_creds = [
        ("AWS_ACCESS_KEY_ID", None),
        ("AWS_SECRET_ACCESS_KEY", None),
        ("AWS_PROFILE", Some("sso")),
    ];
    let (code, _, err) = h
        .run_env(&no_creds, &[f.to_str().unwrap(), &format!("{INSTANCE}:")])
        .await;
    assert_eq!(code, 77, "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes on a pipe: {err:?}");
    assert!(!err.contains("WARN"), "SDK log lines: {err}");
    assert!(err.starts_with("ssmcp: "), "{err}");
}

/// Start an upload of `f` at 1 MB/s and return once the instance stages it.
async fn slow_upload(h: &Harness, f: &std::path::Path) -> tokio::process::Child {
    interrupt_midway(
        h,
        &["-l", "8000", f.to_str().unwrap(), &format!("{INSTANCE}:")],
        &h.remote(),
    )
    .await
}

#[tokio::test]
async fn a_source_that_grows_is_copied_as_it_was_with_a_warning() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("growing.log");
    let original = pattern(7, 3 * 1024 * 1024);
    std::fs::write(&f, &original).unwrap();
    let child = slow_upload(&h, &f).await;
    {
        use std::io::Write;
        let mut a = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        a.write_all(b"more lines\n").unwrap();
    }
    let (code, err) = wait_for(child, Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("grew while it was being copied"), "{err}");
    assert_eq!(
        sha(&std::fs::read(h.remote().join("growing.log")).unwrap()),
        sha(&original)
    );
}

#[tokio::test]
async fn a_source_that_shrinks_fails_the_transfer_and_places_nothing() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("shrinking.log");
    std::fs::write(&f, pattern(8, 3 * 1024 * 1024)).unwrap();
    let child = slow_upload(&h, &f).await;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(1024)
        .unwrap();
    let (code, err) = wait_for(child, Duration::from_secs(60)).await;
    assert_eq!(code, Some(74), "{err}");
    assert!(err.contains("shrank"), "{err}");
    assert!(!h.remote().join("shrinking.log").exists());
}

#[tokio::test]
async fn the_journal_is_private() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("a.txt");
    std::fs::write(&f, b"a").unwrap();
    let (code, _, err) = h.upload_via_s3(&f).await;
    assert_eq!(code, 0, "{err}");
    let dir = h.home.path().join(".local/state/ssmcp/staged");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{dir:?}");
}

/// A CI job sets flags once in its environment: SSMCP_* as the flag, the command line
/// winning where both say something.
#[tokio::test]
async fn flags_come_from_the_environment_and_the_command_line_wins() {
    let h = Harness::new(fast()).await;
    let tree = h.local().join("site");
    std::fs::create_dir_all(&tree).unwrap();
    for name in ["index.html", "debug.log", "scratch.tmp"] {
        std::fs::write(tree.join(name), name).unwrap();
    }
    let dest = format!("{INSTANCE}:");
    let (code, _, err) = h
        .run_env(
            &[
                ("SSMCP_RECURSIVE", Some("1")),
                ("SSMCP_EXCLUDE", Some("*.log\n*.tmp")),
            ],
            &[tree.to_str().unwrap(), &dest],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let landed = h.remote().join("site");
    assert!(landed.join("index.html").exists());
    assert!(!landed.join("debug.log").exists() && !landed.join("scratch.tmp").exists());

    std::fs::write(h.remote().join("dl"), pattern(1, 4 << 20)).unwrap();
    let sessions = |err: &str| {
        err.lines()
            .find(|l| l.contains("port session(s) for the download"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{err}"))
    };
    let back = h.local().join("dl");
    let from = format!("{INSTANCE}:dl");
    let (code, _, err) = h
        .run_env(
            &[("SSMCP_PARALLEL", Some("2"))],
            &["-v", &from, back.to_str().unwrap()],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(sessions(&err).contains(" 2 port session(s)"), "{err}");
    let (code, _, err) = h
        .run_env(
            &[("SSMCP_PARALLEL", Some("2"))],
            &["-v", "--parallel", "3", &from, back.to_str().unwrap()],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(sessions(&err).contains(" 3 port session(s)"), "{err}");

    // A bad value names the variable's flag, as a bad flag would: usage class.
    let (code, _, err) = h
        .run_env(
            &[("SSMCP_PARALLEL", Some("lots"))],
            &[&from, back.to_str().unwrap()],
        )
        .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--parallel"), "{err}");
    h.assert_no_sessions_left().await;
}
