//! Signals: running the gateway as a process. [`run`] stops it at SIGINT or
//! SIGTERM, and reloads the configuration at SIGHUP (what a reload may
//! change is applied to the running gateway, the rest is logged as needing a
//! restart); [`run_until`] does the same until any future completes, and
//! tells systemd (`Type=notify`) where it stands.

use std::future::Future;
use std::time::Duration;

use tracing::{info, warn};

use super::DriverError;
use super::bootstrap::{RunningGateway, start};
use crate::config::Config;
use crate::config::reload::{self, ReloadPlan};

/// What a running gateway needs to reload its configuration on SIGHUP.
pub struct Reloader {
    /// Reads and validates the configuration again (the same file and
    /// command-line overrides as at start-up).
    pub load: Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync>,
    /// Changes the log level of the running process.
    pub log: Option<crate::logging::LogReload>,
}

/// Beyond the shutdown grace, how long systemd is asked to wait for the
/// process to exit (closing the store and the sockets).
pub const STOP_MARGIN: Duration = Duration::from_secs(5);

/// Starts the gateway and runs it until `shutdown` completes; on each SIGHUP
/// (with a `reloader`) reloads what can change at runtime. Under systemd
/// (`Type=notify`) it reports READY=1 once every listener is bound and
/// STOPPING=1 when it begins to shut down.
pub async fn run_until(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reloader: Option<Reloader>,
) -> Result<(), DriverError> {
    let mut current = config.clone();
    // What the running links and buffers were started with, apart from
    // `current` (the last file applied), which may name other links.
    let mut started = reload::Started::new(&config);
    // Before anything is bound or logged: until a handler is installed,
    // SIGHUP's default action would end the process.
    let mut hangups = hangup_signals();
    let running = start(config).await?;
    if let Err(e) = crate::systemd::notify("READY=1") {
        warn!(error = %e, "cannot notify systemd of readiness");
    }
    let mut running = running;
    tokio::pin!(shutdown);
    let mut fatal = running.fatal.take();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Ok(err) = async { match &mut fatal { Some(f) => f.await, None => std::future::pending().await } } => {
                let _ = crate::systemd::notify("STOPPING=1");
                let _ = running.shutdown().await;
                return Err(err.into());
            }
            Some(()) = next_hangup(&mut hangups), if reloader.is_some() => {
                if let Some(reloader) = &reloader {
                    let _ = crate::systemd::notify("RELOADING=1");
                    reload(reloader, &mut current, &mut started, &running);
                    let _ = crate::systemd::notify("READY=1");
                }
            }
        }
    }
    let grace = Duration::from_secs(u64::from(current.gateway.shutdown_grace_secs));
    info!(grace_secs = grace.as_secs(), "shutting down");
    let _ = crate::systemd::notify("STOPPING=1");
    // However the unit's TimeoutStopSec is set, systemd waits for the
    // drain (and a bit more) before it kills: `systemctl restart` starts the
    // new process only once this one has exited and freed its ports.
    let extend = grace + STOP_MARGIN;
    let _ = crate::systemd::notify(&format!("EXTEND_TIMEOUT_USEC={}", extend.as_micros()));
    running.shutdown_within(grace).await.map(drop)
}

/// Starts the gateway and runs it until SIGINT or SIGTERM, reloading on
/// SIGHUP when given a `reloader`.
pub async fn run(config: Config, reloader: Option<Reloader>) -> Result<(), DriverError> {
    run_until(config, shutdown_signal(), reloader).await
}

/// Reads the configuration again and applies what can change at runtime;
/// logs what was applied and what needs a restart. A bad file changes nothing.
/// `started` holds what the running links were started with: a radio
/// allow-list applies only to the running link it was written for.
fn reload(
    reloader: &Reloader,
    current: &mut Config,
    started: &mut reload::Started,
    running: &RunningGateway,
) {
    let new = match (reloader.load)() {
        Ok(new) => new,
        Err(e) => {
            warn!(error = %e, "configuration not reloaded; the running one is kept");
            return;
        }
    };
    let mut applied = Vec::new();
    let mut restart = Vec::new();
    if new.log.level != current.log.level {
        match reloader
            .log
            .as_ref()
            .map(|l| l.set_level(&new.log.directive()))
        {
            Some(Ok(())) => applied.push("log.level"),
            Some(Err(e)) => warn!(error = %e, "log level not changed"),
            None => restart.push("log.level"),
        }
    }
    let plan = ReloadPlan::new(current, &new, started);
    applied.extend(&plan.applied);
    restart.extend(&plan.restart);
    let mut engine = plan.engine_config(&new, started);
    match new.security.load_acl() {
        Ok(acl) => engine.acl = acl,
        Err(e) => {
            warn!(error = %e, "configuration not reloaded; the running one is kept");
            return;
        }
    }
    if let Some(path) = &new.dtls.psk_file {
        match running.reload_psk(path) {
            Ok(()) => applied.push("dtls.psk_file"),
            Err(e) => warn!(error = %e, "DTLS psk file not reloaded; the keys in force are kept"),
        }
    }
    for &port in &plan.serial.kept {
        let device = started.serial.get(port).map_or("?", |l| l.device.as_str());
        warn!(
            port,
            device,
            "[[serial]] entries added, removed, reordered or changed (a restart applies them): \
             the allow_radio_addresses in force on this link are kept"
        );
    }
    running.reconfigure(engine);
    info!(?applied, needs_restart = ?restart, "configuration reloaded");
    started.serial = plan.serial.links;
    *current = new;
}

#[cfg(unix)]
fn hangup_signals() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|e| warn!(error = %e, "cannot listen for SIGHUP; no reloads"))
        .ok()
}

#[cfg(not(unix))]
fn hangup_signals() -> Option<()> {
    None
}

#[cfg(unix)]
async fn next_hangup(signals: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signals {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Option<()>) -> Option<()> {
    std::future::pending().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the gateway");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
