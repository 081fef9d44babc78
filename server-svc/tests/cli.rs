//! `dmsg-cli` as a user runs it: two clients homed on different `dmsg-server` processes move
//! bytes through a stream (stdin → dial → listen → stdout); keygen, servers, entry and ping
//! against the same fleet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{DiscoveryHandle, Scratch, ServerProcess};
use testkit::ChildProcess;

fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dmsg-cli"));
    command.env("RUST_BACKTRACE", "0");
    command
}

/// What a finished `dmsg-cli` run printed.
struct Output {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `dmsg-cli args…` (stdin from `input`, if any) to the end; a run longer than 60 s
/// fails the test rather than hanging it.
async fn run_with(scratch: &Scratch, args: &[String], input: Option<&std::path::Path>) -> Output {
    let n: u32 = rand::random();
    let out = scratch.path().join(format!("cli-{n}.out"));
    let err = scratch.path().join(format!("cli-{n}.err"));
    let mut command = cli();
    command
        .args(args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    if let Some(input) = input {
        command.stdin(std::fs::File::open(input).unwrap());
    }
    let mut child = ChildProcess::spawn(&format!("dmsg-cli {}", args.join(" ")), &mut command);
    let status = child.wait_exit(Duration::from_secs(60)).await;
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

async fn run(scratch: &Scratch, args: Vec<String>) -> Output {
    run_with(scratch, &args, None).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `dmsg-cli keygen --out key_file`; returns the path as an argument and the printed key.
async fn keygen(scratch: &Scratch, key_file: &std::path::Path) -> (String, String) {
    let key_arg = key_file.display().to_string();
    let made = run(
        scratch,
        vec!["keygen".into(), "--out".into(), key_arg.clone()],
    )
    .await;
    assert!(made.status.success(), "{}", text(&made.stderr));
    (key_arg, text(&made.stdout).trim().to_owned())
}

/// Discovery and two `dmsg-server` processes ("a", "b") registered with it.
async fn discovery_and_two_servers(
    scratch: &Scratch,
) -> (DiscoveryHandle, ServerProcess, ServerProcess) {
    let discovery = DiscoveryHandle::start().await;
    let url = discovery.url();
    let a = ServerProcess::start(scratch, "a", &["--discovery", &url]);
    let b = ServerProcess::start(scratch, "b", &["--discovery", &url]);
    for server in [&a, &b] {
        discovery
            .wait_entry(&server.pk, Duration::from_secs(15), |e| e.server.is_some())
            .await;
    }
    (discovery, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_different_servers_move_bytes_with_dmsg_cli() {
    let scratch = Scratch::new("cli");
    let (discovery, a, b) = discovery_and_two_servers(&scratch).await;
    let url = discovery.url();

    // keygen: prints the key, writes 0600, never overwrites.
    let key_file = scratch.path().join("listener.key");
    let (key_arg, listener_pk) = keygen(&scratch, &key_file).await;
    assert_eq!(listener_pk.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = run(
        &scratch,
        vec!["keygen".into(), "--out".into(), key_arg.clone()],
    )
    .await;
    assert!(!again.status.success(), "keygen refuses to overwrite a key");

    // servers: both registered servers, with their free sessions.
    let listed = run(
        &scratch,
        vec!["--discovery".into(), url.clone(), "servers".into()],
    )
    .await;
    let listing = text(&listed.stdout);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    for server in [&a, &b] {
        assert!(listing.contains(&server.pk.to_string()), "{listing}");
        assert!(listing.contains(&server.relay.to_string()), "{listing}");
    }

    // The listener, homed on A, writes what it receives to a file.
    let received = scratch.path().join("received");
    let listener_log = scratch.path().join("listener.log");
    let mut listener = ChildProcess::spawn(
        "dmsg-cli listen",
        cli()
            .args([
                "--key-file",
                &key_arg,
                "--discovery",
                &url,
                "--servers",
                &a.seed().to_string(),
                "--prefer-seeds",
                "listen",
                "7000",
                "--once",
            ])
            .stdout(std::fs::File::create(&received).unwrap())
            .stderr(std::fs::File::create(&listener_log).unwrap()),
    );
    common::eventually(
        "the listener announces itself",
        Duration::from_secs(20),
        || std::fs::read_to_string(&listener_log).is_ok_and(|log| log.contains("listening on")),
    )
    .await;

    // entry: the listener's entry names A.
    let entry = run(
        &scratch,
        vec![
            "--discovery".into(),
            url.clone(),
            "entry".into(),
            listener_pk.clone(),
        ],
    )
    .await;
    let printed = text(&entry.stdout);
    assert!(entry.status.success(), "{}", text(&entry.stderr));
    assert!(printed.contains("kind:        client"), "{printed}");
    assert!(printed.contains(&a.pk.to_string()), "{printed}");

    // ping: the listener answers on its ping port, through the relay.
    let pinged = run(
        &scratch,
        vec![
            "--discovery".into(),
            url.clone(),
            "ping".into(),
            listener_pk.clone(),
            "--count".into(),
            "2".into(),
        ],
    )
    .await;
    let pongs = text(&pinged.stdout);
    assert!(pinged.status.success(), "{}", text(&pinged.stderr));
    assert_eq!(pongs.matches("pong from").count(), 2, "{pongs}");

    // dial: the dialer, homed on B, sends 2 MiB of stdin to the listener.
    let payload: Vec<u8> = (0..2 * 1024 * 1024).map(|_| rand::random::<u8>()).collect();
    let payload_file = scratch.path().join("payload");
    std::fs::write(&payload_file, &payload).unwrap();
    let dialer_args = vec![
        "--discovery".to_owned(),
        url.clone(),
        "--servers".into(),
        b.seed().to_string(),
        "--prefer-seeds".into(),
        "dial".into(),
        format!("dmsg://{listener_pk}:7000"),
    ];
    let dialed = run_with(&scratch, &dialer_args, Some(&payload_file)).await;
    assert!(dialed.status.success(), "dialer: {}", text(&dialed.stderr));
    let exit = listener.wait_exit(Duration::from_secs(20)).await;
    assert!(exit.success(), "the listener exits after its one stream");
    let got = std::fs::read(&received).unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "the bytes arrive intact");

    // The dialer was homed on B and reached the listener through A.
    let stats_a = a.stats().await;
    let stats_b = b.stats().await;
    assert!(stats_a.bytes_relayed >= payload.len() as u64, "{stats_a:?}");
    assert!(
        stats_b.sessions_total >= 1,
        "the dialer's home session: {stats_b:?}"
    );
    discovery.stop().await;
}

/// One-shot commands never race their own background lifecycle (issue: 17 of 50 dials and
/// 3 of 5 pings failed with "replaced by a newer session"): 50 `dial` runs and 50 `ping`
/// runs in a row against a live fleet all succeed, each dialer choosing its home server
/// from discovery like a user's would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_one_shot_dials_and_fifty_pings_in_a_row_all_succeed() {
    let scratch = Scratch::new("cli-repeat");
    let (discovery, _a, _b) = discovery_and_two_servers(&scratch).await;
    let url = discovery.url();
    let (key_arg, listener_pk) = keygen(&scratch, &scratch.path().join("echo.key")).await;
    let listener_log = scratch.path().join("echo.log");
    let _listener = ChildProcess::spawn(
        "dmsg-cli listen --echo",
        cli()
            .args([
                "--key-file",
                &key_arg,
                "--discovery",
                &url,
                "listen",
                "7000",
                "--echo",
            ])
            .stderr(std::fs::File::create(&listener_log).unwrap()),
    );
    common::eventually(
        "the listener announces itself",
        Duration::from_secs(20),
        || std::fs::read_to_string(&listener_log).is_ok_and(|log| log.contains("listening on")),
    )
    .await;

    for run_number in 0..50 {
        let payload = format!("run {run_number}: {}\n", "x".repeat(run_number * 37));
        let payload_file = scratch.path().join(format!("payload-{run_number}"));
        std::fs::write(&payload_file, &payload).unwrap();
        let args = vec![
            "--discovery".to_owned(),
            url.clone(),
            "dial".into(),
            format!("dmsg://{listener_pk}:7000"),
        ];
        let dialed = run_with(&scratch, &args, Some(&payload_file)).await;
        assert!(
            dialed.status.success(),
            "dial run {run_number}: {}",
            text(&dialed.stderr)
        );
        assert_eq!(text(&dialed.stdout), payload, "dial run {run_number}");
    }
    for run_number in 0..50 {
        let pinged = run(
            &scratch,
            vec![
                "--discovery".into(),
                url.clone(),
                "ping".into(),
                listener_pk.clone(),
                "--count".into(),
                "1".into(),
            ],
        )
        .await;
        assert!(
            pinged.status.success(),
            "ping run {run_number}: {}",
            text(&pinged.stderr)
        );
        assert_eq!(text(&pinged.stdout).matches("pong from").count(), 1);
    }
    discovery.stop().await;
}

#[test]
fn help_lists_every_command() {
    testkit::process::assert_help_mentions(
        env!("CARGO_BIN_EXE_dmsg-cli"),
        &[
            "keygen",
            "listen",
            "dial",
            "ping",
            "entry",
            "servers",
            "--discovery",
        ],
    );
}
