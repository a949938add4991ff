//! A scripted raw data-channel client for the simulator's own tests. It is written
//! against the protocol reference, independently of the ssmcp client.

#![allow(dead_code)]

pub mod signals;

use futures_util::{SinkExt, StreamExt};
use ssm_proto::message::uuid_to_wire;
use ssm_proto::payload::ACTION_SESSION_TYPE;
use ssm_proto::{
    HandshakeRequest, HandshakeResponse, Message, MessageType, OpenDataChannelInput, PayloadType,
    ProcessedClientAction,
};
use ssm_sim::Sim;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn ssm(sim: &Sim) -> aws_sdk_ssm::Client {
    ssm_with_secret(sim, ssm_sim::config::SECRET_ACCESS_KEY)
}

pub fn tagging(sim: &Sim) -> aws_sdk_resourcegroupstagging::Client {
    let creds = aws_credential_types::Credentials::new(
        ssm_sim::config::ACCESS_KEY_ID,
        ssm_sim::config::SECRET_ACCESS_KEY,
        None,
        None,
        "test",
    );
    let conf = aws_sdk_resourcegroupstagging::Config::builder()
        .behavior_version(aws_sdk_resourcegroupstagging::config::BehaviorVersion::latest())
        .region(aws_sdk_resourcegroupstagging::config::Region::new(
            "us-east-1",
        ))
        .endpoint_url(&sim.api_url)
        .credentials_provider(creds)
        .retry_config(aws_sdk_resourcegroupstagging::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_resourcegroupstagging::Client::from_conf(conf)
}

pub fn ssm_with_secret(sim: &Sim, secret: &str) -> aws_sdk_ssm::Client {
    let creds = aws_credential_types::Credentials::new(
        ssm_sim::config::ACCESS_KEY_ID,
        secret,
        None,
        None,
        "test",
    );
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .endpoint_url(&sim.api_url)
        .credentials_provider(creds)
        .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

pub struct Started {
    pub session_id: String,
    pub token: String,
    pub url: String,
}

pub async fn start(sim: &Sim, doc: Option<&str>, params: &[(&str, &str)]) -> Started {
    let mut req = ssm(sim)
        .start_session()
        .target(ssm_sim::config::DEFAULT_INSTANCE);
    if let Some(d) = doc {
        req = req.document_name(d);
    }
    for (k, v) in params {
        req = req.parameters(*k, vec![v.to_string()]);
    }
    let out = req.send().await.expect("StartSession");
    Started {
        session_id: out.session_id().unwrap_or_default().to_string(),
        token: out.token_value().unwrap_or_default().to_string(),
        url: out.stream_url().unwrap_or_default().to_string(),
    }
}

/// Start a session and connect a raw client to it.
pub async fn open(sim: &Sim, doc: Option<&str>, params: &[(&str, &str)]) -> (Started, RawClient) {
    let s = start(sim, doc, params).await;
    let c = RawClient::connect(&s).await;
    (s, c)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub struct RawClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub next_seq: i64,
    /// Every acknowledgement the agent sent, by acknowledged sequence number.
    pub acks: Vec<i64>,
    /// The websocket closed (as opposed to a receive timing out).
    pub closed: bool,
}

impl RawClient {
    pub async fn open(url: &str, token: &str) -> RawClient {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let open = OpenDataChannelInput {
            message_schema_version: "1.0".into(),
            request_id: Uuid::new_v4().to_string(),
            token_value: token.into(),
            client_id: Uuid::new_v4().to_string(),
            client_version: ssm_proto::CLIENT_VERSION.into(),
        };
        ws.send(Ws::Text(open.to_json().into())).await.unwrap();
        RawClient {
            ws,
            next_seq: 0,
            acks: Vec::new(),
            closed: false,
        }
    }

    pub async fn connect(s: &Started) -> RawClient {
        RawClient::open(&s.url, &s.token).await
    }

    pub fn data(&mut self, pt: PayloadType, payload: Vec<u8>) -> Message {
        let m = Message::new(
            MessageType::InputStreamData,
            self.next_seq,
            0,
            pt.as_u32(),
            payload,
            Uuid::new_v4(),
            now(),
        );
        self.next_seq += 1;
        m
    }

    pub async fn send(&mut self, m: &Message) {
        self.send_raw(m.encode().unwrap()).await;
    }

    /// Send a frame; a closed socket is remembered, not a panic (tests cut sockets).
    pub async fn send_raw(&mut self, b: Vec<u8>) {
        if self.ws.send(Ws::Binary(b.into())).await.is_err() {
            self.closed = true;
        }
    }

    pub async fn send_data(&mut self, pt: PayloadType, payload: &[u8]) -> Message {
        let m = self.data(pt, payload.to_vec());
        self.send(&m).await;
        m
    }

    pub async fn ack(&mut self, m: &Message) {
        let a = Message::ack_for(m, Uuid::new_v4(), now());
        self.send(&a).await;
    }

    /// The next decoded message of any type; None when the socket closes or on timeout.
    pub async fn recv_any(&mut self, wait: Duration) -> Option<Message> {
        loop {
            if self.closed {
                return None;
            }
            let frame = tokio::time::timeout(wait, self.ws.next()).await.ok()?;
            match frame {
                Some(Ok(Ws::Binary(b))) => {
                    return Some(Message::decode(&b).expect("decodable frame"))
                }
                Some(Ok(Ws::Close(_))) | Some(Err(_)) | None => {
                    self.closed = true;
                    return None;
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next agent data message, recording (not returning) acks on the way.
    pub async fn recv_data(&mut self, wait: Duration) -> Option<Message> {
        loop {
            let m = self.recv_any(wait).await?;
            match m.message_type {
                MessageType::Acknowledge => {
                    let c: ssm_proto::AcknowledgeContent =
                        serde_json::from_slice(&m.payload).unwrap();
                    self.acks.push(c.acknowledged_message_sequence_number);
                }
                MessageType::OutputStreamData => return Some(m),
                _ => return Some(m),
            }
        }
    }

    /// Send until acknowledged, as a client must while the agent's handler is not
    /// ready yet (§5.3).
    pub async fn send_reliably(&mut self, m: &Message) {
        for _ in 0..50 {
            self.send(m).await;
            if self
                .wait_ack(m.sequence_number, Duration::from_millis(200))
                .await
            {
                return;
            }
        }
        panic!("seq {} never acknowledged", m.sequence_number);
    }

    /// Wait for the agent to acknowledge `seq`.
    pub async fn wait_ack(&mut self, seq: i64, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.acks.contains(&seq) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let Some(m) = self.recv_any(left).await else {
                return false;
            };
            if m.message_type == MessageType::Acknowledge {
                let c: ssm_proto::AcknowledgeContent = serde_json::from_slice(&m.payload).unwrap();
                self.acks.push(c.acknowledged_message_sequence_number);
            }
        }
        true
    }

    /// Answer the agent's HandshakeRequest with `version` and wait for HandshakeComplete,
    /// re-acking and resending as needed when faults lose messages.
    pub async fn handshake(&mut self, version: &str) -> HandshakeRequest {
        let resp = HandshakeResponse {
            client_version: version.into(),
            processed_client_actions: vec![ProcessedClientAction {
                action_type: ACTION_SESSION_TYPE.into(),
                action_status: 1,
                action_result: serde_json::Value::Null,
                error: String::new(),
            }],
            errors: None,
        };
        let mut request = None;
        let mut response = None;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "handshake stalled");
            let Some(m) = self.recv_data(Duration::from_millis(300)).await else {
                if let Some(r) = &response {
                    let r: Message = Clone::clone(r);
                    self.send(&r).await;
                }
                continue;
            };
            if m.message_type != MessageType::OutputStreamData {
                continue;
            }
            self.ack(&m).await;
            match PayloadType::from_u32(m.payload_type) {
                PayloadType::HandshakeRequest => {
                    assert_eq!(m.sequence_number, 0);
                    assert_eq!(m.flags, 1, "SYN on the agent's first message");
                    request = Some(serde_json::from_slice(&m.payload).unwrap());
                    if response.is_none() {
                        response = Some(self.data(PayloadType::HandshakeResponse, resp.to_json()));
                    }
                    let r: Message = Clone::clone(response.as_ref().unwrap());
                    self.send(&r).await;
                }
                PayloadType::HandshakeComplete => {
                    assert_eq!(m.sequence_number, 1);
                    return request.expect("HandshakeRequest before HandshakeComplete");
                }
                other => panic!("unexpected {other:?} during handshake"),
            }
        }
    }

    /// Collect Output payloads (acking each) until `pred` holds on the total.
    pub async fn read_until(&mut self, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let mut got = Vec::new();
        let mut expected = None::<i64>;
        while !pred(&got) {
            let m = self
                .recv_data(WAIT)
                .await
                .unwrap_or_else(|| panic!("stream ended; got {:?}", String::from_utf8_lossy(&got)));
            if m.message_type != MessageType::OutputStreamData {
                continue;
            }
            self.ack(&m).await;
            if expected.is_some_and(|e| m.sequence_number < e) {
                continue; // a retransmission we already have
            }
            expected = Some(m.sequence_number + 1);
            if m.payload_type == PayloadType::Output.as_u32() {
                got.extend_from_slice(&m.payload);
            }
        }
        got
    }

    /// Read (acking data) until the service's channel_closed, and return its body.
    pub async fn until_channel_closed(&mut self) -> ssm_proto::ChannelClosed {
        loop {
            let m = self.recv_data(WAIT).await.expect("channel_closed");
            if m.message_type == MessageType::ChannelClosed {
                return serde_json::from_slice(&m.payload).expect("channel_closed JSON");
            }
            if m.message_type == MessageType::OutputStreamData {
                self.ack(&m).await;
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Close the websocket properly: send Close, then read (and discard) until the
    /// gateway closes too, at most `wait`. Dropping the socket at once instead would
    /// make the kernel answer the gateway's next write with a reset, which destroys
    /// what the gateway had received but not read yet — over any gateway.
    pub async fn close_and_drain(mut self, wait: Duration) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(wait, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// A TCP echo server on an ephemeral port.
pub async fn echo_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// A port nothing listens on.
pub async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

pub fn wire_id(id: &Uuid) -> [u8; 16] {
    uuid_to_wire(id)
}
