//! `skywire-localnet`: a whole dmsg network on this machine (see `--help`).
//!
//! `skywire-localnet member <binary> <args…>` is how the fleet starts its members (the same
//! code as the standalone binaries); everything else is the demo.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use dmsg::addr::{DmsgAddr, Port};
use dmsg::client::{Client, ClientConfig, DiscoveryTarget, LifecycleConfig};
use dmsg::identity::Keypair;
use localnet::{ECHO_PORT, Fleet, FleetSpec, Role, StartOrder};
use skywire_proto::skywire::server::v1::registration::State;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Starts a whole Skywire network on loopback — dmsg-discovery, dmsg-servers, client agents,
/// transport-setup, route-setup and three visors (A runs skysocks-client, C the skysocks
/// exit; A–B is stcp, B–C dmsg), each a real process — shows a live status table, sends an
/// HTTP request through the SOCKS5 proxy over the 2-hop route A–B–C to a small HTTP server
/// it runs on loopback, runs a relayed transfer, and stops everything cleanly on Ctrl-C.
///
/// While it runs, point curl (`curl --socks5-hostname 127.0.0.1:1080 http://…`) or a
/// browser's SOCKS5 setting at the proxy: the connections leave from visor C.
///
/// Nothing needs to be installed or running: discovery keeps entries in memory unless --redis
/// is given. Keys, configs and logs go to a scratch directory (kept with --keep-dir).
#[derive(Debug, Parser)]
#[command(name = "skywire-localnet", version, about, long_about, after_help = localnet::launcher::MEMBER_HELP)]
struct Args {
    /// dmsg-servers to start (1 to 500).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=500))]
    servers: u16,
    /// Client agents to start (0 to 5000; each is a process of about 12 MiB).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(0..=5000))]
    clients: u16,
    /// Discovery stores entries in this Redis (redis://HOST:PORT) instead of memory.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Servers reach discovery only through dmsg (through each other), never over TCP.
    #[arg(long)]
    dmsg_only: bool,
    /// MiB sent (and echoed back) by the demo transfer (1 to 1048576).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    transfer_mib: u64,
    /// Start everything at once, measure the time until every server is registered and every
    /// client reachable, print `cold_start_converge_s=…` and each process's peak CPU share,
    /// CPU time and peak memory, and stop.
    #[arg(long)]
    cold_start_report: bool,
    /// Keep the scratch directory (keys, configs, logs) after exit.
    #[arg(long)]
    keep_dir: bool,
    /// Where visor A's SOCKS5 proxy listens (127.0.0.1).
    #[arg(long, default_value_t = 1080)]
    socks_port: u16,
    /// Start only the dmsg network (no setup services, visors or proxy).
    #[arg(long)]
    no_visors: bool,
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "member") {
        let member_args = args.split_off(2);
        if member_args
            .first()
            .is_some_and(|first| first == "--help" || first == "-h")
        {
            println!("{}", localnet::launcher::MEMBER_HELP);
            return ExitCode::SUCCESS;
        }
        return match localnet::launcher::run_member(member_args) {
            Some(code) => code,
            None => {
                service::process::print_fatal(
                    "skywire-localnet member",
                    &format!(
                        "expected one of {:?} (see skywire-localnet member --help)",
                        localnet::launcher::BINARIES
                    ),
                );
                ExitCode::from(2)
            }
        };
    }
    let args = Args::parse_from(args);
    service::process::block_on_main("skywire-localnet", run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    // From here on Ctrl-C (or SIGTERM) stops the fleet in order instead of killing only this
    // process — members run in their own process groups and never see the terminal's Ctrl-C.
    let signal = service::process::shutdown_signal();
    let launcher = std::env::current_exe().context("cannot find this executable")?;
    let dir = args
        .keep_dir
        .then(|| std::env::temp_dir().join(format!("skywire-localnet-{}", std::process::id())));
    let mut spec = FleetSpec::new(
        launcher,
        usize::from(args.servers),
        usize::from(args.clients),
    );
    spec.redis = args.redis.clone();
    spec.dmsg_only = args.dmsg_only;
    spec.log_filter = Some("info,h2=warn,tower=warn".into());
    spec.registration_backoff_cap = Duration::from_secs(5);
    spec.dir = dir;
    let visors = !args.no_visors && !args.cold_start_report;
    if visors {
        spec.visors = 3;
        spec.setup_services = true;
    }
    let mut fleet = Fleet::create(&spec)?;
    if visors {
        add_proxy(&mut fleet, args.socks_port)?;
    }
    eprintln!(
        "starting discovery, {} servers, {} clients{} (logs in {})",
        args.servers,
        args.clients,
        if visors {
            ", transport-setup, route-setup and 3 visors"
        } else {
            ""
        },
        fleet.dir().display()
    );
    let stop = CancellationToken::new();
    let result = {
        let session = start_and_show(&mut fleet, &args, &stop);
        tokio::pin!(session);
        tokio::select! {
            result = &mut session => result,
            () = signal => {
                eprintln!("stopping every process…");
                stop.cancel();
                session.await
            }
        }
    };
    // Clients, then servers, then discovery; a second Ctrl-C kills what is left at once.
    let stopped = tokio::select! {
        problems = fleet.shutdown(Duration::from_secs(15)) => Some(problems),
        () = service::process::shutdown_signal() => None,
    };
    match stopped {
        Some(problems) => {
            for (role, problem) in &problems {
                eprintln!("{role}: {problem}");
            }
        }
        None => {
            eprintln!("second signal: killing every process");
            fleet.kill_all();
        }
    }
    if args.keep_dir {
        eprintln!("kept {}", fleet.dir().display());
    }
    eprintln!("every process stopped");
    result
}

