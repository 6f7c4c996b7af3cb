//! `sngate status`: a terminal summary of a running gateway's `/status`
//! (`sngate::ops::summary`), from `--http ADDR` or the `[http] listen` of
//! the config file (`--config`, `SNGATE_CONFIG`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use sngate::config::Config;

use super::{EXIT_CONFIG, EXIT_RUNTIME, report};

/// `sngate status`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The gateway's HTTP endpoint, e.g. 127.0.0.1:9180. Default: the
    /// config file's [http] listen.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Config file whose [http] listen to use when --http is not given.
    #[arg(short, long, value_name = "FILE", env = "SNGATE_CONFIG")]
    config: Option<PathBuf>,
}

/// Where to ask: `--http`, else the config's `[http] listen` (an
/// unspecified address, such as 0.0.0.0, is asked on loopback).
fn endpoint(args: &StatusArgs) -> Result<SocketAddr, String> {
    if let Some(addr) = args.http {
        return Ok(addr);
    }
    let Some(file) = &args.config else {
        return Err(
            "no HTTP endpoint: give --http ADDR, or --config FILE with [http] listen".into(),
        );
    };
    let config = Config::load(file).map_err(|e| e.to_string())?;
    let mut addr = config
        .http
        .listen
        .ok_or_else(|| format!("{}: no [http] listen; give --http ADDR", file.display()))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// Prints the summary; exit 1 when the gateway cannot be read, 2 when no
/// endpoint is known.
pub fn status(args: &StatusArgs) -> ExitCode {
    let addr = match endpoint(args) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match sngate::ops::summary::fetch(addr) {
        Ok(status) => {
            print!("{}", sngate::ops::summary::render(&status));
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e);
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
