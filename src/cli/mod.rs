//! The `sngate` binary's subcommands, one module each: [`run`] (the
//! gateway), [`check_config`] (`check-config` and `print-config`),
//! [`passwd`], [`tools`] (`pub` and `sub`) and [`sim`]. Each owns its flags
//! (a `clap::Args` struct) and turns them into a call of the library,
//! reporting errors and choosing the exit status; `main.rs` only parses and
//! dispatches. These modules belong to the binary, not to the `sngate`
//! library: `lib.rs` does not declare them.
//!
//! Exit statuses: 0 success, [`EXIT_RUNTIME`] the work failed while
//! running, [`EXIT_CONFIG`] bad command line or configuration.

pub mod check_config;
pub mod passwd;
pub mod run;
pub mod sim;
pub mod status;
pub mod tools;

use std::process::ExitCode;

/// Exit status when the gateway or tool failed while running.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit status for a bad command line or configuration.
pub const EXIT_CONFIG: u8 = 2;

/// Builds the runtime a subcommand runs on (with IO and timers); a failure
/// is reported, and the exit status to return is the error.
pub fn runtime(builder: &mut tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        report(&e);
        ExitCode::from(EXIT_RUNTIME)
    })
}

/// One line for an error caused by an address in use (a second instance,
/// or one still shutting down), `None` for any other error.
fn address_in_use(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::AddrInUse
        {
            let what = e.to_string();
            let what = what.trim_end_matches(&format!(": {io}")[..]);
            return Some(format!(
                "error: {what}: address already in use — another sngate (or another program) \
                 listens there, or one is still shutting down (it frees its ports within \
                 [gateway] shutdown_grace_secs)"
            ));
        }
        cause = c.source();
    }
    None
}

/// The exit status of a subcommand's work: success, or the error reported
/// and [`EXIT_RUNTIME`].
pub fn outcome<E: std::error::Error + 'static>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Prints an error and its source chain to stderr — or, for an address in
/// use, one line that says what to look for.
pub fn report(e: &(dyn std::error::Error + 'static)) {
    if let Some(line) = address_in_use(e) {
        eprintln!("{line}");
        return;
    }
    eprintln!("error: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}
