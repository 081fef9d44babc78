//! A real `redis-server` on a free port, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

/// A `redis-server` child process, killed on drop.
pub struct Redis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a free port; `None` (after a loud SKIPPED line) only if `redis-server`
    /// is not installed. CI installs it, so it never skips there.
    pub async fn start() -> Option<Self> {
        Self::start_on(free_port()).await
    }

    /// Starts one on `port` (to restart a killed one where clients expect it).
    pub async fn start_on(port: u16) -> Option<Self> {
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "\n==== SKIPPED: redis-server is not installed (apt-get install redis-server) ====\n"
                );
                return None;
            }
            Err(error) => panic!("cannot start redis-server: {error}"),
        };
        let redis = Self {
            port,
            child: Some(child),
        };
        for _ in 0..200 {
            if redis.ping().await {
                return Some(redis);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {port} did not come up");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if tcp.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        tcp.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
