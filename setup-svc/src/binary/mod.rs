//! The `transport-setup` and `route-setup` binaries (see their `--help`): settings,
//! telemetry, bind first, a dmsg client from the seeds, serve until a signal. Each binary's
//! `main` is a call into [`transport_setup`] or [`route_setup`]; anyhow is used here and only
//! here.

pub mod config;
pub mod route_setup;
pub mod transport_setup;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use dmsg::client::Client;
use observability::HealthStates;
use service::Endpoint;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// One running setup process: its endpoints and tasks, stopped together.
struct Process {
    name: &'static str,
    health: HealthStates,
    shutdown: CancellationToken,
    grace: Duration,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Process {
    fn new(name: &'static str, grace: Duration) -> Self {
        Self {
            name,
            health: HealthStates::new(),
            shutdown: CancellationToken::new(),
            grace,
            tasks: JoinSet::new(),
        }
    }

    /// Serves `endpoint` on TCP; the process's health follows it, and its end ends the process.
    fn serve_tcp(&mut self, endpoint: &Endpoint, listener: TcpListener) {
        let component = self.health.component("grpc-tcp");
        let serving = endpoint.serve_tcp(listener, self.shutdown.clone(), self.grace);
        component.set_serving();
        self.tasks.spawn(async move {
            let result = serving.await;
            drop(component);
            result.context("the gRPC endpoint on TCP")
        });
    }

    /// Serves `endpoint` on a dmsg listener (visors' calls).
    fn serve_dmsg(&mut self, endpoint: &Endpoint, listener: dmsg::client::Listener) {
        let serving = endpoint.serve(
            dmsg::grpc::Incoming::new(listener),
            self.shutdown.clone(),
            self.grace,
        );
        self.tasks
            .spawn(async move { serving.await.context("the gRPC endpoint on dmsg") });
    }

    /// Runs `task` until it ends or the process stops.
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
            Ok(())
        });
    }

    /// Runs `task` once the process is stopping (a drain), and waits for it.
    fn on_stop(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            stop.cancelled().await;
            task.await;
            Ok(())
        });
    }

    /// Runs until SIGINT/SIGTERM or until a task fails (which stops the rest); then closes
    /// `client` (its sessions and listeners) and returns.
    async fn run_until_signal(self, client: Client) -> anyhow::Result<()> {
        let Self {
            name,
            shutdown,
            grace,
            mut tasks,
            health,
        } = self;
        let running = {
            let shutdown = shutdown.clone();
            async move {
                let mut result = Ok(());
                while let Some(joined) = tasks.join_next().await {
                    let failure = match joined {
                        Ok(Ok(())) => continue,
                        Ok(Err(error)) => error,
                        Err(error) => anyhow::anyhow!("a task ended abnormally: {error}"),
                    };
                    tracing::error!("{failure:#}; shutting down");
                    if result.is_ok() {
                        result = Err(failure);
                    }
                    shutdown.cancel();
                }
                drop(health);
                client.close().await;
                result
            }
        };
        service::process::run_until_signal(shutdown, grace, running)
            .await
            .with_context(|| format!("{name} stopped"))
    }
}
