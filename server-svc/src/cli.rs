//! The `dmsg-cli` binary (see `--help`): a dmsg client on the command line. The binary's
//! `main` is a call to [`main`]; anyhow is used here and only here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dmsg::addr::{DmsgAddr, Port, ServerAddr};
use dmsg::client::control::ping_once;
use dmsg::client::{Client, ClientConfig, DiscoveryTarget, LifecycleConfig};
use dmsg::entry::Entry;
use dmsg::identity::{Keypair, PublicKey};
use dmsg::noise::PqSettings;
use dmsg::stream::DmsgStream;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the skeleton knows of `dmsg-cli`.
pub const BINARY: service::Binary = service::Binary {
    name: "dmsg-cli",
    env_prefix: "SKYWIRE_CLI_",
};

/// A dmsg client on the command line: make keys, listen on a dmsg port, dial one like netcat,
/// ping a peer through the relay, and look at discovery.
///
/// The client finds servers through discovery (--discovery and/or --discovery-pk) and falls
/// back to the seeded --servers; a listening client publishes its entry so others can dial
/// it. Logs go to stderr at warn (info for `agent`) unless RUST_LOG says otherwise.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    common: service::CommonArgs,

    /// Secret key file (mode 0600). Without it an ephemeral key is used.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// Discovery's TCP gRPC endpoint, e.g. http://127.0.0.1:9090.
    #[arg(long, value_name = "URL")]
    discovery: Option<String>,

    /// Discovery's public key, reached at dmsg://PK:80 through a server session (used when
    /// --discovery is not given).
    #[arg(long, value_name = "PK")]
    discovery_pk: Option<PublicKey>,

    /// Seeded dmsg servers, comma-separated PK@HOST:PORT (a TOML array in the file; tried
    /// when discovery fails or lists none). Append #pq (PK@HOST:PORT#pq) to a server known to
    /// offer post-quantum: a classical-only handshake with it is then refused.
    #[arg(long, value_name = "PK@HOST:PORT,…", value_delimiter = ',')]
    servers: Vec<ServerAddr>,

    /// Use the seeded --servers first, before the servers discovery lists (to home the
    /// client on a chosen server).
    #[arg(long)]
    prefer_seeds: bool,

    /// Use only the --servers given (and discovery's list), not the embedded default
    /// deployment's servers (for a private network such as skywire-localnet).
    #[arg(long)]
    no_default_seeds: bool,

    /// Ping the servers this often, in milliseconds (at least 100; silence is noticed after
    /// two missed pings).
    #[arg(long, value_name = "MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    ping_interval_ms: u64,

    /// Republish this client's entry this often, in seconds, even without changes.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    entry_refresh_secs: u64,

    /// Check this often, in seconds (± half, at random), whether this client's server holds
    /// more than its fair share of the fleet's sessions, and move if so (0: never move).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    rebalance_secs: u64,

    /// Seconds to wait for a session, an entry or a dial before giving up.
    #[arg(long, value_name = "SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_secs: u64,

    #[command(subcommand)]
    command: Command,
}

impl service::process::Resolve for Args {
    type Settings = Self;

