//! `skywire-cli`: see `--help` (the code is `visor::cli`).

fn main() -> std::process::ExitCode {
    visor::cli::main(std::env::args_os())
}
