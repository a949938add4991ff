//! Counters a test asserts on: session lifecycle and protocol violations by the client.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Stats { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A point-in-time copy of [`Stats`].
        #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
        pub struct StatsSnapshot { $(pub $name: u64,)* }

        impl Stats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    sessions_started,
    sessions_ended,
    /// Ended by the client's in-band TerminateSession flag.
    ended_by_flag,
    /// Ended by the TerminateSession API.
    ended_by_api,
    ended_by_idle_timeout,
    /// The remote side finished: process exited, destination closed, handshake failed.
    ended_by_agent,
    /// Sessions whose handshake set up KMS encryption (the agent decrypted the key).
    kms_sessions,
    /// Encryption challenges the client answered correctly.
    kms_challenges_passed,
    websocket_connections,
    rejected_tokens,
    resumes,
    client_messages,
    /// input_stream_data messages the agent received, duplicates included.
    client_stream_messages,
    /// output_stream_data messages the agent sent, first transmissions only.
    agent_stream_messages,
    agent_retransmissions,
    acks_sent,
    /// input_stream_data the agent had already received (a needless or crossed resend).
    duplicate_client_messages,
    /// Frames the fault layer dropped on purpose, per direction.
    dropped_to_agent,
    dropped_to_client,
    // Violations: a correct client never causes these.
    bad_digest,
    bad_header,
    payload_length_mismatch,
    zero_created_date,
    undecodable_frames,
    text_frame_after_open,
    data_before_handshake_complete,
    unsolicited_handshake_response,
    ack_for_unknown_sequence,
    /// Client Output on a KMS session that did not open with the session's key.
    undecryptable_client_messages,
    /// Agent output still unacknowledged when the session ended.
    unacked_at_end,
}

impl Stats {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl StatsSnapshot {
    pub fn sessions_open(&self) -> u64 {
        self.sessions_started - self.sessions_ended
    }

    /// Sum of every counter that only a misbehaving client can raise.
    pub fn protocol_violations(&self) -> u64 {
        self.bad_digest
            + self.bad_header
            + self.payload_length_mismatch
            + self.zero_created_date
            + self.undecodable_frames
            + self.text_frame_after_open
            + self.data_before_handshake_complete
            + self.unsolicited_handshake_response
            + self.undecryptable_client_messages
            + self.unacked_at_end
    }
}
