//! Pseudo-terminal pairs standing in for serial ports, so the serial tests
//! need no hardware.
//!
//! [`Pty`] is one pair from `openpty` (through nix's safe wrappers): the gateway opens the slave side by its
//! path (through [`SerialPath`], a symlink in a tempdir, so an "unplugged"
//! dongle can come back as a new pty behind the same name); the test plays the
//! radio module on the master side, an async stream. The slave is put in raw
//! mode before anything is written, so no byte is translated or echoed, and
//! the test keeps a slave descriptor open so the master never reads EIO while
//! the gateway has not opened the port yet.
//!
//! Every wait is bounded and panics with a clear message when it passes.

#![allow(dead_code)] // each test binary uses a different subset

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::pty::{OpenptyResult, openpty};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use nix::unistd::ttyname;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::{Instant, timeout};

/// One pseudo-terminal pair.
pub struct Pty {
    master: AsyncFd<OwnedFd>,
    /// Kept open so the master side never sees a hang-up before the gateway
    /// opens the slave.
    _slave: OwnedFd,
    /// The slave's device path (`/dev/pts/N`).
    pub path: PathBuf,
}

impl Pty {
    /// A new pair, slave in raw mode, master non-blocking and registered with
    /// the current tokio runtime.
    pub fn open() -> Pty {
        let OpenptyResult { master, slave } =
            openpty(None, None).unwrap_or_else(|e| panic!("openpty: {e}"));
        set_cloexec(&master);
        set_cloexec(&slave);

        // Raw slave: no echo, no CR/LF translation, no XON/XOFF, 8 bits.
        let mut termios = tcgetattr(&slave).unwrap_or_else(|e| panic!("tcgetattr: {e}"));
        cfmakeraw(&mut termios);
        tcsetattr(&slave, SetArg::TCSANOW, &termios).unwrap_or_else(|e| panic!("tcsetattr: {e}"));

        let path = ttyname(&slave).unwrap_or_else(|e| panic!("ttyname: {e}"));

        // Non-blocking master for AsyncFd.
        let flags = fcntl(&master, FcntlArg::F_GETFL).unwrap_or_else(|e| panic!("F_GETFL: {e}"));
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(&master, FcntlArg::F_SETFL(flags)).unwrap_or_else(|e| panic!("F_SETFL: {e}"));
        // `AsyncFd::new` is deprecated for `T`s that could close or swap their
        // descriptor under the reactor; an `OwnedFd` moved in cannot, and the
        // unsafe `register` is what the crate-wide `forbid(unsafe_code)` rules out.
        #[allow(deprecated)]
        let master = AsyncFd::new(master).expect("register the pty master with tokio");
        Pty {
            master,
            _slave: slave,
            path,
        }
    }

    /// Writes all of `bytes` to the master side (the gateway reads them).
    pub async fn write_all(&self, mut bytes: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !bytes.is_empty() {
            let mut guard = timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.master.ready(Interest::WRITABLE),
            )
            .await
            .expect("pty master writable in time (the gateway is not reading?)")
            .expect("poll the pty master");
            let n = match nix::unistd::write(self.master.get_ref(), bytes) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => panic!("write to the pty master: {e}"),
            };
            bytes = bytes.get(n..).unwrap_or_default();
        }
    }

    /// Reads what the gateway wrote, waiting at most until `deadline`:
    /// `None` when it passes with nothing to read.
    pub async fn read_until(&self, buf: &mut [u8], deadline: Instant) -> Option<usize> {
        loop {
            let mut guard = timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.master.ready(Interest::READABLE),
            )
            .await
            .ok()?
            .expect("poll the pty master");
            match nix::unistd::read(self.master.get_ref(), buf) {
                Ok(n) => return Some(n),
                Err(Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => panic!("read from the pty master: {e}"),
            }
        }
    }

    /// Whether some process holds a `flock` on the slave — the gateway's
    /// serial library takes one when it opens a port — read from
    /// `/proc/locks`, so looking does not disturb the gateway's own locking.
    pub fn opened_by_gateway(&self) -> bool {
        let meta = std::fs::metadata(&self.path).expect("stat the pty slave");
        let dev = meta.dev();
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let needle = format!("{major:02x}:{minor:02x}:{}", meta.ino());
        std::fs::read_to_string("/proc/locks")
            .expect("read /proc/locks")
            .lines()
            .any(|line| line.contains("FLOCK") && line.split_whitespace().any(|f| f == needle))
    }

    /// Waits (bounded by `within`) until the gateway has opened the slave.
    pub async fn wait_opened(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.opened_by_gateway() {
            assert!(
                Instant::now() < deadline,
                "the gateway did not open {} within {within:?}",
                self.path.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn set_cloexec(fd: &OwnedFd) {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap_or_else(|e| panic!("F_SETFD: {e}"));
}

/// A stable device name for the gateway's configuration: a symlink in a
/// tempdir pointing at a pty's slave. Repointing it to a new pty simulates a
/// dongle unplugged and plugged back in.
pub struct SerialPath {
    dir: tempfile::TempDir,
    link: PathBuf,
}

impl SerialPath {
    /// A symlink named `ttySIM0` pointing at `pty`.
    pub fn new(pty: &Pty) -> SerialPath {
        let dir = tempfile::tempdir().expect("tempdir for the serial symlink");
        let link = dir.path().join("ttySIM0");
        std::os::unix::fs::symlink(&pty.path, &link).expect("symlink to the pty");
        SerialPath { dir, link }
    }

    /// A symlink named `ttySIM0` pointing at nothing yet: a dongle not
    /// plugged in.
    pub fn dangling() -> SerialPath {
        let dir = tempfile::tempdir().expect("tempdir for the serial symlink");
        let link = dir.path().join("ttySIM0");
        std::os::unix::fs::symlink(dir.path().join("absent"), &link).expect("dangling symlink");
        SerialPath { dir, link }
    }

    /// The path for `[[serial]] device`.
    pub fn device(&self) -> String {
        self.link
            .to_str()
            .expect("tempdir path is UTF-8")
            .to_owned()
    }

    /// Points the symlink at `pty`, atomically (a new link renamed over the old).
    pub fn repoint(&self, pty: &Pty) {
        let tmp = self.dir.path().join("ttySIM0.new");
        std::os::unix::fs::symlink(&pty.path, &tmp).expect("new symlink to the pty");
        std::fs::rename(&tmp, &self.link).expect("replace the symlink");
    }

    /// The symlink's path.
    pub fn path(&self) -> &Path {
        &self.link
    }
}
