//! The byte-exact vectors of shared/ssm-protocol-vectors.md, encoded and decoded.

use ssm_proto::message::{sha256, ACK_FLAGS, FLAG_SYN};
use ssm_proto::payload::*;
use ssm_proto::smux::{Cmd, Frame, FrameDecoder};
use ssm_proto::{Message, MessageType};
use uuid::Uuid;

const V1: &str = "00000074696e7075745f73747265616d5f64617461202020202020202020202020202020000000010000015e0baa788400000000000000000000000000000000a508b5f073f31b16dd01e56bff48483e2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824000000010000000568656c6c6f";
const V2: &str = "0000007461636b6e6f776c65646765202020202020202020202020202020202020202020000000010000015e0baa7886000000000000000000000000000000038a7b6c5d4e3f2a100f3e5b6a9c1d4e2f322c02dc8d311c0dadacdf319a80f01ed2932ad3ad28ddc0edb020939962460a00000000000000b07b2241636b6e6f776c65646765644d65737361676554797065223a226f75747075745f73747265616d5f64617461222c2241636b6e6f776c65646765644d6573736167654964223a2237623065386331612d326433662d346135622d396336642d316532663361346235633664222c2241636b6e6f776c65646765644d65737361676553657175656e63654e756d626572223a302c22497353657175656e7469616c4d657373616765223a747275657d";
const V3: &str = "00000074696e7075745f73747265616d5f64617461202020202020202020202020202020000000010000015e0baa78b8000000000000000000000000000000009f10a1b2c3d4e5f65f2b6c1e3a4d4b8e035056b24ece59f84a6ba856caba412de915a64e738063c9d37bc4a755e5599700000006000000937b22436c69656e7456657273696f6e223a22312e322e3637372e30222c2250726f636573736564436c69656e74416374696f6e73223a5b7b22416374696f6e54797065223a2253657373696f6e54797065222c22416374696f6e537461747573223a312c22416374696f6e526573756c74223a6e756c6c2c224572726f72223a22227d5d2c224572726f7273223a6e756c6c7d";
const V4: &str = "00000074696e7075745f73747265616d5f64617461202020202020202020202020202020000000010000015e0baa7ca00000000000000007000000000000000084445555555555551111111122224333433ebf5bc03dffa38536673207a21281612cef5faa9bc7a4d5b9be2fdb12cf1a0000000a0000000400000002";
const V5: &str = "000000746f75747075745f73747265616d5f646174612020202020202020202020202020000000010000015e0baa8470000000000000000000000000000000019def0123456789abc0ffee0012344abce5b111ba26d5bb1cc89d8a3d74fad4cf1ebd5701c29877969c322b456d0784a300000001000000022420";
const A1: &str = "00000074696e7075745f73747265616d5f64617461202020202020202020202020202020000000010000015e0baa8088000000000000000100000000000000008dddeeeeeeeeeeeeaaaaaaaabbbb4cccd53ca1ea7dce87c11432052a8550ed2615cf715ca843c89710ed83325b691cba00000003000000157b22636f6c73223a38302c22726f7773223a32347d";

fn id(s: &str) -> Uuid {
    Uuid::parse_str(s).unwrap()
}

fn encode_hex(m: &Message) -> String {
    hex::encode(m.encode().unwrap())
}

#[test]
fn v1_input_stream_data_hello() {
    let m = Message::new(
        MessageType::InputStreamData,
        0,
        0,
        PayloadType::Output.as_u32(),
        b"hello".to_vec(),
        id("dd01e56b-ff48-483e-a508-b5f073f31b16"),
        1503434274948,
    );
    assert_eq!(encode_hex(&m), V1);
    assert_eq!(m.encoded_len(), 125);

    let d = Message::decode(&hex::decode(V1).unwrap()).unwrap();
    assert_eq!(d.message_type, MessageType::InputStreamData);
    assert_eq!(
        d.message_id.to_string(),
        "dd01e56b-ff48-483e-a508-b5f073f31b16"
    );
    assert_eq!(d.payload, b"hello");
    assert_eq!(d.payload_digest, sha256(b"hello"));
    assert_eq!(d.validate(), Ok(()));
    assert_eq!(d, m);
}

#[test]
fn v2_acknowledge() {
    let acked = Message::new(
        MessageType::OutputStreamData,
        0,
        FLAG_SYN,
        1,
        vec![],
        id("7b0e8c1a-2d3f-4a5b-9c6d-1e2f3a4b5c6d"),
        1,
    );
    let ack = Message::ack_for(
        &acked,
        id("0f3e5b6a-9c1d-4e2f-8a7b-6c5d4e3f2a10"),
        1503434274950,
    );
    assert_eq!(encode_hex(&ack), V2);
    assert_eq!(ack.encoded_len(), 296);

    let d = Message::decode(&hex::decode(V2).unwrap()).unwrap();
    assert_eq!(d.flags, ACK_FLAGS);
    let content: AcknowledgeContent = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(content.acknowledged_message_sequence_number, 0);
    assert_eq!(content.acknowledged_message_type, "output_stream_data");
}

