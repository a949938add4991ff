//! Any byte string through the message and smux decoders: errors are fine, panics and
//! round-trip mismatches are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssm_proto::smux::FrameDecoder;
use ssm_proto::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let _ = m.validate();
        if let Ok(bytes) = m.encode() {
            let again = Message::decode(&bytes).expect("re-encoded message decodes");
            assert_eq!(again.payload, m.payload);
            assert_eq!(again.sequence_number, m.sequence_number);
        }
    }
    let mut dec = FrameDecoder::new();
    for chunk in data.chunks(7) {
        dec.push(chunk);
        while let Ok(Some(_)) = dec.next_frame() {}
    }
});
