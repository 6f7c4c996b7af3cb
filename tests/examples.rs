//! The example programs' own code, run against a real gateway started
//! in-process on an ephemeral port. The examples are compiled into this test
//! (`#[path]`), so what is tested is exactly what `cargo run --example` runs,
//! without a second build or a stale binary; their `main`s (argument
//! parsing, printing) are left to the compiler and clippy.

mod common;

#[allow(dead_code)]
#[path = "../examples/sleeping_sensor.rs"]
mod sleeping_sensor;

#[allow(dead_code)]
#[path = "../examples/downlink_subscriber.rs"]
mod downlink_subscriber;

use std::time::Duration;

use common::{WAIT, connect, start_gateway};
use sngate::proto::{QoS, SubscribeTopic};

use sleeping_sensor::Sensor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_sensor_publishes_sleeps_and_collects_its_commands_on_wake() {
    let gw = start_gateway().await;
    let mut controller = connect(gw.addr, "controller").await;
    controller
        .subscribe(
            SubscribeTopic::Name("sensors/+/temperature".into()),
            QoS::AtLeastOnce,
        )
        .await
        .expect("controller subscribes");

    let sensor = Sensor {
        client_id: "sensor-1".into(),
        interval_secs: 1,
    };
    let options = sensor.options().retry(Duration::from_secs(1), 3);
    let mut client = sleeping_sensor::start(gw.addr, &sensor, options)
        .await
        .expect("the sensor connects and subscribes");

    // First cycle: the controller sees the reading and answers with a
    // command while the sensor sleeps; the sensor collects it on waking.
    let (commands, ()) = tokio::join!(
        sleeping_sensor::run_cycle(&mut client, &sensor, "21.5"),
        async {
            let reading = controller.recv_message(WAIT).await.expect("a reading");
            assert_eq!(reading.topic, "sensors/sensor-1/temperature");
            assert_eq!(&reading.payload[..], b"21.5");
            controller
                .publish_named("commands/sensor-1/led", &b"on"[..], QoS::AtLeastOnce, false)
                .await
                .expect("the command is accepted");
        }
    );
    let commands = commands.expect("the first cycle");
    let got: Vec<(String, Vec<u8>)> = commands
        .iter()
        .map(|m| (m.topic.clone(), m.payload.to_vec()))
        .collect();
    assert_eq!(got, vec![("commands/sensor-1/led".into(), b"on".to_vec())]);

    // Second cycle, after the CONNECT that ended the first: the reading still
    // arrives, and with no command sent nothing is collected.
    let commands = sleeping_sensor::run_cycle(&mut client, &sensor, "21.7")
        .await
        .expect("the second cycle");
    assert!(commands.is_empty(), "{commands:?}");
    let reading = controller.recv_message(WAIT).await.expect("a reading");
    assert_eq!(&reading.payload[..], b"21.7");

    client.disconnect().await.expect("the sensor disconnects");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downlink_subscriber_prints_what_arrives_on_its_filter() {
    let gw = start_gateway().await;
    let (mut subscriber, granted) =
        downlink_subscriber::subscribe(gw.addr, "commands/#", common::options("actuator-1"))
            .await
            .expect("the subscriber subscribes");
    assert_eq!(granted.qos, QoS::AtLeastOnce);

    let mut publisher = connect(gw.addr, "publisher").await;
    publisher
        .publish_named("other/topic", &b"ignored"[..], QoS::AtLeastOnce, false)
        .await
        .expect("publish outside the filter");
    publisher
        .publish_named(
            "commands/actuator-1/valve",
            &b"open"[..],
            QoS::AtLeastOnce,
            false,
        )
        .await
        .expect("publish a command");

    let message = subscriber.recv_message(WAIT).await.expect("the command");
    assert_eq!(
        downlink_subscriber::line(&message),
        "commands/actuator-1/valve open"
    );
    assert!(subscriber.try_message().is_none());
    gw.stop().await;
}
