//! systemd integration.
//!
//! `Type=notify`: the real binary, run with a notification socket of our own
//! standing in for systemd, reports READY=1 after binding, pings the watchdog
//! from its engine loop, and STOPPING=1 on SIGTERM with EXTEND_TIMEOUT_USEC
//! covering its drain (so `systemctl restart` never kills it mid-drain, and
//! starts the next one once its ports are free). A second instance on a port
//! in use fails with one clear line.
//!
//! The unit, `systemd/sngate.service`: `systemd-analyze verify` accepts it,
//! `systemd-analyze security` rates its sandbox, and it keeps what the
//! gateway relies on (notify, watchdog, restart, directories, serial access).
//! These need `systemd-analyze` (Debian's `systemd` package; scripts/test.sh
//! installs it), not a running systemd.

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
    // systemd is asked to wait out the drain (default grace 5 s) plus a
    // margin, whatever TimeoutStopSec says: a restart never kills the old
    // process mid-drain, and starts the new one only once it has exited.
    let extend = next(&socket, Duration::from_secs(5)).unwrap_or_default();
    let usec: u64 = extend
        .strip_prefix("EXTEND_TIMEOUT_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("EXTEND_TIMEOUT_USEC expected after STOPPING=1, got {extend:?}"));
    assert!(usec >= 5_000_000 + 1_000_000, "{usec}");
    let status = child.0.wait().expect("sngate exits");
    assert!(status.success(), "graceful exit expected, got {status}");
}

const UNIT: &str = include_str!("../systemd/sngate.service");

/// The unit with ExecStart pointing at the binary just built (verify checks
/// that the command exists), written to a temporary directory under its own
/// name.
fn unit_for_this_build() -> (tempfile::TempDir, std::path::PathBuf) {
    assert!(
        UNIT.contains("ExecStart=/usr/bin/sngate "),
        "ExecStart runs /usr/bin/sngate, where the package installs it"
    );
    let unit = UNIT.replace("/usr/bin/sngate", env!("CARGO_BIN_EXE_sngate"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sngate.service");
    std::fs::write(&path, unit).expect("write the unit");
    (dir, path)
}

fn systemd_analyze(args: &[&str], unit: &std::path::Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (apt-get install systemd; scripts/test.sh does)")
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let (_dir, path) = unit_for_this_build();
    let out = systemd_analyze(&["verify", "--man=no"], &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Warnings do not change the exit code: none may be about our unit.
    assert!(!stderr.contains("sngate"), "{stderr}");
}

#[test]
fn the_unit_sandbox_rates_ok_in_systemd_analyze_security() {
    let (_dir, path) = unit_for_this_build();
    // Exposure on systemd's 0..=10 scale, given here in tenths: at most 2.0
    // ("OK"); the unit rates 1.7, the one before hardening 6.3.
    let out = systemd_analyze(&["security", "--offline=true", "--threshold=20"], &path);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_unit_keeps_what_the_gateway_relies_on() {
    let directives: Vec<&str> = UNIT
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for wanted in [
        // Readiness and liveness (src/systemd.rs).
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        // The Debian package's conffile is /etc/sngate/sngate.toml.
        "ConfigurationDirectory=sngate",
        "ExecStart=/usr/bin/sngate run --config ${CONFIGURATION_DIRECTORY}/sngate.toml",
        "StateDirectory=sngate",
        "DynamicUser=yes",
        // Serial radios: the dialout group and the tty drivers' devices.
        "SupplementaryGroups=dialout",
        "DevicePolicy=closed",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-ttyACM rw",
        "DeviceAllow=char-ttyAMA rw",
        "DeviceAllow=char-ttyS rw",
        // UDP/TCP, and AF_UNIX for sd_notify.
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(directives.contains(&wanted), "the unit lacks {wanted:?}");
    }
    // The stop timeout covers the default drain (5 s) with room to spare
    // (the gateway extends it for a longer one: EXTEND_TIMEOUT_USEC).
    let timeout: u64 = directives
        .iter()
        .find_map(|d| d.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec=<N>s");
    assert!(timeout > 5 + 5, "TimeoutStopSec={timeout}s");
    // PrivateDevices=yes would hide /dev/ttyUSB* and /dev/ttyAMA*.
    assert!(
        !directives.iter().any(|d| d.starts_with("PrivateDevices=")),
        "PrivateDevices hides the serial ports"
    );
    let package = include_str!("../Cargo.toml");
    assert!(
        package.contains(r#"["config/sngate.toml", "etc/sngate/sngate.toml", "644"]"#),
        "the package installs the config where the unit reads it"
    );
}

#[test]
fn a_second_instance_on_a_port_in_use_fails_with_one_clear_line() {
    let first = Command::new(env!("CARGO_BIN_EXE_sngate"))
        .args([
            "run",
            "--udp",
            "127.0.0.1:0",
            "--broker",
            "off",
            "--state-dir",
            "off",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sngate starts");
    let (first, lines) = {
        use std::io::{BufRead, BufReader};
        let mut first = KillOnDrop(first);
        let stderr = first.0.stderr.take().expect("piped stderr");
        (first, BufReader::new(stderr).lines())
    };
    let addr = lines
        .map_while(Result::ok)
        .find_map(|l| {
            l.contains("listening on UDP")
                .then(|| l.rsplit("addr=").next().map(str::to_owned))
                .flatten()
        })
        .expect("the first instance's address");
    let second = Command::new(env!("CARGO_BIN_EXE_sngate"))
        .args([
            "run",
            "--udp",
            &addr,
            "--broker",
            "off",
            "--state-dir",
            "off",
        ])
        .output()
        .expect("the second runs");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with("error: ")
            && errors[0].contains(&addr)
            && errors[0].contains("address already in use")
            && errors[0].contains("another sngate"),
        "{stderr}"
    );
    drop(first);
}
