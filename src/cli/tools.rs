//! `sngate pub` and `sngate sub`: their flags, turned into the requests
//! `sngate::tools` carries out, run on a small runtime.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use sngate::config::SerialConfig;
use sngate::config::overrides::parse_serial;
use sngate::transport::dtls::client::{CertCredentials, PskCredentials};
use sngate::transport::dtls::psk::{MAX_KEY_BYTES, decode_hex};

use super::EXIT_CONFIG;

/// Where the gateway is, and how the tools name a topic.
#[derive(Debug, clap::Args)]
pub struct ToolTarget {
    /// The gateway's UDP address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1883")]
    gateway: std::net::SocketAddr,
    /// Reach the gateway over a serial port instead of UDP, as
    /// DEVICE:FRAMING[:BAUD] (the syntax of `sngate run --serial`): raw or
    /// slip for a direct line, xbee for a local XBee module in API mode 2
    /// (frames go to the coordinator).
    #[arg(long, value_name = "DEVICE:FRAMING[:BAUD]", value_parser = parse_serial, conflicts_with = "gateway")]
    serial: Option<SerialConfig>,
    /// The gateway address is a DTLS listener: connect with a pre-shared
    /// key (--psk-identity and --psk) or a client certificate (--cert,
    /// --key and --ca).
    #[arg(long, conflicts_with = "serial")]
    dtls: bool,
    /// The PSK identity (with --dtls); also the default client id, which the
    /// gateway binds to it.
    #[arg(long, value_name = "ID", requires = "dtls")]
    psk_identity: Option<String>,
    /// The pre-shared key in hex (with --dtls), as in the gateway's psk file.
    #[arg(long, value_name = "HEX", requires = "dtls", value_parser = parse_psk)]
    psk: Option<PskKey>,
    /// The device's certificate, PEM (with --dtls, --key and --ca); its CN
    /// is the identity, and the default client id.
    #[arg(long, value_name = "FILE", requires_all = ["dtls", "key", "ca"], conflicts_with = "psk")]
    cert: Option<PathBuf>,
    /// The device's private key, PEM (with --cert).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// The CA the gateway's certificate must be issued by, PEM (with
    /// --cert); the certificate must also name the --gateway address.
    #[arg(long, value_name = "FILE", requires = "cert")]
    ca: Option<PathBuf>,
    /// Client id (default: the --psk-identity with --dtls, else
    /// sngate-pub-PID / sngate-sub-PID).
    #[arg(short = 'i', long, value_name = "ID")]
    client_id: Option<String>,
    /// Keep-alive in seconds.
    #[arg(short = 'k', long, value_name = "SECS", default_value_t = 60)]
    keep_alive: u16,
    /// The MQTT-SN version to speak: 1.2 or 2 (OASIS 2.0 CSD01).
    #[arg(long, value_name = "1.2|2", default_value = "1.2", value_parser = parse_protocol)]
    protocol: sngate::client::Protocol,
}

/// A `--protocol` value: `1.2` or `2` (also `2.0`).
pub(super) fn parse_protocol(s: &str) -> Result<sngate::client::Protocol, String> {
    use sngate::client::Protocol;
    match s {
        "1.2" => Ok(Protocol::V1_2),
        "2" | "2.0" => Ok(Protocol::V2),
        _ => Err("the protocol is 1.2 or 2".into()),
    }
}

