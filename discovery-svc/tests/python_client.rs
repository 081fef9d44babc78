//! An independent client written in Python with `grpcio` puts a signed entry into the
//! running `dmsg-discovery` binary and reads it back. Its stubs are generated from `proto/`
//! at test time and it signs with the bytes specified in PROTOCOL.md §14.1, written in Python
//! — so this also checks the specification against the Rust implementation. It also decodes a
//! refusal's details the standard way (`google.rpc.Status` → `google.rpc.ErrorInfo`, as grpcurl
//! and every gRPC library do) and sends an entry padded with an unknown field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dmsg::discovery::{Discovery as _, DiscoveryClient};
use dmsg::identity::PublicKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_puts_and_reads_a_signed_entry_and_decodes_error_info() {
    // Stubs from proto/, generated now.
    let Some((python, stubs)) = testkit::python::discovery_stubs("py-stubs").await else {
        return;
    };

    let port = common::free_port();
    let _discovery = testkit::ChildProcess::spawn(
        "dmsg-discovery",
        Command::new(env!("CARGO_BIN_EXE_dmsg-discovery"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(port).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(format!("127.0.0.1:{port}"))
            .arg(&stubs)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0], "ERRORINFO stale_sequence dmsg-discovery stored_sequence=1",
        "the stale-sequence refusal decodes as a standard ErrorInfo"
    );
    assert_eq!(lines[1], "PADDED INVALID_ARGUMENT unknown_fields");
    let owner: PublicKey = lines[2].strip_prefix("OK ").unwrap().parse().unwrap();

    // The entry Python signed verifies in Rust: both implement the same bytes.
    let rust = DiscoveryClient::over_tcp(&format!("http://127.0.0.1:{port}")).unwrap();
    let entry = rust
        .entry(&owner)
        .await
        .unwrap()
        .expect("the Python entry is stored");
    assert!(entry.signature_valid());
    assert_eq!(entry.version, "python-0.1");
}

async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("dmsg-discovery did not start listening on {port}");
}