    /// Each command checks what it needs.
    fn resolve(self) -> Result<Self, service::ConfigError> {
        Ok(self)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a new secret key file (mode 0600; never overwrites) and prints its public key.
    Keygen {
        /// Where to write the key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Listens on a dmsg port: prints what each stream sends to stdout, or echoes it back.
    Listen {
        /// The dmsg port (1-65535).
        port: u16,
        /// Echo every stream back to its sender (streams served concurrently).
        #[arg(long)]
        echo: bool,
        /// Exit after the first stream ends.
        #[arg(long)]
        once: bool,
    },
    /// Dials dmsg://PK:PORT and connects it to stdin/stdout, like netcat.
    Dial {
        /// The address, dmsg://PK:PORT.
        addr: DmsgAddr,
    },
    /// Measures the round trip to a client through the relay (its ping port).
    Ping {
        /// The client's public key.
        pk: PublicKey,
        /// Pings to send, one a second.
        #[arg(long, default_value_t = 3)]
        count: u32,
    },
    /// Fetches the entry of a public key from discovery and prints it.
    Entry {
        /// The public key.
        pk: PublicKey,
    },
    /// Lists the registered dmsg servers and their free sessions.
    Servers,
    /// Runs as a long-lived client: echoes on a dmsg port and serves the
    /// skywire.client.v1.Agent admin API (status, stream probes) plus health and reflection.
    Agent {
        /// Address of the agent's admin gRPC endpoint.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3436")]
        admin: std::net::SocketAddr,
        /// The dmsg port echoed on.
        #[arg(long, default_value_t = 7000)]
        echo_port: u16,
    },
}

/// Runs `dmsg-cli` with `args` (the first is the program name); returns its exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    service::process::main::<Args, _, _>(&BINARY, args, start)
}

async fn start(args: Args) -> anyhow::Result<()> {
    // Logs go to stderr (stdout carries data): quiet for a one-shot command unless RUST_LOG
    // says otherwise; spans are exported either way.
    let mut telemetry = observability::TelemetryConfig::from_env(BINARY.name)?;
    if std::env::var_os("RUST_LOG").is_none() && !matches!(args.command, Command::Agent { .. }) {
        telemetry.filter = "warn".into();
    }
    let keypair = match &args.key_file {
        Some(path) => Keypair::load(path)?,
        None => Keypair::generate(),
    };
    telemetry.instance_id = Some(keypair.public().short());
    let telemetry = observability::init_with(telemetry)?;
    let result = execute(args, keypair).await;
    telemetry.shutdown().await;
    result
}

async fn execute(args: Args, keypair: Keypair) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs);
    if let Command::Keygen { out } = &args.command {
        let keypair = Keypair::generate();
        keypair
            .save(out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!("{}", keypair.public());
        return Ok(());
    }
    let publish = matches!(args.command, Command::Listen { .. } | Command::Agent { .. });
    let client = client(&args, keypair, publish)?;
    let result = match args.command {
        Command::Keygen { .. } => Ok(()),
        Command::Listen { port, echo, once } => listen(&client, port, echo, once, timeout).await,
        Command::Dial { addr } => dial(&client, addr, timeout).await,
        Command::Ping { pk, count } => ping(&client, pk, count, timeout).await,
        Command::Entry { pk } => entry(&client, pk, timeout).await,
        Command::Servers => servers(&client, timeout).await,
        Command::Agent { admin, echo_port } => {
            // Stopping (the agent, then the client) is bounded by the grace period.
            let grace = args.common.shutdown_grace();
            let stop = tokio_util::sync::CancellationToken::new();
            let running = async {
                let result = agent(&client, admin, echo_port, grace, stop.clone()).await;
                client.close().await;
                result
            };
            return service::process::run_until_signal(stop.clone(), grace, running).await;
        }
    };
    client.close().await;
    result
}

/// A lifecycle client from the global options.
fn client(args: &Args, keypair: Keypair, publish_entry: bool) -> anyhow::Result<Client> {
    let seeds: Vec<ServerAddr> = args.servers.clone();
    let discovery = match (&args.discovery, args.discovery_pk) {
        (Some(url), _) => DiscoveryTarget::Tcp(url.clone()),
        (None, Some(pk)) => DiscoveryTarget::Dmsg(pk),
        (None, None) if seeds.is_empty() => {
            bail!("give --discovery, --discovery-pk or --servers: there is no server to use")
        }
        (None, None) => DiscoveryTarget::None,
    };
    let mux = dmsg::mux::MuxConfig {
        ping: dmsg::mux::PingConfig::every(Duration::from_millis(args.ping_interval_ms)),
        ..Default::default()
    };
    Ok(Client::new(
        keypair,
        ClientConfig {
            mux,
            pq: PqSettings::with_required(args.common.require_pq),
            lifecycle: LifecycleConfig {
                seeds,
                prefer_seeds: args.prefer_seeds,
                include_default_seeds: !args.no_default_seeds,
                discovery,
                publish_entry,
                // One-shot commands start at once; an agent (one of a fleet) spreads its start.
                start_jitter: if matches!(args.command, Command::Agent { .. }) {
                    LifecycleConfig::default().start_jitter
                } else {
                    Duration::ZERO
                },
                entry_refresh: Duration::from_secs(args.entry_refresh_secs),
                rebalance_every: Duration::from_secs(args.rebalance_secs),
                ..LifecycleConfig::default()
            },
            ..ClientConfig::default()
        },
    ))
}

