//! `transport-setup`: see `--help` (the code is `setup_svc::binary::transport_setup`).

fn main() -> std::process::ExitCode {
    setup_svc::binary::transport_setup::main(std::env::args_os())
}