/// Visor A keeps an stcp transport to B and runs skysocks-client through C; B keeps a dmsg
/// transport to C; C runs skysocks: A's proxy reaches C over the 2-hop route A–B–C.
fn add_proxy(fleet: &mut Fleet, socks_port: u16) -> anyhow::Result<()> {
    let [a, b, c] = [0, 1, 2].map(Role::Visor);
    let pk = |fleet: &Fleet, role| fleet.member(role).map(|m| m.pk.to_string());
    let (b_pk, c_pk) = (pk(fleet, b)?, pk(fleet, c)?);
    fleet.member_mut(a)?.add_args([
        "--transport".to_owned(),
        format!("stcp:{b_pk}"),
        "--skysocks-client".to_owned(),
        c_pk.clone(),
        "--socks-listen".to_owned(),
        format!("127.0.0.1:{socks_port}"),
    ]);
    fleet
        .member_mut(b)?
        .add_args(["--transport".to_owned(), format!("dmsg:{c_pk}")]);
    fleet.member_mut(c)?.add_args(["--skysocks"]);
    Ok(())
}

/// Starts the fleet, waits for convergence, then reports (`--cold-start-report`) or runs the
/// demo until interrupted.
async fn start_and_show(
    fleet: &mut Fleet,
    args: &Args,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    fleet.start(StartOrder::Together)?;
    let spawned = started.elapsed();
    let sampler = args
        .cold_start_report
        .then(|| localnet::usage::Sampler::start(pids(fleet), Duration::from_millis(250)));
    let converged = tokio::select! {
        converged = fleet.wait_converged(Duration::from_secs(120)) => converged,
        () = stop.cancelled() => {
            if let Some(sampler) = sampler {
                sampler.stop().await;
            }
            return Ok(());
        }
    };
    let converged = match converged {
        Ok(converged) => converged,
        Err(error) => {
            if let Some(sampler) = sampler {
                sampler.stop().await;
            }
            return Err(anyhow::Error::new(error).context("the fleet did not converge"));
        }
    };
    match sampler {
        Some(sampler) => {
            let converged = started.elapsed();
            // Let the fleet settle (registrations, first refreshes) before the last sample.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                () = stop.cancelled() => {}
            }
            report(fleet, spawned, converged, sampler.stop().await);
            Ok(())
        }
        None => {
            eprintln!("converged in {:.2} s", converged.as_secs_f64());
            demo(fleet, args, stop).await
        }
    }
}

