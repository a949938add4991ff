//! `ssmcp exec` end to end: output streamed, exit status returned, ^C delivered.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn returns_output_and_exit_status() {
    let h = Harness::new(fast()).await;
    let (code, out, err) = h
        .run(&[
            "exec",
            INSTANCE,
            "--",
            "echo out; echo err >&2; printf 'no newline'; exit 3",
        ])
        .await;
    assert_eq!(code, 3, "{err}");
    assert_eq!(out, "out\nerr\nno newline");
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn arguments_are_joined_like_ssh() {
    let h = Harness::new(fast()).await;
    let (code, out, _) = h
        .run(&["exec", INSTANCE, "--", "printf", "'%s-%s\\n'", "a b", "c"])
        .await;
    assert_eq!(code, 0);
    assert_eq!(out, "a-b\nc-\n");
}

#[tokio::test]
async fn ctrl_c_reaches_the_remote_command() {
    let h = Harness::new(fast()).await;
    let mut child = h
        .ssmcp()
        .args([
            "exec",
            INSTANCE,
            "--",
            "echo started; sleep 30; echo not-reached",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("started"));
    interrupt(&child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(130), "sleep died of SIGINT");
    assert_eq!(lines.next_line().await.unwrap(), None);
    h.assert_no_sessions_left().await;
}
