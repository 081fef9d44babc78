//! PROTOCOL.md §5–§6: frames of fuzzer-chosen type, flags, stream and body, sealed with the
//! session's real key, so they pass authentication and reach frame handling: no panic, an
//! error closes the session, the window accounting holds after every frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dmsg_core::mux::fuzzing::sealed_frames(data));
