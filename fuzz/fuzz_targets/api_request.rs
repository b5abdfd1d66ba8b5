//! The socket's request decoder: any line gets a request or an error that says what a valid
//! one looks like; a request survives a round trip through its own encoding, and its
//! privilege class is defined.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rasp_agent::api::protocol::parse_request;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(request) => {
            let _ = request.changes_state();
            let line = serde_json::to_vec(&request).expect("a request encodes");
            assert_eq!(parse_request(&line).as_ref(), Ok(&request), "round trip");
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
