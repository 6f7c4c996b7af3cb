//! `sngate sim`: simulated MQTT-SN devices against a running gateway; its
//! flags, their syntax (`N|all`, fractional seconds, `AWAKE:ASLEEP`), and
//! the run with progress on stderr and the summary on stdout.

use std::net::SocketAddr;
use std::process::ExitCode;

use super::tools::qos_of;
use super::{EXIT_CONFIG, EXIT_RUNTIME, report};

/// `N`, or `all`.
#[derive(Debug, Clone, Copy)]
enum CountOrAll {
    Count(usize),
    All,
}

fn parse_count_or_all(s: &str) -> Result<CountOrAll, String> {
    if s == "all" {
        return Ok(CountOrAll::All);
    }
    s.parse()
        .map(CountOrAll::Count)
        .map_err(|_| format!("{s:?}: expected a number or `all`"))
}

/// Seconds, possibly fractional, as a duration.
fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_sleep_cycle(s: &str) -> Result<sngate::sim::SleepCycle, String> {
    let (awake, asleep) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected AWAKE:ASLEEP in seconds, e.g. 2:1"))?;
    let awake = parse_secs(awake)?;
    let asleep_secs: u16 = asleep
        .parse()
        .map_err(|_| format!("{s:?}: ASLEEP is whole seconds, 1..=65535"))?;
    Ok(sngate::sim::SleepCycle { awake, asleep_secs })
}

/// `sngate sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// The gateway's UDP address (its DTLS address with --dtls).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1883")]
    gateway: SocketAddr,
    /// Every device connects over DTLS with the pre-shared key of
    /// --psk-identity (each its own session), as client id IDENTITY/sim…-N:
    /// the gateway's [dtls] client_id_pattern must allow "%i/*".
    #[arg(long, requires_all = ["psk_identity", "psk"])]
    dtls: bool,
    /// The PSK identity the devices share (with --dtls).
    #[arg(long, value_name = "ID", requires = "dtls")]
    psk_identity: Option<String>,
    /// The pre-shared key in hex (with --dtls).
    #[arg(long, value_name = "HEX", requires = "dtls", value_parser = super::tools::parse_psk)]
    psk: Option<super::tools::PskKey>,
    /// Number of simulated devices.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10)]
    devices: usize,
    /// Messages per second each device publishes.
    #[arg(short = 'r', long, value_name = "MSG/S", default_value_t = 1.0)]
    rate: f64,
    /// Messages each device publishes (10 unless --duration is given).
    #[arg(short = 'c', long, value_name = "N", conflicts_with = "duration")]
    count: Option<u64>,
    /// Publish for this many seconds instead of a count.
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_secs)]
    duration: Option<std::time::Duration>,
    /// QoS mix in percent, e.g. 0=50,1=40,2=10, or one QoS for all
    /// messages. QoS -1 goes without registration to --short-topic (or
    /// --predefined-id).
    #[arg(
        short = 'q',
        long,
        value_name = "MIX",
        default_value = "1",
        allow_hyphen_values = true
    )]
    qos: sngate::sim::QosMix,
    /// Payload size in bytes: at least 29, the measurement header (run id,
    /// device, sequence number, send time, QoS), padded with zeros.
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = 64)]
    payload_size: usize,
    /// How many devices (the first ones) also subscribe and measure
    /// deliveries: a number, or `all`.
    #[arg(long, value_name = "N|all", default_value = "1", value_parser = parse_count_or_all)]
    subscribers: CountOrAll,
    /// The QoS subscribers ask for; each message arrives at the lower of it
    /// and its publish QoS.
    #[arg(long, value_name = "QOS", default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    sub_qos: u8,
    /// Topic prefix: device I publishes on PREFIX/I.
    #[arg(long, value_name = "PREFIX", default_value = "sngate/sim")]
    topic_prefix: String,
    /// The filter subscribers subscribe to (default: PREFIX/#).
    #[arg(long, value_name = "FILTER")]
    filter: Option<String>,
    /// Short topic name (two characters) for QoS -1 messages.
    #[arg(
        long,
        value_name = "XY",
        default_value = "sm",
        conflicts_with = "predefined_id"
    )]
    short_topic: String,
    /// Pre-defined topic id for QoS -1 messages instead; the gateway must
    /// know it (`sngate run --predefined ID=TOPIC`).
    #[arg(long, value_name = "ID")]
    predefined_id: Option<u16>,
    /// Sleep duty cycle, AWAKE:ASLEEP in seconds (e.g. 2:1): awake and
    /// publishing, then DISCONNECT(ASLEEP), woken with PINGREQ to collect
    /// what the gateway buffered, CONNECT again.
    #[arg(long, value_name = "AWAKE:ASLEEP", value_parser = parse_sleep_cycle)]
    sleep: Option<sngate::sim::SleepCycle>,
    /// How many devices (the first ones) follow the sleep cycle: a number,
    /// or `all`.
    #[arg(long, value_name = "N|all", default_value = "all", value_parser = parse_count_or_all, requires = "sleep")]
    sleepers: CountOrAll,
    /// Seconds subscribers still wait for deliveries once publishing is over.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    drain: std::time::Duration,
    /// Keep-alive of every device, in seconds.
    #[arg(short = 'k', long, value_name = "SECS", default_value_t = 60)]
    keep_alive: u16,
    /// Devices' retransmission interval in seconds (T_RETRY): how long a
    /// request waits for its answer before it is sent again.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    retry: std::time::Duration,
    /// Retransmissions before a request fails (N_RETRY).
    #[arg(long, value_name = "N", default_value_t = 3)]
    retries: u32,
    /// The MQTT-SN version the devices speak: 1.2, 2 (OASIS 2.0 CSD01) or
    /// mixed (even-numbered devices 1.2, odd-numbered 2.0).
    #[arg(long, value_name = "1.2|2|mixed", default_value = "1.2", value_parser = parse_sim_protocol)]
    protocol: sngate::sim::SimProtocol,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Print a progress line every second on stderr even when it is not a
    /// terminal (on a terminal it is always shown).
    #[arg(long)]
    progress: bool,
}

