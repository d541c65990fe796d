//! Terminal input and the signals that end a terminal UI, in one `poll(2)` (issue #11).
//!
//! crossterm's `read` must never be called blindly: when the terminal goes away (ssh dropped,
//! tmux killed) the tty stays "readable" and every read returns 0 bytes (or EIO), and crossterm
//! retries forever at 100% of a core. The UIs here (`harmony top`, `harmony ground`) therefore
//! poll the terminal themselves, together with a self-pipe that the signal handlers write to,
//! and hand the bytes to crossterm's parser only when some are really waiting:
//!
//! * **Hang-up**: `POLLHUP`/`POLLERR`/`POLLNVAL` on the terminal, or "readable" with nothing to
//!   read (`FIONREAD` says 0, or fails with EIO). The UI exits at once; this works without
//!   SIGHUP too (a process outside the terminal's session gets none).
//! * **SIGTERM, SIGINT, SIGHUP**: signal-hook's handler writes a byte to the quit pipe, which is
//!   in the same `poll`, so the UI exits within one wake-up, whatever it was waiting for. The
//!   UIs install these handlers themselves (the binary's own handlers serve the firmware).
//! * **SIGWINCH**: a second pipe; the UI redraws at the new size.
//!
//! Nothing here polls on a timer: with no key, signal or hang-up the thread sleeps in `poll`.

use std::io::{self, IsTerminal as _, Read as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ratatui::crossterm::event::{self as ct, Event};
use signal_hook::SigId;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};

/// Events taken from crossterm per wake-up at most (a paste is handled over a few wake-ups).
const BATCH: usize = 64;

/// What woke the UI.
#[derive(Debug)]
pub enum Wake {
    /// SIGTERM, SIGINT or SIGHUP.
    Quit,
    /// The terminal is gone.
    HangUp,
    /// The window changed size: redraw.
    Resize,
    /// Keys (and other terminal events), in order.
    Events(Vec<Event>),
    /// The timeout passed, or another descriptor in the caller's poll set is ready.
    Nothing,
}

/// The self-pipes the quit and resize signals write to; unregistered when dropped.
pub struct Signals {
    quit: UnixStream,
    winch: UnixStream,
    ids: Vec<SigId>,
}

impl Signals {
    /// Installs the handlers (in addition to any the process already has).
    pub fn install() -> io::Result<Self> {
        let (quit, quit_tx) = UnixStream::pair()?;
        let (winch, winch_tx) = UnixStream::pair()?;
        quit.set_nonblocking(true)?;
        winch.set_nonblocking(true)?;
        let mut s = Signals {
            quit,
            winch,
            ids: Vec::new(),
        };
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            s.ids.push(signal_hook::low_level::pipe::register(
                sig,
                quit_tx.try_clone()?,
            )?);
        }
        s.ids
            .push(signal_hook::low_level::pipe::register(SIGWINCH, winch_tx)?);
        Ok(s)
    }

    /// The quit pipe, for a caller's own `poll` set.
    pub fn quit_fd(&self) -> BorrowedFd<'_> {
        self.quit.as_fd()
    }

    /// Whether a quit signal came (reads the pipe empty).
    pub fn take_quit(&self) -> bool {
        drain(&self.quit)
    }

    fn take_winch(&self) -> bool {
        drain(&self.winch)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Reads a non-blocking pipe empty; whether anything was in it.
fn drain(mut s: &UnixStream) -> bool {
    let mut any = false;
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(n) if n > 0 => any = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return any,
        }
    }
}

/// Bytes waiting on a terminal (`FIONREAD`); an error means the terminal is gone.
fn bytes_waiting(fd: BorrowedFd<'_>) -> Result<usize, Errno> {
    nix::ioctl_read_bad!(fionread, nix::libc::FIONREAD, nix::libc::c_int);
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer we pass, which lives on our stack.
    unsafe { fionread(fd.as_raw_fd(), &mut n) }?;
    Ok(n.max(0) as usize)
}

/// The terminal (standard input) and the signals, polled together.
pub struct TermInput {
    signals: Signals,
    tty: BorrowedFd<'static>,
    /// Events crossterm parses from the terminal (false in tests on a bare pty: bytes are
    /// only counted as there, not read).
    parse: bool,
}

