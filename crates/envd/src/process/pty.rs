//! The master side of a pseudo-terminal, read and written asynchronously.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::pty::{OpenptyResult, Winsize, openpty};
use tokio::io::unix::AsyncFd;

/// A PTY master shared by the output reader, input writers and resizes.
#[derive(Debug)]
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

/// A freshly opened terminal: the master for envd, the slave for the child.
pub struct PtyPair {
    pub master: PtyMaster,
    pub slave: OwnedFd,
}

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl PtyPair {
    pub fn open(cols: u16, rows: u16) -> std::io::Result<Self> {
        let OpenptyResult { master, slave } = openpty(Some(&winsize(cols, rows)), None)?;
        let flags = nix::fcntl::fcntl(master.as_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(master.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: `master` is an OwnedFd moved into the AsyncFd, so the
        // descriptor stays open and unchanged for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(master) }.map_err(std::io::Error::from)?;
        Ok(Self {
            master: PtyMaster { fd },
            slave,
        })
    }
}

nix::ioctl_write_ptr_bad!(set_window_size, libc::TIOCSWINSZ, Winsize);

impl PtyMaster {
    /// Reads what the terminal printed; `Ok(0)` once the child side closed.
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(Into::into)) {
                Ok(Ok(n)) => return Ok(n),
                // EIO: every slave descriptor is closed, the terminal is gone.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` as keyboard input.
    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(Into::into)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        let size = winsize(cols, rows);
        // SAFETY: the fd is an open PTY master owned by `self`, and `size`
        // is a valid Winsize that outlives the call.
        unsafe { set_window_size(self.fd.get_ref().as_raw_fd(), &size) }?;
        Ok(())
    }
}
