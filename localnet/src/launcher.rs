//! The multi-call dispatch: `skywire-localnet member <binary> <args…>` runs `<binary>`'s own
//! `main` (the same function its standalone binary calls), so a fleet needs one executable
//! and one `cargo build`. A member dies with the fleet process that started it, even when that
//! process is killed with SIGKILL.

use std::ffi::OsString;
use std::process::ExitCode;

/// The binaries a member can be.
pub const BINARIES: [&str; 7] = [
    "dmsg-discovery",
    "dmsg-server",
    "dmsg-cli",
    "skywire-visor",
    "skywire-cli",
    "transport-setup",
    "route-setup",
];

/// What `skywire-localnet --help` and `skywire-localnet member --help` say of `member`.
pub const MEMBER_HELP: &str = "\
Members:
  skywire-localnet member <BINARY> [ARGS…]
      BINARY: dmsg-discovery, dmsg-server, dmsg-cli, skywire-visor, skywire-cli,
      transport-setup or route-setup.
      Runs that binary exactly as its standalone program would (same flags, same config file,
      same SKYWIRE_* variables; `member dmsg-server --help` prints its help). This is how the
      fleet starts its processes from one executable.
      A member dies with the thread of the process that started it: it asks the kernel for
      SIGKILL on parent death (PR_SET_PDEATHSIG), so a fleet killed with SIGKILL leaves no
      member behind, and a member started by a fleet that is already gone exits at once
      (exit code 1). The standalone binaries never do this.";

/// Set by [`crate::Member`] to the pid of the process that started the member.
pub const PARENT_PID_ENV: &str = "SKYWIRE_LOCALNET_PARENT_PID";

/// Runs member `args` (`<binary> <args…>`); `None` if the binary is unknown.
pub fn run_member(args: Vec<OsString>) -> Option<ExitCode> {
    let binary = args.first()?.to_str()?.to_owned();
    if !BINARIES.contains(&binary.as_str()) {
        return None;
    }
    if let Err(error) = die_with_parent() {
        eprintln!("skywire-localnet member: {error}");
        return Some(ExitCode::FAILURE);
    }
    Some(match binary.as_str() {
        "dmsg-discovery" => discovery_svc::binary::main(args),
        "dmsg-server" => server_svc::binary::main(args),
        "dmsg-cli" => server_svc::cli::main(args),
        "skywire-visor" => visor::binary::main(args),
        "skywire-cli" => visor::cli::main(args),
        "transport-setup" => setup_svc::binary::transport_setup::main(args),
        "route-setup" => setup_svc::binary::route_setup::main(args),
        _ => return None,
    })
}

/// Makes the kernel kill this member when the thread that started it exits — also when that
/// process is killed with SIGKILL and no `Drop` runs — so no member outlives its fleet.
/// Fails if the parent is already gone.
fn die_with_parent() -> Result<(), String> {
    use nix::sys::signal::Signal;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|errno| format!("cannot set the parent-death signal: {errno}"))?;
    // The parent may have died before the line above: then this process was re-parented.
    let expected = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|pid| pid.parse::<i32>().ok());
    match expected {
        Some(pid) if nix::unistd::getppid().as_raw() != pid => Err(format!(
            "the fleet that started this member (pid {pid}) is gone"
        )),
        _ => Ok(()),
    }
}

/// Runs `skywire-cli ARGS…` as a member of `launcher` and waits for it: whether it
/// succeeded, and its stdout followed by its stderr (what the tests and the operator see).
pub fn run_skywire_cli(
    launcher: &std::path::Path,
    args: &[&str],
) -> std::io::Result<(bool, String)> {
    let output = std::process::Command::new(launcher)
        .args(["member", "skywire-cli"])
        .args(args)
        .output()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}
