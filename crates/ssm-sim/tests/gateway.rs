//! The gateway's door: OpenDataChannel first, one use per token, resume with a new one.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use ssm_sim::{Sim, SimConfig};
use tokio_tungstenite::tungstenite::Message as Ws;

async fn closed_without_data(url: &str, first: Ws) -> bool {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(first).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => return true,
            Some(Ok(Ws::Binary(_))) => return false,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn wrong_token_and_binary_first_frame_are_refused() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let s = start(&sim, None, &[]).await;
    let bad = ssm_proto::OpenDataChannelInput {
        message_schema_version: "1.0".into(),
        request_id: "r".into(),
        token_value: "not-the-token".into(),
        client_id: "c".into(),
        client_version: "1.2.677.0".into(),
    };
    assert!(closed_without_data(&s.url, Ws::Text(bad.to_json().into())).await);
    assert!(closed_without_data(&s.url, Ws::Binary(vec![0u8; 130].into())).await);
    assert_eq!(sim.stats().rejected_tokens, 2);
    // The real token still works once, and only once.
    let mut c = RawClient::connect(&s).await;
    assert!(c.recv_data(WAIT).await.is_some(), "shell prompt");
    let mut again = RawClient::connect(&s).await;
    assert!(again.recv_any(WAIT).await.is_none());
    assert_eq!(sim.stats().rejected_tokens, 3);
}

#[tokio::test]
async fn resume_gives_a_new_token_and_keeps_sequence_state() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let (s, mut c) = open(
        &sim,
        Some("AWS-StartInteractiveCommand"),
        &[("command", "cat")],
    )
    .await;
    c.send_data(ssm_proto::PayloadType::Output, b"one\r").await;
    c.read_until(|b| String::from_utf8_lossy(b).matches("one").count() >= 2)
        .await;
    c.close().await;

    let r = ssm(&sim)
        .resume_session()
        .session_id(&s.session_id)
        .send()
        .await
        .unwrap();
    let token = r.token_value().unwrap().to_string();
    assert_ne!(token, s.token);
    assert!(r.stream_url().unwrap().starts_with(&sim.gateway_url));
    let mut c2 = RawClient::open(&s.url, &token).await;
    c2.next_seq = 1; // sequence numbers carry on across connections
    let m = c2.send_data(ssm_proto::PayloadType::Output, b"two\r").await;
    assert!(c2.wait_ack(m.sequence_number, WAIT).await);
    c2.read_until(|b| String::from_utf8_lossy(b).contains("two"))
        .await;
    assert_eq!(sim.stats().resumes, 1);
    assert_eq!(sim.stats().websocket_connections, 2);
    assert_eq!(sim.stats().protocol_violations(), 0);
}

/// A gateway delivers what it accepted: frames the client sent before closing its
/// websocket reach the agent in order, even those still held back on the way (here
/// by a delay on the path to the agent), so a TerminateSession flag sent just before
/// the close ends the session by the flag, not at the idle timeout.
#[tokio::test]
async fn frames_sent_before_the_client_closes_reach_the_agent() {
    use ssm_proto::{Flag, PayloadType};
    let mut cfg = SimConfig::default();
    cfg.faults.to_agent.delay = std::time::Duration::from_millis(300);
    let sim = Sim::start(cfg).await.unwrap();
    let port = echo_server().await;
    let s = start(
        &sim,
        Some("AWS-StartPortForwardingSession"),
        &[("portNumber", &port.to_string())],
    )
    .await;
    let mut c = RawClient::connect(&s).await;
    c.handshake("1.1.0.0").await; // basic mode: raw bytes to the echo server
    for _ in 0..64 {
        c.send_data(PayloadType::Output, &[b'y'; 1024]).await;
    }
    c.send_data(PayloadType::Flag, &Flag::TerminateSession.encode())
        .await;
    let sent_at = std::time::Instant::now();
    c.close_and_drain(std::time::Duration::from_secs(5)).await;
    assert!(
        sim.wait_sessions_closed(std::time::Duration::from_secs(5))
            .await,
        "{:?}",
        sim.stats()
    );
    assert_eq!(sim.stats().ended_by_flag, 1, "{:?}", sim.stats());
    assert!(
        sim.stats().client_stream_messages >= 64 + 2,
        "{:?}",
        sim.stats()
    );
    assert!(sent_at.elapsed() < std::time::Duration::from_secs(3));
}
