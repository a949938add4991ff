//! Port sessions against real local TCP servers: mode selection from the client's
//! version, basic and smux data paths, dial refusal, flags, keepalive.

mod common;
use common::*;
use ssm_proto::smux::{Cmd, Frame, FrameDecoder};
use ssm_proto::{Flag, MessageType, PayloadType};
use ssm_sim::{Sim, SimConfig};
use std::time::Duration;

fn fast() -> SimConfig {
    SimConfig {
        pacing: false,
        ..SimConfig::default()
    }
}

async fn port_session(sim: &Sim, port: u16) -> (Started, RawClient) {
    let s = start(
        sim,
        Some("AWS-StartPortForwardingSession"),
        &[("portNumber", &port.to_string())],
    )
    .await;
    let c = RawClient::connect(&s).await;
    (s, c)
}

#[tokio::test]
async fn handshake_request_carries_port_properties() {
    let sim = Sim::start(fast()).await.unwrap();
    let port = echo_server().await;
    let (_s, mut c) = port_session(&sim, port).await;
    let req = c.handshake("1.2.677.0").await;
    assert_eq!(req.agent_version, ssm_sim::config::DEFAULT_AGENT_VERSION);
    let st = req.session_type().unwrap();
    assert_eq!(st.session_type, "Port");
    assert_eq!(st.properties["portNumber"], port.to_string());
    assert_eq!(st.properties["type"], "LocalPortForwarding");
    assert_eq!(st.properties["localPortNumber"], "0");
}

#[tokio::test]
async fn basic_mode_for_old_clients_echoes_and_redials_after_disconnect() {
    let sim = Sim::start(fast()).await.unwrap();
    let port = echo_server().await;
    let (_s, mut c) = port_session(&sim, port).await;
    c.handshake("1.1.0.0").await; // below 1.1.70: basic mode
    let ping = c.data(PayloadType::Output, b"ping".to_vec());
    c.send_reliably(&ping).await;
    assert_eq!(c.read_until(|b| b.len() >= 4).await, b"ping");
    // DisconnectToPort closes the destination; the next Output dials again.
    c.send_data(PayloadType::Flag, &Flag::DisconnectToPort.encode())
        .await;
    c.send_data(PayloadType::Output, b"again").await;
    assert_eq!(c.read_until(|b| b.len() >= 5).await, b"again");
    let m = c
        .send_data(PayloadType::Flag, &Flag::TerminateSession.encode())
        .await;
    let _ = m;
    let body = c.until_channel_closed().await;
    assert_eq!(body.session_id, _s.session_id);
    assert!(sim.wait_sessions_closed(WAIT).await);
    let st = sim.stats();
    assert_eq!(st.ended_by_flag, 1);
    assert_eq!(st.protocol_violations(), 0);
}

