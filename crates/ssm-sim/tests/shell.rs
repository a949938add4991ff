//! Shell-type sessions with real processes: a pty for Standard_Stream and
//! InteractiveCommands, direct exec for NonInteractiveCommands.

mod common;
use common::*;
use ssm_proto::PayloadType;
use ssm_sim::{Sim, SimConfig};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn default_shell_starts_without_handshake_and_echoes_in_a_pty() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let (_s, mut c) = open(&sim, None, &[]).await;
    // No handshake: the first message is output, seq 0 with SYN.
    let first = c.recv_data(WAIT).await.unwrap();
    assert_eq!(first.sequence_number, 0);
    assert_eq!(first.flags, 1);
    assert_eq!(first.payload_type, PayloadType::Output.as_u32());
    c.ack(&first).await;
    c.send_data(PayloadType::Size, br#"{"cols":80,"rows":24}"#)
        .await;
    c.send_data(PayloadType::Output, b"stty size; echo done-$((6*7))\r")
        .await;
    let out = c.read_until(|b| text(b).contains("done-42")).await;
    let t = text(&out);
    assert!(t.contains("stty size"), "pty echoes input: {t:?}");
    assert!(t.contains("24 80\r\n"), "size applied, CRLF output: {t:?}");
    c.send_data(PayloadType::Output, b"exit\r").await;
    c.until_channel_closed().await;
    assert!(sim.wait_sessions_closed(WAIT).await);
    assert_eq!(sim.stats().ended_by_agent, 1);
}

#[tokio::test]
async fn interactive_command_gets_ctrl_c_as_a_signal() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    common::signals::interactive(&sim).await;
}

#[tokio::test]
async fn interactive_command_flags_are_ignored() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let (_s, mut c) = open(
        &sim,
        Some("AWS-StartInteractiveCommand"),
        &[("command", "cat")],
    )
    .await;
    c.send_data(
        PayloadType::Flag,
        &ssm_proto::Flag::TerminateSession.encode(),
    )
    .await;
    c.send_data(PayloadType::Output, b"still-here\r").await;
    c.read_until(|b| text(b).matches("still-here").count() >= 2)
        .await;
    assert_eq!(sim.stats().sessions_open(), 1);
}

#[tokio::test]
async fn non_interactive_command_handshakes_and_sends_output_after_exit() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let s = start(
        &sim,
        Some("AWS-StartNonInteractiveCommand"),
        &[(
            "command",
            "sh -c 'echo out; echo err >&2; sleep 0.3; echo end'",
        )],
    )
    .await;
    let mut c = RawClient::connect(&s).await;
    let req = c.handshake(ssm_proto::CLIENT_VERSION).await;
    assert_eq!(
        req.session_type().unwrap().session_type,
        "NonInteractiveCommands"
    );
    assert!(req.session_type().unwrap().properties.is_null());
    // stdin is not connected: this is read by nobody.
    c.send_data(PayloadType::Output, b"ignored\n").await;
    let out = c.read_until(|b| text(b).contains("end")).await;
    assert_eq!(text(&out), "out\nerr\nend\n", "merged, no pty, no CRLF");
    assert!(sim.wait_sessions_closed(WAIT).await);
    assert_eq!(sim.stats().protocol_violations(), 0);
}

#[tokio::test]
async fn non_interactive_ctrl_c_signals_the_process() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    common::signals::non_interactive(&sim).await;
}

#[tokio::test]
async fn a_hang_up_ends_the_process() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    common::signals::hang_up(&sim).await;
}

#[tokio::test]
async fn data_before_handshake_complete_is_acked_and_discarded() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let (_s, mut c) = open(
        &sim,
        Some("AWS-StartNonInteractiveCommand"),
        &[("command", "true")],
    )
    .await;
    let early = c.send_data(PayloadType::Output, b"too early").await;
    assert!(c.wait_ack(early.sequence_number, WAIT).await);
    assert_eq!(sim.stats().data_before_handshake_complete, 1);
}

