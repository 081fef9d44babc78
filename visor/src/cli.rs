//! `skywire-cli`: the operator's view of a running visor through its control API
//! ([`crate::control`]) — aligned tables, or `--json`. anyhow is used here, as in the other
//! binaries' entry points.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use skywire_proto::skywire::visor::v1 as pb;
use skywire_proto::skywire::visor::v1::visor_control_client::VisorControlClient;
use tonic::transport::Channel;

/// How long a call to the visor may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Talk to the Skywire visor running on this machine, through its control API (gRPC on the
/// visor's --admin address). Tables by default; --json for scripts.
#[derive(Debug, Parser)]
#[command(name = "skywire-cli", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: service::CommonArgs,

    /// The visor's control API (its --admin address).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:3435",
        env = "SKYWIRE_CLI_RPC"
    )]
    pub rpc: SocketAddr,

    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    #[allow(missing_docs)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The visor itself.
    #[command(subcommand)]
    Visor(VisorCommand),
    /// The visor's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The SOCKS5 proxy (the visor's skysocks-client app).
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Expose another visor's published service on a local address of this visor: each
    /// connection to LOCAL_ADDR is a route group to PK's route port PORT (the "skynet"
    /// use). Without arguments, list the forwards.
    Fwd {
        /// Where this visor listens, HOST:PORT.
        #[arg(requires = "remote")]
        local: Option<SocketAddr>,
        /// The publishing visor and its route port, PK:PORT.
        remote: Option<String>,
        /// Over a direct transport (no route-setup, no breaker).
        #[arg(long)]
        direct: bool,
    },
}

/// `skywire-cli proxy …`.
#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Start skysocks-client: a SOCKS5 proxy whose connections leave through the exit PK.
    Start {
        /// The exit visor (running skysocks).
        pk: dmsg::identity::PublicKey,
        /// Reach it over a direct transport, with no route-setup and no breaker.
        #[arg(long)]
        direct: bool,
        /// Where the proxy listens.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1080")]
        listen: SocketAddr,
    },
    /// Stop skysocks-client.
    Stop,
}

/// `skywire-cli config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a complete skywire-visor config and a fresh key file (mode 0600) for a
    /// deployment, so a first boot needs nothing else: `skywire-visor --config FILE`.
    Gen(GenArgs),
}

/// `skywire-cli config gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// The deployment to join (TOML: servers, discovery, discovery_pk, transport_setup_pks,
    /// route_setup_pks — `skywire-localnet` writes one); the embedded default if absent.
    #[arg(long, value_name = "FILE")]
    pub deployment: Option<std::path::PathBuf>,
    /// Where to write the config.
    #[arg(long, value_name = "FILE", default_value = "skywire-visor.toml")]
    pub out: std::path::PathBuf,
    /// Where to write the new key (default: beside the config, `visor.key`).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<std::path::PathBuf>,
    /// The visor's stcp listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7777")]
    pub stcp_listen: SocketAddr,
    /// The visor's admin (control API) address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3435")]
    pub admin: SocketAddr,
    /// Replace an existing config (never an existing key file).
    #[arg(long)]
    pub force: bool,
}

/// `skywire-cli visor …`.
#[derive(Debug, Subcommand)]
pub enum VisorCommand {
    /// Key, version, uptime, and the dmsg servers, transports and route groups it has now.
    Status,
    /// Its transports.
    Transports,
    /// Its rules and route groups.
    Routes,
    /// Its apps: running or not, and what they do now.
    Apps,
}

/// What the skeleton knows of `skywire-cli` (its own variables: `dmsg-cli` has
/// `SKYWIRE_CLI_`).
pub const BINARY: service::Binary = service::Binary {
    name: "skywire-cli",
    env_prefix: "SKYWIRE_VISOR_CLI_",
};

impl service::process::Resolve for Cli {
    type Settings = Self;

    /// Each command checks what it needs.
    fn resolve(self) -> Result<Self, service::ConfigError> {
        Ok(self)
    }
}

