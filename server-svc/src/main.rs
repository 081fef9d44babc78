//! `dmsg-server`: see `--help` (the code is `server_svc::binary`).

fn main() -> std::process::ExitCode {
    server_svc::binary::main(std::env::args_os())
}
