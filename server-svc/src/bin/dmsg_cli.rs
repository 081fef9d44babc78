//! `dmsg-cli`: see `--help` (the code is `server_svc::cli`).

fn main() -> std::process::ExitCode {
    server_svc::cli::main(std::env::args_os())
}
