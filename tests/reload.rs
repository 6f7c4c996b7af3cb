//! SIGHUP reload with the real binary: the file is read again, what can
//! change at runtime is applied and logged, and a broken file changes nothing.

mod common;

use common::{spawn_logged, wait_for_line};

use std::process::Command;

fn sngate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sngate"))
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
    let mut cmd = sngate();
    cmd.args(["run", "--config"])
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
        .env_remove("RUST_LOG");
    let (mut child, lines) = spawn_logged(cmd);
    let listening = wait_for_line(&lines, "listening on UDP");
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
    let reloaded = wait_for_line(&lines, "configuration reloaded");
    assert!(reloaded.contains("predefined_topics"), "{reloaded}");
    assert_eq!(
        publish_predefined(&addr, "7"),
        0,
        "id 7 known after the reload"
    );

    // A broken file: nothing changes, the gateway keeps running.
    std::fs::write(&file, "[limits]\nmax_clinets = 3\n").expect("break config");
    signal(child.0.id(), "-HUP");
    let refused = wait_for_line(&lines, "configuration not reloaded");
    assert!(refused.contains("line 2"), "{refused}");
    // toml's message goes on over the next lines, naming the key.
    wait_for_line(&lines, "max_clinets");
    assert_eq!(
        publish_predefined(&addr, "7"),
        0,
        "the running config is kept"
    );

    signal(child.0.id(), "-TERM");
    assert!(child.0.wait().expect("sngate exits").success());
}
