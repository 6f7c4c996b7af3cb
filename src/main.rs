//! The `sngate` command line: parse the arguments and hand each subcommand
//! to its module under `cli/` (`run`, `check-config`, `print-config`,
//! `passwd`, `pub`, `sub`, `sim`, `status`).
//!
//! Deliberately thin: the clap definitions of the command and its
//! subcommands, and the dispatch. Each subcommand's flags and work live in
//! its module; configuration rules (and the `run` flags that override the
//! file) in `sngate::config`, logging setup in `sngate::logging`, and the
//! gateway itself behind `sngate::driver::run`.
//!
//! Exit codes: 0 success, 1 the gateway failed while running, 2 bad command line
//! or bad configuration.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::passwd::PasswdArgs;
use cli::run::RunArgs;
use cli::sim::SimArgs;
use cli::status::StatusArgs;
use cli::tools::{PubArgs, SubArgs};

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
    /// Summarise a running gateway for a terminal: the upstream, message
    /// rates, devices by state, drops, and the busiest devices (from its
    /// /status).
    Status(StatusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Pub(args) => cli::tools::run_tool(
            cli::tools::pub_request(args)
                .map(|req| async move { sngate::tools::publish(req).await }),
        ),
        Command::Sub(args) => {
            cli::tools::run_tool(cli::tools::sub_request(args).map(|req| async move {
                let mut out = std::io::stdout().lock();
                sngate::tools::subscribe(req, &mut out).await
            }))
        }
        Command::Sim(args) => cli::sim::run_sim(*args),
        Command::CheckConfig { file } => cli::check_config::check_config(&file),
        Command::PrintConfig => cli::check_config::print_config(),
        Command::Passwd(args) => cli::passwd::passwd(&args),
        Command::Status(args) => cli::status::status(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
