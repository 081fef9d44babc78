//! [`Fleet`]: dmsg-discovery, N dmsg-servers and M client agents as real processes on
//! loopback, with generated keys and config files in a scratch directory, started in any
//! order, observed through their gRPC admin APIs, and killed, stopped or restarted at will.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dmsg::entry::{Entry, pk_to_proto};
use dmsg::identity::{Keypair, PublicKey};
use futures::StreamExt;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use skywire_proto::skywire::client::v1 as agent_pb;
use skywire_proto::skywire::discovery::v1 as discovery_pb;
use skywire_proto::skywire::server::v1 as server_pb;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::member::{Member, MemberError, Role};

/// The dmsg port every client agent echoes on.
pub const ECHO_PORT: u16 = 7000;
/// Deadline of one admin call.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What to start.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    /// The multi-call launcher (`skywire-localnet`): members run as `<launcher> member …`.
    pub launcher: PathBuf,
    /// dmsg-servers.
    pub servers: usize,
    /// Client agents.
    pub clients: usize,
    /// Servers reach discovery only through dmsg (`--discovery-pk` + `--servers`).
    pub dmsg_only: bool,
    /// Discovery's Redis (`redis://…`); memory when `None`.
    pub redis: Option<String>,
    /// Session ping period of servers and clients (default 60 s).
    pub ping_interval: Option<Duration>,
    /// Servers' registration retry ceiling.
    pub registration_backoff_cap: Duration,
    /// Servers' entry refresh period.
    pub registration_refresh: Duration,
    /// Clients' entry refresh period.
    pub client_entry_refresh: Duration,
    /// How often clients check the balance of the fleet and may move (± half).
    pub client_rebalance_every: Duration,
    /// `RUST_LOG` of the members; `None` leaves each binary's default.
    pub log_filter: Option<String>,
    /// More environment variables of every member (`OTEL_EXPORTER_OTLP_ENDPOINT`, say).
    pub env: Vec<(String, String)>,
    /// Clients reach discovery over dmsg (`--discovery-pk`, through their servers) instead
    /// of its TCP endpoint.
    pub clients_discover_over_dmsg: bool,
    /// Where keys, configs and logs go (a new scratch directory, removed on drop, if `None`).
    pub dir: Option<PathBuf>,
    /// `skywire-visor`s: each knows every other's stcp address, registers its transports in
    /// discovery and obeys the fleet's setup services.
    pub visors: usize,
    /// Start `transport-setup` (seeded with the servers only, no discovery URL) and
    /// `route-setup` (with discovery's URL).
    pub setup_services: bool,
    /// More flags of `route-setup` (shorter breaker timings in tests, say).
    pub route_setup_args: Vec<String>,
}

impl FleetSpec {
    /// `servers` servers and `clients` clients launched by `launcher`, production timings.
    pub fn new(launcher: impl Into<PathBuf>, servers: usize, clients: usize) -> Self {
        Self {
            launcher: launcher.into(),
            servers,
            clients,
            dmsg_only: false,
            redis: None,
            ping_interval: None,
            registration_backoff_cap: Duration::from_secs(30),
            registration_refresh: Duration::from_secs(60),
            client_entry_refresh: Duration::from_secs(300),
            client_rebalance_every: Duration::from_secs(30),
            log_filter: Some("info".into()),
            env: Vec::new(),
            clients_discover_over_dmsg: false,
            dir: None,
            visors: 0,
            setup_services: false,
            route_setup_args: Vec::new(),
        }
    }
}

