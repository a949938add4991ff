//! Signal scenarios, shared by the ordinary shell tests and the ones run from a process
//! that ignores SIGINT, SIGQUIT and SIGHUP (tests/inherited_signals.rs).

use super::*;
use ssm_proto::PayloadType;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// In a pty, ^C is the terminal's interrupt character: the foreground process group
/// gets SIGINT and the command's trap runs.
pub async fn interactive(sim: &Sim) {
    let cmd = "trap 'echo got-INT; exit 3' INT; echo armed; while :; do sleep 0.05; done";
    let (_s, mut c) = open(
        sim,
        Some("AWS-StartInteractiveCommand"),
        &[("command", cmd)],
    )
    .await;
    c.read_until(|b| text(b).contains("armed")).await;
    c.send_data(PayloadType::Output, &[0x03]).await;
    c.read_until(|b| text(b).contains("got-INT")).await;
    assert!(sim.wait_sessions_closed(WAIT).await);
}

/// Without a pty the agent signals the process itself. Its output arrives only after
/// it exits, so it says it is ready through a file instead.
pub async fn non_interactive(sim: &Sim) {
    let dir = tempfile::tempdir().unwrap();
    let armed = dir.path().join("armed");
    let cmd = format!(
        "sh -c 'trap \"echo int; exit 0\" INT; : > {}; while :; do sleep 0.05; done'",
        armed.display()
    );
    let s = start(
        sim,
        Some("AWS-StartNonInteractiveCommand"),
        &[("command", &cmd)],
    )
    .await;
    let mut c = RawClient::connect(&s).await;
    c.handshake(ssm_proto::CLIENT_VERSION).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !armed.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.send_data(PayloadType::Output, &[0x03]).await;
    let out = c.read_until(|b| text(b).contains("int")).await;
    assert_eq!(text(&out), "int\n");
}

/// A process on the instance that gets SIGHUP dies of it (status 129 to its shell), as
/// a command hung up at the end of a session must.
pub async fn hang_up(sim: &Sim) {
    let cmd = r#"sh -c 'sh -c "kill -HUP \$\$"; echo status $?'"#;
    let s = start(
        sim,
        Some("AWS-StartNonInteractiveCommand"),
        &[("command", cmd)],
    )
    .await;
    let mut c = RawClient::connect(&s).await;
    c.handshake(ssm_proto::CLIENT_VERSION).await;
    // Some shells also report the death ("Hangup") on stderr, merged here.
    let out = c.read_until(|b| text(b).contains("status")).await;
    assert!(text(&out).ends_with("status 129\n"), "{:?}", text(&out));
}
