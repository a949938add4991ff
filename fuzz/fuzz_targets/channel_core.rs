//! Any sequence of agent frames, acks, sends, timeouts, pauses and resumes against
//! the reliable channel's I/O-free core (src/session/channel_core.rs): what it hands up
//! stays the agent's stream in order, and it never resends what was acknowledged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ssmcp::fuzzing::channel_core(data));
