//! `sngate check-config` and `sngate print-config`: validate a file (or
//! standard input) and say so, or print the annotated defaults.

use std::path::Path;
use std::process::ExitCode;

use sngate::config::{self, Config};

use super::{EXIT_CONFIG, report};

/// `sngate check-config FILE`: prints "FILE: ok", or the error (exit 2).
pub fn check_config(file: &Path) -> ExitCode {
    let result = config::read_source(file)
        .and_then(|(shown, text)| Config::from_toml_str(&text, &shown).map(|_| shown));
    match result {
        Ok(shown) => {
            println!("{}: ok", shown.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `sngate print-config`: the default file, every key commented.
pub fn print_config() -> ExitCode {
    print!("{}", config::DEFAULT_CONFIG_TOML);
    ExitCode::SUCCESS
}