#[tokio::test]
async fn basic_mode_refuses_input_until_destination_is_ready() {
    let cfg = SimConfig {
        port_ready_delay: Duration::from_millis(400),
        ..fast()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let port = echo_server().await;
    let (_s, mut c) = port_session(&sim, port).await;
    c.handshake("1.0.0.0").await;
    let m = c.send_data(PayloadType::Output, b"early").await;
    // Not acknowledged while the destination is not connected...
    assert!(
        !c.wait_ack(m.sequence_number, Duration::from_millis(200))
            .await
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // ...so the client resends, and then it is taken.
    c.send(&m).await;
    assert!(c.wait_ack(m.sequence_number, WAIT).await);
    assert_eq!(c.read_until(|b| b.len() >= 5).await, b"early");
}

#[tokio::test]
async fn basic_mode_start_fails_when_port_is_closed() {
    let sim = Sim::start(fast()).await.unwrap();
    let port = closed_port().await;
    let (_s, mut c) = port_session(&sim, port).await;
    c.handshake("1.0.0.0").await;
    let out = c.read_until(|b| !b.is_empty()).await;
    assert!(String::from_utf8_lossy(&out).starts_with("Unable to connect to specified port"));
    assert!(sim.wait_sessions_closed(WAIT).await);
    assert_eq!(sim.stats().ended_by_agent, 1);
}

/// smux frames out of the reassembled Output stream.
struct MuxReader {
    dec: FrameDecoder,
    flags: Vec<Flag>,
    wait: Duration,
}

impl MuxReader {
    async fn next(&mut self, c: &mut RawClient) -> Frame {
        loop {
            if let Some(f) = self.dec.next_frame().unwrap() {
                return f;
            }
            let m = c.recv_data(self.wait).await.expect("agent data");
            assert_eq!(m.message_type, MessageType::OutputStreamData);
            c.ack(&m).await;
            match PayloadType::from_u32(m.payload_type) {
                PayloadType::Output => {
                    assert!(m.payload.len() <= 1024);
                    self.dec.push(&m.payload);
                }
                PayloadType::Flag => self.flags.push(Flag::decode(&m.payload).unwrap()),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

async fn send_frame(c: &mut RawClient, f: Frame) {
    let bytes = f.encode().unwrap();
    for chunk in bytes.chunks(1024) {
        c.send_data(PayloadType::Output, chunk).await;
    }
}

#[tokio::test]
async fn mux_mode_streams_echo_independently() {
    let sim = Sim::start(fast()).await.unwrap();
    let port = echo_server().await;
    let (_s, mut c) = port_session(&sim, port).await;
    c.handshake(ssm_proto::CLIENT_VERSION).await;
    send_frame(&mut c, Frame::new(Cmd::Syn, 3, vec![])).await;
    send_frame(&mut c, Frame::new(Cmd::Syn, 5, vec![])).await;
    let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    send_frame(&mut c, Frame::new(Cmd::Psh, 3, big.clone())).await;
    send_frame(&mut c, Frame::new(Cmd::Psh, 5, b"five".to_vec())).await;
    let mut r = MuxReader {
        dec: FrameDecoder::new(),
        flags: vec![],
        wait: WAIT,
    };
    let mut got3 = Vec::new();
    let mut got5 = Vec::new();
    while got3.len() < big.len() || got5.len() < 4 {
        let f = r.next(&mut c).await;
        assert_eq!(f.cmd, Cmd::Psh, "{f:?}");
        match f.stream_id {
            3 => got3.extend(f.data),
            5 => got5.extend(f.data),
            id => panic!("stream {id}"),
        }
    }
    assert_eq!(got3, big);
    assert_eq!(got5, b"five");
    // FIN from the client: the agent closes the destination and FINs back.
    send_frame(&mut c, Frame::new(Cmd::Fin, 3, vec![])).await;
    let f = r.next(&mut c).await;
    assert_eq!((f.cmd, f.stream_id), (Cmd::Fin, 3));
    c.send_data(PayloadType::Flag, &Flag::TerminateSession.encode())
        .await;
    assert!(sim.wait_sessions_closed(WAIT).await);
    assert_eq!(sim.stats().protocol_violations(), 0);
}

#[tokio::test]
async fn mux_dial_refusal_sends_connect_error_flag_and_fin() {
    let sim = Sim::start(fast()).await.unwrap();
    let port = closed_port().await;
    let (_s, mut c) = port_session(&sim, port).await;
    c.handshake(ssm_proto::CLIENT_VERSION).await;
    send_frame(&mut c, Frame::new(Cmd::Syn, 3, vec![])).await;
    let mut r = MuxReader {
        dec: FrameDecoder::new(),
        flags: vec![],
        wait: WAIT,
    };
    let f = r.next(&mut c).await;
    assert_eq!((f.cmd, f.stream_id), (Cmd::Fin, 3));
    assert_eq!(r.flags, vec![Flag::ConnectToPortError]);
}

#[tokio::test]
async fn mux_keepalive_is_on_for_clients_up_to_1_2_331() {
    let sim = Sim::start(fast()).await.unwrap();
    let port = echo_server().await;
    let (_s, mut c) = port_session(&sim, port).await;
    c.handshake("1.2.331.0").await;
    let wait = Duration::from_secs(15);
    let mut r = MuxReader {
        dec: FrameDecoder::new(),
        flags: vec![],
        wait,
    };
    let f = r.next(&mut c).await; // within the first keepalive interval
    assert_eq!(f.cmd, Cmd::Nop);
}

#[tokio::test]
async fn agent_output_is_paced_at_about_one_message_per_millisecond() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let port = echo_server().await;
    let (_s, mut c) = port_session(&sim, port).await;
    c.handshake("1.0.0.0").await;
    let payload = vec![7u8; 200 * 1024];
    let first = c.data(PayloadType::Output, payload[..1024].to_vec());
    c.send_reliably(&first).await;
    for chunk in payload[1024..].chunks(1024) {
        c.send_data(PayloadType::Output, chunk).await;
    }
    let t = std::time::Instant::now();
    let got = c.read_until(|b| b.len() >= payload.len()).await;
    let el = t.elapsed();
    assert_eq!(got.len(), payload.len());
    // 200 messages at ≥ 1 ms each.
    assert!(el >= Duration::from_millis(200), "{el:?}");
}