/// In which order [`Fleet::start`] starts members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOrder {
    /// Every member in one burst, as fast as processes spawn.
    Together,
    /// Discovery, then servers, then clients (spawned in that order, without waiting).
    Dependencies,
    /// Clients, then servers, then discovery last.
    Reverse,
    /// A random order from a seed.
    Shuffled(u64),
}

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// A member could not be controlled.
    #[error(transparent)]
    Member(#[from] MemberError),
    /// The scratch directory could not be set up.
    #[error("fleet directory {path}: {source}")]
    Dir {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file could not be written.
    #[error("key file: {0}")]
    Key(#[from] dmsg::identity::KeyFileError),
    /// No such member.
    #[error("no member {0}")]
    NoMember(Role),
    /// An admin call failed.
    #[error("{role}: {status}")]
    Admin {
        /// Which member.
        role: Role,
        /// The gRPC status.
        status: tonic::Status,
    },
    /// A member exited without being stopped through the fleet.
    #[error("{role} exited unexpectedly ({status}); see its log")]
    Exited {
        /// Which member.
        role: Role,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// A wait ran out of time.
    #[error("not within {after:?}: {what}")]
    Timeout {
        /// What was awaited, and what was still missing.
        what: String,
        /// The deadline.
        after: Duration,
    },
}

/// A running (or stoppable) fleet. Dropping it kills every member.
#[derive(Debug)]
pub struct Fleet {
    members: BTreeMap<Role, Member>,
    channels: BTreeMap<Role, Channel>,
    dir: PathBuf,
    owns_dir: bool,
    discovery_url: String,
    discovery_admin: u16,
    /// Discovery's public key.
    pub discovery_pk: PublicKey,
}

/// Hands out distinct loopback ports nothing listens on: each stays bound until the picker
/// is dropped, so no port is handed out twice. They come from below the kernel's ephemeral
/// range where possible, so that an outgoing connection of one member cannot take the port
/// of another that starts (or restarts) later.
#[derive(Default)]
struct PortPicker {
    held: Vec<std::net::TcpListener>,
}

/// Lowest port picked below the ephemeral range.
const LOWEST_PORT: u16 = 10_000;

impl PortPicker {
    fn pick(&mut self) -> Result<u16, std::io::Error> {
        let below = ephemeral_range_start().filter(|start| *start > LOWEST_PORT + 1000);
        if let Some(start) = below {
            for _ in 0..100 {
                let port = rand::rng().random_range(LOWEST_PORT..start);
                if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                    self.held.push(listener);
                    return Ok(port);
                }
            }
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        self.held.push(listener);
        Ok(port)
    }
}

/// The first port of the kernel's ephemeral range (Linux), if readable.
fn ephemeral_range_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `value` as a TOML string (quoted and escaped).
fn toml_string(value: &impl std::fmt::Display) -> String {
    toml::Value::String(value.to_string()).to_string()
}

fn os(args: &[String]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

impl Fleet {
    /// Generates keys, ports and configs for `spec`; starts nothing yet.
    pub fn create(spec: &FleetSpec) -> Result<Self, FleetError> {
        let (dir, owns_dir) = match &spec.dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "skywire-localnet-{}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&dir).map_err(|source| FleetError::Dir {
            path: dir.clone(),
            source,
        })?;
        Self::create_in(spec, dir.clone(), owns_dir).inspect_err(|_| {
            if owns_dir {
                let _ = std::fs::remove_dir_all(&dir);
            }
        })
    }

    /// [`Fleet::create`] in the existing directory `dir`.
    fn create_in(spec: &FleetSpec, dir: PathBuf, owns_dir: bool) -> Result<Self, FleetError> {
        let io = |source| FleetError::Dir {
            path: dir.clone(),
            source,
        };
        let key = |name: &str| -> Result<(Keypair, PathBuf), FleetError> {
            let path = dir.join(format!("{name}.key"));
            let _ = std::fs::remove_file(&path);
            let keypair = Keypair::generate();
            keypair.save(&path)?;
            Ok((keypair, path))
        };
        let mut ports = PortPicker::default();
        let mut port = || ports.pick().map_err(io);

        let (discovery_key, discovery_key_file) = key("discovery")?;
        let discovery_port = port()?;
        let discovery_url = format!("http://127.0.0.1:{discovery_port}");
        let mut servers = Vec::new();
        for n in 0..spec.servers {
            let (keypair, key_file) = key(&format!("server-{n}"))?;
            servers.push((keypair.public(), key_file, port()?, port()?));
        }
        let seeds: Vec<String> = servers
            .iter()
            .map(|(pk, _, relay, _)| format!("{pk}@127.0.0.1:{relay}"))
            .collect();
        let log = |role: Role| dir.join(format!("{role}.log"));
        let mut members = BTreeMap::new();

        // Discovery: a TOML config; it dials every server at once.
        let store = spec.redis.clone().unwrap_or_else(|| "memory".into());
        let config = dir.join("discovery.toml");
        let discovery_admin = port()?;
        let toml = format!(
            "listen = \"127.0.0.1:{discovery_port}\"\nadmin = \"127.0.0.1:{discovery_admin}\"\nstore = {}\nkey_file = {}\nservers = [{}]\n",
            toml_string(&store),
            toml_string(&discovery_key_file.display()),
            seeds.iter().map(toml_string).collect::<Vec<_>>().join(", ")
        );
        std::fs::write(&config, toml).map_err(io)?;
        members.insert(
            Role::Discovery,
            Member::new(
                Role::Discovery,
                discovery_key.public(),
                Some(discovery_port),
                discovery_port,
                &spec.launcher,
                os(&[
                    "dmsg-discovery".into(),
                    "--config".into(),
                    config.display().to_string(),
                ]),
                log(Role::Discovery),
            ),
        );

        // Servers: a TOML config each.
        for (n, (pk, key_file, relay, admin)) in servers.iter().enumerate() {
            let role = Role::Server(n);
            let mut toml = format!(
                "listen = \"127.0.0.1:{relay}\"\nadmin = \"127.0.0.1:{admin}\"\nkey_file = {}\nregistration_backoff_cap_secs = {}\nregistration_refresh_secs = {}\n",
                toml_string(&key_file.display()),
                spec.registration_backoff_cap.as_secs().max(1),
                spec.registration_refresh.as_secs().max(1),
            );
            if let Some(ping) = spec.ping_interval {
                toml.push_str(&format!("ping_interval_ms = {}\n", ping.as_millis()));
            }
            if spec.dmsg_only {
                let others: Vec<String> = seeds
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != n)
                    .map(|(_, s)| toml_string(s))
                    .collect();
                toml.push_str(&format!(
                    "discovery_pk = \"{}\"\nservers = [{}]\n",
                    discovery_key.public(),
                    others.join(", ")
                ));
            } else {
                toml.push_str(&format!("discovery = {}\n", toml_string(&discovery_url)));
            }
            let config = dir.join(format!("{role}.toml"));
            std::fs::write(&config, toml).map_err(io)?;
            members.insert(
                role,
                Member::new(
                    role,
                    *pk,
                    Some(*relay),
                    *admin,
                    &spec.launcher,
                    os(&[
                        "dmsg-server".into(),
                        "--config".into(),
                        config.display().to_string(),
                    ]),
                    log(role),
                ),
            );
        }

        // Clients: dmsg-cli agents, seeded with every server.
        for n in 0..spec.clients {
            let role = Role::Client(n);
            let (keypair, key_file) = key(&role.to_string())?;
            let admin = port()?;
            let mut args = vec![
                "dmsg-cli".to_owned(),
                // A private network: never the embedded public deployment.
                "--no-default-seeds".into(),
                "--key-file".into(),
                key_file.display().to_string(),
                if spec.clients_discover_over_dmsg {
                    "--discovery-pk".into()
                } else {
                    "--discovery".into()
                },
                if spec.clients_discover_over_dmsg {
                    discovery_key.public().to_string()
                } else {
                    discovery_url.clone()
                },
                "--entry-refresh-secs".into(),
                spec.client_entry_refresh.as_secs().max(1).to_string(),
                "--rebalance-secs".into(),
                spec.client_rebalance_every.as_secs().to_string(),
            ];
            if !seeds.is_empty() {
                args.extend(["--servers".into(), seeds.join(",")]);
            }
            if let Some(ping) = spec.ping_interval {
                args.extend(["--ping-interval-ms".into(), ping.as_millis().to_string()]);
            }
            args.extend([
                "agent".into(),
                "--admin".into(),
                format!("127.0.0.1:{admin}"),
                "--echo-port".into(),
                ECHO_PORT.to_string(),
            ]);
            members.insert(
                role,
                Member::new(
                    role,
                    keypair.public(),
                    None,
                    admin,
                    &spec.launcher,
                    os(&args),
                    log(role),
                ),
            );
        }
        let mut key = key;
        add_control_plane(
            spec,
            &dir,
            &seeds,
            &discovery_url,
            &mut key,
            &mut port,
            &log,
            &mut members,
        )?;
        // Members inherit the launcher's environment, plus their log filter and `spec.env`.
        for member in members.values_mut() {
            if let Some(filter) = &spec.log_filter {
                member.set_env("RUST_LOG", filter);
            }
            for (key, value) in &spec.env {
                member.set_env(key, value);
            }
        }
        Ok(Self {
            members,
            channels: BTreeMap::new(),
            dir,
            owns_dir,
            discovery_url,
            discovery_admin,
            discovery_pk: discovery_key.public(),
        })
    }

    /// Starts every member in `order`.
    pub fn start(&mut self, order: StartOrder) -> Result<(), FleetError> {
        let mut roles: Vec<Role> = self.members.keys().copied().collect();
        match order {
            StartOrder::Together | StartOrder::Dependencies => {}
            StartOrder::Reverse => roles.reverse(),
            StartOrder::Shuffled(seed) => {
                roles.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            }
        }
        for role in roles {
            self.member_mut(role)?.start()?;
        }
        Ok(())
    }

    /// The deployment file of this network (servers, discovery, setup keys), for
    /// `skywire-cli config gen --deployment`.
    pub fn deployment_file(&self) -> PathBuf {
        self.dir.join(DEPLOYMENT_FILE)
    }

    /// Where the fleet's keys, configs, logs and deployment file are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port of discovery's admin endpoint (health, reflection, `/metrics`).
    pub fn discovery_admin_port(&self) -> u16 {
        self.discovery_admin
    }

    /// Discovery's TCP gRPC URL.
    pub fn discovery_url(&self) -> &str {
        &self.discovery_url
    }

    /// Every member's role.
    pub fn roles(&self) -> Vec<Role> {
        self.members.keys().copied().collect()
    }

    /// The servers' roles.
    pub fn servers(&self) -> Vec<Role> {
        self.roles()
            .into_iter()
            .filter(|r| matches!(r, Role::Server(_)))
            .collect()
    }

    /// The visors' roles.
    pub fn visors(&self) -> Vec<Role> {
        self.roles()
            .into_iter()
            .filter(|r| matches!(r, Role::Visor(_)))
            .collect()
    }

    /// The clients' roles.
    pub fn clients(&self) -> Vec<Role> {
        self.roles()
            .into_iter()
            .filter(|r| matches!(r, Role::Client(_)))
            .collect()
    }

    /// A member.
    pub fn member(&self, role: Role) -> Result<&Member, FleetError> {
        self.members.get(&role).ok_or(FleetError::NoMember(role))
    }

    /// A member, to control it.
    pub fn member_mut(&mut self, role: Role) -> Result<&mut Member, FleetError> {
        self.members
            .get_mut(&role)
            .ok_or(FleetError::NoMember(role))
    }

    /// The role of the member with key `pk`.
    pub fn role_of(&self, pk: &PublicKey) -> Option<Role> {
        self.members
            .values()
            .find(|member| member.pk == *pk)
            .map(|member| member.role)
    }

    /// A lazily connecting channel to `role`'s admin (or gRPC) port; it reconnects after a
    /// restart on the same port.
    fn channel(&mut self, role: Role) -> Result<Channel, FleetError> {
        if let Some(channel) = self.channels.get(&role) {
            return Ok(channel.clone());
        }
        let channel = self
            .endpoint(role)?
            .connect_timeout(Duration::from_secs(1))
            .timeout(ADMIN_TIMEOUT)
            .connect_lazy();
        self.channels.insert(role, channel.clone());
        Ok(channel)
    }

    /// `role`'s admin (or gRPC) endpoint on loopback.
    fn endpoint(&self, role: Role) -> Result<Endpoint, FleetError> {
        let port = self.member(role)?.admin_port;
        Endpoint::from_shared(format!("http://127.0.0.1:{port}")).map_err(|error| {
            FleetError::Admin {
                role,
                status: tonic::Status::internal(error.to_string()),
            }
        })
    }

    fn admin_error(role: Role) -> impl Fn(tonic::Status) -> FleetError {
        move |status| FleetError::Admin { role, status }
    }

    /// A server's Stats.
    pub async fn server_stats(
        &mut self,
        role: Role,
    ) -> Result<server_pb::StatsResponse, FleetError> {
        let channel = self.channel(role)?;
        server_pb::admin_client::AdminClient::new(channel)
            .stats(server_pb::StatsRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(Self::admin_error(role))
    }

    /// A client's Status.
    pub async fn client_status(
        &mut self,
        role: Role,
    ) -> Result<agent_pb::StatusResponse, FleetError> {
        let channel = self.channel(role)?;
        agent_pb::agent_client::AgentClient::new(channel)
            .status(agent_pb::StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(Self::admin_error(role))
    }

    /// A visor's status (its control API).
    pub async fn visor_status(
        &mut self,
        role: Role,
    ) -> Result<skywire_proto::skywire::visor::v1::StatusResponse, FleetError> {
        let channel = self.channel(role)?;
        skywire_proto::skywire::visor::v1::visor_control_client::VisorControlClient::new(channel)
            .status(skywire_proto::skywire::visor::v1::StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(Self::admin_error(role))
    }

    /// The health (`""`) of any member.
    pub async fn health(
        &mut self,
        role: Role,
    ) -> Result<tonic_health::pb::health_check_response::ServingStatus, FleetError> {
        let channel = self.channel(role)?;
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|response| response.into_inner().status())
            .map_err(Self::admin_error(role))
    }

    /// Client `from` opens a stream to client `to`'s echo port and echoes `bytes` through it.
    pub async fn probe(
        &mut self,
        from: Role,
        to: Role,
        bytes: u32,
    ) -> Result<agent_pb::ProbeResponse, FleetError> {
        let pk = self.member(to)?.pk;
        let channel = self.channel(from)?;
        agent_pb::agent_client::AgentClient::new(channel)
            .probe(agent_pb::ProbeRequest {
                pk: pk_to_proto(&pk),
                port: u32::from(ECHO_PORT),
                bytes,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Self::admin_error(from))
    }

    /// A request for client `from` to keep a stream to `to` echoing for `duration` (run it
    /// with [`Fleet::agent`] so several can run at once).
    pub fn traffic_request(
        &self,
        to: Role,
        duration: Duration,
        chunk_bytes: u32,
    ) -> Result<agent_pb::TrafficRequest, FleetError> {
        Ok(agent_pb::TrafficRequest {
            pk: pk_to_proto(&self.member(to)?.pk),
            port: u32::from(ECHO_PORT),
            millis: u32::try_from(duration.as_millis()).unwrap_or(u32::MAX),
            chunk_bytes,
        })
    }

    /// An Agent client of `role` (no deadline: for long Traffic calls).
    pub fn agent(
        &self,
        role: Role,
    ) -> Result<agent_pb::agent_client::AgentClient<Channel>, FleetError> {
        Ok(agent_pb::agent_client::AgentClient::new(
            self.endpoint(role)?.connect_lazy(),
        ))
    }

    fn discovery(
        &mut self,
    ) -> Result<discovery_pb::discovery_client::DiscoveryClient<Channel>, FleetError> {
        Ok(discovery_pb::discovery_client::DiscoveryClient::new(
            self.channel(Role::Discovery)?,
        ))
    }

    /// The entry discovery holds for `pk` (`None` if it has none).
    pub async fn entry(&mut self, pk: &PublicKey) -> Result<Option<Entry>, FleetError> {
        entry_of(self.discovery()?, pk).await
    }

    /// The servers discovery lists.
    pub async fn registered_servers(&mut self) -> Result<BTreeSet<PublicKey>, FleetError> {
        let list = self
            .discovery()?
            .all_servers(discovery_pb::AllServersRequest {})
            .await
            .map_err(Self::admin_error(Role::Discovery))?
            .into_inner();
        Ok(list
            .entries
            .iter()
            .filter_map(|entry| Entry::from_proto(entry).ok())
            .map(|entry| entry.owner)
            .collect())
    }

    /// What is still missing for convergence: every running server listed by discovery, and
    /// every running client with an entry whose delegated servers are all running servers it
    /// holds a session to. Empty when converged. Clients are checked [`CONCURRENT_CHECKS`]
    /// at a time.
    pub async fn missing(&mut self) -> Vec<String> {
        let mut missing = Vec::new();
        let running: Vec<Role> = self
            .roles()
            .into_iter()
            .filter(|role| self.members.get_mut(role).is_some_and(Member::is_running))
            .collect();
        let running_servers: BTreeSet<PublicKey> = running
            .iter()
            .filter(|r| matches!(r, Role::Server(_)))
            .filter_map(|r| self.members.get(r).map(|m| m.pk))
            .collect();
        match self.registered_servers().await {
            Ok(listed) => {
                for role in &running {
                    if let (Role::Server(_), Some(member)) = (role, self.members.get(role))
                        && !listed.contains(&member.pk)
                    {
                        missing.push(format!("{role} not registered"));
                    }
                }
            }
            Err(error) => {
                missing.push(format!("discovery: {error}"));
                return missing;
            }
        }
        let discovery = match self.discovery() {
            Ok(discovery) => discovery,
            Err(error) => {
                missing.push(error.to_string());
                return missing;
            }
        };
        let mut checks = Vec::new();
        for role in running.iter().filter(|r| matches!(r, Role::Client(_))) {
            let (Some(pk), Ok(channel)) =
                (self.members.get(role).map(|m| m.pk), self.channel(*role))
            else {
                continue;
            };
            let agent = agent_pb::agent_client::AgentClient::new(channel);
            checks.push(check_client(
                *role,
                pk,
                discovery.clone(),
                agent,
                &running_servers,
            ));
        }
        let problems: Vec<Option<String>> = futures::stream::iter(checks)
            .buffer_unordered(CONCURRENT_CHECKS)
            .collect()
            .await;
        missing.extend(problems.into_iter().flatten());
        missing
    }

    /// Members that exited without being stopped through the fleet, and how.
    pub fn crashed(&mut self) -> Vec<(Role, std::process::ExitStatus)> {
        self.members
            .iter_mut()
            .filter_map(|(role, member)| member.unexpected_exit().map(|status| (*role, status)))
            .collect()
    }

    /// Waits until [`Fleet::missing`] is empty; returns how long it took. Fails at once if a
    /// member exits unexpectedly.
    pub async fn wait_converged(&mut self, deadline: Duration) -> Result<Duration, FleetError> {
        let started = Instant::now();
        loop {
            if let Some((role, status)) = self.crashed().into_iter().next() {
                return Err(FleetError::Exited { role, status });
            }
            let missing = self.missing().await;
            if missing.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > deadline {
                let shown: Vec<String> = missing.iter().take(8).cloned().collect();
                return Err(FleetError::Timeout {
                    what: format!(
                        "convergence ({} missing: {}{})",
                        missing.len(),
                        shown.join("; "),
                        if missing.len() > shown.len() {
                            "; …"
                        } else {
                            ""
                        }
                    ),
                    after: deadline,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `count` random ordered pairs of distinct clients.
    pub fn sample_pairs(&self, count: usize, seed: u64) -> Vec<(Role, Role)> {
        let clients = self.clients();
        if clients.len() < 2 {
            return Vec::new();
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let a = rng.random_range(0..clients.len());
                let mut b = rng.random_range(0..clients.len() - 1);
                if b >= a {
                    b += 1;
                }
                (clients[a], clients[b])
            })
            .collect()
    }

    /// Stops the fleet in tiers — clients, visors and setup services, then servers, then
    /// discovery: SIGTERM to every
    /// running member of a tier at once, then waits up to `per_tier` for them; a member still
    /// running then is killed and reported, as is a non-zero exit.
    pub async fn shutdown(&mut self, per_tier: Duration) -> Vec<(Role, String)> {
        let mut problems: Vec<(Role, String)> = self
            .crashed()
            .into_iter()
            .map(|(role, status)| (role, format!("had exited unexpectedly ({status})")))
            .collect();
        let tiers: [fn(&Role) -> bool; 3] = [
            |r| !matches!(r, Role::Server(_) | Role::Discovery),
            |r| matches!(r, Role::Server(_)),
            |r| matches!(r, Role::Discovery),
        ];
        for in_tier in tiers {
            let mut stopping = Vec::new();
            for (role, member) in self.members.iter_mut().filter(|(r, _)| in_tier(r)) {
                if !member.is_running() {
                    continue;
                }
                match member.signal("TERM") {
                    Ok(()) => stopping.push(*role),
                    Err(error) => {
                        problems.push((*role, error.to_string()));
                        let _ = member.kill();
                    }
                }
            }
            let deadline = Instant::now() + per_tier;
            for role in stopping {
                let Some(member) = self.members.get_mut(&role) else {
                    continue;
                };
                let left = deadline.saturating_duration_since(Instant::now());
                match member.wait_exit(left).await {
                    Ok(status) if status.success() => {}
                    Ok(status) => problems.push((role, format!("exited with {status}"))),
                    Err(error) => {
                        problems.push((role, error.to_string()));
                        let _ = member.kill();
                    }
                }
            }
        }
        problems
    }

    /// `kill -9` of every member, at once.
    pub fn kill_all(&mut self) {
        for member in self.members.values_mut() {
            let _ = member.kill();
        }
    }
}

/// Client checks [`Fleet::missing`] runs at once.
pub const CONCURRENT_CHECKS: usize = 32;

/// The entry `discovery` holds for `pk` (`None` if it has none).
async fn entry_of(
    mut discovery: discovery_pb::discovery_client::DiscoveryClient<Channel>,
    pk: &PublicKey,
) -> Result<Option<Entry>, FleetError> {
    let answer = discovery
        .get_entry(discovery_pb::GetEntryRequest {
            pk: pk_to_proto(pk),
        })
        .await;
    match answer {
        Ok(response) => Ok(Entry::from_proto(&response.into_inner()).ok()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(FleetError::Admin {
            role: Role::Discovery,
            status,
        }),
    }
}

/// What keeps client `role` from having converged, if anything: no entry, an entry naming a
/// server that is not running, or one naming a server the client holds no session to (after
/// a restart of its servers it names them before it is back).
async fn check_client(
    role: Role,
    pk: PublicKey,
    discovery: discovery_pb::discovery_client::DiscoveryClient<Channel>,
    mut agent: agent_pb::agent_client::AgentClient<Channel>,
    running_servers: &BTreeSet<PublicKey>,
) -> Option<String> {
    let delegated = match entry_of(discovery, &pk).await {
        Ok(Some(entry)) => entry
            .client
            .map(|c| c.delegated_servers)
            .unwrap_or_default(),
        Ok(None) => return Some(format!("{role} has no entry")),
        Err(error) => return Some(format!("{role}: {error}")),
    };
    if delegated.is_empty() || !delegated.iter().all(|s| running_servers.contains(s)) {
        return Some(format!("{role} delegates to stopped servers"));
    }
    match agent.status(agent_pb::StatusRequest {}).await {
        Ok(status) => {
            let connected: BTreeSet<PublicKey> = status
                .into_inner()
                .connected_servers
                .iter()
                .filter_map(|pk| {
                    dmsg::entry::pk_from_proto(pk, "StatusResponse.connected_servers").ok()
                })
                .collect();
            (!delegated.iter().all(|s| connected.contains(s)))
                .then(|| format!("{role} not connected to the servers it names"))
        }
        Err(status) => Some(format!("{role}: {status}")),
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_all();
        if self.owns_dir && std::env::var_os("LOCALNET_KEEP_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The deployment file a fleet writes in its directory.
pub const DEPLOYMENT_FILE: &str = "deployment.toml";

/// Adds `spec`'s setup services and visors to `members`: keys from `key`, ports from `port`.
#[allow(clippy::too_many_arguments)]
fn add_control_plane(
    spec: &FleetSpec,
    dir: &Path,
    seeds: &[String],
    discovery_url: &str,
    key: &mut impl FnMut(&str) -> Result<(Keypair, PathBuf), FleetError>,
    port: &mut impl FnMut() -> Result<u16, FleetError>,
    log: &impl Fn(Role) -> PathBuf,
    members: &mut BTreeMap<Role, Member>,
) -> Result<(), FleetError> {
    let mut add = |role: Role, pk: PublicKey, main: Option<u16>, admin: u16, args: Vec<String>| {
        members.insert(
            role,
            Member::new(role, pk, main, admin, &spec.launcher, os(&args), log(role)),
        );
    };
    let servers = seeds.join(",");
    let mut setup_keys = None;
    if spec.setup_services {
        let (transport_setup, transport_key) = key(&Role::TransportSetup.to_string())?;
        let transport_port = port()?;
        add(
            Role::TransportSetup,
            transport_setup.public(),
            Some(transport_port),
            transport_port,
            vec![
                "transport-setup".into(),
                "--key-file".into(),
                transport_key.display().to_string(),
                "--servers".into(),
                servers.clone(),
                "--grpc".into(),
                format!("127.0.0.1:{transport_port}"),
            ],
        );
        let (route_setup, route_key) = key(&Role::RouteSetup.to_string())?;
        let route_port = port()?;
        let mut args = vec![
            "route-setup".into(),
            "--key-file".into(),
            route_key.display().to_string(),
            "--servers".into(),
            servers.clone(),
            "--discovery".into(),
            discovery_url.to_owned(),
            "--grpc".into(),
            format!("127.0.0.1:{route_port}"),
        ];
        args.extend(spec.route_setup_args.iter().cloned());
        add(
            Role::RouteSetup,
            route_setup.public(),
            Some(route_port),
            route_port,
            args,
        );
        setup_keys = Some((transport_setup.public(), route_setup.public()));
    }
    // The deployment a visor joining this network needs (`skywire-cli config gen
    // --deployment`): the servers, discovery, and the setup services' keys.
    let deployment = visor::deployment::Deployment {
        servers: seeds.iter().filter_map(|seed| seed.parse().ok()).collect(),
        discovery: Some(discovery_url.to_owned()),
        discovery_pk: None,
        transport_setup_pks: setup_keys.iter().map(|(t, _)| *t).collect(),
        route_setup_pks: setup_keys.iter().map(|(_, r)| *r).collect(),
    };
    let deployment_file = dir.join(DEPLOYMENT_FILE);
    std::fs::write(
        &deployment_file,
        format!(
            "# The deployment of this local network: skywire-cli config gen --deployment {}\n{}",
            deployment_file.display(),
            deployment.to_toml()
        ),
    )
    .map_err(|source| FleetError::Dir {
        path: deployment_file.clone(),
        source,
    })?;
    let mut visors = Vec::new();
    for n in 0..spec.visors {
        let (keypair, key_file) = key(&Role::Visor(n).to_string())?;
        visors.push((keypair.public(), key_file, port()?, port()?));
    }
    let pk_table = dir.join("pk_table");
    if !visors.is_empty() {
        let table: String = visors
            .iter()
            .map(|(pk, _, stcp, _)| format!("{pk} 127.0.0.1:{stcp}\n"))
            .collect();
        std::fs::write(&pk_table, table).map_err(|source| FleetError::Dir {
            path: pk_table.clone(),
            source,
        })?;
    }
    for (n, (pk, key_file, stcp, admin)) in visors.into_iter().enumerate() {
        let mut args = vec![
            "skywire-visor".into(),
            "--key-file".into(),
            key_file.display().to_string(),
            "--servers".into(),
            servers.clone(),
            "--discovery".into(),
            discovery_url.to_owned(),
            "--stcp-listen".into(),
            format!("127.0.0.1:{stcp}"),
            "--admin".into(),
            format!("127.0.0.1:{admin}"),
            "--pk-table".into(),
            pk_table.display().to_string(),
        ];
        if let Some((transport_setup, route_setup)) = setup_keys {
            args.extend([
                "--transport-setup-pks".into(),
                transport_setup.to_string(),
                "--route-setup-pks".into(),
                route_setup.to_string(),
            ]);
        }
        add(Role::Visor(n), pk, Some(stcp), admin, args);
    }
    Ok(())
}
