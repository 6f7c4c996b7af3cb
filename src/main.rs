//! The `sngate` command line: parse arguments, load the config, start logging,
//! hand over to the driver.
//!
//! Deliberately thin: everything here is argument plumbing and error reporting.
//! Configuration rules live in `sngate::config`, logging setup in
//! `sngate::logging`, and the gateway itself behind `sngate::driver::run`.
//!
//! Exit codes: 0 success, 1 the gateway failed while running, 2 bad command line
//! or bad configuration.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sngate::config::{
    self, BridgeMode, Config, ConfigError, LogFormat, PredefinedTopic, SerialConfig, SerialFraming,
    UpstreamConfig,
};

/// sngate: an MQTT-SN v1.2 gateway. Sensors speak MQTT-SN over UDP; sngate
/// bridges them to MQTT.
#[derive(Debug, Parser)]
#[command(
    name = "sngate",
    version,
    about,
    long_about = None,
    after_help = "Exit status: 0 success, 1 the gateway failed while running, \
                  2 bad command line or configuration."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway in the foreground.
    ///
    /// Without --config the built-in defaults are used (see `sngate
    /// print-config`). Command-line overrides replace the file's values, then
    /// the result is validated once.
    Run(RunArgs),
    /// Publish one MQTT-SN message (like mosquitto_pub), over UDP or a serial
    /// link.
    Pub(PubArgs),
    /// Subscribe and print MQTT-SN messages (like mosquitto_sub), over UDP or
    /// a serial link.
    Sub(SubArgs),
    /// Simulate N MQTT-SN devices over UDP against a running gateway and
    /// report what it did with the load: sent, acknowledged, delivered, lost,
    /// duplicates, latency percentiles, throughput.
    ///
    /// Device I publishes on PREFIX/I at the rate given, the first
    /// --subscribers devices also subscribe to the filter (PREFIX/# by
    /// default) and measure every delivery. Exit status 1 when the run cannot
    /// start (gateway unreachable, CONNECT refused) or devices stopped early.
    Sim(Box<SimArgs>),
    /// Check a config file and exit: prints "FILE: ok", or the error and exit
    /// code 2.
    CheckConfig {
        /// The config file; `-` (or /dev/stdin) reads standard input.
        file: PathBuf,
    },
    /// Print the default config file, every key commented, to stdout.
    PrintConfig,
    /// Hash a password for the embedded broker's [[broker.users]].
    ///
    /// Reads the password from the terminal without echo (twice), or the
    /// first line of standard input when it is not a terminal, and prints
    /// its hash — with --user, the whole [[broker.users]] entry.
    Passwd(PasswdArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct PasswdArgs {
    /// Print a complete [[broker.users]] entry for this user name.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// PBKDF2 iterations: more makes a stolen config harder to crack and
    /// every CONNECT slower to check.
    #[arg(long, value_name = "N", default_value_t = sngate::security::password::DEFAULT_ITERATIONS)]
    iterations: u32,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Config file (TOML). Without it, the built-in defaults are used.
    #[arg(short, long, value_name = "FILE", env = "SNGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, overriding [log] level: a level (trace, debug, info, warn,
    /// error) or a tracing directive such as "info,sngate::core=debug".
    /// RUST_LOG, when set, overrides both.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format, overriding [log] format.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,
    /// UDP address to listen on, e.g. 0.0.0.0:1883 or [::]:1883. Repeatable;
    /// replaces [udp] listen.
    #[arg(long = "udp", value_name = "ADDR")]
    udp: Vec<SocketAddr>,
    /// Embedded MQTT broker TCP address, e.g. 127.0.0.1:1883 or 0.0.0.0:1883,
    /// or `off`. Repeatable; replaces [broker] listen.
    #[arg(long = "broker", value_name = "ADDR|off", value_parser = parse_broker_listen)]
    broker: Vec<BrokerListen>,
    /// State directory for the durable store, or `off` to keep state in
    /// memory only. Sets [store] state_dir / enabled.
    #[arg(long = "state-dir", value_name = "DIR|off")]
    state_dir: Option<String>,
    /// Upstream MQTT broker as HOST:PORT, or HOST alone to keep the configured
    /// port (1883 by default). Sets [upstream] host and port, creating the
    /// section if the file has none.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    upstream: Option<HostPort>,
    /// Upstream bridge mode, overriding [upstream] bridge_mode: `aggregate`
    /// (one upstream session carries every device) or `per-device` (each
    /// device gets its own, with its client id, keep-alive and will). Needs
    /// an upstream (--upstream or [upstream]).
    #[arg(long, value_name = "MODE")]
    bridge_mode: Option<BridgeModeArg>,
    /// Predefined topic as ID=TOPIC, e.g. 1=sensors/temp. Repeatable; appended
    /// to [[predefined_topics]].
    #[arg(long = "predefined", value_name = "ID=TOPIC", value_parser = parse_predefined)]
    predefined: Vec<PredefinedTopic>,
    /// Serial port as DEVICE:FRAMING[:BAUD], e.g. /dev/ttyUSB0:xbee:9600;
    /// FRAMING is xbee, slip or raw. Repeatable; appended to [[serial]] with
    /// the other settings at their defaults.
    #[arg(long = "serial", value_name = "DEVICE:FRAMING[:BAUD]", value_parser = parse_serial)]
    serial: Vec<SerialConfig>,
    /// Gateway id sent in ADVERTISE and GWINFO (0..=255); overrides [gateway]
    /// gateway_id.
    #[arg(long, value_name = "N")]
    gateway_id: Option<u8>,
    /// Serve /metrics, /status and /healthz over HTTP on ADDR, e.g.
    /// 127.0.0.1:9180; replaces [http] listen.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// ACL file in mosquitto's acl_file format; replaces [security] acl_file.
    #[arg(long, value_name = "FILE")]
    acl_file: Option<PathBuf>,
    /// Client id glob (`*`, `?`) of MQTT-SN devices allowed to connect.
    /// Repeatable; appended to [security] allow_clients.
    #[arg(long = "allow-client", value_name = "PATTERN")]
    allow_client: Vec<String>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--bridge-mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum BridgeModeArg {
    /// One upstream session for every device.
    Aggregate,
    /// One upstream session per device.
    PerDevice,
}

impl From<BridgeModeArg> for BridgeMode {
    fn from(m: BridgeModeArg) -> Self {
        match m {
            BridgeModeArg::Aggregate => BridgeMode::Aggregate,
            BridgeModeArg::PerDevice => BridgeMode::PerDevice,
        }
    }
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// A parsed `--upstream` value.
#[derive(Debug, Clone)]
struct HostPort {
    host: String,
    port: Option<u16>,
}

fn parse_host_port(s: &str) -> Result<HostPort, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        // [v6] or [v6]:port
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing `]` after an IPv6 address"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{s:?}: expected `:PORT` after `]`")),
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return Err(format!("{s:?}: write IPv6 addresses as [ADDR]:PORT")),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?}: the host is empty"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|e| format!("{s:?}: port {p:?}: {e}"))
        })
        .transpose()?;
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

