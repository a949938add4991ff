//! Any bytes as a download's bundle, through the bundle reader into the download stage
//! (src/copy/local_dest.rs) in a scratch directory: nothing may appear outside the
//! destination, whatever the instance sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ssmcp::fuzzing::bundle_into_download_stage(data));
