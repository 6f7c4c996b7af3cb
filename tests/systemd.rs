//! `Type=notify` integration: the real binary, run with a notification
//! socket of our own standing in for systemd, reports READY=1 after binding,
//! pings the watchdog from its engine loop, and STOPPING=1 on SIGTERM.

mod common;

use common::KillOnDrop;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

/// The next notification, within `wait`.
fn next(socket: &UnixDatagram, wait: Duration) -> Option<String> {
    socket.set_read_timeout(Some(wait)).ok()?;
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let child = Command::new(env!("CARGO_BIN_EXE_sngate"))
        .args([
            "run",
            "--udp",
            "127.0.0.1:0",
            "--broker",
            "off",
            "--state-dir",
            "off",
            "--log-level",
            "warn",
        ])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .spawn()
        .expect("sngate starts");
    let mut child = KillOnDrop(child);

    assert_eq!(
        next(&socket, Duration::from_secs(10)).as_deref(),
        Some("READY=1")
    );
    // Half the 200 ms interval: several pings in a second.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(1) {
        if next(&socket, Duration::from_secs(1)).as_deref() == Some("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(
        pings >= 3,
        "{pings} watchdog pings in a second at a 200 ms interval"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let mut stopping = false;
    while let Some(msg) = next(&socket, Duration::from_secs(5)) {
        if msg == "STOPPING=1" {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 expected after SIGTERM");
    let status = child.0.wait().expect("sngate exits");
    assert!(status.success(), "graceful exit expected, got {status}");
}
