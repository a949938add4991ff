//! Entry points for the fuzz targets in fuzz/ (cargo-fuzz, built with the `fuzzing`
//! feature). Each runs on bytes a fuzzer chooses the same check a property test in the
//! crate runs on generated input, and panics when a promise is broken, which is how a
//! fuzzer learns of it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::session::channel_core::harness::{check_events, Event};

/// Any sequence of agent frames, acks, sends, timeouts, pauses and resumes (two bytes
/// each) against the channel core.
pub fn channel_core(data: &[u8]) {
    let events: Vec<Event> = data
        .chunks_exact(2)
        .map(|p| Event::from_bytes(p[0], p[1]))
        .collect();
    if let Err(broken) = check_events(&events) {
        panic!("{broken}");
    }
}

/// Any bytes as a download's bundle, through the bundle reader into the download stage;
/// the first byte chooses one source or two.
pub fn bundle_into_download_stage(data: &[u8]) {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    if let Err(broken) = crate::copy::local_dest::harness::check_bundle(wire, first & 1 == 1) {
        panic!("{broken}");
    }
}

/// Any bytes as the pty transport's file listing.
pub fn pty_listing(data: &[u8]) {
    if let Err(broken) = crate::copy::transport::pty::check_listing_bytes(data) {
        panic!("{broken}");
    }
}
