//! Security and robustness end to end, against a gateway running in this
//! process on real loopback UDP sockets: a flooding address does not starve
//! another device (per-source rate limit); 100,000 random and mutated
//! datagrams from many source addresses leave the gateway up, serving and
//! within its bounds; a device that subscribes to `#` and never acknowledges
//! holds no more than its queue limits. Bounds are read from `/metrics`.
//!
//! Traffic goes only to 127.0.0.1; flooders send from other loopback
//! addresses (127.0.0.x, all on `lo`) so that they are other sources.

mod common;

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::http::{self, sample};
use common::{RawDevice, connect, start_gateway_with};
use sngate::proto::{self, Packet, QoS, SubscribeTopic, TopicRef, WillTopic};

fn loopback_any() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

async fn metrics(addr: SocketAddr) -> String {
    let page = http::get(addr, "/metrics").await;
    assert_eq!(page.status, 200, "{}", page.body);
    page.body
}

fn value(page: &str, name: &str, labels: &str) -> f64 {
    sample(page, name, labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{page}"))
}

/// Every device session, whatever its state.
fn devices(page: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with("sngate_devices{state="))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    proto::encode(packet, &mut buf).expect("encode");
    buf.to_vec()
}

/// xorshift64*: a seeded, dependency-free source of test bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid packets to mutate: every kind a device sends.
fn valid_packets() -> Vec<Vec<u8>> {
    let publish = |qos, topic| Packet::Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        msg_id: 7,
        payload: bytes::Bytes::from_static(b"payload bytes"),
    };
    [
        Packet::Connect {
            will: false,
            clean_session: true,
            protocol_id: proto::PROTOCOL_ID_V1_2,
            duration: 30,
            client_id: "fuzzed".into(),
        },
        Packet::Connect {
            will: true,
            clean_session: false,
            protocol_id: proto::PROTOCOL_ID_V1_2,
            duration: 60,
            client_id: "fuzzed-will".into(),
        },
        Packet::WillTopic(Some(WillTopic {
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "w/t".into(),
        })),
        Packet::Register {
            topic_id: 0,
            msg_id: 3,
            topic_name: "a/b".into(),
        },
        publish(QoS::AtLeastOnce, TopicRef::Id(1)),
        publish(QoS::ExactlyOnce, TopicRef::Id(1)),
        publish(QoS::MinusOne, TopicRef::Short(*b"ab")),
        Packet::Subscribe {
            dup: false,
            qos: QoS::AtLeastOnce,
            msg_id: 4,
            topic: SubscribeTopic::Name("#".into()),
        },
        Packet::PingReq { client_id: None },
        Packet::PingReq {
            client_id: Some("fuzzed".into()),
        },
        Packet::Disconnect { duration: Some(5) },
        Packet::PubRel { msg_id: 7 },
        Packet::SearchGw { radius: 1 },
    ]
    .iter()
    .map(encode)
    .collect()
}

