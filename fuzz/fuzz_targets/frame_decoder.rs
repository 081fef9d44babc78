//! PROTOCOL.md §5: the frame-header check never panics, never accepts a body beyond its
//! type's maximum, and the mux treats arbitrary input as a violation, never a crash.
#![no_main]

use dmsg_core::wire::{HEADER_LEN, MAX_DATA_BODY, TAG_LEN, check_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(header)) = check_frame(data) {
        assert!(header.body_len <= MAX_DATA_BODY);
        assert_eq!(header.frame_len(), HEADER_LEN + header.body_len + TAG_LEN);
        assert!(header.frame_len() <= data.len());
    }
    let mut mux = dmsg_core::mux::fuzzing::session(dmsg_core::mux::Role::Responder);
    let mut input = bytes::BytesMut::from(data);
    if mux.handle_input(tokio::time::Instant::now(), &mut input).is_err() {
        assert!(mux.is_closed());
    }
});