/// Waits until `ready` holds, polling, at most `timeout`.
async fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > timeout {
            bail!("{what} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn listen(
    client: &Client,
    port: u16,
    echo: bool,
    once: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let port = Port::new(port).context("the port must be 1-65535")?;
    let mut listener = client.listen(port)?;
    wait_until("no dmsg server session", timeout, || {
        !client.connected_servers().is_empty()
    })
    .await?;
    if client.published_sequence().is_none()
        && client
            .discovery()
            .entry(&client.public_key())
            .await
            .is_err()
    {
        eprintln!("warning: discovery is unreachable; only peers that share a server can dial in");
    } else {
        wait_until("the entry was not published", timeout, || {
            client.published_sequence().is_some()
        })
        .await?;
    }
    eprintln!("listening on {}", listener.addr());
    let mut echoes = JoinSet::new();
    let signal = service::process::shutdown_signal();
    tokio::pin!(signal);
    loop {
        let stream = tokio::select! {
            () = &mut signal => break,
            stream = listener.accept() => match stream {
                Some(stream) => stream,
                None => break,
            },
        };
        eprintln!("stream from {}", stream.remote_addr());
        if echo {
            echoes.spawn(echo_stream(stream));
            if once {
                break;
            }
        } else {
            let copied = to_stdout(stream).await;
            if let Err(error) = &copied {
                eprintln!("stream failed: {error}");
            }
            if once {
                return copied;
            }
        }
    }
    while let Some(joined) = echoes.join_next().await {
        if let Ok(Err(error)) = joined {
            eprintln!("echo stream failed: {error}");
        }
    }
    Ok(())
}

async fn echo_stream(stream: DmsgStream) -> std::io::Result<()> {
    let (mut read, mut write) = tokio::io::split(stream);
    tokio::io::copy(&mut read, &mut write).await?;
    write.shutdown().await
}

/// Copies a stream to stdout, then closes its sending side cleanly (the dialer sees EOF).
async fn to_stdout(mut stream: DmsgStream) -> anyhow::Result<()> {
    let mut stdout = tokio::io::stdout();
    tokio::io::copy(&mut stream, &mut stdout).await?;
    stdout.flush().await?;
    stream.shutdown().await?;
    Ok(())
}

async fn dial(client: &Client, addr: DmsgAddr, timeout: Duration) -> anyhow::Result<()> {
    let stream = tokio::time::timeout(timeout, client.dial(addr))
        .await
        .map_err(|_| anyhow::anyhow!("dialing {addr} took longer than {timeout:?}"))?
        .with_context(|| format!("cannot dial {addr}"))?;
    let (mut read, mut write) = tokio::io::split(stream);
    let upload = async {
        tokio::io::copy(&mut tokio::io::stdin(), &mut write).await?;
        write.shutdown().await
    };
    let download = async {
        let mut stdout = tokio::io::stdout();
        tokio::io::copy(&mut read, &mut stdout).await?;
        stdout.flush().await
    };
    let (uploaded, downloaded) = tokio::join!(upload, download);
    uploaded.context("sending stdin")?;
    downloaded.context("receiving into stdout")?;
    Ok(())
}

async fn ping(client: &Client, pk: PublicKey, count: u32, timeout: Duration) -> anyhow::Result<()> {
    let addr = DmsgAddr::new(pk, dmsg::client::control::PING_PORT);
    let mut stream = tokio::time::timeout(timeout, client.dial(addr))
        .await
        .map_err(|_| anyhow::anyhow!("dialing {addr} took longer than {timeout:?}"))?
        .with_context(|| format!("cannot reach {pk}"))?;
    let mut rtts = Vec::new();
    for n in 0..count.max(1) {
        if n > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let rtt = ping_once(&mut stream).await?;
        println!("pong from {pk}: time={:.3} ms", rtt.as_secs_f64() * 1e3);
        rtts.push(rtt);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let min = rtts.iter().min().copied().unwrap_or_default();
    let max = rtts.iter().max().copied().unwrap_or_default();
    let total: Duration = rtts.iter().sum();
    let avg = total / u32::try_from(rtts.len()).unwrap_or(1);
    println!(
        "{} pings: min/avg/max = {:.3}/{:.3}/{:.3} ms",
        rtts.len(),
        ms(min),
        ms(avg),
        ms(max)
    );
    Ok(())
}

/// Waits for a session when discovery is reached over dmsg (it needs one).
async fn ready_for_discovery(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let mut known = client.connected_servers();
    if known.is_empty() && client.discovery().all_servers().await.is_err() {
        wait_until("no dmsg server session to reach discovery", timeout, || {
            known = client.connected_servers();
            !known.is_empty()
        })
        .await?;
    }
    Ok(())
}

fn print_entry(entry: &Entry) {
    println!("pk:          {}", entry.owner);
    println!("sequence:    {}", entry.sequence);
    println!("timestamp:   {} (unix ns)", entry.timestamp);
    println!("version:     {}", entry.version);
    println!("pq_capable:  {}", entry.pq_capable);
    if let Some(client) = &entry.client {
        let servers: Vec<String> = client
            .delegated_servers
            .iter()
            .map(ToString::to_string)
            .collect();
        println!("kind:        client");
        println!("delegated:   {}", servers.join(", "));
    }
    if let Some(server) = &entry.server {
        println!("kind:        server");
        println!("address:     {}", server.address);
        println!("available:   {}", server.available_sessions);
        println!("type:        {}", server.server_type);
    }
}

async fn entry(client: &Client, pk: PublicKey, timeout: Duration) -> anyhow::Result<()> {
    ready_for_discovery(client, timeout).await?;
    match client.discovery().entry(&pk).await? {
        Some(entry) => {
            print_entry(&entry);
            Ok(())
        }
        None => bail!("discovery has no entry for {pk}"),
    }
}

async fn servers(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    ready_for_discovery(client, timeout).await?;
    let mut servers = client.discovery().all_servers().await?;
    servers.sort_by_key(|entry| entry.owner);
    println!("{:<66} {:<24} {:>9}", "PK", "ADDRESS", "AVAILABLE");
    for entry in &servers {
        if let Some(server) = &entry.server {
            println!(
                "{:<66} {:<24} {:>9}",
                entry.owner.to_string(),
                server.address,
                server.available_sessions
            );
        }
    }
    println!("{} servers", servers.len());
    Ok(())
}

/// `agent`: echo on `echo_port`, answer the Agent API (with health, reflection and
/// `/metrics`) on `admin`, until `stop`; then open calls get at most `grace`.
async fn agent(
    client: &Client,
    admin: std::net::SocketAddr,
    echo_port: u16,
    grace: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use crate::agent::{AgentService, ClientCollector, serve_echo};
    use skywire_proto::skywire::client::v1::agent_server::AgentServer;

    let port = Port::new(echo_port).context("--echo-port must be 1-65535")?;
    let listener = client.listen(port)?;
    let admin_listener = service::process::bind(admin, "admin").await?;
    let admin = admin_listener.local_addr()?;
    let metrics = observability::MetricsRegistry::new();
    metrics.register(ClientCollector::new(client.clone())?)?;
    let health = observability::HealthStates::new();
    let component = health.component("agent");
    // Probe and Traffic calls in flight end at once when the agent stops.
    let (endpoint, health_driver) = service::GrpcEndpoint::new(Default::default())
        .add_service(AgentServer::new(AgentService::new(
            client.clone(),
            port,
            stop.clone(),
        )))
        .with_metrics(&metrics)
        .build(&health, &stop)?;

    // Nothing below fails before the tasks are joined.
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(serve_echo(listener, tasks.clone(), stop.clone()));
    tasks.spawn(health_driver);
    component.set_serving();
    tracing::info!(
        pk = %client.public_key(),
        echo_port,
        %admin,
        "agent echoing on port {echo_port}, admin on {admin}"
    );
    let served = endpoint
        .serve_tcp(admin_listener, stop.clone(), grace)
        .await;
    stop.cancel();
    drop(component);
    tasks.close();
    tasks.wait().await;
    served.context("the admin endpoint failed")
}
