//! Pseudo-terminal pairs standing in for serial ports, so the serial tests
//! need no hardware.
//!
//! [`Pty`] is one pair from `openpty`: the gateway opens the slave side by its
//! path (through [`SerialPath`], a symlink in a tempdir, so an "unplugged"
//! dongle can come back as a new pty behind the same name); the test plays the
//! radio module on the master side, an async stream. The slave is put in raw
//! mode before anything is written, so no byte is translated or echoed, and
//! the test keeps a slave descriptor open so the master never reads EIO while
//! the gateway has not opened the port yet.
//!
//! Every wait is bounded and panics with a clear message when it passes.

#![allow(dead_code)] // each test binary uses a different subset

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        // SAFETY: openpty writes two descriptors into the locals; name,
        // termios and winsize may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: openpty succeeded, so both descriptors are open and owned by
        // nobody else; OwnedFd closes each exactly once.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        set_cloexec(&master);
        set_cloexec(&slave);

        // Raw slave: no echo, no CR/LF translation, no XON/XOFF, 8 bits.
        // SAFETY: termios is plain data; tcgetattr fills it before use.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and a valid termios pointer.
        let rc = unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut termios) };
        assert_eq!(rc, 0, "tcgetattr: {}", io::Error::last_os_error());
        // SAFETY: a valid termios pointer.
        unsafe { libc::cfmakeraw(&mut termios) };
        // SAFETY: a valid descriptor and a valid termios pointer.
        let rc = unsafe { libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &termios) };
        assert_eq!(rc, 0, "tcsetattr: {}", io::Error::last_os_error());

        // The slave's name.
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: the buffer is valid for its length; ttyname_r NUL-terminates
        // on success.
        let rc = unsafe { libc::ttyname_r(slave.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        assert_eq!(rc, 0, "ttyname_r: {}", io::Error::from_raw_os_error(rc));
        // SAFETY: ttyname_r succeeded, so `name` holds a NUL-terminated string.
        let path = unsafe { CStr::from_ptr(name.as_ptr()) };
        let path = PathBuf::from(path.to_str().expect("pty name is UTF-8"));

        // Non-blocking master for AsyncFd.
        // SAFETY: fcntl on a valid descriptor.
        let flags = unsafe { libc::fcntl(master.as_raw_fd(), libc::F_GETFL) };
        assert!(flags >= 0, "F_GETFL: {}", io::Error::last_os_error());
        // SAFETY: fcntl on a valid descriptor.
        let rc =
            unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
        assert_eq!(rc, 0, "F_SETFL: {}", io::Error::last_os_error());
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it from
        // now on: the descriptor stays open, and the same one, until the
        // AsyncFd is dropped.
        let master =
            unsafe { AsyncFd::register(master) }.expect("register the pty master with tokio");
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
            let fd = self.master.get_ref().as_raw_fd();
            // SAFETY: writes from a valid slice to a valid descriptor.
            let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                panic!("write to the pty master: {e}");
            }
            bytes = bytes
                .get(usize::try_from(n).expect("n ≥ 0")..)
                .unwrap_or_default();
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
            let fd = self.master.get_ref().as_raw_fd();
            // SAFETY: reads into a valid, writable slice from a valid descriptor.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                panic!("read from the pty master: {e}");
            }
            return Some(usize::try_from(n).expect("n ≥ 0"));
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
    // SAFETY: fcntl on a valid descriptor.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    assert_eq!(rc, 0, "F_SETFD: {}", io::Error::last_os_error());
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
