//! An independent client in Python: a venv with `grpcio`, `grpcio-tools`, `protobuf`,
//! `googleapis-common-protos` and `cryptography` under `target/` (made once, reused), and
//! stubs generated from `proto/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs `command`; panics with its output unless it succeeds.
pub fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What the venv holds: gRPC, its code generator, protobuf, the standard `google.rpc` error
/// protos (to decode `grpc-status-details-bin`) and Ed25519.
const PACKAGES: &[&str] = &[
    "grpcio==1.85.3",
    "grpcio-tools==1.85.1",
    "protobuf==7.36.2",
    "googleapis-common-protos==1.76.0",
    "cryptography",
];

/// The venv's python; `None` (after a loud SKIPPED line) only when python3 is not installed.
/// Blocking: call it from `spawn_blocking` in async tests.
pub fn venv() -> Option<PathBuf> {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("\n==== SKIPPED: python3 is not installed (CI installs it) ====\n");
        return None;
    }
    let dir = workspace().join("target").join("py-venv");
    let python = dir.join("bin").join("python");
    let ready = dir.join(".ready");
    // One test at a time sets the venv up; the others wait for it.
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _setup = SETUP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // `.ready` names what was installed: a venv from an older package list is topped up.
    let wanted = PACKAGES.join(" ");
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(wanted.as_str()) {
        if !python.exists() {
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&dir),
                "python3 -m venv",
            );
        }
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(PACKAGES),
            "pip install",
        );
        std::fs::write(&ready, wanted).unwrap();
    }
    Some(python)
}

/// Python stubs of `protos` (paths under `proto/`) generated into a new directory `name`.
pub fn stubs(python: &Path, name: &str, protos: &[&str]) -> PathBuf {
    let stubs = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stubs);
    std::fs::create_dir_all(&stubs).unwrap();
    let proto = workspace().join("proto");
    let mut command = Command::new(python);
    command
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()));
    for file in protos {
        command.arg(proto.join(file));
    }
    run(&mut command, "grpc_tools.protoc");
    stubs
}

/// The venv's python and stubs of the discovery protos (in a new directory `name`), made on
/// a blocking thread; `None` only when python3 is not installed.
pub async fn discovery_stubs(name: &'static str) -> Option<(PathBuf, PathBuf)> {
    tokio::task::spawn_blocking(move || {
        let python = venv()?;
        let stubs = stubs(
            &python,
            name,
            &[
                "skywire/common/v1/common.proto",
                "skywire/discovery/v1/discovery.proto",
            ],
        );
        Some((python, stubs))
    })
    .await
    .unwrap()
}