/// Every running member's pid.
fn pids(fleet: &Fleet) -> Vec<(String, u32)> {
    fleet
        .roles()
        .into_iter()
        .filter_map(|role| {
            let pid = fleet.member(role).ok()?.pid()?;
            Some((role.to_string(), pid))
        })
        .collect()
}

/// `--cold-start-report`: convergence time, then peak CPU and memory per process.
fn report(
    fleet: &Fleet,
    spawned: Duration,
    converged: Duration,
    peaks: Vec<localnet::usage::Peak>,
) {
    for peak in &peaks {
        println!(
            "process {}: peak_cpu_pct={:.0} cpu_s={:.3} peak_rss_mib={:.1}",
            peak.name,
            peak.cpu_percent,
            peak.usage.cpu.as_secs_f64(),
            peak.usage.peak_rss_kib as f64 / 1024.0
        );
    }
    let max = |f: fn(&localnet::usage::Peak) -> f64| peaks.iter().map(f).fold(0.0, f64::max);
    let by_kind = |prefix: &str, f: fn(&localnet::usage::Peak) -> f64| {
        peaks
            .iter()
            .filter(|p| p.name.starts_with(prefix))
            .map(f)
            .fold(0.0, f64::max)
    };
    let cpu = |p: &localnet::usage::Peak| p.cpu_percent;
    let rss = |p: &localnet::usage::Peak| p.usage.peak_rss_kib as f64 / 1024.0;
    println!("processes={}", fleet.roles().len());
    println!("max_peak_cpu_pct={:.0}", max(cpu));
    println!("max_peak_rss_mib={:.1}", max(rss));
    for kind in ["discovery", "server", "client"] {
        println!("{kind}_peak_cpu_pct={:.0}", by_kind(kind, cpu));
        println!("{kind}_peak_rss_mib={:.1}", by_kind(kind, rss));
    }
    // The baseline: what spawning alone took, inside the convergence time.
    println!("spawn_s={:.3}", spawned.as_secs_f64());
    println!(
        "converge_over_spawn={:.1}",
        converged.as_secs_f64() / spawned.as_secs_f64().max(1e-3)
    );
    println!("cold_start_converge_s={:.3}", converged.as_secs_f64());
}

/// The live table and the relayed transfer, until `stop`. Returns the transfer's error, if
/// it failed.
async fn demo(fleet: &mut Fleet, args: &Args, stop: &CancellationToken) -> anyhow::Result<()> {
    let progress = Arc::new(Transfer::default());
    let socks = Arc::new(std::sync::Mutex::new(SocksState::default()));
    // First the HTTP request through the proxy (when there are visors), then the transfer.
    let (proxied_tx, proxied) = tokio::sync::oneshot::channel::<()>();
    let proxy = if fleet.visors().is_empty() {
        let _ = proxied_tx.send(());
        None
    } else {
        let http = localnet::http::serve_text(b"hello from the far side of skywire\n")
            .await
            .context("starting the demo's HTTP server")?;
        let proxy_addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.socks_port));
        if let Ok(mut state) = socks.lock() {
            state.proxy = Some(proxy_addr);
            state.url = format!("http://localhost:{}/", http.port());
        }
        Some(tokio::spawn(proxied_request(
            proxy_addr,
            http,
            socks.clone(),
            stop.clone(),
            proxied_tx,
        )))
    };
    let target = fleet.clients().first().copied();
    let mut transfer = match target {
        Some(role) => {
            let dst = DmsgAddr::new(fleet.member(role)?.pk, echo_port());
            let discovery = fleet.discovery_url().to_owned();
            let bytes = args.transfer_mib * 1024 * 1024;
            let (progress, stop) = (progress.clone(), stop.clone());
            Some(tokio::spawn(async move {
                let _ = proxied.await;
                relayed_transfer(discovery, dst, bytes, progress, stop).await
            }))
        }
        None => None,
    };
    let mut transfer_result = None;
    let interactive = std::io::stdout().is_terminal();
    // A terminal gets the table redrawn in place every second; a pipe every 5 s, and at once
    // when the transfer ends.
    let wait = if interactive {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    loop {
        let table = tokio::select! {
            table = status_table(fleet, &progress, target, &socks) => table,
            () = stop.cancelled() => break,
        };
        let mut out = std::io::stdout().lock();
        if interactive {
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = writeln!(out, "{table}");
        let _ = writeln!(out, "Ctrl-C stops every process.");
        let _ = out.flush();
        drop(out);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
            joined = async {
                match &mut transfer {
                    Some(handle) => handle.await,
                    None => std::future::pending().await,
                }
            } => {
                transfer = None;
                let result = joined
                    .map_err(|error| anyhow::anyhow!("the transfer task failed: {error}"))
                    .and_then(|result| result);
                if let Err(error) = &result {
                    eprintln!("transfer failed: {error:#}");
                }
                transfer_result = Some(result);
            }
        }
    }
    // Stopped before the transfer ended: it sees `stop`, closes its client and returns.
    if let Some(handle) = transfer {
        let _ = handle.await;
    }
    if let Some(handle) = proxy {
        let _ = handle.await;
    }
    transfer_result.unwrap_or(Ok(()))
}