/// Runs `skywire-cli` with `args` (the first is the program name) on the shared skeleton
/// (flags, variables, `--config`, errors as `skywire-cli: …`); returns its exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    service::process::main::<Cli, _, _>(&BINARY, args, |cli| async move {
        let output = run(&cli).await?;
        print!("{output}");
        Ok::<_, anyhow::Error>(())
    })
}

/// Runs one command; returns what to print.
pub async fn run(cli: &Cli) -> anyhow::Result<String> {
    let command = match &cli.command {
        Command::Visor(command) => command,
        Command::Config(ConfigCommand::Gen(args)) => return config_gen(args),
        Command::Proxy(command) => return proxy(cli, command).await,
        Command::Fwd {
            local,
            remote,
            direct,
        } => return fwd(cli, *local, remote.as_deref(), *direct).await,
    };
    let mut client = connect(cli.rpc).await?;
    let call = async {
        match command {
            VisorCommand::Status => {
                let status = client.status(pb::StatusRequest {}).await?.into_inner();
                let uptime = client.uptime(pb::UptimeRequest {}).await?.into_inner();
                Ok::<_, tonic::Status>(if cli.json {
                    let mut json = status_json(&status);
                    json["uptime_probe"] = uptime_json(&uptime);
                    json_text(&json)
                } else {
                    status_table(&status, &uptime)
                })
            }
            VisorCommand::Transports => {
                let list = client
                    .list_transports(pb::ListTransportsRequest {})
                    .await?
                    .into_inner();
                Ok(if cli.json {
                    json_text(&transports_json(&list))
                } else {
                    transports_table(&list)
                })
            }
            VisorCommand::Apps => {
                let apps = client.list_apps(pb::ListAppsRequest {}).await?.into_inner();
                Ok(if cli.json {
                    json_text(&apps_json(&apps.apps))
                } else {
                    apps_table(&apps.apps)
                })
            }
            VisorCommand::Routes => {
                let routes = client.routes(pb::RoutesRequest {}).await?.into_inner();
                Ok(if cli.json {
                    json_text(&routes_json(&routes))
                } else {
                    routes_table(&routes)
                })
            }
        }
    };
    answered(cli.rpc, call).await
}

/// Awaits a call to the visor at `rpc` within [`CALL_TIMEOUT`]; its answer, or an error
/// that says which visor and what it said.
async fn answered<T>(
    rpc: SocketAddr,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .with_context(|| format!("the visor at {rpc} did not answer within {CALL_TIMEOUT:?}"))?
        .map_err(|status| anyhow::anyhow!("the visor at {rpc} answered: {}", status.message()))
}

/// `fwd`: add a forward (or list them) through the control API.
async fn fwd(
    cli: &Cli,
    local: Option<SocketAddr>,
    remote: Option<&str>,
    direct: bool,
) -> anyhow::Result<String> {
    let request = match (local, remote) {
        (Some(local), Some(remote)) => {
            let (pk, port) = remote
                .rsplit_once(':')
                .with_context(|| format!("{remote:?} is not PK:PORT"))?;
            let pk: dmsg::identity::PublicKey = pk
                .parse()
                .with_context(|| format!("{pk:?} is not a public key"))?;
            let port: u16 = port
                .parse()
                .ok()
                .filter(|port| *port != 0)
                .with_context(|| format!("{port:?} is not a route port (1..=65535)"))?;
            Some(pb::Forward {
                listen: local.to_string(),
                dst_pk: pk.to_string(),
                port: u32::from(port),
                direct,
            })
        }
        _ => None,
    };
    let mut client = connect(cli.rpc).await?;
    let call = async {
        match request {
            Some(forward) => client
                .add_forward(forward)
                .await
                .map(|answer| vec![answer.into_inner()]),
            None => client
                .list_forwards(pb::ListForwardsRequest {})
                .await
                .map(|answer| answer.into_inner().forwards),
        }
    };
    let forwards = answered(cli.rpc, call).await?;
    if cli.json {
        return Ok(json_text(&Value::Array(
            forwards
                .iter()
                .map(|f| json!({"listen": f.listen, "dst_pk": f.dst_pk, "port": f.port, "direct": f.direct}))
                .collect(),
        )));
    }
    let rows: Vec<Vec<String>> = forwards
        .iter()
        .map(|f| {
            vec![
                f.listen.clone(),
                format!("{}:{}", f.dst_pk, f.port),
                if f.direct { "direct" } else { "route-setup" }.to_owned(),
            ]
        })
        .collect();
    Ok(table(&["LOCAL", "REMOTE", "VIA"], &rows))
}

