//! The README demo as a user runs it: `skywire-localnet` shows the status table with its
//! visors, gets an HTTP response through the SOCKS5 proxy over the 2-hop route, completes the
//! relayed transfer, and leaves no process behind — after Ctrl-C (SIGINT), and even when it
//! is itself killed with SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The demo, small, with its stdout read line by line on a thread.
struct Demo {
    child: Child,
    /// Its TMPDIR (the scratch directory goes there), removed on drop: a demo killed with
    /// SIGKILL cannot remove its own.
    tmp: std::path::PathBuf,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(name: &str) -> Self {
        let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("demo-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_skywire-localnet"))
            .env("TMPDIR", &tmp)
            .args(["--servers", "2", "--clients", "3", "--transfer-mib", "16"])
            .args(["--socks-port", &testkit::free_port().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            tmp,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `text`.
    fn wait_for(&mut self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line with {text:?} within {within:?}; output so far:\n{}",
            self.seen.join("\n")
        );
    }

    /// The processes the demo started (its children), from /proc.
    fn members(&self) -> Vec<u32> {
        let parent = self.child.id();
        let mut children = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((_, ppid)) = state_and_parent(pid)
                && ppid == parent
            {
                children.push(pid);
            }
        }
        children
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the demo did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// (state, parent pid) of `pid` from /proc/<pid>/stat.
fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True while `pid` is a live process (not gone, not a zombie awaiting its reaper).
fn alive(pid: u32) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

fn wait_all_gone(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_demo_shows_the_table_completes_the_transfer_and_ctrl_c_leaves_no_process() {
    let mut demo = Demo::start("ctrl-c");
    demo.wait_for("SERVER", Duration::from_secs(90));
    demo.wait_for(
        "HTTP request through the proxy: HTTP/1.0 200 OK",
        Duration::from_secs(90),
    );
    demo.wait_for("— done", Duration::from_secs(90));
    let members = demo.members();
    assert_eq!(
        members.len(),
        1 + 2 + 3 + 2 + 3,
        "discovery, 2 servers, 3 clients, the setup services, 3 visors"
    );
    let output = demo.seen.join("\n");
    for expected in [
        "registered",
        "client-2",
        "VISOR",
        "skysocks (exit)",
        "curl --socks5-hostname 127.0.0.1:",
        "relayed transfer",
        "Mbit/s",
    ] {
        assert!(output.contains(expected), "no {expected:?} in:\n{output}");
    }

    kill(Pid::from_raw(demo.child.id() as i32), Signal::SIGINT).unwrap();
    let status = demo.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit after Ctrl-C: {status}");
    wait_all_gone(&members, Duration::from_secs(1));
    let left: Vec<_> = std::fs::read_dir(&demo.tmp)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "the scratch directory stayed: {left:?}");
}

#[test]
fn a_demo_killed_with_sigkill_takes_its_members_with_it() {
    let mut demo = Demo::start("sigkill");
    demo.wait_for("SERVER", Duration::from_secs(90));
    let members = demo.members();
    assert_eq!(members.len(), 11);
    kill(Pid::from_raw(demo.child.id() as i32), Signal::SIGKILL).unwrap();
    demo.wait_exit(Duration::from_secs(10));
    wait_all_gone(&members, Duration::from_secs(5));
}
