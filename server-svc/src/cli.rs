//! The `dmsg-cli` binary (see `--help`): a dmsg client on the command line. The binary's
//! `main` is a call to [`main`]; anyhow is used here and only here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dmsg::addr::{DmsgAddr, Port, ServerAddr, parse_server_list};
use dmsg::client::control::ping_once;
use dmsg::client::{Client, ClientConfig, DiscoveryTarget, LifecycleConfig};
use dmsg::entry::Entry;
use dmsg::identity::{Keypair, PublicKey};
use dmsg::noise::PqSettings;
use dmsg::stream::DmsgStream;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A dmsg client on the command line: make keys, listen on a dmsg port, dial one like netcat,
/// ping a peer through the relay, and look at discovery.
///
/// The client finds servers through discovery (--discovery and/or --discovery-pk) and falls
/// back to the seeded --servers; a listening client publishes its entry so others can dial
/// it. Settings also come from SKYWIRE_CLI_* environment variables.
#[derive(Debug, Parser)]
#[command(name = "dmsg-cli", version, about, long_about)]
struct Args {
    /// Secret key file (mode 0600). Without it an ephemeral key is used.
    #[arg(long, global = true, env = "SKYWIRE_CLI_KEY_FILE", value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// Discovery's TCP gRPC endpoint, e.g. http://127.0.0.1:9090.
    #[arg(long, global = true, env = "SKYWIRE_CLI_DISCOVERY", value_name = "URL")]
    discovery: Option<String>,

    /// Discovery's public key, reached at dmsg://PK:80 through a server session (used when
    /// --discovery is not given).
    #[arg(
        long,
        global = true,
        env = "SKYWIRE_CLI_DISCOVERY_PK",
        value_name = "PK"
    )]
    discovery_pk: Option<PublicKey>,

    /// Seeded dmsg servers, comma-separated PK@HOST:PORT (tried when discovery fails or
    /// lists none).
    #[arg(
        long,
        global = true,
        env = "SKYWIRE_CLI_SERVERS",
        value_name = "PK@HOST:PORT,…"
    )]
    servers: Option<String>,

    /// Use the seeded --servers first, before the servers discovery lists (to home the
    /// client on a chosen server).
    #[arg(long, global = true)]
    prefer_seeds: bool,

    /// Use only the --servers given (and discovery's list), not the embedded default
    /// deployment's servers (for a private network such as skywire-localnet).
    #[arg(long, global = true)]
    no_default_seeds: bool,

    /// Ping the servers this often, in milliseconds (silence is noticed after two missed
    /// pings) [default: 60000].
    #[arg(
        long,
        global = true,
        env = "SKYWIRE_CLI_PING_INTERVAL_MS",
        value_name = "MS"
    )]
    ping_interval_ms: Option<u64>,

    /// Republish this client's entry this often, in seconds, even without changes
    /// [default: 300].
    #[arg(
        long,
        global = true,
        env = "SKYWIRE_CLI_ENTRY_REFRESH_SECS",
        value_name = "SECS"
    )]
    entry_refresh_secs: Option<u64>,

    /// Seconds to wait for a session, an entry or a dial before giving up [default: 20].
    #[arg(long, global = true, default_value_t = 20, value_name = "SECS")]
    timeout: u64,

    #[command(subcommand)]
    command: Command,
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
    let args = Args::parse_from(args);
    observability::process::block_on_main("dmsg-cli", start(args))
}

async fn start(args: Args) -> anyhow::Result<()> {
    // Logs go to stderr (stdout carries data); quiet unless RUST_LOG says otherwise.
    let mut telemetry = observability::TelemetryConfig::from_env("dmsg-cli")?;
    if std::env::var_os("RUST_LOG").is_none() {
        telemetry.filter = "warn".into();
    }
    let telemetry = observability::init_with(telemetry)?;
    let result = execute(args).await;
    telemetry.shutdown().await;
    result
}

