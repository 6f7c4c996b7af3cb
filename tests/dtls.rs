//! DTLS for devices, end to end with a third-party client: `openssl s_client`
//! speaking DTLS 1.2 with a pre-shared key (TLS_PSK_WITH_AES_128_CCM_8)
//! carries raw MQTT-SN datagrams to the gateway started in-process, bridged
//! to a real mosquitto on a free port, where a plain MQTT client watches.
//!
//! Every wait is on an event with a deadline. Where a test shows that
//! something did *not* get through, a message that did travels the same
//! ordered path behind it (the checker's next message is the good one).

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::checker::Checker;
use common::mosquitto::Mosquitto;
use common::{KillOnDrop, TestGateway, start_gateway_with, upstream_to};
use sngate::proto::{self, Packet, QoS, ReturnCode, TopicRef};

const KEY1: &str = "00112233445566778899aabbccddeeff";
const KEY2: &str = "0f0e0d0c0b0a09080706050403020100";

/// A psk file listing dev1 and dev2, in a directory kept for the test.
fn psk_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("psk");
    std::fs::write(&path, format!("# test devices\ndev1:{KEY1}\ndev2:{KEY2}\n")).expect("write");
    (dir, path)
}

/// A gateway with one DTLS listener (keys from `psk`), bridged to `broker`.
async fn gateway(psk: &std::path::Path, broker: &Mosquitto) -> (TestGateway, SocketAddr) {
    let psk = psk.to_owned();
    let port = broker.port;
    let gw = start_gateway_with(move |c| {
        c.dtls.listen = vec!["127.0.0.1:0".parse().expect("address")];
        c.dtls.psk_file = Some(psk);
        c.upstream = Some(upstream_to(port, "sngate-dtls-test"));
        c.http.listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let addr = *gw.running().dtls_addrs().first().expect("a DTLS listener");
    (gw, addr)
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    proto::encode(packet, &mut buf).expect("encodes");
    buf.to_vec()
}

fn connect(client_id: &str) -> Vec<u8> {
    encode(&Packet::Connect {
        will: false,
        clean_session: true,
        protocol_id: 1,
        duration: 60,
        client_id: client_id.to_owned(),
    })
}

fn publish(topic: [u8; 2], msg_id: u16, payload: &str) -> Vec<u8> {
    encode(&Packet::Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicRef::Short(topic),
        msg_id,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    })
}

/// `openssl s_client` over DTLS 1.2 with a PSK: what is written to it goes
/// out as one record per write, what it decrypts arrives on `received`.
struct SClient {
    child: KillOnDrop,
    stdin: std::process::ChildStdin,
    received: mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl SClient {
    fn start(gateway: SocketAddr, identity: &str, key: &str) -> SClient {
        let psk = [
            "-psk_identity",
            identity,
            "-psk",
            key,
            "-cipher",
            "PSK-AES128-CCM8",
        ];
        Self::start_with(gateway, &psk)
    }

    fn start_with(gateway: SocketAddr, args: &[&str]) -> SClient {
        let mut child = Command::new("openssl")
            .args(["s_client", "-dtls1_2", "-connect"])
            .arg(gateway.to_string())
            .args(args)
            .arg("-quiet")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl runs (scripts/test.sh installs it)");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (tx, received) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        SClient {
            child: KillOnDrop(child),
            stdin,
            received,
            pending: Vec::new(),
        }
    }

    /// Sends one MQTT-SN message (one write, one record).
    fn send(&mut self, datagram: &[u8]) {
        self.stdin.write_all(datagram).expect("write to s_client");
        self.stdin.flush().expect("flush");
    }

    /// The next MQTT-SN message from the gateway, within `wait`.
    fn recv_within(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(&len) = self.pending.first()
                && len > 1
                && self.pending.len() >= usize::from(len)
            {
                let msg: Vec<u8> = self.pending.drain(..usize::from(len)).collect();
                return Some(proto::decode(&msg).expect("the gateway sends valid MQTT-SN"));
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            match self.received.recv_timeout(left) {
                Ok(chunk) => self.pending.extend_from_slice(&chunk),
                Err(_) => return None,
            }
        }
    }

    /// CONNECT as `client_id`, resent each second until an answer (the
    /// first may go out before the handshake ends), and the CONNACK's code.
    fn connect(&mut self, client_id: &str) -> Option<ReturnCode> {
        for _ in 0..5 {
            self.send(&connect(client_id));
            if let Some(p) = self.recv_within(Duration::from_secs(1)) {
                match p {
                    Packet::ConnAck { return_code } => return Some(return_code),
                    other => panic!("expected CONNACK, got {other:?}"),
                }
            }
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_with_a_psk_connects_and_its_message_reaches_mosquitto() {
    let broker = Mosquitto::start().await;
    let (_dir, psk) = psk_file();
    let (gw, addr) = gateway(&psk, &broker).await;
    let mut checker = Checker::connect(broker.port, "watcher").await;
    checker.subscribe("sn").await;

    let mut dev = tokio::task::spawn_blocking(move || {
        let mut dev = SClient::start(addr, "dev1", KEY1);
        assert_eq!(dev.connect("dev1"), Some(ReturnCode::Accepted));
        dev.send(&publish(*b"sn", 7, "over dtls"));
        let ack = dev.recv_within(Duration::from_secs(3));
        assert!(
            matches!(
                ack,
                Some(Packet::PubAck {
                    msg_id: 7,
                    return_code: ReturnCode::Accepted,
                    ..
                })
            ),
            "PUBACK expected, got {ack:?}"
        );
        dev
    })
    .await
    .expect("device");
    let (topic, payload, _) = checker.next().await;
    assert_eq!((topic.as_str(), payload.as_str()), ("sn", "over dtls"));
    dev.child.0.kill().ok();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_id_gets_connack_0x03_and_a_wrong_key_gets_nothing_through() {
    let broker = Mosquitto::start().await;
    let (_dir, psk) = psk_file();
    let (gw, addr) = gateway(&psk, &broker).await;
    let mut checker = Checker::connect(broker.port, "watcher").await;
    checker.subscribe("sn").await;

    tokio::task::spawn_blocking(move || {
        // dev1's key, but dev2's client id: refused by the identity binding.
        let mut impostor = SClient::start(addr, "dev1", KEY1);
        assert_eq!(impostor.connect("dev2"), Some(ReturnCode::NotSupported));
        impostor.send(&publish(*b"sn", 1, "from the impostor"));
        // dev2's identity with dev1's key: the handshake fails, so nothing
        // it writes is ever taken.
        let mut wrong = SClient::start(addr, "dev2", KEY1);
        assert_eq!(wrong.connect("dev2"), None, "a wrong key gets no answer");
        wrong.send(&publish(*b"sn", 2, "from the wrong key"));
        // The real dev2 gets through, behind both.
        let mut dev2 = SClient::start(addr, "dev2", KEY2);
        assert_eq!(dev2.connect("dev2"), Some(ReturnCode::Accepted));
        dev2.send(&publish(*b"sn", 3, "from dev2"));
        let ack = dev2.recv_within(Duration::from_secs(3));
        assert!(
            matches!(ack, Some(Packet::PubAck { msg_id: 3, .. })),
            "got {ack:?}"
        );
    })
    .await
    .expect("devices");
    let (_, payload, _) = checker.next().await;
    assert_eq!(
        payload, "from dev2",
        "nothing else reached the broker first"
    );
    gw.stop().await;
}

fn sngate(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sngate"));
    cmd.args(args);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sngate_pub_and_sub_speak_dtls_with_a_psk() {
    let broker = Mosquitto::start().await;
    let (_dir, psk) = psk_file();
    let (gw, addr) = gateway(&psk, &broker).await;
    let mut checker = Checker::connect(broker.port, "watcher").await;
    checker.subscribe("sensors/#").await;
    let gateway = addr.to_string();
    tokio::task::spawn_blocking(move || {
        let dtls = |id: &'static str, key: &'static str| {
            [
                "--gateway",
                &gateway,
                "--dtls",
                "--psk-identity",
                id,
                "--psk",
                key,
            ]
            .map(str::to_owned)
        };
        // A wrong key: the handshake never completes, the tool fails (after
        // its handshake timeout, so it runs beside the rest).
        let wrong = sngate(&["pub"])
            .args(dtls("dev1", KEY2))
            .args(["-t", "sensors/temp", "-m", "forged", "-q", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sngate pub runs");
        let status = sngate(&["pub"])
            .args(dtls("dev1", KEY1))
            .args(["-t", "sensors/temp", "-m", "21.5", "-q", "1", "-r"])
            .status()
            .expect("sngate pub runs");
        assert!(status.success(), "pub over DTLS: {status}");
        // dev2 subscribes over DTLS and gets the retained message.
        let out = sngate(&["sub"])
            .args(dtls("dev2", KEY2))
            .args(["-t", "sensors/#", "-C", "1", "-v"])
            .stderr(Stdio::null())
            .output()
            .expect("sngate sub runs");
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "sensors/temp 21.5"
        );
        let out = wrong.wait_with_output().expect("sngate pub ends");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("DTLS"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await
    .expect("tools");
    let (topic, payload, _) = checker.next().await;
    assert_eq!((topic.as_str(), payload.as_str()), ("sensors/temp", "21.5"));
    gw.stop().await;
}

fn dtls_endpoint(addr: SocketAddr, identity: &str, key: &str) -> sngate::client::Endpoint {
    sngate::client::Endpoint::Dtls {
        gateway: addr,
        psk: sngate::transport::dtls::client::PskCredentials {
            identity: identity.to_owned(),
            key: sngate::transport::dtls::psk::decode_hex(key).expect("hex"),
        },
    }
}

/// The hijack of docs/security.md, closed: a sleeping DTLS device's buffer
/// is not collected by a plain-UDP peer or another identity naming its
/// client id, and the device itself collects it from a new address through
/// a new DTLS session (a NAT rebinding), proven by its identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeper_resumes_from_a_new_address_with_its_buffer_and_nobody_else_can() {
    use sngate::client::Client;
    use sngate::proto::SubscribeTopic;
    let broker = Mosquitto::start().await;
    let (_dir, psk) = psk_file();
    let (gw, addr) = gateway(&psk, &broker).await;
    let opts = common::options("dev1").clean_session(false);
    let mut sleeper = Client::connect_via(dtls_endpoint(addr, "dev1", KEY1), opts)
        .await
        .expect("dev1 connects over DTLS");
    sleeper
        .subscribe(SubscribeTopic::Name("sn".into()), QoS::AtLeastOnce)
        .await
        .expect("subscribed");
    sleeper.sleep(300).await.expect("asleep");
    let mut dev2 = Client::connect_via(dtls_endpoint(addr, "dev2", KEY2), common::options("dev2"))
        .await
        .expect("dev2 connects over DTLS");
    for i in 0..3 {
        dev2.publish(
            TopicRef::Short(*b"sn"),
            format!("m{i}"),
            QoS::AtLeastOnce,
            false,
        )
        .await
        .expect("published");
    }
    // Over plain UDP, anyone naming dev1: no wake-up, no takeover.
    let attacker = common::RawDevice::new(gw.addr).await;
    attacker
        .send(&Packet::PingReq {
            client_id: Some("dev1".into()),
        })
        .await;
    attacker.send_bytes(&connect("dev1")).await;
    // dev1 from a new port, a new DTLS session: its buffer, then PINGRESP.
    let collected = tokio::task::spawn_blocking(move || {
        let mut dev = SClient::start(addr, "dev1", KEY1);
        let wake = encode(&Packet::PingReq {
            client_id: Some("dev1".into()),
        });
        let mut payloads = Vec::new();
        let mut packet = None;
        for _ in 0..5 {
            dev.send(&wake);
            packet = dev.recv_within(Duration::from_secs(1));
            if packet.is_some() {
                break;
            }
        }
        loop {
            match packet {
                Some(Packet::Publish {
                    msg_id,
                    topic,
                    payload,
                    ..
                }) => {
                    payloads.push(String::from_utf8_lossy(&payload).into_owned());
                    dev.send(&encode(&Packet::PubAck {
                        topic_id: topic.raw(),
                        msg_id,
                        return_code: ReturnCode::Accepted,
                    }));
                }
                Some(Packet::PingResp) => return payloads,
                other => {
                    panic!("expected the buffer then PINGRESP, got {other:?} after {payloads:?}")
                }
            }
            packet = dev.recv_within(Duration::from_secs(3));
        }
    })
    .await
    .expect("wake");
    assert_eq!(collected, ["m0", "m1", "m2"]);
    // The attacker's wake-up and takeover were ignored by the identity
    // binding, and counted; it was told nothing.
    let http = gw.running().http_addr().expect("http");
    let page = common::http::get(http, "/metrics").await.body;
    assert_eq!(
        common::http::sample(&page, "sngate_drops_total", "reason=\"identity_mismatch\""),
        Some(2.0),
        "{page}"
    );
    let mut buf = [0u8; 64];
    assert!(
        attacker.socket.try_recv(&mut buf).is_err(),
        "the attacker heard something"
    );
    gw.stop().await;
}

/// A CA, the gateway's certificate from it, a device certificate from it
/// with CN `dev3`, and a device certificate with the same CN from nobody's
/// CA; PEM files in the returned directory.
fn certificates() -> tempfile::TempDir {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let write =
        |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "sngate test CA");
    write("ca.pem", ca.self_signed(&ca_key).expect("CA").pem());
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |cn: &str, client: bool| {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        (p, KeyPair::generate().expect("key"))
    };
    let (p, k) = leaf("sngate", false);
    write("gw.pem", p.signed_by(&k, &issuer).expect("cert").pem());
    write("gw.key", k.serialize_pem());
    let (p, k) = leaf("dev3", true);
    write("dev3.pem", p.signed_by(&k, &issuer).expect("cert").pem());
    write("dev3.key", k.serialize_pem());
    let (p, k) = leaf("dev3", true);
    write("rogue.pem", p.self_signed(&k).expect("cert").pem());
    write("rogue.key", k.serialize_pem());
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_certificate_from_the_ca_is_its_identity_and_others_get_nothing_through() {
    let dir = certificates();
    let path = |n: &str| dir.path().join(n);
    let (cert, key, ca) = (path("gw.pem"), path("gw.key"), path("ca.pem"));
    let gw = start_gateway_with(move |c| {
        c.dtls.listen = vec!["127.0.0.1:0".parse().expect("address")];
        c.dtls.cert_file = Some(cert);
        c.dtls.key_file = Some(key);
        c.dtls.ca_file = Some(ca);
    })
    .await;
    let addr = *gw.running().dtls_addrs().first().expect("a DTLS listener");
    let file = |n: &str| path(n).to_str().expect("utf-8").to_owned();
    let (dev3, dev3_key, rogue, rogue_key, ca): (String, String, String, String, String) = (
        file("dev3.pem"),
        file("dev3.key"),
        file("rogue.pem"),
        file("rogue.key"),
        file("ca.pem"),
    );
    tokio::task::spawn_blocking(move || {
        let args = |cert: &str, key: &str| -> Vec<String> {
            ["-cert", cert, "-key", key, "-CAfile", &ca]
                .map(str::to_owned)
                .to_vec()
        };
        let start = |a: Vec<String>| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            SClient::start_with(addr, &a)
        };
        // `sngate pub` with a certificate (the client id defaults to its CN).
        let tool = |cert: &str, key: &str| {
            sngate(&["pub", "--gateway", &addr.to_string(), "--dtls"])
                .args(["--cert", cert, "--key", key, "--ca", &ca])
                .args(["-t", "sn", "-m", "by tool", "-q", "1"])
                .stderr(Stdio::piped())
                .spawn()
                .expect("sngate pub runs")
        };
        // Not from the CA: fails after its handshake timeout (so it runs
        // beside the rest).
        let rogue_tool = tool(&rogue, &rogue_key);
        let mut dev = start(args(&dev3, &dev3_key));
        assert_eq!(dev.connect("dev3"), Some(ReturnCode::Accepted));
        dev.send(&publish(*b"sn", 5, "by certificate"));
        let ack = dev.recv_within(Duration::from_secs(3));
        assert!(
            matches!(
                ack,
                Some(Packet::PubAck {
                    msg_id: 5,
                    return_code: ReturnCode::Accepted,
                    ..
                })
            ),
            "got {ack:?}"
        );
        let mut other = start(args(&dev3, &dev3_key));
        assert_eq!(other.connect("dev4"), Some(ReturnCode::NotSupported));
        // The same CN, not from the CA: the handshake fails.
        let mut rogue_client = start(args(&rogue, &rogue_key));
        assert_eq!(rogue_client.connect("dev3"), None);
        let out = tool(&dev3, &dev3_key).wait_with_output().expect("ends");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = rogue_tool.wait_with_output().expect("ends");
        assert!(!out.status.success());
    })
    .await
    .expect("devices");
    gw.stop().await;
}

/// The psk file is re-read on reload (SIGHUP calls the same
/// `reload_psk`): a device added to it can connect at once, one removed
/// cannot make a new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_psk_file_admits_a_new_device_and_revokes_a_removed_one() {
    use sngate::client::Client;
    let broker = Mosquitto::start().await;
    let (_dir, psk) = psk_file();
    let (gw, addr) = gateway(&psk, &broker).await;
    std::fs::write(&psk, format!("dev1:{KEY1}\ndev9:{KEY2}\n")).expect("write");
    gw.running().reload_psk(&psk).expect("reloaded");
    let dev9 =
        Client::connect_via(dtls_endpoint(addr, "dev9", KEY2), common::options("dev9")).await;
    assert!(
        dev9.is_ok(),
        "a device added to the file connects: {dev9:?}"
    );
    let dev2 =
        Client::connect_via(dtls_endpoint(addr, "dev2", KEY2), common::options("dev2")).await;
    assert!(dev2.is_err(), "a device removed from the file cannot");
    // A file that does not parse keeps the keys in force.
    std::fs::write(&psk, "not a psk line\n").expect("write");
    assert!(gw.running().reload_psk(&psk).is_err());
    let dev1 =
        Client::connect_via(dtls_endpoint(addr, "dev1", KEY1), common::options("dev1")).await;
    assert!(dev1.is_ok(), "{dev1:?}");
    gw.stop().await;
}

/// `sngate sim` over DTLS: every simulated device its own DTLS session with
/// the shared identity, as `IDENTITY/sim…-N` (allowed by `%i/*`); every
/// QoS 1 message reaches every subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_devices_over_dtls_deliver_every_qos1_message() {
    use sngate::sim::{self, SimConfig, SimLength};
    let (_dir, psk) = psk_file();
    let gw = start_gateway_with(move |c| {
        c.dtls.listen = vec!["127.0.0.1:0".parse().expect("address")];
        c.dtls.psk_file = Some(psk);
        c.dtls.client_id_pattern = "%i/*".into();
    })
    .await;
    let addr = *gw.running().dtls_addrs().first().expect("a DTLS listener");
    let mut cfg = SimConfig::new(addr, 5);
    cfg.dtls = Some(sngate::transport::dtls::client::PskCredentials {
        identity: "dev1".into(),
        key: sngate::transport::dtls::psk::decode_hex(KEY1).expect("hex"),
    });
    cfg.retry_interval = Duration::from_secs(1);
    cfg.drain = Duration::from_secs(5);
    cfg.length = SimLength::Messages(10);
    cfg.rate = 20.0;
    cfg.subscribers = 2;
    let report = sim::run(cfg, |_| {}).await.expect("the run starts");
    assert_eq!((report.sent, report.acknowledged), (50, 50), "{report}");
    assert_eq!(report.delivered, 2 * 50, "{report}");
    assert_eq!((report.lost, report.errors), (0, 0), "{report}");
    gw.stop().await;
}
