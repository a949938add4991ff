//! The cipher layer against vectors computed by scripts/kms_vectors.py with Python's
//! `cryptography` (OpenSSL): a mistake shared by ssmcp and the simulator, both built
//! on this crate (which half of the key seals which way, the nonce's place, the tag),
//! fails here. scripts/test re-runs the script with --check, so the file cannot drift.

use ssm_proto::kms::{SessionKeys, Side};

#[derive(serde::Deserialize)]
struct Case {
    data_key: String,
    sender: String,
    nonce: String,
    plaintext: String,
    sealed: String,
}

#[derive(serde::Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[test]
fn sealing_and_opening_match_an_independent_implementation() {
    let text = include_str!("data/kms-vectors.json");
    let v: Vectors = serde_json::from_str(text).unwrap();
    assert_eq!(v.cases.len(), 16);
    for c in &v.cases {
        let key = hex::decode(&c.data_key).unwrap();
        let (sender, receiver) = match c.sender.as_str() {
            "agent" => (Side::Agent, Side::Client),
            _ => (Side::Client, Side::Agent),
        };
        let nonce: [u8; 12] = hex::decode(&c.nonce).unwrap().try_into().unwrap();
        let plain = hex::decode(&c.plaintext).unwrap();
        let sealed = hex::decode(&c.sealed).unwrap();
        let s = SessionKeys::new(&key, sender).unwrap();
        assert_eq!(
            s.seal(nonce, &plain),
            sealed,
            "{} sealing {}",
            c.sender,
            c.plaintext
        );
        let r = SessionKeys::new(&key, receiver).unwrap();
        assert_eq!(r.open(&sealed).unwrap(), plain, "{} opening", c.sender);
    }
}