fn echo_port() -> Port {
    Port::new(ECHO_PORT).unwrap_or(dmsg::client::control::PING_PORT)
}

/// Progress of the demo transfer.
#[derive(Debug, Default)]
struct Transfer {
    total: AtomicU64,
    echoed: AtomicU64,
    elapsed_ms: AtomicU64,
    via: std::sync::Mutex<String>,
}

/// Sends `bytes` to the echo agent at `dst` from a fresh in-process client and reads them
/// back, updating `progress`.
async fn relayed_transfer(
    discovery: String,
    dst: DmsgAddr,
    bytes: u64,
    progress: Arc<Transfer>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let client = Client::new(
        Keypair::generate(),
        ClientConfig {
            lifecycle: LifecycleConfig {
                discovery: DiscoveryTarget::Tcp(discovery),
                include_default_seeds: false,
                publish_entry: false,
                ..LifecycleConfig::default()
            },
            ..ClientConfig::default()
        },
    );
    let result = async {
        let stream = client.dial(dst).await?;
        if let Ok(mut via) = progress.via.lock() {
            *via = stream.session().remote().to_string();
        }
        progress.total.store(bytes, Ordering::Relaxed);
        let started = Instant::now();
        let (mut read, mut write) = tokio::io::split(stream);
        let upload = async {
            let chunk = vec![0x5au8; 64 * 1024];
            let mut sent = 0u64;
            while sent < bytes {
                let n = usize::try_from((bytes - sent).min(chunk.len() as u64)).unwrap_or(0);
                write.write_all(&chunk[..n]).await?;
                sent += n as u64;
            }
            write.shutdown().await
        };
        let download = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = read.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                progress.echoed.fetch_add(n as u64, Ordering::Relaxed);
                progress.elapsed_ms.store(
                    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
        };
        let (up, down) = tokio::join!(upload, download);
        up.context("sending")?;
        down.context("receiving the echo")?;
        let echoed = progress.echoed.load(Ordering::Relaxed);
        if echoed != bytes {
            bail!("{echoed} of {bytes} bytes came back");
        }
        Ok(())
    };
    let result = tokio::select! {
        result = result => result,
        // Interrupted: not a failure.
        () = stop.cancelled() => Ok(()),
    };
    client.close().await;
    result
}

/// The table row of a member whose admin API did not answer.
fn not_answering(out: &mut String, role: Role, pk: &str) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{:<10} {:<13} (not answering)",
        role.to_string(),
        short(pk)
    );
}

/// A member's public key as text (empty if there is no such member).
fn pk_of(fleet: &Fleet, role: Role) -> String {
    fleet
        .member(role)
        .map(|m| m.pk.to_string())
        .unwrap_or_default()
}

fn short(pk: &str) -> String {
    pk.chars().take(12).collect()
}