/// One random or mutated datagram.
fn datagram(rng: &mut Rng, valid: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(4) {
        // Random bytes, any length up to 300.
        0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        // A valid packet as is.
        1 => valid[rng.below(valid.len())].clone(),
        // A valid packet with a few bytes changed (the length byte included).
        2 => {
            let mut d = valid[rng.below(valid.len())].clone();
            for _ in 0..=rng.below(3) {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            d
        }
        // A valid packet cut short or with bytes appended.
        _ => {
            let mut d = valid[rng.below(valid.len())].clone();
            if rng.below(2) == 0 {
                d.truncate(rng.below(d.len()));
            } else {
                d.extend((0..rng.below(20)).map(|_| rng.next() as u8));
            }
            d
        }
    }
}

/// A device keeps getting PINGRESPs and PUBACKs while another address
/// floods the gateway as fast as one socket can send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_address_does_not_starve_another_device() {
    // The default limit: 100/s, burst 200 (the test configuration turns it
    // off, as its devices all share 127.0.0.1).
    let defaults = sngate::config::Config::default().limits;
    assert_eq!(
        (
            defaults.per_source_packets_per_sec,
            defaults.per_source_burst
        ),
        (100, 200)
    );
    let gw = start_gateway_with(|c| {
        c.http.listen = Some(loopback_any());
        c.limits.per_source_packets_per_sec = defaults.per_source_packets_per_sec;
        c.limits.per_source_burst = defaults.per_source_burst;
    })
    .await;
    let http_addr = gw.running().http_addr().expect("an HTTP address");

    let stop = Arc::new(AtomicBool::new(false));
    let target = gw.addr;
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let socket = StdUdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
            let valid = valid_packets();
            let mut rng = Rng(0xf100d);
            let started = Instant::now();
            let mut sent = 0u64;
            // Bounded in time and count; stops early when the test is done.
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
                && sent < 50_000_000
            {
                let d = datagram(&mut rng, &valid);
                if socket.send_to(&d, target).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };

    // Let the flood start, then the device does its work within its normal
    // timeouts (1 s retry, 3 retries; `connect` and every call fail the
    // test otherwise).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut device = connect(gw.addr, "steady").await;
    let topic = device.register("steady/t").await.expect("REGISTER");
    for i in 0..20u32 {
        device.ping().await.expect("PINGREQ answered");
        device
            .publish(
                TopicRef::Id(topic),
                i.to_be_bytes().to_vec(),
                QoS::AtLeastOnce,
                false,
            )
            .await
            .expect("QoS 1 PUBLISH acknowledged");
    }
    let page = metrics(http_addr).await;
    stop.store(true, Ordering::Relaxed);
    let sent = tokio::task::spawn_blocking(move || flooder.join().expect("flooder"))
        .await
        .expect("join");

    let limited = value(&page, "sngate_drops_total", "reason=\"rate_limited\"");
    assert!(
        limited > 0.0,
        "the flooder ({sent} datagrams) was never limited:\n{page}"
    );
    assert!(
        value(&page, "sngate_messages_total", "direction=\"in\",qos=\"1\"") >= 20.0,
        "{page}"
    );
    eprintln!("flooder sent {sent} datagrams; {limited} dropped by the rate limit");
    gw.stop().await;
}

/// 100,000 random and mutated datagrams from 16 sockets on 8 addresses:
/// the gateway stays up, within max_clients and its queue bounds, and a
/// normal device still connects and publishes afterwards. (The storm's
/// CONNECTs create live sessions; were they to fill max_clients, a new
/// device would rightly be refused with "congestion" until their keep-alive
/// ran out, so max_clients is left above what the storm creates.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_bad_datagrams_leave_the_gateway_serving_within_bounds() {
    const MAX_CLIENTS: usize = 2000;
    // The default global budget. (With a tiny one, e.g. 64 KiB, the storm's
    // sessions that subscribe to `#` and never acknowledge fill it, and the
    // device's own message is then dropped as queue_full: the global budget
    // is first come, first served — bounded, but not fair.)
    let total_bytes = sngate::config::Config::default()
        .limits
        .max_queued_bytes_total;
    let gw = start_gateway_with(|c| {
        c.http.listen = Some(loopback_any());
        c.limits.max_clients = MAX_CLIENTS;
        // The engine itself must take the garbage: no rate limit in front
        // (the test configuration has none).
    })
    .await;
    let http_addr = gw.running().http_addr().expect("an HTTP address");

    let target = gw.addr;
    let sent = tokio::task::spawn_blocking(move || {
        let sockets: Vec<StdUdpSocket> = (0..16)
            .map(|i| StdUdpSocket::bind(format!("127.0.0.{}:0", 10 + i % 8)).expect("bind"))
            .collect();
        let valid = valid_packets();
        let mut rng = Rng(0x5eed_0001);
        let mut sent = 0usize;
        for n in 0..100_000usize {
            let d = datagram(&mut rng, &valid);
            if sockets[n % sockets.len()].send_to(&d, target).is_ok() {
                sent += 1;
            }
            // Pace a little, so the kernel's buffer keeps most of them.
            if n % 64 == 63 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        sent
    })
    .await
    .expect("sender");
    assert_eq!(sent, 100_000);

    // Still serving: a normal device connects, subscribes and publishes, and
    // its datagrams come after the flood's in the socket's queue.
    let mut device = connect(gw.addr, "after-the-storm").await;
    device
        .subscribe(SubscribeTopic::Name("calm/#".into()), QoS::AtLeastOnce)
        .await
        .expect("SUBSCRIBE");
    let topic = device.register("calm/t").await.expect("REGISTER");
    device
        .publish(
            TopicRef::Id(topic),
            b"still here".to_vec(),
            QoS::AtLeastOnce,
            false,
        )
        .await
        .expect("PUBLISH acknowledged");
    let received = device.recv_message(common::WAIT).await;
    let page = metrics(http_addr).await;
    let msg = received.unwrap_or_else(|e| panic!("no message back: {e}\n{page}"));
    assert_eq!(&msg.payload[..], b"still here");

    let packets_in = value(&page, "sngate_packets_total", "direction=\"in\"");
    assert!(
        packets_in > 50_000.0,
        "the engine saw only {packets_in} datagrams"
    );
    assert!(
        value(&page, "sngate_drops_total", "reason=\"malformed\"") > 10_000.0,
        "{page}"
    );
    assert!(devices(&page) <= MAX_CLIENTS as f64, "{page}");
    assert!(
        value(&page, "sngate_buffered_bytes", "") <= total_bytes as f64,
        "{page}"
    );
    eprintln!(
        "engine took {packets_in} datagrams; {} device sessions",
        devices(&page)
    );
    gw.stop().await;
}

