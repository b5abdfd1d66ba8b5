//! Kernel record decoding: garbage, truncated and oversized records decode to an event or
//! a `DecodeError`, never a panic or an allocation sized by a field the record claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rasp_agent::events::decode::{decode, BootClock};

fuzz_target!(|data: &[u8]| {
    let clock = BootClock::now();
    let _ = decode(data, clock);
    // Every truncation of a record is a record the ring could hand over after a bad reserve.
    for cut in [data.len() / 2, data.len().saturating_sub(1), 24, 64] {
        if cut < data.len() {
            let _ = decode(&data[..cut], clock);
        }
    }
    // And oversized: the same record with trailing bytes.
    let mut long = data.to_vec();
    long.extend_from_slice(&[0xa5; 300]);
    let _ = decode(&long, clock);
});