/// The status table: servers, clients, visors, the proxied request, the transfer.
async fn status_table(
    fleet: &mut Fleet,
    transfer: &Transfer,
    target: Option<Role>,
    socks: &std::sync::Mutex<SocksState>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "skywire-localnet — discovery {}",
        fleet.discovery_url()
    );
    let _ = writeln!(
        out,
        "\n{:<10} {:<13} {:>8} {:>8} {:>14} {:<12}",
        "SERVER", "PK", "SESSIONS", "STREAMS", "RELAYED", "REGISTRATION"
    );
    for role in fleet.servers() {
        let pk = pk_of(fleet, role);
        match fleet.server_stats(role).await {
            Ok(stats) => {
                let state = match stats.registration.as_ref().map(|r| r.state()) {
                    Some(State::Registered) => "registered",
                    Some(State::Pending) => "pending",
                    Some(State::Deregistered) => "deregistered",
                    _ => "disabled",
                };
                let _ = writeln!(
                    out,
                    "{:<10} {:<13} {:>8} {:>8} {:>14} {:<12}",
                    role.to_string(),
                    short(&pk),
                    stats.sessions,
                    stats.streams,
                    human_bytes(stats.bytes_relayed),
                    state
                );
            }
            Err(_) => not_answering(&mut out, role, &pk),
        }
    }
    let _ = writeln!(out, "\n{:<10} {:<13} {:<40}", "CLIENT", "PK", "SERVERS");
    for role in fleet.clients() {
        let pk = pk_of(fleet, role);
        let servers = match fleet.client_status(role).await {
            Ok(status) => status
                .connected_servers
                .iter()
                .filter_map(|pk| {
                    dmsg::entry::pk_from_proto(pk, "StatusResponse.connected_servers").ok()
                })
                .map(|pk| {
                    fleet
                        .role_of(&pk)
                        .map_or_else(|| short(&pk.to_string()), |r| r.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(_) => "(not answering)".into(),
        };
        let _ = writeln!(
            out,
            "{:<10} {:<13} {:<40}",
            role.to_string(),
            short(&pk),
            servers
        );
    }
    if !fleet.visors().is_empty() {
        let _ = writeln!(
            out,
            "\n{:<10} {:<13} {:>12} {:>10} {:>12}  {:<24}",
            "VISOR", "PK", "DMSG SERVERS", "TRANSPORTS", "ROUTE GROUPS", "APPS"
        );
        let apps = ["skysocks-client → visor-2", "", "skysocks (exit)"];
        for (n, role) in fleet.visors().into_iter().enumerate() {
            let pk = pk_of(fleet, role);
            match fleet.visor_status(role).await {
                Ok(status) => {
                    let _ = writeln!(
                        out,
                        "{:<10} {:<13} {:>12} {:>10} {:>12}  {:<24}",
                        role.to_string(),
                        short(&pk),
                        status.dmsg_servers.len(),
                        status.transports,
                        status.route_groups,
                        apps.get(n).copied().unwrap_or_default()
                    );
                }
                Err(_) => not_answering(&mut out, role, &pk),
            }
        }
        if let Ok(state) = socks.lock()
            && let Some(proxy) = state.proxy
        {
            let _ = writeln!(
                out,
                "\nSOCKS5 proxy {proxy} (visor-0) → route visor-0–visor-1–visor-2 → skysocks → {}",
                state.url
            );
            match &state.outcome {
                None => {
                    let _ = writeln!(
                        out,
                        "HTTP request through the proxy: waiting for the route…"
                    );
                }
                Some(Ok((line, took))) => {
                    let _ = writeln!(
                        out,
                        "HTTP request through the proxy: {line} in {} ms",
                        took.as_millis()
                    );
                }
                Some(Err(error)) => {
                    let _ = writeln!(out, "HTTP request through the proxy failed: {error}");
                }
            }
            let _ = writeln!(out, "try it: curl --socks5-hostname {proxy} {}", state.url);
        }
    }
    let total = transfer.total.load(Ordering::Relaxed);
    let echoed = transfer.echoed.load(Ordering::Relaxed);
    let elapsed = Duration::from_millis(transfer.elapsed_ms.load(Ordering::Relaxed));
    if let Some(target) = target {
        let via = transfer.via.lock().map(|v| v.clone()).unwrap_or_default();
        let via = via
            .parse()
            .ok()
            .and_then(|pk| fleet.role_of(&pk))
            .map_or_else(|| "…".to_owned(), |r| r.to_string());
        let _ = writeln!(
            out,
            "\nrelayed transfer: this process → {via} → {target} (echo) → back"
        );
        let fraction = if total == 0 {
            0.0
        } else {
            echoed as f64 / total as f64
        };
        let width = 40;
        let filled = ((fraction * width as f64) as usize).min(width);
        let rate = if elapsed.is_zero() {
            0.0
        } else {
            echoed as f64 * 8.0 / elapsed.as_secs_f64() / 1e6
        };
        let _ = writeln!(
            out,
            "[{}{}] {:>5.1}%  {} of {}  {:.0} Mbit/s echoed{}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            fraction * 100.0,
            human_bytes(echoed),
            human_bytes(total),
            rate,
            if total > 0 && echoed == total {
                "  — done"
            } else {
                ""
            }
        );
    }
    out
}

/// The proxied HTTP request, as the table shows it.
#[derive(Debug, Default)]
struct SocksState {
    proxy: Option<std::net::SocketAddr>,
    url: String,
    /// The response's status line and how long the request took, once done.
    outcome: Option<Result<(String, Duration), String>>,
}

/// GETs `http` through the SOCKS5 proxy (the name `localhost` resolved at the exit),
/// retrying while the route comes up (up to 60 s); records the outcome; then tells `done`.
async fn proxied_request(
    proxy: std::net::SocketAddr,
    http: std::net::SocketAddr,
    state: Arc<std::sync::Mutex<SocksState>>,
    stop: CancellationToken,
    done: tokio::sync::oneshot::Sender<()>,
) {
    let until = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        let started = Instant::now();
        let attempt = tokio::select! {
            () = stop.cancelled() => break Err("interrupted".to_owned()),
            attempt = tokio::time::timeout(Duration::from_secs(10), get_through_socks(proxy, http.port())) => attempt,
        };
        match attempt {
            Ok(Ok(line)) => break Ok((line, started.elapsed())),
            Ok(Err(error)) if Instant::now() >= until => break Err(error.to_string()),
            Err(_) if Instant::now() >= until => break Err("timed out".to_owned()),
            _ => {}
        }
        tokio::select! {
            () = stop.cancelled() => break Err("interrupted".to_owned()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    };
    if let Ok(line) = &outcome {
        eprintln!(
            "HTTP through the SOCKS5 proxy: {} in {} ms",
            line.0,
            line.1.as_millis()
        );
    }
    if let Ok(mut state) = state.lock() {
        state.outcome = Some(outcome);
    }
    let _ = done.send(());
}

/// One SOCKS5 CONNECT to `localhost:port` (RFC 1928, no auth), then `GET /`; the response's
/// status line.
async fn get_through_socks(proxy: std::net::SocketAddr, port: u16) -> anyhow::Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(proxy).await?;
    tcp.write_all(&[5, 1, 0]).await?;
    let mut chosen = [0u8; 2];
    tcp.read_exact(&mut chosen).await?;
    if chosen != [5, 0] {
        bail!("the proxy refused the greeting: {chosen:?}");
    }
    let host = b"localhost";
    let mut request = vec![5, 1, 0, 3, host.len() as u8];
    request.extend_from_slice(host);
    request.extend_from_slice(&port.to_be_bytes());
    tcp.write_all(&request).await?;
    let mut reply = [0u8; 10];
    tcp.read_exact(&mut reply).await?;
    if reply[1] != 0 {
        bail!("SOCKS5 reply {:#04x}", reply[1]);
    }
    tcp.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

fn human_bytes(bytes: u64) -> String {
    let value = bytes as f64;
    if value >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", value / 1024.0 / 1024.0 / 1024.0)
    } else if value >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", value / 1024.0 / 1024.0)
    } else if value >= 1024.0 {
        format!("{:.1} KiB", value / 1024.0)
    } else {
        format!("{bytes} B")
    }
}