#[tokio::test]
async fn idle_sessions_time_out_with_channel_closed() {
    let cfg = SimConfig {
        idle_timeout: std::time::Duration::from_millis(300),
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let (_s, mut c) = open(
        &sim,
        Some("AWS-StartInteractiveCommand"),
        &[("command", "cat")],
    )
    .await;
    let body = c.until_channel_closed().await;
    assert!(
        body.output.contains("timed out due to inactivity"),
        "{body:?}"
    );
    assert_eq!(sim.stats().ended_by_idle_timeout, 1);
}

#[tokio::test]
async fn kms_preference_makes_command_sessions_handshake() {
    let cfg = SimConfig {
        kms_key_id: Some("alias/ssm".into()),
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let (_s, mut c) = open(
        &sim,
        Some("AWS-StartInteractiveCommand"),
        &[("command", "true")],
    )
    .await;
    let req = c.recv_data(WAIT).await.unwrap();
    assert_eq!(req.payload_type, PayloadType::HandshakeRequest.as_u32());
    let r: ssm_proto::HandshakeRequest = serde_json::from_slice(&req.payload).unwrap();
    let kinds: Vec<&str> = r
        .requested_client_actions
        .iter()
        .map(|a| a.action_type.as_str())
        .collect();
    assert_eq!(kinds, ["SessionType", "KMSEncryption"]);
    assert_eq!(
        r.requested_client_actions[1].action_parameters["KMSKeyId"],
        "alias/ssm"
    );
    // Port sessions never use KMS (§6.1): their handshake has no KMS action.
    let p = start(
        &sim,
        Some("AWS-StartPortForwardingSession"),
        &[("portNumber", "1")],
    )
    .await;
    let mut pc = RawClient::connect(&p).await;
    let preq = pc.recv_data(WAIT).await.unwrap();
    let pr: ssm_proto::HandshakeRequest = serde_json::from_slice(&preq.payload).unwrap();
    assert_eq!(pr.requested_client_actions.len(), 1);
}

#[tokio::test]
async fn separate_output_stream_sends_stdout_stderr_and_exit_code() {
    let cfg = SimConfig {
        documents: vec![ssm_sim::config::CommandDocument {
            name: "Custom-Separate".into(),
            separate_output_stream: true,
        }],
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let s = start(
        &sim,
        Some("Custom-Separate"),
        &[("command", "sh -c 'echo o; echo e >&2; exit 4'")],
    )
    .await;
    let mut c = RawClient::connect(&s).await;
    c.handshake(ssm_proto::CLIENT_VERSION).await;
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    while code.is_none() {
        let m = c.recv_data(WAIT).await.expect("output");
        c.ack(&m).await;
        match PayloadType::from_u32(m.payload_type) {
            PayloadType::Output => out.extend(m.payload),
            PayloadType::StdErr => err.extend(m.payload),
            PayloadType::ExitCode => code = Some(text(&m.payload)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((text(&out), text(&err)), ("o\n".into(), "e\n".into()));
    assert_eq!(code.as_deref(), Some("EXIT_CODE: 4"));
    c.until_channel_closed().await;
}

/// The agent acknowledges a message before handling it: the ack for the
/// HandshakeResponse is on the wire before HandshakeComplete, and the ack for each input
/// before any output that input causes. A client that sets up its session only when it
/// sees HandshakeComplete (the official plugin) depends on this order. A port session
/// has both: a handshake, and an echo server answering each input.
#[tokio::test]
async fn acks_leave_before_anything_their_message_causes() {
    use ssm_proto::{HandshakeResponse, MessageType, ProcessedClientAction};
    let sim = Sim::start(SimConfig {
        pacing: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let port = echo_server().await;
    let (_s, mut c) = open(
        &sim,
        Some("AWS-StartPortForwardingSession"),
        &[("portNumber", &port.to_string())],
    )
    .await;
    let request = c.recv_data(WAIT).await.expect("HandshakeRequest");
    assert_eq!(request.payload_type, PayloadType::HandshakeRequest.as_u32());
    c.ack(&request).await;
    let resp = HandshakeResponse {
        client_version: "1.1.0.0".into(), // basic mode: the echo comes back as it is
        processed_client_actions: vec![ProcessedClientAction {
            action_type: ssm_proto::payload::ACTION_SESSION_TYPE.into(),
            action_status: 1,
            action_result: serde_json::Value::Null,
            error: String::new(),
        }],
        errors: None,
    };
    let sent = c
        .send_data(PayloadType::HandshakeResponse, &resp.to_json())
        .await;
    // Skip the agent's resends of what it sent before; the first message about ours
    // must be its ack.
    let first = loop {
        let m = c
            .recv_any(WAIT)
            .await
            .expect("an answer to the HandshakeResponse");
        if m.message_type == MessageType::Acknowledge
            || m.payload_type == PayloadType::HandshakeComplete.as_u32()
        {
            break m;
        }
    };
    assert_eq!(first.message_type, MessageType::Acknowledge, "ack first");
    let ack: ssm_proto::AcknowledgeContent = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(
        ack.acknowledged_message_sequence_number,
        sent.sequence_number
    );
    let complete = c.recv_data(WAIT).await.expect("HandshakeComplete");
    assert_eq!(
        complete.payload_type,
        PayloadType::HandshakeComplete.as_u32()
    );
    c.ack(&complete).await;
    // The destination is dialled in the background; until then input is not taken.
    let sync = c.data(PayloadType::Output, b"sync".to_vec());
    c.send_reliably(&sync).await;
    c.read_until(|b| b.ends_with(b"sync")).await;
    for i in 0..20 {
        let line = format!("line {i};");
        let input = c.send_data(PayloadType::Output, line.as_bytes()).await;
        let m = loop {
            let m = c.recv_any(WAIT).await.expect("an answer to the input");
            if m.message_type == MessageType::Acknowledge {
                let a: ssm_proto::AcknowledgeContent = serde_json::from_slice(&m.payload).unwrap();
                if a.acknowledged_message_sequence_number < input.sequence_number {
                    continue;
                }
            }
            break m;
        };
        assert_eq!(
            m.message_type,
            MessageType::Acknowledge,
            "input {i}: output before its ack"
        );
        // Read (and ack) the echo before the next line, so no output is pending when
        // the next input goes out.
        c.read_until(|b| String::from_utf8_lossy(b).contains(&line))
            .await;
    }
}
