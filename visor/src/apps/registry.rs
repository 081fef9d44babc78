//! The apps a visor runs, started and stopped at runtime (the control API's `Apps`, and
//! `skywire-cli proxy start|stop`) or at start by flags. At most one of each app; stopping
//! one closes its listener, its connections and its tunnel and waits for its tasks — outside
//! the registry's lock.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::net::TcpListener;

use super::skysocks::Skysocks;
use super::skysocks_client::{ClientConfig, SkysocksClient};
use crate::node::Visor;
use crate::route_group::RouteGroupError;

/// The exit's name.
pub const SKYSOCKS: &str = "skysocks";
/// The client's name.
pub const SKYSOCKS_CLIENT: &str = "skysocks-client";
/// Every app, by name.
pub const APPS: [&str; 2] = [SKYSOCKS, SKYSOCKS_CLIENT];

/// Why an app could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    /// No such app.
    #[error("no app {0:?} (the apps are {APPS:?})")]
    Unknown(String),
    /// It runs already.
    #[error("{0} is running already: stop it first")]
    Running(&'static str),
    /// The SOCKS listener could not be bound.
    #[error("skysocks-client cannot listen on {addr}: {error}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The exit's route port is taken.
    #[error("skysocks cannot listen on route port 3: {0}")]
    Listen(RouteGroupError),
}

/// An app as the control API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppStatus {
    /// Its name.
    pub name: &'static str,
    /// Whether it runs.
    pub running: bool,
    /// What it does now, in words (`tunnel to <pk> up`, …); empty when stopped.
    pub detail: String,
    /// Its settings, as flags.
    pub args: Vec<String>,
}

#[derive(Debug, Default)]
struct Running {
    skysocks: Option<Skysocks>,
    client: Option<(SkysocksClient, ClientConfig, SocketAddr)>,
}

/// The apps of one visor.
#[derive(Debug)]
pub struct AppRegistry {
    visor: Visor,
    running: Mutex<Running>,
}

impl AppRegistry {
    /// No app running yet, on `visor`.
    pub fn new(visor: Visor) -> Self {
        Self {
            visor,
            running: Mutex::new(Running::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the skysocks exit.
    pub fn start_skysocks(&self) -> Result<(), AppsError> {
        let mut running = self.lock();
        if running.skysocks.is_some() {
            return Err(AppsError::Running(SKYSOCKS));
        }
        running.skysocks = Some(Skysocks::start(&self.visor).map_err(AppsError::Listen)?);
        Ok(())
    }

    /// Starts skysocks-client on `listen` (bound here).
    pub async fn start_client(
        &self,
        config: ClientConfig,
        listen: SocketAddr,
    ) -> Result<(), AppsError> {
        if self.lock().client.is_some() {
            return Err(AppsError::Running(SKYSOCKS_CLIENT));
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|error| AppsError::Bind {
                addr: listen,
                error,
            })?;
        self.start_client_on(config, listener)
    }

    /// Starts skysocks-client on a listener bound already (the binary binds first).
    pub fn start_client_on(
        &self,
        config: ClientConfig,
        listener: TcpListener,
    ) -> Result<(), AppsError> {
        let addr = listener.local_addr().map_err(|error| AppsError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            error,
        })?;
        let mut running = self.lock();
        if running.client.is_some() {
            return Err(AppsError::Running(SKYSOCKS_CLIENT));
        }
        let client = SkysocksClient::start(&self.visor, config.clone(), listener);
        running.client = Some((client, config, addr));
        Ok(())
    }

    /// Stops the app `name`; false if it was not running.
    pub async fn stop(&self, name: &str) -> Result<bool, AppsError> {
        match name {
            SKYSOCKS => {
                let exit = self.lock().skysocks.take();
                match exit {
                    Some(exit) => {
                        exit.shutdown().await;
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            SKYSOCKS_CLIENT => {
                let client = self.lock().client.take();
                match client {
                    Some((client, _, _)) => {
                        client.shutdown().await;
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            other => Err(AppsError::Unknown(other.to_owned())),
        }
    }

    /// Every app and what it does now.
    pub fn list(&self) -> Vec<AppStatus> {
        let running = self.lock();
        let exit = AppStatus {
            name: SKYSOCKS,
            running: running.skysocks.is_some(),
            detail: if running.skysocks.is_some() {
                "exit on route port 3".into()
            } else {
                String::new()
            },
            args: Vec::new(),
        };
        let client = match &running.client {
            Some((client, config, addr)) => AppStatus {
                name: SKYSOCKS_CLIENT,
                running: true,
                detail: if client.tunnel_up() {
                    format!("SOCKS5 on {addr}, tunnel to {} up", config.exit.short())
                } else {
                    format!("SOCKS5 on {addr}, dialing {}", config.exit.short())
                },
                args: {
                    let mut args = vec![config.exit.to_string(), format!("--listen={addr}")];
                    if config.direct {
                        args.push("--direct".into());
                    }
                    args
                },
            },
            None => AppStatus {
                name: SKYSOCKS_CLIENT,
                running: false,
                detail: String::new(),
                args: Vec::new(),
            },
        };
        vec![exit, client]
    }

    /// Stops every app.
    pub async fn shutdown(&self) {
        for name in APPS {
            let _ = self.stop(name).await;
        }
    }
}
