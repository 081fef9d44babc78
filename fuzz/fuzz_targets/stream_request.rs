//! PROTOCOL.md §7: stream request, accept and reason bodies never panic; an accepted request
//! re-encodes to the same bytes and its handshake message is within the maximum.
#![no_main]

use dmsg_core::wire::{AcceptBody, MAX_HANDSHAKE_MESSAGE, ReasonBody, StreamRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = StreamRequest::decode(data) {
        assert!(request.noise.len() <= MAX_HANDSHAKE_MESSAGE);
        assert_eq!(request.encode().as_ref(), data);
    }
    if let Ok(accept) = AcceptBody::decode(data) {
        assert!(accept.noise.len() <= MAX_HANDSHAKE_MESSAGE);
    }
    let _ = ReasonBody::decode(data);
});