async fn execute(args: Args) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    if let Command::Keygen { out } = &args.command {
        let keypair = Keypair::generate();
        keypair
            .save(out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!("{}", keypair.public());
        return Ok(());
    }
    let publish = matches!(args.command, Command::Listen { .. } | Command::Agent { .. });
    let client = client(&args, publish)?;
    let result = match args.command {
        Command::Keygen { .. } => Ok(()),
        Command::Listen { port, echo, once } => listen(&client, port, echo, once, timeout).await,
        Command::Dial { addr } => dial(&client, addr, timeout).await,
        Command::Ping { pk, count } => ping(&client, pk, count, timeout).await,
        Command::Entry { pk } => entry(&client, pk, timeout).await,
        Command::Servers => servers(&client, timeout).await,
        Command::Agent { admin, echo_port } => agent(&client, admin, echo_port).await,
    };
    client.close().await;
    result
}

/// A lifecycle client from the global options.
fn client(args: &Args, publish_entry: bool) -> anyhow::Result<Client> {
    let keypair = match &args.key_file {
        Some(path) => Keypair::load(path)?,
        None => Keypair::generate(),
    };
    let seeds: Vec<ServerAddr> = match &args.servers {
        Some(list) => parse_server_list(list).context("--servers")?,
        None => Vec::new(),
    };
    let discovery = match (&args.discovery, args.discovery_pk) {
        (Some(url), _) => DiscoveryTarget::Tcp(url.clone()),
        (None, Some(pk)) => DiscoveryTarget::Dmsg(pk),
        (None, None) if seeds.is_empty() => {
            bail!("give --discovery, --discovery-pk or --servers: there is no server to use")
        }
        (None, None) => DiscoveryTarget::None,
    };
    let mut mux = dmsg::mux::MuxConfig::default();
    if let Some(ms) = args.ping_interval_ms {
        if ms < 100 {
            bail!("--ping-interval-ms must be at least 100");
        }
        mux.ping = dmsg::mux::PingConfig::every(Duration::from_millis(ms));
    }
    Ok(Client::new(
        keypair,
        ClientConfig {
            mux,
            pq: PqSettings::from_env(),
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
                entry_refresh: args
                    .entry_refresh_secs
                    .map_or(Duration::from_secs(300), |secs| {
                        Duration::from_secs(secs.max(1))
                    }),
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
    let signal = observability::process::shutdown_signal();
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

/// `agent`: echo on `echo_port`, answer the Agent API on `admin`, until a signal.
async fn agent(client: &Client, admin: std::net::SocketAddr, echo_port: u16) -> anyhow::Result<()> {
    use crate::agent::{AgentService, serve_echo};
    use skywire_proto::skywire::client::v1::agent_server::AgentServer;

    let signal = observability::process::shutdown_signal();
    let port = Port::new(echo_port).context("--echo-port must be 1-65535")?;
    let listener = client.listen(port)?;
    let admin_listener = tokio::net::TcpListener::bind(admin)
        .await
        .with_context(|| format!("cannot listen on {admin}"))?;
    let admin = admin_listener.local_addr()?;
    let (reflection_v1, reflection_v1alpha) =
        observability::reflection::reflection_services(&[skywire_proto::FILE_DESCRIPTOR_SET])?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    // Nothing below fails before the tasks are joined.
    let stop = tokio_util::sync::CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(serve_echo(listener, tasks.clone(), stop.clone()));
    let routes = tonic::service::Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AgentServer::new(AgentService::new(
            client.clone(),
            port,
            stop.clone(),
        )));
    eprintln!(
        "agent {} echoing on port {echo_port}, admin on {admin}",
        client.public_key(),
    );
    let served = tonic::transport::Server::builder()
        .layer(middleware::server_stack(&Default::default()))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(admin_listener),
            // Calls in flight (a long Traffic) end at once instead of holding the exit.
            {
                let stop = stop.clone();
                async move {
                    signal.await;
                    stop.cancel();
                }
            },
        )
        .await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    served.context("the admin endpoint failed")
}