/// A device that subscribes to `#` and never acknowledges anything holds at
/// most its queue limits, however much is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_to_everything_that_never_acknowledges_stays_bounded() {
    const PER_CLIENT: usize = 100;
    const PER_CLIENT_BYTES: usize = 8 * 1024;
    let gw = start_gateway_with(|c| {
        c.http.listen = Some(loopback_any());
        c.limits.max_queued_messages_per_client = PER_CLIENT;
        c.limits.max_queued_bytes_per_client = PER_CLIENT_BYTES;
        // Both devices are on 127.0.0.1: no rate limit (the test
        // configuration has none).
        // The sink must stay connected (not lost after retries) while the
        // test publishes, so its queue is what is measured.
        c.timers.retry_interval_secs = 60;
    })
    .await;
    let http_addr = gw.running().http_addr().expect("an HTTP address");

    let sink = RawDevice::new(gw.addr).await;
    sink.connect("sink", true, 600).await;
    sink.send(&Packet::Subscribe {
        dup: false,
        qos: QoS::AtLeastOnce,
        msg_id: 1,
        topic: SubscribeTopic::Name("#".into()),
    })
    .await;
    assert!(
        matches!(sink.recv().await, Packet::SubAck { return_code, .. } if return_code.is_accepted())
    );
    // From here on the sink reads nothing and acknowledges nothing.

    const MESSAGES: u32 = 2000;
    let mut publisher = connect(gw.addr, "publisher").await;
    let mut topics = Vec::new();
    for i in 0..10 {
        topics.push(
            publisher
                .register(&format!("t/{i}"))
                .await
                .expect("REGISTER"),
        );
    }
    for i in 0..MESSAGES {
        publisher
            .publish(
                TopicRef::Id(topics[i as usize % topics.len()]),
                vec![i as u8; 200],
                QoS::AtLeastOnce,
                false,
            )
            .await
            .expect("PUBLISH acknowledged");
    }

    let page = metrics(http_addr).await;
    assert_eq!(
        value(&page, "sngate_messages_total", "direction=\"in\",qos=\"1\""),
        f64::from(MESSAGES)
    );
    let buffered = value(&page, "sngate_buffered_messages", "");
    let bytes = value(&page, "sngate_buffered_bytes", "");
    assert!(buffered > 0.0, "the sink's queue is empty\n{page}");
    assert!(buffered <= PER_CLIENT as f64, "{buffered} buffered\n{page}");
    assert!(bytes <= PER_CLIENT_BYTES as f64, "{bytes} bytes\n{page}");
    assert!(
        value(&page, "sngate_drops_total", "reason=\"queue_full\"") > 0.0,
        "{page}"
    );
    eprintln!("sink holds {buffered} messages, {bytes} bytes");
    gw.stop().await;
}
