//! visor ROUTING.md §4.1: rule bytes never panic the decoder, and a decoded rule re-encodes
//! to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use visor::router::Rule;

fuzz_target!(|data: &[u8]| {
    if let Ok(rule) = Rule::decode(data) {
        assert_eq!(rule.encode(), data);
    }
});
