//! The systemd notification protocol (`sd_notify`), for `Type=notify`
//! services: `READY=1` once the listeners are bound, `WATCHDOG=1` from the
//! engine's own loop (so a wedged engine is restarted, not just a dead
//! process), `STOPPING=1` at shutdown. A datagram to `$NOTIFY_SOCKET`; no
//! dependency. Outside systemd (no `$NOTIFY_SOCKET`) every call does nothing.

use std::io;
use std::time::Duration;

/// Sends `state` (e.g. `"READY=1"`) to the service manager. `Ok(false)` when
/// not running under a manager that listens.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    #[cfg(unix)]
    {
        use std::os::unix::net::UnixDatagram;
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        match bytes.split_first() {
            // A name starting with '@' is in Linux's abstract namespace.
            #[cfg(target_os = "linux")]
            Some((b'@', name)) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)?;
            }
            _ => {
                socket.send_to(state.as_bytes(), &path)?;
            }
        }
        Ok(true)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, state);
        Ok(false)
    }
}

/// How often to send `WATCHDOG=1`: half the interval systemd asked for with
/// `WatchdogSec=` (`$WATCHDOG_USEC`), when the watchdog is meant for this
/// process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
