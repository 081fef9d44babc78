//! PROTOCOL.md §4.1, §4.3: preamble and handshake-payload parsers never panic and accept only
//! the exact documented lengths.
#![no_main]

use dmsg_core::noise::{CT_LEN, Confirm, EK_LEN, parse_answer, parse_offer};
use dmsg_core::wire::{PREAMBLE_LEN, Preamble};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(ek)) = parse_offer(data) {
        assert_eq!(ek.len(), EK_LEN);
    }
    if let Ok(Some(ct)) = parse_answer(data) {
        assert_eq!(ct.len(), CT_LEN);
    }
    let _ = Confirm::decode(data);
    if let Some(bytes) = data.get(..PREAMBLE_LEN) {
        let _ = Preamble::decode(bytes.try_into().unwrap_or(&[0u8; PREAMBLE_LEN]));
    }
});
