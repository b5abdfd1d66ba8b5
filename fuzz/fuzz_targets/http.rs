//! `detect::http::parse`: an HTTP/1.x stream fed in arbitrary chunks, both directions,
//! with gaps (lost plaintext, of known or unknown length). The first byte of the input
//! chooses the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rasp_agent::detect::http::parse::{Direction, HttpLimits, HttpStream};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let limits = HttpLimits {
        head_cap: 512,
        body_capture: 256,
        max_params: 8,
        max_value_len: 64,
        max_pending: 4,
    };
    for limits in [HttpLimits::default(), limits] {
        let mut stream = HttpStream::new(limits);
        let mut out = Vec::new();
        let step = usize::from(seed % 31) + 1;
        for (i, chunk) in rest.chunks(step).enumerate() {
            let dir = if (seed >> 5) & 1 == 1 && i % 3 == 2 {
                Direction::Outbound
            } else {
                Direction::Inbound
            };
            if seed & 0x80 != 0 && i % 7 == 6 {
                // Every other gap of unknown length (an over-budget run the kernel did not
                // count).
                let missing = (i % 14 == 6).then_some(chunk.len() * 3);
                stream.gap(dir, missing, &mut out);
            } else {
                stream.feed(dir, chunk, &mut out);
            }
        }
        for m in &out {
            let _ = serde_json::to_string(m);
        }
        let _ = stream.stats();
    }
});
