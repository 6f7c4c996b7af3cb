//! The `[store]` section: whether state is kept on disk, and where (the
//! state directory, resolved from the environment when not set). `store/`
//! opens what this names; a reload reports a change as needing a restart.

use serde::Deserialize;

/// `[store]`: durable state under a state directory, so sessions, sleep
/// buffers, retained messages and the upstream outbox survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Keep state on disk. `false` keeps everything in memory only (lost on
    /// restart). Default: true.
    pub enabled: bool,
    /// The state directory; empty (the default) means `$STATE_DIRECTORY`
    /// when systemd sets it, else `$XDG_STATE_HOME/sngate`, else
    /// `~/.local/state/sngate`.
    pub state_dir: String,
    /// How long a device's QoS 1/2 message bound upstream waits for the
    /// broker's acknowledgement before it is written to the store, in
    /// milliseconds. The device is acknowledged on the first safe copy —
    /// the broker's PUBACK/PUBCOMP, or the store's commit once the linger
    /// is over — so while the broker answers within the linger the outbox
    /// costs no disk write at all. 0: written before it goes upstream (the
    /// behaviour before the linger existed). At most 60000. Default: 5.
    pub linger_ms: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            state_dir: String::new(),
            linger_ms: DEFAULT_LINGER_MS,
        }
    }
}

/// The default `[store] linger_ms`: a broker on the same LAN answers well
/// within it, and a device waits at most this much longer when it does not.
pub const DEFAULT_LINGER_MS: u32 = 5;

/// The longest `[store] linger_ms`: a device waits at most this long for
/// its acknowledgement while the broker does not answer, and the records
/// held meanwhile are in memory only.
pub const MAX_LINGER_MS: u32 = 60_000;

impl StoreConfig {
    /// Checks `[store]`: the linger within [`MAX_LINGER_MS`].
    pub(super) fn validate(&self) -> Result<(), super::ConfigError> {
        if self.linger_ms > MAX_LINGER_MS {
            return Err(super::ConfigError::invalid(
                "store.linger_ms",
                "must be at most 60000 (a minute)",
            ));
        }
        Ok(())
    }

    /// The state directory in force: `state_dir`, or the default location
    /// from the environment. `None` when no location can be found (no
    /// `$STATE_DIRECTORY`, `$XDG_STATE_HOME` or `$HOME`).
    pub fn resolved_dir(&self) -> Option<std::path::PathBuf> {
        if !self.state_dir.is_empty() {
            return Some(self.state_dir.clone().into());
        }
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(dir) = env("STATE_DIRECTORY") {
            // systemd may pass several, colon-separated: the first is ours.
            let first = dir.to_string_lossy().split(':').next().map(str::to_owned);
            return first.map(Into::into);
        }
        if let Some(dir) = env("XDG_STATE_HOME") {
            return Some(std::path::PathBuf::from(dir).join("sngate"));
        }
        env("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state/sngate"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn a_linger_beyond_a_minute_is_a_config_error() {
        let path = std::path::Path::new("test.toml");
        let err = Config::from_toml_str("[store]\nlinger_ms = 60001\n", path)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("store.linger_ms")),
            "{err:?}"
        );
        let ok = Config::from_toml_str("[store]\nlinger_ms = 0\n", path);
        assert_eq!(ok.map(|c| c.store.linger_ms).ok(), Some(0));
    }
}
