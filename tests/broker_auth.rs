//! Who may connect to the embedded broker, with the real mosquitto tools:
//! users with hashed passwords (right, wrong, unknown, anonymous), the
//! anonymous policy, the TLS listener with a self-signed certificate made
//! here (`mosquitto_sub --cafile`), and `sngate passwd` through the real
//! binary producing an entry the broker accepts.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::mqtt_tools::{publish, subscriber};
use common::{KillOnDrop, start_gateway_with, test_config};
use sngate::config::{BrokerUser, Config};
use sngate::security::PasswordHash;

fn user(name: &str, password: &str) -> BrokerUser {
    BrokerUser {
        name: name.to_owned(),
        // Cheap in tests; the cost does not change what is checked.
        password_hash: PasswordHash::new(password.as_bytes(), 1000)
            .expect("hash")
            .to_string(),
    }
}

/// mosquitto_pub's report of CONNACK 0x04 / 0x05.
fn refused(out: &str) -> bool {
    out.contains("bad user name or password") || out.contains("not authorised")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_configured_users_with_the_right_password_get_in() {
    let gw = start_gateway_with(|c| {
        c.broker.users = vec![user("nodered", "pw-node"), user("ha", "pw-ha")];
    })
    .await;
    let broker = gw.broker.expect("broker enabled");
    let sub = subscriber(broker, "a/#", &["-u", "ha", "-P", "pw-ha"]);

    for (args, why) in [
        (vec![], "anonymous"),
        (
            vec!["-u", "nodered", "-P", "pw-ha"],
            "another user's password",
        ),
        (vec!["-u", "nodered", "-P", ""], "empty password"),
        (vec!["-u", "nodered"], "no password"),
        (vec!["-u", "nobody", "-P", "pw-node"], "unknown user"),
    ] {
        let mut all = vec!["-t", "a/x", "-m", why];
        all.extend(args);
        let (ok, out) = publish(broker, &all);
        assert!(!ok, "{why}: accepted: {out}");
        assert!(refused(&out), "{why}: {out}");
    }
    let (ok, out) = publish(
        broker,
        &["-t", "a/x", "-m", "hello", "-u", "nodered", "-P", "pw-node"],
    );
    assert!(ok, "right password refused: {out}");
    // Only the accepted client's message arrived.
    assert_eq!(sub.next_message(), "a/x 0 0 hello");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_can_be_allowed_beside_users_whose_passwords_are_still_checked() {
    let gw = start_gateway_with(|c| {
        c.broker.users = vec![user("nodered", "pw-node")];
        c.broker.allow_anonymous = Some(true);
    })
    .await;
    let broker = gw.broker.expect("broker enabled");
    let (ok, out) = publish(broker, &["-t", "a", "-m", "x"]);
    assert!(ok, "anonymous refused: {out}");
    let (ok, out) = publish(broker, &["-t", "a", "-m", "x", "-u", "nodered", "-P", "no"]);
    assert!(!ok && refused(&out), "wrong password accepted: {out}");
    gw.stop().await;
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files.
fn self_signed(dir: &std::path::Path) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let cert_file = dir.join("broker.crt");
    let key_file = dir.join("broker.key");
    std::fs::write(&cert_file, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).expect("write key");
    let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    (s(cert_file), s(key_file))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_serves_mosquitto_clients_with_the_same_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let (cert_c, key_c) = (cert.clone(), key.clone());
    let gw = start_gateway_with(move |c| {
        c.broker.users = vec![user("nodered", "pw-node")];
        c.broker.tls_listen = vec!["127.0.0.1:0".parse().expect("addr")];
        c.broker.tls_cert_file = Some(cert_c);
        c.broker.tls_key_file = Some(key_c);
    })
    .await;
    let plain = gw.broker.expect("broker enabled");
    let tls: SocketAddr = *gw
        .running()
        .broker_tls_addrs()
        .first()
        .expect("TLS listener bound");
    assert_ne!(tls, plain);

    // A subscriber over TLS gets what a plain TCP client publishes.
    let creds = ["-u", "nodered", "-P", "pw-node"];
    let mut args = vec!["--cafile", cert.as_str()];
    args.extend(creds);
    let sub = subscriber(tls, "sensors/#", &args);
    let mut pub_args = vec!["-t", "sensors/t", "-m", "21.5"];
    pub_args.extend(creds);
    let (ok, out) = publish(plain, &pub_args);
    assert!(ok, "{out}");
    assert_eq!(sub.next_message(), "sensors/t 0 0 21.5");

    // ...and the other way: published over TLS, received over TCP.
    let sub_plain = subscriber(plain, "cmd/#", &creds);
    let mut tls_pub = vec![
        "--cafile",
        cert.as_str(),
        "-t",
        "cmd/led",
        "-q",
        "1",
        "-m",
        "on",
    ];
    tls_pub.extend(creds);
    let (ok, out) = publish(tls, &tls_pub);
    assert!(ok, "{out}");
    assert_eq!(sub_plain.next_message(), "cmd/led 0 0 on");

    // Credentials are checked over TLS too.
    let (ok, out) = publish(
        tls,
        &[
            "--cafile", &cert, "-t", "x", "-m", "x", "-u", "nodered", "-P", "no",
        ],
    );
    assert!(!ok && refused(&out), "wrong password over TLS: {out}");
    // Plain MQTT on the TLS port gets nowhere; the gateway keeps serving.
    let mut plain_on_tls = vec!["-t", "x", "-m", "x"];
    plain_on_tls.extend(creds);
    let (ok, out) = publish(tls, &plain_on_tls);
    assert!(!ok, "plain MQTT accepted on the TLS port: {out}");
    let (ok, out) = publish(plain, &pub_args);
    assert!(ok, "{out}");
    assert_eq!(sub.next_message(), "sensors/t 0 0 21.5");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_certificate_or_key_fails_the_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let missing = dir.path().join("nope.pem").to_string_lossy().into_owned();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM\n").expect("write");
    let garbage = garbage.to_string_lossy().into_owned();
    for (c, k, named) in [
        (&missing, &key, &missing),
        (&cert, &missing, &missing),
        (&garbage, &key, &garbage),
        (&cert, &garbage, &garbage),
        // A key that is not the certificate's.
        (&cert, &self_signed_key(dir.path()), &cert),
    ] {
        let mut config = test_config();
        config.broker.tls_listen = vec!["127.0.0.1:0".parse().expect("addr")];
        config.broker.tls_cert_file = Some(c.clone());
        config.broker.tls_key_file = Some(k.clone());
        let err = match sngate::driver::start(config).await {
            Ok(running) => {
                let _ = running.shutdown().await;
                panic!("started with cert {c} and key {k}");
            }
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(named.as_str()),
            "{err:?} does not name {named}"
        );
    }
}

/// Another certificate's key, in its own file.
fn self_signed_key(dir: &std::path::Path) -> String {
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).expect("cert");
    let path = dir.join("other.key");
    std::fs::write(&path, other.signing_key.serialize_pem()).expect("write");
    path.to_string_lossy().into_owned()
}

/// Runs the real `sngate passwd` with `stdin` piped in.
fn sngate_passwd(args: &[&str], stdin: &str) -> (bool, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_sngate"))
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sngate starts");
    let mut child = KillOnDrop(child);
    if let Some(mut input) = child.0.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("stdin");
    }
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.0.stdout.take() {
        s.read_to_string(&mut out).expect("stdout");
    }
    if let Some(mut s) = child.0.stderr.take() {
        s.read_to_string(&mut err).expect("stderr");
    }
    let status = child.wait().expect("sngate exits");
    (status.success(), out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sngate_passwd_prints_an_entry_the_broker_accepts() {
    let (ok, out, err) = sngate_passwd(&["--user", "nodered"], "hunter2\n");
    assert!(ok, "{err}");
    // The output is a config fragment as it stands.
    let parsed = Config::from_toml_str(&out, std::path::Path::new("passwd-output"))
        .unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(parsed.broker.users.len(), 1);
    assert_eq!(parsed.broker.users[0].name, "nodered");
    assert!(!out.contains("hunter2"), "the password itself was printed");
    let users = parsed.broker.users;
    let gw = start_gateway_with(move |c| c.broker.users = users).await;
    let broker = gw.broker.expect("broker enabled");
    let (ok, out) = publish(
        broker,
        &["-t", "a", "-m", "x", "-u", "nodered", "-P", "hunter2"],
    );
    assert!(ok, "the password given to sngate passwd was refused: {out}");
    // The newline ended the password; it is not part of it.
    let (ok, out) = publish(
        broker,
        &["-t", "a", "-m", "x", "-u", "nodered", "-P", "hunter2\n"],
    );
    assert!(!ok && refused(&out), "{out}");
    gw.stop().await;
}

#[test]
fn sngate_passwd_alone_prints_one_hash_line() {
    let (ok, out, err) = sngate_passwd(&["--iterations", "2000"], "pw with spaces\r\n");
    assert!(ok, "{err}");
    let line = out.strip_suffix('\n').expect("one line");
    assert!(!line.contains('\n'), "{out:?}");
    let hash: PasswordHash = line.parse().expect("a hash");
    assert_eq!(hash.iterations(), 2000);
    assert!(hash.verify(b"pw with spaces"));
    // An empty password is refused.
    let (ok, out, err) = sngate_passwd(&[], "\n");
    assert!(!ok, "{out}");
    assert!(err.contains("empty password"), "{err}");
}
