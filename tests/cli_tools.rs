//! `sngate pub` and `sngate sub`: the real binary against a gateway started
//! in-process on an ephemeral port. Every wait is on output, with a deadline.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{KillOnDrop, start_gateway};

fn sngate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sngate"))
}

/// Runs `sngate pub` to completion; returns (exit code, stderr).
fn publish(gateway: &str, args: &[&str]) -> (i32, String) {
    let out = sngate()
        .args(["pub", "--gateway", gateway])
        .args(args)
        .output()
        .expect("sngate pub runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `sngate sub`; its stdout lines arrive on the returned channel.
fn subscribe(gateway: &str, args: &[&str]) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut child = sngate()
        .args(["sub", "--gateway", gateway])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sngate sub runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (KillOnDrop(child), rx)
}

fn next_line(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a line from sngate sub within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_round_trip_retained_qos1_and_qos_minus_one() {
    let gw = start_gateway().await;
    let addr = gw.addr.to_string();
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            publish(&a, &["-t", "sensors/temp", "-m", "21.5", "-q", "1", "-r"]).0,
            0
        );
        let (mut child, rx) = subscribe(&a, &["-t", "sensors/#", "-C", "1", "-v"]);
        assert_eq!(next_line(&rx), "sensors/temp 21.5");
        assert!(child.wait().expect("sub exits").success());

        // QoS -1 to a short name needs no connection; retained, so a later
        // subscriber gets it.
        assert_eq!(
            publish(&a, &["-t", "ab", "-m", "no session", "-q", "-1", "-r"]).0,
            0
        );
        let (mut child, rx) = subscribe(&a, &["-t", "ab", "-C", "1"]);
        assert_eq!(next_line(&rx), "no session");
        assert!(child.wait().expect("sub exits").success());
    })
    .await
    .expect("blocking part");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_sub_collects_what_arrived_while_it_slept() {
    let gw = start_gateway().await;
    let a = gw.addr.to_string();
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            publish(&a, &["-t", "s/first", "-m", "one", "-q", "1", "-r"]).0,
            0
        );
        let (mut child, rx) = subscribe(
            &a,
            &["-t", "s/#", "-q", "1", "-c", "-C", "2", "--sleep", "1"],
        );
        // The retained message comes at once; the client then sleeps.
        assert_eq!(next_line(&rx), "one");
        assert_eq!(
            publish(&a, &["-t", "s/second", "-m", "two", "-q", "1"]).0,
            0
        );
        assert_eq!(next_line(&rx), "two");
        assert!(child.wait().expect("sub exits").success());
    })
    .await
    .expect("blocking part");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_usage_errors_have_distinct_exit_codes() {
    let gw = start_gateway().await;
    let a = gw.addr.to_string();
    tokio::task::spawn_blocking(move || {
        let (code, err) = publish(&a, &["--predefined-id", "9", "-m", "x", "-q", "1"]);
        assert_eq!(code, 1);
        assert!(err.contains("InvalidTopicId"), "{err}");
        let (code, err) = publish(&a, &["-m", "x"]);
        assert_eq!(code, 2);
        assert!(err.contains("--topic"), "{err}");
    })
    .await
    .expect("blocking part");
    gw.stop().await;
}
