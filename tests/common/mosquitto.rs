//! The one mosquitto launcher of the tree, shared by the integration tests
//! (`mod common;` → `common::mosquitto`) and the benchmark
//! (`#[path = "../tests/common/mosquitto.rs"] mod mosquitto;`).
//!
//! A real broker on a free 127.0.0.1 port, with its own configuration, log and
//! (optional) persistence database in a tempdir. Every wait is on an event with
//! a deadline: the port accepting TCP connections, the process exiting.

#![allow(dead_code)] // each user takes a different subset

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::time::Duration;

use tokio::time::Instant;

/// How long the broker may take to listen, or to exit when asked.
const DEADLINE: Duration = Duration::from_secs(10);

/// Tries to start on a fresh port when the chosen one was taken meanwhile.
const START_ATTEMPTS: usize = 5;

/// How a broker is configured, beyond `listener PORT 127.0.0.1` and
/// `allow_anonymous true`.
#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions {
    /// Keep sessions, subscriptions and queued messages of persistent clients
    /// in a database in the tempdir, written at [`Mosquitto::stop`] and read at
    /// [`Mosquitto::restart`]. (A [`Mosquitto::kill`] saves nothing.)
    pub persistence: bool,
    /// `max_queued_messages` (per client, beyond those in flight; 0 = no
    /// limit). `None` keeps mosquitto's default (1000).
    pub max_queued_messages: Option<u32>,
    /// An ACL file's text (mosquitto `acl_file` format), written next to
    /// the configuration and named by `acl_file`.
    pub acl: Option<String>,
    /// More configuration lines, as written in mosquitto.conf.
    pub extra: Vec<String>,
}

/// A mosquitto process. Dropping it kills the broker.
pub struct Mosquitto {
    /// The TCP port it listens on, on 127.0.0.1 (kept across restarts).
    pub port: u16,
    bin: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker with the default options.
    pub async fn start() -> Mosquitto {
        Self::start_with(MosquittoOptions::default()).await
    }

    /// Starts a broker with `options` and waits until it accepts connections.
    pub async fn start_with(options: MosquittoOptions) -> Mosquitto {
        let bin = binary();
        let dir = tempfile::tempdir().expect("tempdir for mosquitto");
        let conf = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        let mut m = Mosquitto {
            port: 0,
            bin,
            conf,
            log,
            child: None,
            dir,
        };
        for _ in 0..START_ATTEMPTS {
            m.port = free_port();
            m.write_conf(&options);
            if m.spawn_and_wait().await {
                return m;
            }
            // The port was taken between choosing and binding: another one.
        }
        panic!(
            "mosquitto did not start after {START_ATTEMPTS} attempts; last log:\n{}",
            m.log_text()
        );
    }

    /// The broker's address, as `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the process is running (started and not yet stopped or killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the broker again on the same port (stopping it first if it
    /// runs) and waits until it accepts connections.
    pub async fn restart(&mut self) {
        if self.is_running() {
            self.stop().await;
        }
        assert!(
            self.spawn_and_wait().await,
            "mosquitto did not restart on port {}; log:\n{}",
            self.port,
            self.log_text()
        );
    }

    /// Stops the broker gracefully (SIGTERM: it closes its connections and,
    /// with persistence, saves its database) and waits for it to exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, Signal::SIGCONT); // a frozen broker cannot exit
        signal(&child, Signal::SIGTERM);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if child.try_wait().expect("wait for mosquitto").is_some() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mosquitto did not exit on SIGTERM within {DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the broker (SIGKILL: no goodbye, nothing saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is read
    /// or acknowledged.
    pub fn freeze(&self) {
        signal(
            self.child.as_ref().expect("mosquitto running"),
            Signal::SIGSTOP,
        );
    }

    /// Resumes a frozen broker (SIGCONT).
    pub fn thaw(&self) {
        signal(
            self.child.as_ref().expect("mosquitto running"),
            Signal::SIGCONT,
        );
    }

    /// What the broker logged so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the broker's log holds `needle` (e.g. its "New client
    /// connected … as ID (p5, c1, k60)" line); panics with the log after
    /// the deadline.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "mosquitto never logged {needle:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn write_conf(&self, options: &MosquittoOptions) {
        let mut conf = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\n\
             # Started as root, mosquitto would switch to the user \"mosquitto\",\n\
             # which cannot write the tempdir. No effect for other users.\n\
             user root\n",
            self.port
        );
        if options.persistence {
            conf.push_str(&format!(
                "persistence true\npersistence_location {}/\n",
                self.dir.path().display()
            ));
        } else {
            conf.push_str("persistence false\n");
        }
        if let Some(n) = options.max_queued_messages {
            conf.push_str(&format!("max_queued_messages {n}\n"));
        }
        if let Some(acl) = &options.acl {
            let path = self.dir.path().join("acl");
            std::fs::write(&path, acl).expect("write the ACL file");
            conf.push_str(&format!("acl_file {}\n", path.display()));
        }
        for line in &options.extra {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(&self.conf, conf).expect("write mosquitto.conf");
    }

    /// Spawns the process and waits until the port accepts TCP connections.
    /// `false` when the process exited first (e.g. the port is taken).
    async fn spawn_and_wait(&mut self) -> bool {
        assert!(self.child.is_none(), "mosquitto already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open mosquitto.log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            let exited = self.child.as_mut().map(Child::try_wait);
            if let Some(Ok(Some(_))) = exited {
                self.child = None;
                return false;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "mosquitto does not listen on port {} after {DEADLINE:?}; log:\n{}",
                    self.port,
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The mosquitto binary: on PATH, else in /usr/sbin or /usr/bin (Debian puts
/// it in /usr/sbin, which is not on every user's PATH).
fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|bin| File::open(bin).is_ok_and(|f| f.metadata().is_ok_and(|m| m.is_file())))
        .expect("mosquitto not found (apt-get install -y mosquitto mosquitto-clients)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn signal(child: &Child, sig: Signal) {
    let pid = i32::try_from(child.id()).expect("pid fits pid_t");
    // kill(2) with the pid of a child we have not reaped yet.
    nix::sys::signal::kill(Pid::from_raw(pid), sig)
        .unwrap_or_else(|e| panic!("kill({pid}, {sig}): {e}"));
}