/// `proxy start|stop`: the skysocks-client app, through the control API.
async fn proxy(cli: &Cli, command: &ProxyCommand) -> anyhow::Result<String> {
    let mut client = connect(cli.rpc).await?;
    let call = async {
        match command {
            ProxyCommand::Start { pk, direct, listen } => {
                client
                    .start_app(pb::StartAppRequest {
                        name: "skysocks-client".into(),
                        exit_pk: pk.to_string(),
                        direct: *direct,
                        listen: listen.to_string(),
                    })
                    .await
            }
            ProxyCommand::Stop => {
                client
                    .stop_app(pb::StopAppRequest {
                        name: "skysocks-client".into(),
                    })
                    .await
            }
        }
    };
    let app = answered(cli.rpc, call).await?.into_inner();
    Ok(if cli.json {
        json_text(&apps_json(std::slice::from_ref(&app)))
    } else {
        apps_table(std::slice::from_ref(&app))
    })
}

fn apps_table(apps: &[pb::AppInfo]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|app| {
            vec![
                app.name.clone(),
                if app.running { "yes" } else { "no" }.to_owned(),
                if app.status.is_empty() {
                    "-".to_owned()
                } else {
                    app.status.clone()
                },
                app.args.join(" "),
            ]
        })
        .collect();
    table(&["APP", "RUNNING", "STATUS", "ARGS"], &rows)
}

fn apps_json(apps: &[pb::AppInfo]) -> Value {
    Value::Array(
        apps.iter()
            .map(|app| {
                json!({
                    "name": app.name,
                    "running": app.running,
                    "status": app.status,
                    "args": app.args,
                })
            })
            .collect(),
    )
}

/// `config gen`: the key first (never overwritten), then the config.
fn config_gen(args: &GenArgs) -> anyhow::Result<String> {
    let deployment = match &args.deployment {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the deployment {}", path.display()))?;
            crate::deployment::Deployment::parse(&text)
                .map_err(|error| anyhow::anyhow!("the deployment {}: {error}", path.display()))?
        }
        None => crate::deployment::Deployment::embedded(),
    };
    if args.out.exists() && !args.force {
        anyhow::bail!(
            "{} exists: give --force to replace it, or another --out",
            args.out.display()
        );
    }
    let key_file = match &args.key_file {
        Some(path) => path.clone(),
        None => args
            .out
            .parent()
            .map_or_else(|| "visor.key".into(), |dir| dir.join("visor.key")),
    };
    let key_file = std::path::absolute(&key_file).context("the key file's path")?;
    let keypair = dmsg::identity::Keypair::generate();
    keypair.save(&key_file).with_context(|| {
        format!(
            "writing the key {} (an existing key is never replaced)",
            key_file.display()
        )
    })?;
    let quoted = |value: &dyn std::fmt::Display| toml::Value::String(value.to_string()).to_string();
    let config = format!(
        "# skywire-visor configuration (skywire-cli config gen): skywire-visor --config {}\n\
         # public key {}\n\
         key_file = {}\n\
         stcp_listen = {}\n\
         admin = {}\n\
         {}",
        args.out.display(),
        keypair.public(),
        quoted(&key_file.display()),
        quoted(&args.stcp_listen),
        quoted(&args.admin),
        deployment.to_toml(),
    );
    std::fs::write(&args.out, config).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(format!(
        "wrote {} and the key {} (public key {})\nstart it: skywire-visor --config {}\n",
        args.out.display(),
        key_file.display(),
        keypair.public(),
        args.out.display()
    ))
}