#[test]
fn v3_handshake_response() {
    let resp = HandshakeResponse {
        client_version: "1.2.677.0".into(),
        processed_client_actions: vec![ProcessedClientAction {
            action_type: "SessionType".into(),
            action_status: ActionStatus::Success as i32,
            action_result: serde_json::Value::Null,
            error: String::new(),
        }],
        errors: None,
    };
    let m = Message::new(
        MessageType::InputStreamData,
        0,
        0,
        PayloadType::HandshakeResponse.as_u32(),
        resp.to_json(),
        id("5f2b6c1e-3a4d-4b8e-9f10-a1b2c3d4e5f6"),
        1503434275000,
    );
    assert_eq!(m.payload.len(), 147);
    assert_eq!(encode_hex(&m), V3);
    let d = Message::decode(&hex::decode(V3).unwrap()).unwrap();
    let back: HandshakeResponse = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(back, resp);
}

#[test]
fn v4_flag_terminate_session() {
    let m = Message::new(
        MessageType::InputStreamData,
        7,
        0,
        PayloadType::Flag.as_u32(),
        Flag::TerminateSession.encode(),
        id("11111111-2222-4333-8444-555555555555"),
        1503434276000,
    );
    assert_eq!(encode_hex(&m), V4);
    let d = Message::decode(&hex::decode(V4).unwrap()).unwrap();
    assert_eq!(d.sequence_number, 7);
    assert_eq!(Flag::decode(&d.payload), Some(Flag::TerminateSession));
}

#[test]
fn v5_agent_output_syn() {
    let m = Message::new(
        MessageType::OutputStreamData,
        0,
        FLAG_SYN,
        1,
        b"$ ".to_vec(),
        id("c0ffee00-1234-4abc-9def-0123456789ab"),
        1503434278000,
    );
    assert_eq!(encode_hex(&m), V5);
    // The client's ack names the agent message's id and seq.
    let ack = Message::ack_for(&m, Uuid::nil(), 5);
    let c: AcknowledgeContent = serde_json::from_slice(&ack.payload).unwrap();
    assert_eq!(
        c.acknowledged_message_id,
        "c0ffee00-1234-4abc-9def-0123456789ab"
    );
    assert_eq!(c.acknowledged_message_sequence_number, 0);
}

#[test]
fn a1_size_message() {
    let m = Message::new(
        MessageType::InputStreamData,
        1,
        0,
        PayloadType::Size.as_u32(),
        SizeData { cols: 80, rows: 24 }.to_json(),
        id("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"),
        1503434277000,
    );
    assert_eq!(m.encoded_len(), 141);
    assert_eq!(encode_hex(&m), A1);
}

#[test]
fn a2_open_data_channel_field_order() {
    let o = OpenDataChannelInput {
        message_schema_version: "1.0".into(),
        request_id: "3f2504e0-4f89-41d3-9a0c-0305e82c3301".into(),
        token_value: "tok".into(),
        client_id: "6fa459ea-ee8a-4ca4-894e-db77e160355e".into(),
        client_version: "1.2.677.0".into(),
    };
    assert_eq!(
        o.to_json(),
        r#"{"MessageSchemaVersion":"1.0","RequestId":"3f2504e0-4f89-41d3-9a0c-0305e82c3301","TokenValue":"tok","ClientId":"6fa459ea-ee8a-4ca4-894e-db77e160355e","ClientVersion":"1.2.677.0"}"#
    );
    assert!(
        !format!("{o:?}").contains("tok\""),
        "Debug must hide the token"
    );
}

#[test]
fn a3_smux_frames() {
    let cases: [(Frame, &str); 4] = [
        (Frame::new(Cmd::Syn, 3, vec![]), "0100000003000000"),
        (
            Frame::new(Cmd::Psh, 3, b"hello".to_vec()),
            "010205000300000068656c6c6f",
        ),
        (Frame::new(Cmd::Fin, 3, vec![]), "0101000003000000"),
        (Frame::new(Cmd::Nop, 0, vec![]), "0103000000000000"),
    ];
    let mut stream = Vec::new();
    for (f, hexs) in &cases {
        assert_eq!(hex::encode(f.encode().unwrap()), *hexs);
        stream.extend_from_slice(&f.encode().unwrap());
    }
    assert_eq!(
        hex::encode(Frame::header(Cmd::Psh, 5, 1024).unwrap()),
        "0102000405000000"
    );
    // Frames arrive cut at arbitrary points; feed one byte at a time.
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    for b in stream {
        dec.push(&[b]);
        while let Some(f) = dec.next_frame().unwrap() {
            got.push(f);
        }
    }
    let want: Vec<Frame> = cases.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(got, want);
}