fn sim_config(a: &SimArgs) -> Result<sngate::sim::SimConfig, String> {
    use sngate::sim::{MinusOneTopic, SimConfig, SimLength};
    let count = |c: CountOrAll| match c {
        CountOrAll::Count(n) => n,
        CountOrAll::All => a.devices,
    };
    let mut cfg = SimConfig::new(a.gateway, a.devices);
    if let (true, Some(identity), Some(key)) = (a.dtls, &a.psk_identity, &a.psk) {
        cfg.dtls = Some(sngate::transport::dtls::client::PskCredentials {
            identity: identity.clone(),
            key: key.0.clone(),
        });
    }
    cfg.rate = a.rate;
    cfg.length = match (a.count, a.duration) {
        (_, Some(d)) => SimLength::Duration(d),
        (Some(n), None) => SimLength::Messages(n),
        (None, None) => SimLength::Messages(10),
    };
    cfg.qos = a.qos;
    cfg.payload_size = a.payload_size;
    cfg.subscribers = count(a.subscribers);
    cfg.subscribe_qos = qos_of(i8::try_from(a.sub_qos).unwrap_or(2));
    cfg.topic_prefix = a.topic_prefix.clone();
    cfg.filter = a.filter.clone();
    cfg.minus_one_topic = match (a.predefined_id, a.short_topic.as_bytes()) {
        (Some(id), _) => MinusOneTopic::Predefined(id),
        (None, &[x, y]) => MinusOneTopic::Short([x, y]),
        (None, _) => {
            return Err(format!(
                "--short-topic {:?}: a short name is two characters",
                a.short_topic
            ));
        }
    };
    cfg.sleep = a.sleep;
    cfg.sleepers = count(a.sleepers);
    cfg.drain = a.drain;
    cfg.keep_alive_secs = a.keep_alive;
    cfg.retry_interval = a.retry;
    cfg.max_retries = a.retries;
    cfg.protocol = a.protocol;
    Ok(cfg)
}

/// A `--protocol` value for the simulator: `1.2`, `2` or `mixed`.
fn parse_sim_protocol(s: &str) -> Result<sngate::sim::SimProtocol, String> {
    use sngate::client::Protocol;
    use sngate::sim::SimProtocol;
    if s == "mixed" {
        return Ok(SimProtocol::Mixed);
    }
    Ok(
        match super::tools::parse_protocol(s).map_err(|_| "the protocol is 1.2, 2 or mixed")? {
            Protocol::V1_2 => SimProtocol::V1_2,
            Protocol::V2 => SimProtocol::V2,
        },
    )
}

/// `sngate sim`: progress on stderr, the summary on stdout.
pub fn run_sim(args: SimArgs) -> ExitCode {
    use std::io::IsTerminal;
    let cfg = match sim_config(&args) {
        Ok(cfg) => cfg,
        Err(usage) => {
            eprintln!("error: {usage}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = cfg.validate() {
        report(&e);
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime =
        match super::runtime(tokio::runtime::Builder::new_multi_thread().thread_name("sngate-sim"))
        {
            Ok(runtime) => runtime,
            Err(status) => return status,
        };
    let terminal = std::io::stderr().is_terminal();
    let show = terminal || args.progress;
    let result = runtime.block_on(sngate::sim::run(cfg, |p| {
        if !show {
        } else if terminal {
            // One line, redrawn in place.
            eprint!("\r\x1b[2K{p}");
        } else {
            eprintln!("{p}");
        }
    }));
    if show && terminal {
        eprint!("\r\x1b[2K");
    }
    match result {
        Ok(summary) => {
            if args.json {
                match serde_json::to_string_pretty(&summary) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        report(&e);
                        return ExitCode::from(EXIT_RUNTIME);
                    }
                }
            } else {
                print!("{summary}");
            }
            if summary.failed_devices > 0 {
                eprintln!(
                    "error: {} of {} devices stopped early (see the errors in the summary)",
                    summary.failed_devices, summary.devices
                );
                return ExitCode::from(EXIT_RUNTIME);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e);
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
