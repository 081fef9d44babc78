//! `skywire-visor`: see `--help` (the code is `visor::binary`).

fn main() -> std::process::ExitCode {
    visor::binary::main(std::env::args_os())
}
