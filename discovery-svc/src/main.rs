//! `dmsg-discovery`: see `--help` (the code is `discovery_svc::binary`).

fn main() -> std::process::ExitCode {
    discovery_svc::binary::main(std::env::args_os())
}
