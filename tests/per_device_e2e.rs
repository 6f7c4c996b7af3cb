//! Per-device upstream sessions against a real mosquitto: the broker sees each
//! device's own client id, CleanSession flag and keep-alive; it publishes a
//! silent device's will itself; its ACL file is enforced per device; it
//! refuses a device with bad credentials and the device is refused; after a
//! broker restart every device's session (and subscription) comes back; a
//! broker-side reset of every connection (a blip) publishes no device's
//! will, while a device really lost still gets its will (issue 23).
//! Devices are MQTT-SN clients on real UDP sockets.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::mosquitto::{Mosquitto, MosquittoOptions};
use common::mqtt_tools::subscriber;
use common::{connect, connect_with, options, start_gateway_with, upstream_to};
use sngate::client::{Client, ClientError, Will};
use sngate::config::{BridgeMode, DeviceCredentials, UpstreamConfig};
use sngate::proto::{QoS, ReturnCode, SubscribeTopic};

fn mosquitto_addr(m: &Mosquitto) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], m.port))
}

fn per_device(port: u16, client_id: &str) -> UpstreamConfig {
    let mut u = upstream_to(port, client_id);
    u.bridge_mode = BridgeMode::PerDevice;
    u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_sees_each_devices_client_id_clean_flag_and_keep_alive() {
    let cloud = Mosquitto::start().await;
    let gw = start_gateway_with(|c| {
        let mut u = per_device(cloud.port, "gw-ids");
        u.per_device.client_id_prefix = "sn-".into();
        c.upstream = Some(u);
    })
    .await;
    let _a = connect(gw.addr, "dev-a").await;
    let _b = connect_with(
        gw.addr,
        options("dev-b").clean_session(false).keep_alive(30),
    )
    .await;
    // mosquitto: "New client connected from … as ID (p5, cCLEAN, kKEEPALIVE)".
    cloud.wait_for_log("as sn-dev-a (p5, c1, k60)").await;
    cloud.wait_for_log("as sn-dev-b (p5, c0, k30)").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_publishes_a_silent_devices_will() {
    // Only a device may write its own status topic: the will can only have
    // been published from the device's own session, not the gateway's.
    let cloud = Mosquitto::start_with(MosquittoOptions {
        acl: Some("topic read #\npattern write status/%c\n".into()),
        ..MosquittoOptions::default()
    })
    .await;
    let gw = start_gateway_with(|c| {
        let mut u = per_device(cloud.port, "gw-will");
        // MQTT 5: the broker waits this long before publishing it.
        u.will_delay_secs = 1;
        c.upstream = Some(u);
    })
    .await;
    let watcher = subscriber(mosquitto_addr(&cloud), "status/#", &["-q", "1"]);
    let device = connect_with(
        gw.addr,
        options("dev-w").keep_alive(2).auto_ping(false).will(Will {
            topic: "status/dev-w".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
        }),
    )
    .await;
    // Silent from now on: lost after 2 s + 50 %, then its session is dropped.
    std::mem::forget(device);
    assert_eq!(
        watcher.next_message_within(Duration::from_secs(10)),
        "status/dev-w 1 0 gone"
    );
    watcher.expect_silence(Duration::from_millis(500));
    gw.stop().await;
}

async fn send(c: &mut Client, topic: &'static str) -> Result<(), ClientError> {
    c.publish_named(topic, Bytes::from(topic), QoS::AtLeastOnce, false)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mosquitto_acl_file_is_enforced_per_device() {
    // Device A may write a/…, device B b/…; everyone may read.
    let cloud = Mosquitto::start_with(MosquittoOptions {
        acl: Some("topic read #\npattern write %c/#\n".into()),
        ..MosquittoOptions::default()
    })
    .await;
    let gw = start_gateway_with(|c| c.upstream = Some(per_device(cloud.port, "gw-acl"))).await;
    let watcher = subscriber(mosquitto_addr(&cloud), "#", &["-q", "1"]);
    let mut a = connect(gw.addr, "a").await;
    let mut b = connect(gw.addr, "b").await;
    // Each device's own topic: acknowledged after the broker's PUBACK, and there.
    send(&mut a, "a/t").await.expect("a may write a/");
    assert_eq!(watcher.next_message(), "a/t 1 0 a/t");
    send(&mut b, "b/t").await.expect("b may write b/");
    assert_eq!(watcher.next_message(), "b/t 1 0 b/t");
    // The other's: the broker refuses (MQTT 5 PUBACK 0x87), the device is told.
    for (client, topic) in [(&mut a, "b/t"), (&mut b, "a/t")] {
        match send(client, topic).await {
            Err(ClientError::Rejected(ReturnCode::NotSupported)) => {}
            other => panic!("{topic}: expected a rejecting PUBACK, got {other:?}"),
        }
    }
    watcher.expect_silence(Duration::from_millis(500));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_refuse_the_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "").expect("password file");
    for (user, pass) in [("gw", "gw-secret"), ("good-1", "right")] {
        let ok = std::process::Command::new("mosquitto_passwd")
            .args(["-b", &passwd.to_string_lossy(), user, pass])
            .status()
            .expect("mosquitto_passwd runs")
            .success();
        assert!(ok, "mosquitto_passwd failed");
    }
    let cloud = Mosquitto::start_with(MosquittoOptions {
        extra: vec![
            "allow_anonymous false".into(),
            format!("password_file {}", passwd.display()),
        ],
        ..MosquittoOptions::default()
    })
    .await;
    let gw = start_gateway_with(|c| {
        let mut u = per_device(cloud.port, "gw");
        u.username = Some("gw".into());
        u.password = Some("gw-secret".into());
        // Default: the client id as user name, with a password that is wrong
        // for everyone; good-* get the right one.
        u.per_device.username = Some("%c".into());
        u.per_device.password = Some("wrong".into());
        u.per_device.credentials = vec![DeviceCredentials {
            client_id: "good-*".into(),
            username: Some("%c".into()),
            password: Some("right".into()),
            ..DeviceCredentials::default()
        }];
        c.upstream = Some(u);
    })
    .await;
    let _good = connect(gw.addr, "good-1").await;
    cloud
        .wait_for_log("as good-1 (p5, c1, k60, u'good-1')")
        .await;
    match Client::connect(gw.addr, options("bad-1")).await {
        Err(ClientError::Rejected(ReturnCode::NotSupported)) => {}
        Err(e) => panic!("expected CONNACK 0x03, got {e}"),
        Ok(_) => panic!("a device the broker refuses was accepted"),
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_all_200_device_sessions_come_back() {
    const N: usize = 200;
    let mut cloud = Mosquitto::start().await;
    let gw = start_gateway_with(|c| c.upstream = Some(per_device(cloud.port, "gw-200"))).await;
    let mut devices = Vec::with_capacity(N);
    for i in 0..N {
        let mut d = connect_with(gw.addr, options(&format!("d{i}")).clean_session(false)).await;
        d.subscribe(SubscribeTopic::Name(format!("cmd/d{i}")), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        devices.push(d);
    }
    cloud.stop().await;
    cloud.restart().await;
    // Retained, so each device gets its message whenever its session and
    // subscription are back (mosquitto kept nothing: no persistence).
    let (client, mut events) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new("cloud-app", "127.0.0.1", cloud.port),
        N + 10,
    );
    let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for i in 0..N {
        client
            .publish(
                format!("cmd/d{i}"),
                rumqttc::QoS::AtLeastOnce,
                true,
                format!("go-{i}"),
            )
            .await
            .expect("queue publish");
    }
    let deadline = Duration::from_secs(30);
    for (i, d) in devices.iter_mut().enumerate() {
        let m = d
            .recv_message(deadline)
            .await
            .unwrap_or_else(|e| panic!("d{i} got nothing after the restart: {e}"));
        assert_eq!(
            (m.topic.clone(), m.payload.clone()),
            (format!("cmd/d{i}"), Bytes::from(format!("go-{i}")))
        );
    }
    poller.abort();
    gw.stop().await;
}

fn will(id: &str) -> Will {
    Will {
        topic: format!("status/{id}"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
    }
}

/// Resets every TCP connection to the broker's port (`ss -K`: the kernel
/// aborts them, the broker sees a reset), except the one from `keep_port`.
fn reset_connections_to(port: u16, keep_port: u16) {
    let filter = format!("dport = :{port} and not sport = :{keep_port}");
    let out = std::process::Command::new("ss")
        .args(["-K", "-tnH"])
        .args(filter.split(' '))
        .output()
        .expect("run ss -K");
    assert!(out.status.success(), "ss -K: {out:?}");
}

/// The local port of `mosquitto_sub`'s connection to the broker on `port`.
async fn tool_port(port: u16) -> u16 {
    for _ in 0..100 {
        let out = std::process::Command::new("ss")
            .args([
                "-tnpH",
                "state",
                "established",
                "dport",
                "=",
                &format!(":{port}"),
            ])
            .output()
            .expect("run ss");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(line) = text.lines().find(|l| l.contains("mosquitto_sub")) {
            let local = line.split_whitespace().nth(2).unwrap_or_default();
            if let Some(p) = local.rsplit(':').next().and_then(|p| p.parse().ok()) {
                return p;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mosquitto_sub's connection not found");
}

/// Issue 23, a blip is not a death: every connection between the gateway and
/// the broker is reset under 200 device sessions with wills. MQTT 5's Will
/// Delay Interval (and the sessions resumed with clean start off) means the
/// broker publishes none of them; a device really lost meanwhile still gets
/// its will, and first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_side_reset_under_200_device_sessions_publishes_no_will() {
    const N: usize = 200;
    let cloud = Mosquitto::start().await;
    let gw = start_gateway_with(|c| {
        let mut u = per_device(cloud.port, "gw-blip");
        u.will_delay_secs = 4;
        c.upstream = Some(u);
    })
    .await;
    let watcher = subscriber(mosquitto_addr(&cloud), "status/#", &["-q", "1"]);
    let keep = tool_port(cloud.port).await;
    let mut devices = Vec::with_capacity(N);
    for i in 0..N {
        let id = format!("b{i}");
        // Half with CleanSession on, half off: both must survive the blip.
        let opts = options(&id).clean_session(i % 2 == 0).will(will(&id));
        devices.push(connect_with(gw.addr, opts).await);
    }
    let lost = connect_with(
        gw.addr,
        options("lost")
            .keep_alive(2)
            .auto_ping(false)
            .will(will("lost")),
    )
    .await;
    // Silent from now on: lost after 2 s + 50 %, its will 4 s after that.
    std::mem::forget(lost);
    reset_connections_to(cloud.port, keep);
    assert_eq!(
        watcher.next_message_within(Duration::from_secs(20)),
        "status/lost 1 0 gone",
        "the lost device's will, and no blip's before it"
    );
    watcher.expect_silence(Duration::from_secs(2));
    // The devices still work: each one's session came back.
    for (i, d) in devices.iter_mut().enumerate().step_by(40) {
        d.ping().await.unwrap_or_else(|e| panic!("b{i}: {e}"));
    }
    gw.stop().await;
}
