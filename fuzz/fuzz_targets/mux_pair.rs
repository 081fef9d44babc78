//! PROTOCOL.md §6–§8: two muxes driven against each other by fuzzer-chosen commands (open,
//! accept, reject, send, read, stop, reset, release, partial delivery, time, close): no panic,
//! no violation between honest ends, windows never negative or past their bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dmsg_core::mux::fuzzing::pair(data));
