//! A child process owned by a test: killed on drop, so a failing test leaves nothing running.

use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use tokio::time::Instant;

/// A child process, killed (SIGKILL) on drop unless it already exited.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    name: String,
}

impl ChildProcess {
    /// Spawns `command`; `name` labels panics.
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends SIGKILL (without waiting).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Sends `signal` (a name such as `TERM`, `INT`, `STOP`).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {} failed", self.name);
    }

    /// The exit status, if it exited already.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the exit, at most `deadline` (polling, so it is safe in async tests).
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "{} did not exit within {deadline:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then panics unless it exits successfully within 15 s.
    pub async fn stop_cleanly(&mut self) {
        self.terminate();
        let status = self.wait_exit(Duration::from_secs(15)).await;
        assert!(
            status.success(),
            "{} did not exit cleanly on SIGTERM: {status:?}",
            self.name
        );
    }

    /// The child itself (for its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Panics unless `binary --help` succeeds and mentions every one of `expected`.
pub fn assert_help_mentions(binary: &str, expected: &[&str]) {
    let output = Command::new(binary).arg("--help").output().unwrap();
    assert!(output.status.success(), "{binary} --help failed");
    let help = String::from_utf8(output.stdout).unwrap();
    for item in expected {
        assert!(
            help.contains(item),
            "{binary} --help does not mention {item}:\n{help}"
        );
    }
}
