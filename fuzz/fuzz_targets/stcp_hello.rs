//! visor ROUTING.md §2.2: the stcp hello never panics its parser, never declares more than
//! the maximum handshake message, and a parsed hello re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use visor::packet::MAX_HANDSHAKE_MESSAGE;
use visor::transport::handshake::{HELLO_LEN, Hello};

fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = <[u8; HELLO_LEN]>::try_from(data.get(..HELLO_LEN).unwrap_or_default()) {
        if let Ok(hello) = Hello::decode(&bytes) {
            assert!(hello.message_len <= MAX_HANDSHAKE_MESSAGE);
            assert_eq!(hello.encode(), bytes);
        }
    }
});