async fn connect(rpc: SocketAddr) -> anyhow::Result<VisorControlClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{rpc}"))
        .context("the --rpc address")?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|_| anyhow::anyhow!("no visor at {rpc}: is skywire-visor running?"))?;
    Ok(VisorControlClient::new(channel))
}

fn json_text(value: &Value) -> String {
    format!("{value:#}\n")
}

/// Columns padded to their widest cell, two spaces apart.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// `1h 2m 3s`.
fn duration_text(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// The first 8 hex digits of a key, as the logs show it.
fn short(pk: &str) -> String {
    pk.chars().take(8).collect()
}

/// `up now, 1h 100.0% (360), 24h 99.9% (8640)`.
fn tier_text(
    now: Option<bool>,
    hour: Option<&pb::TierRatio>,
    day: Option<&pb::TierRatio>,
) -> String {
    let ratio = |ratio: Option<&pb::TierRatio>| match ratio {
        Some(r) if r.counted > 0 => format!("{:.1}% ({})", r.ratio * 100.0, r.counted),
        _ => "-".to_owned(),
    };
    let now = match now {
        Some(true) => "up now",
        Some(false) => "DOWN now",
        None => "no sample now",
    };
    format!("{now}, 1h {}, 24h {}", ratio(hour), ratio(day))
}

fn status_table(status: &pb::StatusResponse, uptime: &pb::UptimeResponse) -> String {
    let servers = if status.dmsg_servers.is_empty() {
        "0 (not connected)".to_owned()
    } else {
        let keys: Vec<String> = status.dmsg_servers.iter().map(|pk| short(pk)).collect();
        format!("{}: {}", status.dmsg_servers.len(), keys.join(", "))
    };
    let rows = [
        ("pk", status.pk.clone()),
        ("version", status.version.clone()),
        ("uptime", duration_text(status.uptime_secs)),
        ("stcp", status.stcp_addr.clone()),
        ("dmsg servers", servers),
        ("transports", status.transports.to_string()),
        ("route groups", status.route_groups.to_string()),
        ("rules", status.rules.to_string()),
        (
            "apps",
            if status.apps.is_empty() {
                "none".to_owned()
            } else {
                status.apps.join(", ")
            },
        ),
        (
            "dmsg tier",
            tier_text(
                Some(uptime.dmsg_up),
                uptime.dmsg_hour.as_ref(),
                uptime.dmsg_day.as_ref(),
            ),
        ),
        (
            "route tier",
            tier_text(
                uptime.routes_sampled.then_some(uptime.routes_up),
                uptime.routes_hour.as_ref(),
                uptime.routes_day.as_ref(),
            ),
        ),
    ];
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(k, v)| vec![k.to_owned(), v])
        .collect();
    table(&["FIELD", "VALUE"], &rows)
}

fn status_json(status: &pb::StatusResponse) -> Value {
    json!({
        "pk": status.pk,
        "version": status.version,
        "uptime_secs": status.uptime_secs,
        "stcp_addr": status.stcp_addr,
        "dmsg_servers": status.dmsg_servers,
        "transports": status.transports,
        "route_groups": status.route_groups,
        "rules": status.rules,
        "apps": status.apps,
    })
}

fn uptime_json(uptime: &pb::UptimeResponse) -> Value {
    let ratio = |r: Option<&pb::TierRatio>| {
        r.map_or(
            Value::Null,
            |r| json!({"up": r.up, "counted": r.counted, "ratio": r.ratio}),
        )
    };
    json!({
        "every_ms": uptime.every_ms,
        "dmsg_up": uptime.dmsg_up,
        "routes_up": uptime.routes_up,
        "routes_sampled": uptime.routes_sampled,
        "dmsg_hour": ratio(uptime.dmsg_hour.as_ref()),
        "dmsg_day": ratio(uptime.dmsg_day.as_ref()),
        "routes_hour": ratio(uptime.routes_hour.as_ref()),
        "routes_day": ratio(uptime.routes_day.as_ref()),
    })
}

