//! `sngate run`: the configuration (file, then command-line overrides, see
//! `sngate::config::overrides`), logging, and the gateway on a two-worker
//! runtime until SIGINT or SIGTERM; SIGHUP loads the same file with the same
//! overrides again.

use std::path::PathBuf;
use std::process::ExitCode;

use sngate::config::{Config, ConfigError, Overrides};

use super::{EXIT_CONFIG, report};

/// `sngate run`'s flags: the file, and what overrides it.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Config file (TOML). Without it, the built-in defaults are used.
    #[arg(short, long, value_name = "FILE", env = "SNGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

impl RunArgs {
    /// The file (or defaults), then the command-line overrides, validated once.
    fn load_config(&self) -> Result<Config, ConfigError> {
        Config::load_with_overrides(self.config.as_deref(), &self.overrides)
    }
}

pub fn run(args: RunArgs) -> ExitCode {
    let config = match args.load_config() {
        Ok(config) => config,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log = match sngate::logging::init(&config.log.directive(), config.log.format) {
        Ok(log) => log,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // SIGHUP reads the same file with the same command-line overrides again.
    let reload_args = args.clone();
    let reloader = sngate::driver::Reloader {
        load: Box::new(move || reload_args.load_config()),
        log: Some(log),
    };
    // Two workers: the socket reader tasks run beside the single task that owns
    // the engine. More threads would only contend on a Pi's few cores.
    let runtime = match super::runtime(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sngate"),
    ) {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    super::outcome(runtime.block_on(sngate::driver::run(config, Some(reloader))))
}