impl TermInput {
    /// Standard input, which must be a terminal (crossterm reads from it then).
    pub fn stdin() -> io::Result<Self> {
        if !io::stdin().is_terminal() {
            return Err(io::Error::other("standard input is not a terminal"));
        }
        // SAFETY: descriptor 0 is standard input, open for the whole life of the process
        // (nothing here closes it).
        let tty = unsafe { BorrowedFd::borrow_raw(nix::libc::STDIN_FILENO) };
        Ok(TermInput {
            signals: Signals::install()?,
            tty,
            parse: true,
        })
    }

    /// Any terminal descriptor, its keys not parsed (for tests of the hang-up detection).
    pub fn for_fd(tty: BorrowedFd<'static>) -> io::Result<Self> {
        Ok(TermInput {
            signals: Signals::install()?,
            tty,
            parse: false,
        })
    }

    /// The descriptors to add to a `poll` set, in the order [`TermInput::after_poll`] takes
    /// their results: the terminal, the quit pipe, the resize pipe.
    pub fn poll_fds(&self) -> [PollFd<'_>; 3] {
        [
            PollFd::new(self.tty, PollFlags::POLLIN),
            PollFd::new(self.signals.quit.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.signals.winch.as_fd(), PollFlags::POLLIN),
        ]
    }

    /// Interprets what `poll` reported for [`TermInput::poll_fds`].
    pub fn after_poll(&mut self, revents: [PollFlags; 3]) -> Wake {
        if !revents[1].is_empty() && self.signals.take_quit() {
            return Wake::Quit;
        }
        let tty = revents[0];
        if tty.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            return Wake::HangUp;
        }
        if tty.contains(PollFlags::POLLIN) {
            // Readable with nothing to read is end of file: the terminal hung up.
            match bytes_waiting(self.tty) {
                Ok(0) | Err(_) => return Wake::HangUp,
                Ok(_) if !self.parse => return Wake::Events(Vec::new()),
                Ok(_) => return self.events(),
            }
        }
        if !revents[2].is_empty() && self.signals.take_winch() {
            return Wake::Resize;
        }
        Wake::Nothing
    }

    /// Takes the waiting events from crossterm. Its poll is only given 1 ms: should the
    /// terminal hang up in between, that is all it can spin, and our next `poll` sees it.
    fn events(&mut self) -> Wake {
        let mut out = Vec::new();
        while out.len() < BATCH {
            match ct::poll(Duration::from_millis(1)) {
                Ok(true) => match ct::read() {
                    Ok(e) => out.push(e),
                    Err(_) => return Wake::HangUp,
                },
                Ok(false) => break,
                Err(_) => return Wake::HangUp,
            }
        }
        Wake::Events(out)
    }

    /// Waits up to `timeout` (None: for ever) for a key, a signal or a hang-up.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Wake> {
        let timeout = timeout.map_or(PollTimeout::NONE, |d| {
            PollTimeout::try_from(d.as_millis().min(60_000) as u64).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = self.poll_fds();
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Wake::Nothing),
            Err(e) => return Err(e.into()),
        }
        let revents = fds.map(|f| f.revents().unwrap_or(PollFlags::empty()));
        Ok(self.after_poll(revents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::time::Instant;

    /// Issue #11: a terminal whose other side closes (tmux killed, ssh dropped) is seen as a
    /// hang-up at once, without SIGHUP and without spinning; a key before that is input.
    #[test]
    fn a_pty_hang_up_is_seen_without_sighup() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave: &'static OwnedFd = Box::leak(Box::new(pty.slave));
        // Raw, as a TUI sets its terminal: a key is readable without a newline.
        let mut t = nix::sys::termios::tcgetattr(slave).unwrap();
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(slave, nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
        let mut input = TermInput::for_fd(slave.as_fd()).unwrap();
        nix::unistd::write(&pty.master, b"q").unwrap();
        let w = input.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(w, Wake::Events(_)), "{w:?}");
        // Consume the byte, as crossterm would.
        let mut b = [0u8; 8];
        let _ = nix::unistd::read(slave.as_fd(), &mut b);
        let w = input.wait(Some(Duration::from_millis(50))).unwrap();
        assert!(matches!(w, Wake::Nothing), "nothing waiting: {w:?}");
        drop(pty.master);
        let t0 = Instant::now();
        let w = input.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(w, Wake::HangUp), "{w:?}");
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "{:?}",
            t0.elapsed()
        );
    }
}
