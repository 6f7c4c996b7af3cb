//! A battery sensor on sngate's async client (`sngate::client`): it wakes,
//! publishes a reading, and sleeps, over and over. While it sleeps the
//! gateway buffers the commands sent to it; it collects them when it wakes.
//!
//! One cycle, as an MQTT-SN v1.2 device does it:
//! 1. PUBLISH the reading (QoS 1) to `sensors/<client id>/temperature`;
//! 2. DISCONNECT with a Duration of `interval` seconds: asleep, radio off;
//! 3. after `interval`, PINGREQ with the client id: the gateway hands over
//!    what it buffered for `commands/<client id>/#`, then PINGRESP;
//! 4. CONNECT again (CleanSession = false keeps the subscription): awake, to
//!    publish the next reading.
//!
//! The reading is the Raspberry Pi's CPU temperature when the board has one
//! (`/sys/class/thermal/thermal_zone0/temp`), otherwise a made-up value.
//!
//! ```text
//! cargo run -- run --udp 127.0.0.1:1883                              # a gateway
//! cargo run --example sleeping_sensor -- 127.0.0.1:1883 sensor-1 10  # the sensor
//! sngate pub -t commands/sensor-1/led -m on -q 1                     # a command, delivered on its next wake
//! ```
//!
//! Arguments: GATEWAY (host:port) CLIENT_ID INTERVAL_SECS [CYCLES]; it runs
//! until stopped when CYCLES is not given. The cycle itself is [`run_cycle`],
//! which `tests/examples.rs` runs against a real gateway.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use sngate::client::{Client, ClientError, ConnectOptions, Message};
use sngate::proto::{QoS, SubscribeTopic};

/// One sensor: its topics and how long it sleeps.
#[derive(Debug, Clone)]
pub struct Sensor {
    /// The client id.
    pub client_id: String,
    /// Seconds asleep between readings (the DISCONNECT Duration).
    pub interval_secs: u16,
}

impl Sensor {
    /// Where readings go: `sensors/<client id>/temperature`.
    pub fn reading_topic(&self) -> String {
        format!("sensors/{}/temperature", self.client_id)
    }

    /// The commands it subscribes to: `commands/<client id>/#`.
    pub fn command_filter(&self) -> String {
        format!("commands/{}/#", self.client_id)
    }

    /// How it connects: CleanSession = false, so its subscription and the
    /// commands buffered for it outlive each CONNECT; a keep-alive longer
    /// than a sleep, for the moments it is awake.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new(self.client_id.clone())
            .clean_session(false)
            .keep_alive(self.interval_secs.saturating_mul(2).max(60))
    }
}

/// Connects to the gateway and subscribes to the sensor's commands.
pub async fn start(
    gateway: SocketAddr,
    sensor: &Sensor,
    options: ConnectOptions,
) -> Result<Client, ClientError> {
    let mut client = Client::connect(gateway, options).await?;
    client
        .subscribe(
            SubscribeTopic::Name(sensor.command_filter()),
            QoS::AtLeastOnce,
        )
        .await?;
    Ok(client)
}

/// One cycle: publish `reading`, sleep `interval_secs`, wake with PINGREQ
/// and return the commands that arrived meanwhile (in order), then CONNECT
/// again, ready for the next reading.
pub async fn run_cycle(
    client: &mut Client,
    sensor: &Sensor,
    reading: &str,
) -> Result<Vec<Message>, ClientError> {
    client
        .publish_named(
            &sensor.reading_topic(),
            reading.as_bytes().to_vec(),
            QoS::AtLeastOnce,
            false,
        )
        .await?;
    client.sleep(sensor.interval_secs).await?;
    // Radio off. The gateway allows the Duration plus a tolerance before it
    // declares the sensor lost, so waking after exactly `interval` is safe.
    tokio::time::sleep(Duration::from_secs(u64::from(sensor.interval_secs))).await;
    let commands = client.wake_and_collect().await?;
    client.reconnect().await?;
    Ok(commands)
}

/// The CPU temperature in °C on a Raspberry Pi (or any Linux board with a
/// thermal zone); elsewhere a value that drifts with `cycle`.
fn read_temperature(cycle: u64) -> String {
    let sysfs = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    match sysfs {
        Some(millidegrees) => format!("{:.1}", millidegrees as f64 / 1000.0),
        None => format!("{:.1}", 20.0 + (cycle % 10) as f64 * 0.5),
    }
}

/// GATEWAY CLIENT_ID INTERVAL_SECS [CYCLES], or a usage message.
fn parse_args(args: &[String]) -> Result<(SocketAddr, Sensor, Option<u64>), String> {
    let usage = "usage: sleeping_sensor GATEWAY CLIENT_ID INTERVAL_SECS [CYCLES]";
    let [gateway, client_id, interval, rest @ ..] = args else {
        return Err(usage.to_owned());
    };
    let gateway = gateway
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("{gateway:?} is not a host:port address\n{usage}"))?;
    let interval_secs = interval
        .parse::<u16>()
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| format!("INTERVAL_SECS must be 1..=65535, not {interval:?}"))?;
    let cycles = match rest {
        [] => None,
        [n] => Some(
            n.parse::<u64>()
                .map_err(|_| format!("CYCLES must be a number, not {n:?}"))?,
        ),
        _ => return Err(usage.to_owned()),
    };
    let sensor = Sensor {
        client_id: client_id.clone(),
        interval_secs,
    };
    Ok((gateway, sensor, cycles))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (gateway, sensor, cycles) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut client = match start(gateway, &sensor, sensor.options()).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("cannot connect to {gateway}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} connected to {gateway}; commands on {}",
        sensor.client_id,
        sensor.command_filter()
    );
    let mut cycle = 0u64;
    while cycles.is_none_or(|n| cycle < n) {
        let reading = read_temperature(cycle);
        println!(
            "publish {reading} to {}, then sleep {} s",
            sensor.reading_topic(),
            sensor.interval_secs
        );
        match run_cycle(&mut client, &sensor, &reading).await {
            Ok(commands) => {
                for command in commands {
                    println!(
                        "command {}: {}",
                        command.topic,
                        String::from_utf8_lossy(&command.payload)
                    );
                }
            }
            Err(e) => {
                eprintln!("cycle {cycle} failed: {e}");
                return ExitCode::FAILURE;
            }
        }
        cycle += 1;
    }
    match client.disconnect().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("disconnect: {e}");
            ExitCode::FAILURE
        }
    }
}