/// `sngate pub`.
#[derive(Debug, clap::Args)]
pub struct PubArgs {
    #[command(flatten)]
    target: ToolTarget,
    /// Topic name (registered with REGISTER, or sent as a short name when it
    /// is two characters).
    #[arg(short = 't', long, value_name = "TOPIC", group = "topic_kind")]
    topic: Option<String>,
    /// Pre-defined topic id instead of a name.
    #[arg(long, value_name = "ID", group = "topic_kind")]
    predefined_id: Option<u16>,
    /// Payload text.
    #[arg(short = 'm', long, value_name = "TEXT", group = "payload_source")]
    message: Option<String>,
    /// Payload read from a file.
    #[arg(short = 'f', long, value_name = "FILE", group = "payload_source")]
    file: Option<PathBuf>,
    /// Payload read from standard input.
    #[arg(short = 's', long, group = "payload_source")]
    stdin: bool,
    /// QoS: -1 (no connection), 0, 1 or 2.
    #[arg(short = 'q', long, value_name = "QOS", default_value_t = 0, allow_hyphen_values = true, value_parser = clap::value_parser!(i8).range(-1..=2))]
    qos: i8,
    /// Retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
    /// Will topic (with --will-message): published by the gateway if this
    /// client is lost.
    #[arg(long, value_name = "TOPIC", requires = "will_message")]
    will_topic: Option<String>,
    /// Will message.
    #[arg(long, value_name = "TEXT", requires = "will_topic")]
    will_message: Option<String>,
    /// Will QoS (0..=2).
    #[arg(long, value_name = "QOS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    will_qos: u8,
    /// Retain the will.
    #[arg(long)]
    will_retain: bool,
}

/// `sngate sub`.
#[derive(Debug, clap::Args)]
pub struct SubArgs {
    #[command(flatten)]
    target: ToolTarget,
    /// Topic filter (`+`, `#` allowed; a two-character name is a short name).
    /// Repeatable.
    #[arg(short = 't', long, value_name = "FILTER")]
    topic: Vec<String>,
    /// Pre-defined topic id to subscribe to. Repeatable.
    #[arg(long, value_name = "ID")]
    predefined_id: Vec<u16>,
    /// Requested QoS (0..=2).
    #[arg(short = 'q', long, value_name = "QOS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Keep the session (CleanSession = false).
    #[arg(short = 'c', long)]
    no_clean: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long, value_name = "N")]
    count: Option<usize>,
    /// Print the topic before each payload.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Sleep cycle: sleep this many seconds (DISCONNECT with Duration), then
    /// wake with PINGREQ to collect what the gateway buffered; repeat.
    #[arg(long, value_name = "SECS")]
    sleep: Option<u16>,
}

impl ToolTarget {
    /// The gateway as the client library names it: the serial port if one
    /// was given, else the UDP address.
    fn endpoint(&self) -> Result<sngate::client::Endpoint, String> {
        use sngate::client::Endpoint;
        Ok(
            match (&self.serial, &self.psk_identity, &self.psk, &self.cert) {
                (Some(port), ..) => Endpoint::Serial(port.clone()),
                _ if !self.dtls => Endpoint::Udp(self.gateway),
                (None, Some(identity), Some(key), None) => Endpoint::Dtls {
                    gateway: self.gateway,
                    psk: PskCredentials {
                        identity: identity.clone(),
                        key: key.0.clone(),
                    },
                },
                (None, None, None, Some(cert)) => {
                    let (Some(key), Some(ca)) = (&self.key, &self.ca) else {
                        return Err("--cert needs --key and --ca".into());
                    };
                    Endpoint::DtlsCert {
                        gateway: self.gateway,
                        cert: CertCredentials::load(cert, key, ca).map_err(|e| e.to_string())?,
                    }
                }
                _ => {
                    return Err(
                        "--dtls needs --psk-identity and --psk, or --cert, --key and --ca".into(),
                    );
                }
            },
        )
    }

    /// The client id: given, else the DTLS identity (PSK identity or
    /// certificate CN), else `tool-PID`.
    fn client_id(&self, tool: &str, endpoint: &sngate::client::Endpoint) -> String {
        let cn = match endpoint {
            sngate::client::Endpoint::DtlsCert { cert, .. } => cert.identity(),
            _ => None,
        };
        self.client_id
            .clone()
            .or_else(|| self.psk_identity.clone())
            .or(cn)
            .unwrap_or_else(|| format!("sngate-{tool}-{}", std::process::id()))
    }
}

/// A `--psk` value (its own type: clap reads an `Option<Vec<u8>>` as a
/// list of numbers).
#[derive(Debug, Clone)]
pub(super) struct PskKey(pub(super) Vec<u8>);

