//! One member of a fleet: a child process of the multi-call launcher (`skywire-localnet
//! member <binary> …`, which runs exactly what the real binary runs), in its own process
//! group, logging to a file. It can be started, SIGTERMed, `kill -9`ed and restarted with the
//! same key, ports and arguments; dropping it kills its process group, and the kernel kills
//! it when the thread that started it exits (`PR_SET_PDEATHSIG`) — start members from a
//! thread that lives as long as the fleet (a test's or `main`'s, not a blocking-pool one).

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use dmsg::identity::PublicKey;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::time::Instant;

/// What a member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// dmsg-discovery.
    Discovery,
    /// The n-th dmsg-server.
    Server(usize),
    /// The n-th client (`dmsg-cli agent`).
    Client(usize),
    /// transport-setup.
    TransportSetup,
    /// route-setup.
    RouteSetup,
    /// The n-th `skywire-visor`.
    Visor(usize),
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Discovery => f.write_str("discovery"),
            Self::Server(n) => write!(f, "server-{n}"),
            Self::Client(n) => write!(f, "client-{n}"),
            Self::TransportSetup => f.write_str("transport-setup"),
            Self::RouteSetup => f.write_str("route-setup"),
            Self::Visor(n) => write!(f, "visor-{n}"),
        }
    }
}

/// Why a member could not be controlled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// The process could not be started.
    #[error("cannot start {role}: {source}")]
    Spawn {
        /// Which member.
        role: Role,
        /// Why.
        source: std::io::Error,
    },
    /// Its log file could not be created.
    #[error("cannot create the log of {role} at {path}: {source}")]
    Log {
        /// Which member.
        role: Role,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A signal could not be sent.
    #[error("cannot signal {role}: {source}")]
    Signal {
        /// Which member.
        role: Role,
        /// Why.
        source: std::io::Error,
    },
    /// It did not exit in time.
    #[error("{role} did not exit within {after:?}")]
    NoExit {
        /// Which member.
        role: Role,
        /// The deadline.
        after: Duration,
    },
}

/// A fleet member: its identity, its command line and its process (when running).
#[derive(Debug)]
pub struct Member {
    /// What it is.
    pub role: Role,
    /// Its public key.
    pub pk: PublicKey,
    /// Its main TCP port (discovery's and the setup services' gRPC, a server's relay, a
    /// visor's stcp listener; none for a client).
    pub port: Option<u16>,
    /// Its admin gRPC port (the gRPC port again for discovery and the setup services).
    pub admin_port: u16,
    launcher: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    env: Vec<(String, String)>,
    /// The process, until it is reaped (its pid is never signalled after that).
    child: Option<Child>,
    /// How the last process ended, if it was reaped without being stopped on purpose.
    unexpected_exit: Option<ExitStatus>,
    starts: u32,
}

impl Member {
    pub(crate) fn new(
        role: Role,
        pk: PublicKey,
        port: Option<u16>,
        admin_port: u16,
        launcher: &Path,
        args: Vec<OsString>,
        log: PathBuf,
    ) -> Self {
        Self {
            role,
            pk,
            port,
            admin_port,
            launcher: launcher.to_owned(),
            args,
            log,
            env: Vec::new(),
            child: None,
            unexpected_exit: None,
            starts: 0,
        }
    }

    /// Sets an environment variable for the next starts.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Appends flags to its command line for the next starts (ones that name other members,
    /// whose keys are known once the fleet is created).
    pub fn add_args<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
    }

    /// Starts the process (again, after a stop), appending to its log.
    pub fn start(&mut self) -> Result<(), MemberError> {
        if self.is_running() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| MemberError::Log {
                role: self.role,
                path: self.log.clone(),
                source,
            })?;
        let stdout = log.try_clone().map_err(|source| MemberError::Log {
            role: self.role,
            path: self.log.clone(),
            source,
        })?;
        let child = Command::new(&self.launcher)
            .arg("member")
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                crate::launcher::PARENT_PID_ENV,
                std::process::id().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            // Its own group: a terminal's Ctrl-C reaches only the launcher, which stops the
            // fleet in order; and killing the group leaves nothing behind.
            .process_group(0)
            .spawn()
            .map_err(|source| MemberError::Spawn {
                role: self.role,
                source,
            })?;
        self.child = Some(child);
        self.unexpected_exit = None;
        self.starts += 1;
        Ok(())
    }

    /// True while its process runs. A process found exited is reaped here, and its status
    /// kept as [`Member::unexpected_exit`].
    pub fn is_running(&mut self) -> bool {
        let Some(child) = &mut self.child else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.child = None;
                self.unexpected_exit = Some(status);
                false
            }
            Err(_) => false,
        }
    }

    /// How its process ended, if it exited (or crashed) without being stopped through this
    /// member since its last start.
    pub fn unexpected_exit(&mut self) -> Option<ExitStatus> {
        self.is_running();
        self.unexpected_exit
    }

    /// Its process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`) to its process group. Only while the process is
    /// not reaped: its pid (the group's id) cannot have been reused.
    pub fn signal(&self, signal: &str) -> Result<(), MemberError> {
        let Some(child) = &self.child else {
            return Ok(());
        };
        let invalid = |what: String| MemberError::Signal {
            role: self.role,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, what),
        };
        let signal: Signal = format!("SIG{signal}")
            .parse()
            .map_err(|_| invalid(format!("no signal {signal}")))?;
        let group = i32::try_from(child.id())
            .map(Pid::from_raw)
            .map_err(|_| invalid(format!("pid {} out of range", child.id())))?;
        match killpg(group, signal) {
            Ok(()) => Ok(()),
            // The group is gone already (the process exited and was reaped).
            Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(MemberError::Signal {
                role: self.role,
                source: std::io::Error::from(errno),
            }),
        }
    }

    /// `kill -9` of its group, then reaps it (also when signalling the group failed).
    pub fn kill(&mut self) -> Result<(), MemberError> {
        let signalled = if self.is_running() {
            self.signal("KILL")
        } else {
            Ok(())
        };
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.unexpected_exit = None;
        signalled
    }

    /// SIGTERM, then waits up to `deadline` for the exit; returns its status.
    pub async fn terminate(&mut self, deadline: Duration) -> Result<ExitStatus, MemberError> {
        if self.is_running() {
            self.signal("TERM")?;
        }
        self.wait_exit(deadline).await
    }

    /// Waits up to `deadline` for the process to exit (polling; safe on a runtime).
    pub async fn wait_exit(&mut self, deadline: Duration) -> Result<ExitStatus, MemberError> {
        let started = Instant::now();
        loop {
            let Some(child) = &mut self.child else {
                // Reaped already (by `is_running`): that exit is the one waited for.
                return self.unexpected_exit.take().ok_or(MemberError::NoExit {
                    role: self.role,
                    after: deadline,
                });
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Ok(status);
            }
            if started.elapsed() > deadline {
                return Err(MemberError::NoExit {
                    role: self.role,
                    after: deadline,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.kill();
        }
    }
}
