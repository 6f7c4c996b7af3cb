//! SIGHUP reload with the real binary: the file is read again, what can
//! change at runtime is applied and logged, and a broken file changes nothing.

mod common;

use common::KillOnDrop;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn sngate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sngate"))
}

/// Waits for a stderr line containing `needle`; returns it.
fn wait_for(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no log line with {needle:?} within 10 s"));
        if line.contains(needle) {
            return line;
        }
    }
}

fn publish_predefined(gateway: &str, id: &str) -> i32 {
    sngate()
        .args([
            "pub",
            "--gateway",
            gateway,
            "--predefined-id",
            id,
            "-m",
            "x",
            "-q",
            "1",
        ])
        .output()
        .expect("sngate pub runs")
        .status
        .code()
        .unwrap_or(-1)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn sighup_applies_new_predefined_topics_and_keeps_the_old_config_on_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sngate.toml");
    std::fs::write(&file, "[log]\nlevel = \"info\"\n").expect("write config");
    let mut child = sngate()
        .args(["run", "--config"])
        .arg(&file)
        .args([
            "--udp",
            "127.0.0.1:0",
            "--broker",
            "off",
            "--state-dir",
            "off",
            "--log-format",
            "text",
        ])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("sngate starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut child = KillOnDrop(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let listening = wait_for(&lines, "listening on UDP");
    let addr = listening
        .split("addr=")
        .nth(1)
        .map(|a| a.trim().to_owned())
        .expect("the bound address in the log");

    // Pre-defined id 7 does not exist yet: refused.
    assert_eq!(publish_predefined(&addr, "7"), 1);

    std::fs::write(
        &file,
        "[log]\nlevel = \"info\"\n[[predefined_topics]]\nid = 7\ntopic = \"site/alarm\"\n",
    )
    .expect("rewrite config");
    signal(child.0.id(), "-HUP");
    let reloaded = wait_for(&lines, "configuration reloaded");
    assert!(reloaded.contains("predefined_topics"), "{reloaded}");
    assert_eq!(
        publish_predefined(&addr, "7"),
        0,
        "id 7 known after the reload"
    );

    // A broken file: nothing changes, the gateway keeps running.
    std::fs::write(&file, "[limits]\nmax_clinets = 3\n").expect("break config");
    signal(child.0.id(), "-HUP");
    let refused = wait_for(&lines, "configuration not reloaded");
    assert!(refused.contains("line 2"), "{refused}");
    // toml's message goes on over the next lines, naming the key.
    wait_for(&lines, "max_clinets");
    assert_eq!(
        publish_predefined(&addr, "7"),
        0,
        "the running config is kept"
    );

    signal(child.0.id(), "-TERM");
    assert!(child.0.wait().expect("sngate exits").success());
}
