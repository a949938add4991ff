//! The agent's reliability rules (§5) and the fault layer, seen from a raw client.

mod common;
use common::*;
use ssm_proto::{Message, MessageType, PayloadType};
use ssm_sim::{DirectionFaults, Faults, Sim, SimConfig};
use std::time::Duration;
use uuid::Uuid;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `cat` in a pty without echo: it prints "ready" once echo is off, so input sent after
/// that comes back once, as cat's output.
async fn cat_session(sim: &Sim) -> (Started, RawClient) {
    let s = start(
        sim,
        Some("AWS-StartInteractiveCommand"),
        &[("command", "stty -echo; echo ready; cat")],
    )
    .await;
    let c = RawClient::connect(&s).await;
    (s, c)
}

#[tokio::test]
async fn out_of_order_is_buffered_and_duplicates_reacked() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let (_s, mut c) = cat_session(&sim).await;
    c.read_until(|x| text(x).contains("ready")).await;
    let a = c.data(PayloadType::Output, b"A".to_vec());
    let b = c.data(PayloadType::Output, b"B".to_vec());
    let cr = c.data(PayloadType::Output, b"\r".to_vec());
    c.send(&cr).await;
    c.send(&b).await;
    assert!(
        c.wait_ack(2, WAIT).await && c.wait_ack(1, WAIT).await,
        "future messages acked"
    );
    c.send(&a).await;
    assert!(c.wait_ack(0, WAIT).await);
    let out = c.read_until(|x| text(x).contains("AB")).await;
    assert!(text(&out).starts_with("AB"), "{:?}", text(&out));
    // A duplicate of an old message is acknowledged again, not processed again.
    c.acks.clear();
    c.send(&a).await;
    assert!(c.wait_ack(0, WAIT).await);
    assert_eq!(sim.stats().duplicate_client_messages, 1);
}

#[tokio::test]
async fn unacked_output_is_retransmitted_head_first() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let s = start(
        &sim,
        Some("AWS-StartInteractiveCommand"),
        &[("command", "echo one; sleep 0.05; echo two; sleep 5")],
    )
    .await;
    let mut c = RawClient::connect(&s).await;
    let first = c.recv_data(WAIT).await.unwrap();
    let second = c.recv_data(WAIT).await.unwrap();
    assert_eq!((first.sequence_number, second.sequence_number), (0, 1));
    // Ack only the second: the agent must resend the first (head) after its RTO.
    c.ack(&second).await;
    let t = std::time::Instant::now();
    let again = c.recv_data(WAIT).await.unwrap();
    assert_eq!(again.sequence_number, 0);
    assert_eq!(again.payload, first.payload);
    assert_eq!(again.message_id, first.message_id);
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    c.ack(&again).await;
    assert!(sim.stats().agent_retransmissions >= 1);
}

#[tokio::test]
async fn pause_publication_stops_output_until_start() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let (_s, mut c) = cat_session(&sim).await;
    c.read_until(|x| text(x).contains("ready")).await;
    let pause = Message::new(
        MessageType::PausePublication,
        0,
        0,
        0,
        vec![],
        Uuid::new_v4(),
        now(),
    );
    c.send(&pause).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Input still reaches the process, but nothing comes back while paused... except
    // that any incoming stream data un-pauses the agent (§5.7). So pause after input.
    c.send_data(PayloadType::Output, b"x\r").await;
    c.read_until(|b| text(b).contains('x')).await;
    c.send(&pause).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Make the process print on its own while the agent is paused.
    c.send_data(PayloadType::Output, b"y\r").await; // un-pauses: stream data
    c.read_until(|b| text(b).contains('y')).await;
    c.send(&pause).await;
    assert!(c.recv_data(Duration::from_millis(300)).await.is_none());
    let start = Message::new(
        MessageType::StartPublication,
        0,
        0,
        0,
        vec![],
        Uuid::new_v4(),
        now(),
    );
    c.send(&start).await;
    c.send_data(PayloadType::Output, b"z\r").await;
    c.read_until(|b| text(b).contains('z')).await;
}

#[tokio::test]
async fn unknown_payload_types_are_acked_and_unknown_messages_ignored() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let (_s, mut c) = cat_session(&sim).await;
    let m = c.send_data(PayloadType::Unknown(99), b"?").await;
    assert!(c.wait_ack(m.sequence_number, WAIT).await);
    let odd = Message::new(
        MessageType::Other("brand_new_type".into()),
        5,
        0,
        1,
        b"x".to_vec(),
        Uuid::new_v4(),
        now(),
    );
    c.send(&odd).await;
    c.acks.clear();
    assert!(!c.wait_ack(5, Duration::from_millis(300)).await);
    assert_eq!(sim.stats().protocol_violations(), 0);
}