fn parse_serial(s: &str) -> Result<SerialConfig, String> {
    let mut parts = s.split(':');
    let device = parts.next().unwrap_or_default();
    if device.is_empty() {
        return Err(format!("{s:?}: expected DEVICE:FRAMING[:BAUD]"));
    }
    let framing = match parts.next() {
        Some("xbee") => SerialFraming::Xbee,
        Some("slip") => SerialFraming::Slip,
        Some("raw") => SerialFraming::Raw,
        Some(other) => return Err(format!("{s:?}: framing {other:?} is not xbee, slip or raw")),
        None => return Err(format!("{s:?}: expected DEVICE:FRAMING[:BAUD]")),
    };
    let mut port = SerialConfig {
        device: device.to_owned(),
        framing,
        ..SerialConfig::default()
    };
    if let Some(baud) = parts.next() {
        port.baud = baud
            .parse()
            .map_err(|_| format!("{s:?}: baud {baud:?} is not a number"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{s:?}: expected DEVICE:FRAMING[:BAUD]"));
    }
    Ok(port)
}

fn parse_predefined(s: &str) -> Result<PredefinedTopic, String> {
    let (id, topic) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=TOPIC"))?;
    let id = id
        .trim()
        .parse::<u16>()
        .map_err(|e| format!("{s:?}: id {id:?}: {e}"))?;
    Ok(PredefinedTopic {
        id,
        topic: topic.to_owned(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Pub(args) => {
            run_tool(pub_request(args).map(|req| async move { sngate::tools::publish(req).await }))
        }
        Command::Sub(args) => run_tool(sub_request(args).map(|req| async move {
            let mut out = std::io::stdout().lock();
            sngate::tools::subscribe(req, &mut out).await
        })),
        Command::Sim(args) => run_sim(*args),
        Command::CheckConfig { file } => check_config(&file),
        Command::PrintConfig => {
            print!("{}", config::DEFAULT_CONFIG_TOML);
            ExitCode::SUCCESS
        }
        Command::Passwd(args) => passwd(&args),
    }
}

/// `sngate passwd`: the hash (or `[[broker.users]]` entry) on stdout.
fn passwd(args: &PasswdArgs) -> ExitCode {
    use std::io::{BufRead, IsTerminal};
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ");
        let again = rpassword::prompt_password("Again: ");
        match (first, again) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("error: the passwords differ");
                return ExitCode::from(EXIT_CONFIG);
            }
            (Err(e), _) | (_, Err(e)) => {
                report(&e);
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else {
        let mut line = String::new();
        // A password, not a file: the first line, bounded.
        let read = std::io::stdin().lock().take(64 * 1024).read_line(&mut line);
        if let Err(e) = read {
            report(&e);
            return ExitCode::from(EXIT_RUNTIME);
        }
        let trimmed = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(trimmed);
        line
    };
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::from(EXIT_CONFIG);
    }
    let hash = match sngate::security::PasswordHash::new(password.as_bytes(), args.iterations) {
        Ok(hash) => hash.to_string(),
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match &args.user {
        Some(user) => {
            let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
            println!(
                "[[broker.users]]\nname = {}\npassword_hash = {}",
                quote(user),
                quote(&hash)
            );
        }
        None => println!("{hash}"),
    }
    ExitCode::SUCCESS
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

/// Where the gateway is, and how the tools name a topic.
#[derive(Debug, clap::Args)]
struct ToolTarget {
    /// The gateway's UDP address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1883")]
    gateway: std::net::SocketAddr,
    /// Reach the gateway over a serial port instead of UDP, as
    /// DEVICE:FRAMING[:BAUD] (the syntax of `sngate run --serial`): raw or
    /// slip for a direct line, xbee for a local XBee module in API mode 2
    /// (frames go to the coordinator).
    #[arg(long, value_name = "DEVICE:FRAMING[:BAUD]", value_parser = parse_serial, conflicts_with = "gateway")]
    serial: Option<SerialConfig>,
    /// Client id (default: sngate-pub-PID / sngate-sub-PID).
    #[arg(short = 'i', long, value_name = "ID")]
    client_id: Option<String>,
    /// Keep-alive in seconds.
    #[arg(short = 'k', long, value_name = "SECS", default_value_t = 60)]
    keep_alive: u16,
}

/// `sngate pub`.
#[derive(Debug, clap::Args)]
struct PubArgs {
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
struct SubArgs {
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
    fn endpoint(&self) -> sngate::client::Endpoint {
        match &self.serial {
            Some(port) => sngate::client::Endpoint::Serial(port.clone()),
            None => sngate::client::Endpoint::Udp(self.gateway),
        }
    }
}

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
struct SimArgs {
    /// The gateway's UDP address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1883")]
    gateway: SocketAddr,
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
    Ok(cfg)
}

/// `sngate sim`: progress on stderr, the summary on stdout.
fn run_sim(args: SimArgs) -> ExitCode {
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("sngate-sim")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_RUNTIME);
        }
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

fn qos_of(q: i8) -> sngate::proto::QoS {
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

fn pub_request(a: PubArgs) -> Result<sngate::tools::PubRequest, String> {
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
    Ok(sngate::tools::PubRequest {
        gateway: a.target.endpoint(),
        client_id: a
            .target
            .client_id
            .unwrap_or_else(|| format!("sngate-pub-{}", std::process::id())),
        topic,
        payload,
        qos: qos_of(a.qos),
        retain: a.retain,
        keep_alive_secs: a.target.keep_alive,
        will,
    })
}

fn sub_request(a: SubArgs) -> Result<sngate::tools::SubRequest, String> {
    let mut topics: Vec<_> = a.topic.into_iter().map(topic_arg).collect();
    topics.extend(
        a.predefined_id
            .into_iter()
            .map(sngate::tools::TopicArg::Predefined),
    );
    if topics.is_empty() {
        return Err("give at least one --topic or --predefined-id".into());
    }
    Ok(sngate::tools::SubRequest {
        gateway: a.target.endpoint(),
        client_id: a
            .target
            .client_id
            .unwrap_or_else(|| format!("sngate-sub-{}", std::process::id())),
        topics,
        qos: qos_of(i8::try_from(a.qos).unwrap_or(0)),
        clean_session: !a.no_clean,
        keep_alive_secs: a.target.keep_alive,
        count: a.count,
        verbose: a.verbose,
        sleep_secs: a.sleep,
    })
}

/// Runs a client tool on a small runtime; exit 0, 1 (failed) or 2 (usage).
fn run_tool<F>(work: Result<F, String>) -> ExitCode
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Where a config came from, for messages: `-` is shown as `<stdin>`.
fn display_path(file: &Path) -> PathBuf {
    if file == Path::new("-") {
        PathBuf::from("<stdin>")
    } else {
        file.to_owned()
    }
}

/// Reads a config file, or standard input for `-`.
fn read_config_text(file: &Path) -> Result<String, ConfigError> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| ConfigError::Io {
                path: display_path(file),
                source,
            })?;
        Ok(text)
    } else {
        config::read_file(file)
    }
}

fn check_config(file: &Path) -> ExitCode {
    let shown = display_path(file);
    let result =
        read_config_text(file).and_then(|text| Config::from_toml_str(&text, &shown).map(drop));
    match result {
        Ok(()) => {
            println!("{}: ok", shown.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = match build_config(&args) {
        Ok(config) => config,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log = match sngate::logging::init(&config.log.level, config.log.format) {
        Ok(log) => log,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // SIGHUP reads the same file with the same command-line overrides again.
    let reload_args = args.clone();
    let reloader = sngate::driver::Reloader {
        load: Box::new(move || build_config(&reload_args)),
        log: Some(log),
    };
    // Two workers: the socket reader tasks run beside the single task that owns
    // the engine. More threads would only contend on a Pi's few cores.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sngate")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(sngate::driver::run(config, Some(reloader))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The file (or defaults), then the command-line overrides, validated once. A
/// validation error points into the file unless the key came from the command
/// line.
fn build_config(args: &RunArgs) -> Result<Config, ConfigError> {
    let (mut config, source) = match &args.config {
        Some(file) => {
            let shown = display_path(file);
            let text = read_config_text(file)?;
            (
                Config::parse_unvalidated(&text, &shown)?,
                Some((shown, text)),
            )
        }
        None => (Config::default(), None),
    };
    let overridden = apply_overrides(&mut config, args);
    config.validate().map_err(|e| {
        let from_cli = e
            .key()
            .is_some_and(|key| overridden.iter().any(|o| key.starts_with(o.as_str())));
        match (&source, from_cli) {
            (Some((path, text)), false) => e.locate(path, text),
            _ => from_command_line(e),
        }
    })?;
    Ok(config)
}

/// Applies the command-line overrides; returns the dotted keys they set.
/// A `--broker` value: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerListen {
    Addr(SocketAddr),
    Off,
}

fn parse_broker_listen(s: &str) -> Result<BrokerListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(BrokerListen::Off);
    }
    s.parse()
        .map(BrokerListen::Addr)
        .map_err(|_| format!("`{s}` is neither an address like 127.0.0.1:1883 nor `off`"))
}

fn apply_overrides(config: &mut Config, args: &RunArgs) -> Vec<String> {
    let mut set = Vec::new();
    if let Some(level) = &args.log_level {
        config.log.level = level.clone();
        set.push("log.level".to_owned());
    }
    if let Some(format) = args.log_format {
        config.log.format = format.into();
    }
    if let Some(dir) = &args.state_dir {
        if dir.eq_ignore_ascii_case("off") {
            config.store.enabled = false;
            set.push("store.enabled".to_owned());
        } else {
            config.store.enabled = true;
            config.store.state_dir = dir.clone();
            set.push("store.state_dir".to_owned());
        }
    }
    if !args.broker.is_empty() {
        config.broker.listen = args
            .broker
            .iter()
            .filter_map(|b| match b {
                BrokerListen::Addr(addr) => Some(*addr),
                BrokerListen::Off => None,
            })
            .collect();
        if args.broker.contains(&BrokerListen::Off) {
            config.broker.listen.clear();
            config.broker.tls_listen.clear();
            set.push("broker.tls_listen".to_owned());
        }
        set.push("broker.listen".to_owned());
    }
    if !args.udp.is_empty() {
        config.udp.listen = args.udp.clone();
        set.push("udp.listen".to_owned());
    }
    if let Some(HostPort { host, port }) = &args.upstream {
        let upstream = config.upstream.get_or_insert_with(UpstreamConfig::default);
        upstream.host = host.clone();
        set.push("upstream.host".to_owned());
        if let Some(port) = port {
            upstream.port = *port;
        }
    }
    if let Some(mode) = args.bridge_mode {
        // Without an upstream this creates one with no host, which the
        // validation then reports (as a command-line error).
        if config.upstream.is_none() {
            set.push("upstream.host".to_owned());
        }
        let upstream = config.upstream.get_or_insert_with(UpstreamConfig::default);
        upstream.bridge_mode = mode.into();
        set.push("upstream.bridge_mode".to_owned());
    }
    for p in &args.predefined {
        set.push(format!(
            "predefined_topics[{}]",
            config.predefined_topics.len()
        ));
        config.predefined_topics.push(p.clone());
    }
    if let Some(id) = args.gateway_id {
        config.gateway.gateway_id = id;
    }
    for port in &args.serial {
        set.push(format!("serial[{}]", config.serial.len()));
        config.serial.push(port.clone());
    }
    if let Some(addr) = args.http {
        config.http.listen = Some(addr);
        set.push("http.listen".to_owned());
    }
    if let Some(file) = &args.acl_file {
        config.security.acl_file = Some(file.clone());
        set.push("security.acl_file".to_owned());
    }
    if !args.allow_client.is_empty() {
        config
            .security
            .allow_clients
            .extend(args.allow_client.iter().cloned());
        set.push("security.allow_clients".to_owned());
    }
    set
}

/// Marks a validation error as caused by a command-line value.
fn from_command_line(e: ConfigError) -> ConfigError {
    match e {
        ConfigError::Invalid {
            key, line, reason, ..
        } => ConfigError::Invalid {
            path: PathBuf::from("command line"),
            key,
            line,
            reason,
        },
        other => other,
    }
}

/// Prints an error and its source chain to stderr.
fn report(e: &dyn std::error::Error) {
    eprintln!("error: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let hp = parse_host_port("broker:8883").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("broker", Some(8883)));
        let hp = parse_host_port("broker").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("broker", None));
        let hp = parse_host_port("[::1]:1884").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("::1", Some(1884)));
        let hp = parse_host_port("[fe80::1]").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("fe80::1", None));
        for bad in [":1883", "h:99999", "h:", "::1:1883", "[::1", "[::1]x", ""] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn predefined_forms() {
        let p = parse_predefined("7=a/b=c").unwrap();
        assert_eq!((p.id, p.topic.as_str()), (7, "a/b=c"));
        for bad in ["7", "x=a", "70000=a"] {
            assert!(parse_predefined(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
