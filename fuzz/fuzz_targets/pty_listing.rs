//! Any bytes as the pty transport's file listing (what `find` printed on the instance):
//! parsed or refused, never a panic, never anything but listing records.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ssmcp::fuzzing::pty_listing(data));