#[tokio::test]
async fn violations_are_counted() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let (_s, mut c) = cat_session(&sim).await;
    let m = c.data(PayloadType::Output, b"x".to_vec());
    let mut bytes = m.encode().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // digest no longer matches
    c.send_raw(bytes).await;
    // The agent does not check digests, so it still acks; the simulator counts it.
    assert!(c.wait_ack(0, WAIT).await);
    let mut zero_date = c.data(PayloadType::Output, b"y".to_vec());
    zero_date.created_date = 0;
    c.send(&zero_date).await;
    assert!(
        !c.wait_ack(1, Duration::from_millis(300)).await,
        "dropped unacked"
    );
    let st = sim.stats();
    assert_eq!(st.bad_digest, 1);
    assert_eq!(st.zero_created_date, 1);
    assert_eq!(st.protocol_violations(), 2);
}

#[tokio::test]
async fn short_channel_closed_header_is_available() {
    let cfg = SimConfig {
        short_channel_closed: true,
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let (s, mut c) = open(
        &sim,
        Some("AWS-StartInteractiveCommand"),
        &[("command", "true")],
    )
    .await;
    let closed = loop {
        let m = c.recv_data(WAIT).await.expect("channel_closed");
        if m.message_type == MessageType::ChannelClosed {
            break m;
        }
        c.ack(&m).await;
    };
    assert_eq!(closed.header_length, 112);
    let body: ssm_proto::ChannelClosed = serde_json::from_slice(&closed.payload).unwrap();
    assert_eq!(body.session_id, s.session_id);
}

/// Send `data` through a basic-mode echo session, acking every agent message and
/// resending unacknowledged input, reconnecting with ResumeSession when cut.
async fn echo_through_faults(sim: &Sim, data: &[u8]) -> Vec<u8> {
    let port = echo_server().await;
    let (s, mut c) = open(
        sim,
        Some("AWS-StartPortForwardingSession"),
        &[("portNumber", &port.to_string())],
    )
    .await;
    c.handshake("1.0.0.0").await;
    let msgs: Vec<Message> = data
        .chunks(1024)
        .map(|ch| c.data(PayloadType::Output, ch.to_vec()))
        .collect();
    let mut got = Vec::new();
    // HandshakeRequest and HandshakeComplete took the agent's seqs 0 and 1.
    let mut expected = 2;
    let mut acked = std::collections::HashSet::new();
    let mut early = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < data.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled at {} bytes",
            got.len()
        );
        for m in msgs
            .iter()
            .filter(|m| !acked.contains(&m.sequence_number))
            .take(64)
        {
            c.send(m).await;
        }
        loop {
            match c.recv_any(Duration::from_millis(150)).await {
                Some(m) if m.message_type == MessageType::Acknowledge => {
                    let a: ssm_proto::AcknowledgeContent =
                        serde_json::from_slice(&m.payload).unwrap();
                    acked.insert(a.acknowledged_message_sequence_number);
                }
                Some(m) if m.message_type == MessageType::OutputStreamData => {
                    c.ack(&m).await;
                    if m.sequence_number >= expected {
                        early.insert(m.sequence_number, m.payload);
                    }
                    while let Some(p) = early.remove(&expected) {
                        got.extend_from_slice(&p);
                        expected += 1;
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        if c.closed {
            let r = ssm(sim)
                .resume_session()
                .session_id(&s.session_id)
                .send()
                .await
                .unwrap();
            c = RawClient::open(&s.url, r.token_value().unwrap()).await;
            c.next_seq = msgs.len() as i64;
        }
    }
    got
}

#[tokio::test]
async fn echo_survives_loss_duplication_reordering_and_cuts() {
    let dir = DirectionFaults {
        drop_pct: 5.0,
        duplicate_pct: 5.0,
        reorder_pct: 5.0,
        ..Default::default()
    };
    let cfg = SimConfig {
        pacing: false,
        faults: Faults {
            seed: 42,
            to_client: dir.clone(),
            to_agent: dir,
            cut_after_bytes: vec![60_000, 150_000],
            connection_max_age: None,
            tamper_sealed_output: None,
        },
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let got = echo_through_faults(&sim, &data).await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ");
    let st = sim.stats();
    assert_eq!(st.websocket_connections, 3, "two cuts, two resumes");
    assert!(st.duplicate_client_messages > 0);
    assert!(st.agent_retransmissions > 0);
    assert_eq!(st.protocol_violations(), 0);
}

#[tokio::test]
async fn bandwidth_cap_and_delay_slow_the_agent_path() {
    let cfg = SimConfig {
        pacing: false,
        faults: Faults {
            to_client: DirectionFaults {
                bandwidth: 200_000,
                delay: Duration::from_millis(20),
                ..Default::default()
            },
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let t = std::time::Instant::now();
    let got = echo_through_faults(&sim, &vec![1u8; 100_000]).await;
    assert_eq!(got.len(), 100_000);
    // 100 KB of payload plus headers and acks at 200 KB/s: at least half a second.
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}
