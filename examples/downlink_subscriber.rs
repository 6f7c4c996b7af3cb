//! A device that takes commands: it subscribes to a topic filter through
//! sngate's async client (`sngate::client`) and prints each message as it
//! arrives, `topic payload` on a line, until Ctrl-C (then DISCONNECT).
//!
//! Commands can come from another device, or from the upstream broker
//! through a bridge rule such as `direction = "in"` (see
//! `examples/tls-cloud-bridge.toml`).
//!
//! ```text
//! cargo run -- run --udp 127.0.0.1:1883                                           # a gateway
//! cargo run --example downlink_subscriber -- 127.0.0.1:1883 'commands/#' actuator-1
//! sngate pub -t commands/actuator-1/valve -m open -q 1                            # a command
//! ```
//!
//! Arguments: GATEWAY (host:port) [FILTER (default `commands/#`)]
//! [CLIENT_ID (default `downlink-subscriber`)]. The subscription and the
//! line format are [`subscribe`] and [`line`], which `tests/examples.rs`
//! runs against a real gateway.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use sngate::client::{Client, ClientError, ConnectOptions, Message, Subscribed};
use sngate::proto::{QoS, SubscribeTopic};

/// Connects and subscribes to `filter` (`+` and `#` allowed) at QoS 1.
pub async fn subscribe(
    gateway: SocketAddr,
    filter: &str,
    options: ConnectOptions,
) -> Result<(Client, Subscribed), ClientError> {
    let mut client = Client::connect(gateway, options).await?;
    let granted = client
        .subscribe(SubscribeTopic::Name(filter.to_owned()), QoS::AtLeastOnce)
        .await?;
    Ok((client, granted))
}

/// How a message is printed: `topic payload` (the payload as UTF-8, bad
/// bytes replaced).
pub fn line(message: &Message) -> String {
    format!(
        "{} {}",
        message.topic,
        String::from_utf8_lossy(&message.payload)
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.len() > 3 {
        eprintln!("usage: downlink_subscriber GATEWAY [FILTER] [CLIENT_ID]");
        return ExitCode::from(2);
    }
    let Some(gateway) = args[0]
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
    else {
        eprintln!("{:?} is not a host:port address", args[0]);
        return ExitCode::from(2);
    };
    let filter = args.get(1).map_or("commands/#", String::as_str);
    let client_id = args.get(2).map_or("downlink-subscriber", String::as_str);

    let (mut client, granted) =
        match subscribe(gateway, filter, ConnectOptions::new(client_id)).await {
            Ok(subscribed) => subscribed,
            Err(e) => {
                eprintln!("cannot subscribe to {filter:?} at {gateway}: {e}");
                return ExitCode::FAILURE;
            }
        };
    eprintln!(
        "{client_id} subscribed to {filter} (QoS {:?} granted)",
        granted.qos
    );
    loop {
        tokio::select! {
            message = client.next_message() => match message {
                Some(message) => println!("{}", line(&message)),
                None => {
                    eprintln!("the connection to the gateway is gone");
                    return ExitCode::FAILURE;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    match client.disconnect().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("disconnect: {e}");
            ExitCode::FAILURE
        }
    }
}