#[test]
fn a4_flag_payloads() {
    assert_eq!(Flag::DisconnectToPort.encode(), [0, 0, 0, 1]);
    assert_eq!(Flag::TerminateSession.encode(), [0, 0, 0, 2]);
    assert_eq!(Flag::ConnectToPortError.encode(), [0, 0, 0, 3]);
    assert_eq!(Flag::decode(&[0, 0, 0, 9]), Some(Flag::Unknown(9)));
    assert_eq!(Flag::decode(&[0, 0, 2]), None);
}

#[test]
fn channel_closed_with_short_header_yields_payload() {
    let cc = ChannelClosed {
        session_id: "alice-0a1b".into(),
        message_type: "channel_closed".into(),
        schema_version: 1,
        output: "bye".into(),
        ..Default::default()
    };
    let full = Message::new(
        MessageType::ChannelClosed,
        0,
        0,
        0,
        cc.to_json(),
        Uuid::nil(),
        9,
    )
    .encode()
    .unwrap();
    let mut short = full.clone();
    short.drain(112..116);
    short[..4].copy_from_slice(&112u32.to_be_bytes());
    let d = Message::decode(&short).unwrap();
    assert_eq!(d.header_length, 112);
    assert_eq!(d.payload, cc.to_json());
    assert!(d.digest_matches());
    let back: ChannelClosed = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(back.output, "bye");
}

#[test]
fn flipped_payload_byte_fails_digest() {
    let mut b = hex::decode(V1).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    let d = Message::decode(&b).unwrap();
    assert_eq!(
        d.validate(),
        Err(ssm_proto::ValidationError::DigestMismatch)
    );
    // The agent's check skips the digest (§3).
    assert_eq!(d.validate_header(), Ok(()));
}

#[test]
fn publication_messages_skip_validation() {
    for t in [MessageType::StartPublication, MessageType::PausePublication] {
        let mut m = Message::new(t, 0, 0, 0, b"x".to_vec(), Uuid::nil(), 0);
        m.payload_digest = [0; 32];
        let d = Message::decode(&m.encode().unwrap()).unwrap();
        let mut d2 = d.clone();
        d2.payload_digest = [0; 32];
        assert_eq!(d2.validate(), Ok(()));
        assert_eq!(d.created_date, 0);
    }
}

#[test]
fn payload_longer_than_declared_is_taken_whole() {
    // Official readers take everything after HeaderLength + 4; so do we, and the
    // declared length stays visible for strict receivers to count.
    let mut b = hex::decode(V1).unwrap();
    b.extend_from_slice(b"!!");
    let d = Message::decode(&b).unwrap();
    assert_eq!(d.payload, b"hello!!");
    assert_eq!(d.payload_length, 5);
}

#[test]
fn truncated_and_garbled_frames_are_errors() {
    let b = hex::decode(V1).unwrap();
    for n in 0..116 {
        assert!(Message::decode(&b[..n]).is_err(), "prefix {n}");
    }
    let mut bad = b.clone();
    bad[..4].copy_from_slice(&500u32.to_be_bytes());
    assert!(Message::decode(&bad).is_err());
    let mut bad = b.clone();
    bad[..4].copy_from_slice(&50u32.to_be_bytes());
    assert!(Message::decode(&bad).is_err());
    let mut bad = b;
    bad[5] = 0xff;
    assert!(Message::decode(&bad).is_err());
}

#[test]
fn unknown_message_type_round_trips() {
    let m = Message::new(
        MessageType::Other("something_new".into()),
        0,
        0,
        99,
        vec![1, 2],
        Uuid::nil(),
        1,
    );
    let d = Message::decode(&m.encode().unwrap()).unwrap();
    assert_eq!(d.message_type, MessageType::Other("something_new".into()));
    assert_eq!(
        PayloadType::from_u32(d.payload_type),
        PayloadType::Unknown(99)
    );
    let long = Message::new(
        MessageType::Other("x".repeat(33)),
        0,
        0,
        0,
        vec![],
        Uuid::nil(),
        1,
    );
    assert!(long.encode().is_err());
}

#[test]
fn handshake_request_parses_port_properties() {
    let json = br#"{"AgentVersion":"3.3.987.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"localPortNumber":"0","portNumber":"80","type":"LocalPortForwarding"}}}]}"#;
    let r: HandshakeRequest = serde_json::from_slice(json).unwrap();
    let st = r.session_type().unwrap();
    assert_eq!(st.session_type, "Port");
    assert_eq!(st.properties["type"], "LocalPortForwarding");
    let again: HandshakeRequest = serde_json::from_slice(&r.to_json()).unwrap();
    assert_eq!(again, r);
}

#[test]
fn smux_rejects_other_versions_and_commands() {
    let mut dec = FrameDecoder::new();
    dec.push(&[2, 0, 0, 0, 3, 0, 0, 0]);
    assert!(dec.next_frame().is_err());
    let mut dec = FrameDecoder::new();
    dec.push(&[1, 9, 0, 0, 3, 0, 0, 0]);
    assert!(dec.next_frame().is_err());
    assert!(Frame::header(Cmd::Psh, 3, 70000).is_err());
}