/// A `--psk` value: hex, 1 to 64 bytes.
pub(super) fn parse_psk(s: &str) -> Result<PskKey, String> {
    decode_hex(s)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES)
        .map(PskKey)
        .ok_or_else(|| "a key is 1 to 64 bytes in hex (an even number of digits)".to_owned())
}

/// The MQTT-SN QoS of a command-line number (-1..=2; anything else is 0).
pub(super) fn qos_of(q: i8) -> sngate::proto::QoS {
    use sngate::proto::QoS;
    match q {
        -1 => QoS::MinusOne,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtMostOnce,
    }
}

fn topic_arg(name: String) -> sngate::tools::TopicArg {
    match name.as_bytes() {
        &[a, b] => sngate::tools::TopicArg::Short([a, b]),
        _ => sngate::tools::TopicArg::Name(name),
    }
}

pub fn pub_request(a: PubArgs) -> Result<sngate::tools::PubRequest, String> {
    let topic = match (a.topic, a.predefined_id) {
        (Some(name), None) => topic_arg(name),
        (None, Some(id)) => sngate::tools::TopicArg::Predefined(id),
        _ => return Err("give --topic or --predefined-id".into()),
    };
    let payload = match (a.message, a.file, a.stdin) {
        (Some(text), _, _) => bytes::Bytes::from(text),
        (None, Some(file), _) => std::fs::read(&file)
            .map(bytes::Bytes::from)
            .map_err(|e| format!("{}: {e}", file.display()))?,
        (None, None, true) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("standard input: {e}"))?;
            bytes::Bytes::from(buf)
        }
        (None, None, false) => return Err("give --message, --file or --stdin".into()),
    };
    let will = match (a.will_topic, a.will_message) {
        (Some(topic), Some(message)) => Some(sngate::client::Will {
            topic,
            payload: bytes::Bytes::from(message),
            qos: qos_of(i8::try_from(a.will_qos).unwrap_or(0)),
            retain: a.will_retain,
        }),
        _ => None,
    };
    let gateway = a.target.endpoint()?;
    Ok(sngate::tools::PubRequest {
        client_id: a.target.client_id("pub", &gateway),
        gateway,
        topic,
        payload,
        qos: qos_of(a.qos),
        retain: a.retain,
        keep_alive_secs: a.target.keep_alive,
        will,
        protocol: a.target.protocol,
    })
}

pub fn sub_request(a: SubArgs) -> Result<sngate::tools::SubRequest, String> {
    let mut topics: Vec<_> = a.topic.into_iter().map(topic_arg).collect();
    topics.extend(
        a.predefined_id
            .into_iter()
            .map(sngate::tools::TopicArg::Predefined),
    );
    if topics.is_empty() {
        return Err("give at least one --topic or --predefined-id".into());
    }
    if a.sleep.is_some() && a.target.protocol == sngate::client::Protocol::V2 {
        return Err(
            "--sleep is MQTT-SN 1.2 only for now (2.0's SLEEPREQ is not in the tool)".into(),
        );
    }
    let gateway = a.target.endpoint()?;
    Ok(sngate::tools::SubRequest {
        client_id: a.target.client_id("sub", &gateway),
        gateway,
        topics,
        qos: qos_of(i8::try_from(a.qos).unwrap_or(0)),
        clean_session: !a.no_clean,
        keep_alive_secs: a.target.keep_alive,
        count: a.count,
        verbose: a.verbose,
        sleep_secs: a.sleep,
        protocol: a.target.protocol,
    })
}

/// Runs a client tool on a small runtime; exit 0, 1 (failed) or 2 (usage).
pub fn run_tool<F>(work: Result<F, String>) -> ExitCode
where
    F: std::future::Future<Output = Result<(), sngate::tools::ToolError>>,
{
    let work = match work {
        Ok(work) => work,
        Err(usage) => {
            eprintln!("error: {usage}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match super::runtime(&mut tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    super::outcome(runtime.block_on(work))
}
