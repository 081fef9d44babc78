//! What an operator meets with grpcurl: keys are the same hex text in logs, on the command
//! line and in gRPC JSON. A key copied from a server's log line is pasted into a JSON
//! request (protobuf's JSON mapping, what `grpcurl -d` takes) and gets that server's entry;
//! a key in the wrong form gets an error that says what was received and names the field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use localnet::{Fleet, FleetSpec, Role, StartOrder};

/// The first `pk=<64 hex>` of `log` (human log lines: `… pk=ab12… …`).
fn pk_in(log: &str) -> String {
    let at = log.find("pk=").expect("a log line names the key");
    let pk: String = log[at + 3..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(pk.len(), 64, "{log}");
    pk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hex_key_from_a_log_line_gets_the_entry_through_grpc_json() {
    // Stubs from proto/, generated now.
    let Some((python, stubs)) = testkit::python::discovery_stubs("grpcurl-stubs").await else {
        return;
    };
    let mut spec = FleetSpec::new(env!("CARGO_BIN_EXE_skywire-localnet"), 1, 0);
    spec.registration_backoff_cap = Duration::from_secs(2);
    let mut fleet = Fleet::create(&spec).unwrap();
    fleet.start(StartOrder::Dependencies).unwrap();
    fleet.wait_converged(Duration::from_secs(30)).await.unwrap();

    let log = std::fs::read_to_string(fleet.dir().join("server-0.log")).unwrap();
    let listening = log.lines().find(|line| line.contains("listening")).unwrap();
    let pk = pk_in(listening);
    let address = format!(
        "127.0.0.1:{}",
        fleet.member(Role::Discovery).unwrap().admin_port
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/grpcurl_json.py");
    let call = |key: String| {
        let (python, script, stubs, address) = (
            python.clone(),
            script.clone(),
            stubs.clone(),
            address.clone(),
        );
        tokio::task::spawn_blocking(move || {
            testkit::python::run(
                Command::new(python)
                    .arg(script)
                    .arg(address)
                    .arg(stubs)
                    .arg(key),
                "grpcurl_json.py",
            )
        })
    };

    let answer = call(pk.clone()).await.unwrap();
    let entry: serde_json::Value =
        serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{answer}"));
    assert_eq!(
        entry["owner"],
        pk.as_str(),
        "the owner is the same hex text: {answer}"
    );
    assert!(
        entry["server"]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{answer}"
    );

    // The same key as base64 (what grpcurl wanted for `bytes`) is refused, saying why.
    let base64 = "q".repeat(43) + "=";
    let answer = call(base64).await.unwrap();
    assert!(answer.starts_with("ERROR INVALID_ARGUMENT"), "{answer}");
    assert!(
        answer.contains("GetEntryRequest.pk"),
        "names the field: {answer}"
    );
    assert!(
        answer.contains("expected 64 hex characters, got 44 characters"),
        "{answer}"
    );
    let answer = call(String::new()).await.unwrap();
    assert!(
        answer.contains("GetEntryRequest.pk") && answer.contains("empty"),
        "{answer}"
    );
    assert!(
        !answer.contains("malformed entry"),
        "a request is not an entry: {answer}"
    );
    assert!(fleet.shutdown(Duration::from_secs(15)).await.is_empty());
}
