//! Property tests: any message round-trips; no input makes the decoders panic.

use proptest::prelude::*;
use ssm_proto::smux::{Cmd, Frame, FrameDecoder};
use ssm_proto::{Message, MessageType};
use uuid::Uuid;

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::InputStreamData),
        Just(MessageType::OutputStreamData),
        Just(MessageType::Acknowledge),
        Just(MessageType::ChannelClosed),
        Just(MessageType::StartPublication),
        Just(MessageType::PausePublication),
        "[a-z_]{1,32}".prop_map(|s| MessageType::parse(&s)),
    ]
}

proptest! {
    #[test]
    fn message_round_trips(
        t in message_type(),
        seq in any::<i64>(),
        flags in any::<u64>(),
        pt in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 0..3000),
        id in any::<u128>(),
        created in 1u64..,
    ) {
        let m = Message::new(t, seq, flags, pt, payload, Uuid::from_u128(id), created);
        let bytes = m.encode().unwrap();
        prop_assert_eq!(bytes.len(), m.encoded_len());
        let d = Message::decode(&bytes).unwrap();
        prop_assert_eq!(&d, &m);
        prop_assert!(d.validate().is_ok());
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn decode_of_mutated_frame_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        at in any::<prop::sample::Index>(),
        val in any::<u8>(),
    ) {
        let m = Message::new(MessageType::OutputStreamData, 1, 0, 1, payload, Uuid::nil(), 1);
        let mut b = m.encode().unwrap();
        let i = at.index(b.len());
        b[i] = val;
        if let Ok(d) = Message::decode(&b) {
            let _ = d.validate();
        }
    }

    #[test]
    fn smux_stream_survives_any_chunking(
        frames in proptest::collection::vec(
            (0u8..4, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..2000)), 0..20),
        cuts in proptest::collection::vec(1usize..1500, 1..50),
    ) {
        let frames: Vec<Frame> = frames.into_iter().map(|(c, id, data)| {
            let cmd = [Cmd::Syn, Cmd::Fin, Cmd::Psh, Cmd::Nop][c as usize];
            Frame::new(cmd, id, data)
        }).collect();
        let mut stream = Vec::new();
        for f in &frames {
            stream.extend_from_slice(&f.encode().unwrap());
        }
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            dec.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn smux_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        while let Ok(Some(_)) = dec.next_frame() {}
    }
}