fn transports_table(list: &pb::TransportList) -> String {
    let rows: Vec<Vec<String>> = list
        .transports
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.r#type.clone(),
                t.remote_pk.clone(),
                t.bytes_sent.to_string(),
                t.bytes_received.to_string(),
            ]
        })
        .collect();
    table(&["ID", "TYPE", "REMOTE", "SENT", "RECEIVED"], &rows)
}

fn transports_json(list: &pb::TransportList) -> Value {
    Value::Array(
        list.transports
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "type": t.r#type,
                    "local_pk": t.local_pk,
                    "remote_pk": t.remote_pk,
                    "bytes_sent": t.bytes_sent,
                    "bytes_received": t.bytes_received,
                })
            })
            .collect(),
    )
}

fn routes_table(routes: &pb::RoutesResponse) -> String {
    let rules: Vec<Vec<String>> = routes
        .rules
        .iter()
        .map(|r| {
            let route = if r.src_pk.is_empty() {
                "-".to_owned()
            } else {
                format!(
                    "{}:{} → {}:{}",
                    short(&r.src_pk),
                    r.src_port,
                    short(&r.dst_pk),
                    r.dst_port
                )
            };
            let next = if r.next_transport.is_empty() {
                "-".to_owned()
            } else {
                format!("{} via {}", r.next_route, short(&r.next_transport))
            };
            vec![
                r.key.to_string(),
                r.r#type.clone(),
                route,
                next,
                format!("{}s", r.keep_alive_ms / 1000),
            ]
        })
        .collect();
    let groups: Vec<Vec<String>> = routes
        .route_groups
        .iter()
        .map(|g| {
            vec![
                format!("{}:{}", short(&g.remote_pk), g.remote_port),
                g.local_port.to_string(),
                g.bytes_sent.to_string(),
                g.bytes_received.to_string(),
                g.pq.clone(),
            ]
        })
        .collect();
    format!(
        "{}\n{}reservations: {}\n",
        table(&["KEY", "TYPE", "ROUTE", "NEXT", "KEEP-ALIVE"], &rules),
        if groups.is_empty() {
            "no route groups\n".to_owned()
        } else {
            format!(
                "\n{}\n",
                table(&["REMOTE", "LOCAL PORT", "SENT", "RECEIVED", "PQ"], &groups)
            )
        },
        routes.reservations
    )
}

fn routes_json(routes: &pb::RoutesResponse) -> Value {
    json!({
        "rules": routes.rules.iter().map(|r| json!({
            "key": r.key,
            "type": r.r#type,
            "src_pk": r.src_pk,
            "dst_pk": r.dst_pk,
            "src_port": r.src_port,
            "dst_port": r.dst_port,
            "next_route": r.next_route,
            "next_transport": r.next_transport,
            "keep_alive_ms": r.keep_alive_ms,
        })).collect::<Vec<_>>(),
        "route_groups": routes.route_groups.iter().map(|g| json!({
            "remote_pk": g.remote_pk,
            "local_port": g.local_port,
            "remote_port": g.remote_port,
            "consume_key": g.consume_key,
            "forward_key": g.forward_key,
            "bytes_sent": g.bytes_sent,
            "bytes_received": g.bytes_received,
            "pq": g.pq,
        })).collect::<Vec<_>>(),
        "reservations": routes.reservations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let text = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(text, "A          LONGER\nwide cell  x\ny          z\n");
        assert_eq!(duration_text(5), "5s");
        assert_eq!(duration_text(65), "1m 5s");
        assert_eq!(duration_text(3_725), "1h 2m 5s");
    }
}
