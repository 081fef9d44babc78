//! Crate-level tests on real loopback TCP that need crate-private access to misbehave:
//! forged requests, forged records, and a fake server that stops answering.

mod codes;
mod util;
