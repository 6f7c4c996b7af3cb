//! The real mosquitto command-line tools driven by tests: `mosquitto_sub`
//! and `mosquitto_pub` children whose output lines arrive on a channel, with
//! deadlines on every wait. `mosquitto_sub -d` prints "received SUBACK" once
//! its subscription is in place; [`subscriber`] waits for that line.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{KillOnDrop, WAIT};

/// A `mosquitto_sub` (or `mosquitto_pub -l`) child and its output lines.
pub struct Tool {
    /// The child process.
    pub child: KillOnDrop,
    /// Its stdout and stderr lines.
    pub lines: mpsc::Receiver<String>,
}

impl Tool {
    /// Starts `program` with `args`, line-buffered.
    pub fn spawn(program: &str, args: &[&str]) -> Tool {
        // Line-buffered: mosquitto's tools block-buffer a pipe otherwise.
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} starts: {e}"));
        let (tx, lines) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Tool {
            child: KillOnDrop(child),
            lines,
        }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn expect_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line with {needle:?}; saw {seen:#?}"),
            }
        }
    }

    /// The next line that is not mosquitto's debug output.
    pub fn next_message(&self) -> String {
        self.next_message_within(WAIT)
    }

    /// The next message line, waiting up to `wait` for it.
    pub fn next_message_within(&self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if is_debug(&line) => continue,
                Ok(line) => return line,
                Err(_) => panic!("no message within {wait:?}"),
            }
        }
    }

    /// Every message line until none came for `quiet`.
    #[allow(dead_code)]
    pub fn drain(&self, quiet: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            if !is_debug(&line) {
                lines.push(line);
            }
        }
        lines
    }

    /// No message line within `wait`.
    pub fn expect_silence(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if is_debug(&line) => continue,
                Ok(line) => panic!("unexpected line {line:?}"),
                Err(_) => return,
            }
        }
    }
}

/// mosquitto's `-d` chatter, not a message.
pub fn is_debug(line: &str) -> bool {
    line.starts_with("Client ") || line.starts_with("Subscribed (")
}

/// Host and port as separate arguments.
pub fn host_port(addr: SocketAddr) -> (String, String) {
    (addr.ip().to_string(), addr.port().to_string())
}

/// `mosquitto_sub -d` on `filter`, waiting until its SUBACK arrived. Output
/// lines are "topic qos retain payload".
pub fn subscriber(broker: SocketAddr, filter: &str, extra: &[&str]) -> Tool {
    let (host, port) = host_port(broker);
    let mut args = vec![
        "-h",
        &host,
        "-p",
        &port,
        "-t",
        filter,
        "-d",
        "-F",
        "%t %q %r %p",
    ];
    args.extend_from_slice(extra);
    let tool = Tool::spawn("mosquitto_sub", &args);
    tool.expect_line("received SUBACK");
    tool
}

/// Runs `mosquitto_pub` to completion; returns its exit status and output.
pub fn publish(broker: SocketAddr, args: &[&str]) -> (bool, String) {
    let (host, port) = host_port(broker);
    let out = Command::new("mosquitto_pub")
        .args(["-h", &host, "-p", &port])
        .args(args)
        .output()
        .expect("mosquitto_pub runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
