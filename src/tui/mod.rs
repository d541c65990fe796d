//! `harmony top`, the operator's terminal UI (issue #6): the Rust counterpart of the Python
//! original's Tkinter GUI, over the control socket that `harmony ctl` also uses.
//!
//! Design:
//! * [`app::App`] holds everything shown; [`view::render`] draws it as a pure function, so both
//!   are unit-tested with ratatui's `TestBackend` and no terminal or firmware.
//! * Two small threads feed one channel; the main thread blocks on it, handles whatever has
//!   arrived, and redraws: the *client* asks for the status every `--refresh-ms` and carries
//!   out the operator's requests (so a slow or hung firmware never freezes the keyboard), and
//!   the *input* thread sleeps in one `poll(2)` on the terminal and a signal self-pipe
//!   ([`term`]): keys, a resize, SIGTERM/SIGINT/SIGHUP and the terminal hanging up (ssh dropped,
//!   tmux killed: EOF or EIO, with or without SIGHUP) all arrive there, so the TUI exits within
//!   one wake-up of any of them and never spins on a dead terminal (issue #11).
//! * A failed request is not fatal: the screen says "disconnected, retrying", keeps the last
//!   known tree greyed out, and the client keeps asking; when the firmware is back (a new pid)
//!   the rates start again from zero.
//! * The terminal is restored on every way out: a guard's `Drop` on return and error, ratatui's
//!   panic hook on a panic.

pub mod app;
pub mod history;
pub mod term;
pub mod view;

use std::io::{self, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{Event as CtEvent, KeyEvent};

use crate::control::client;
use crate::control::protocol::{Reply, Request, Status};
use crate::control::server::socket_path;
use app::{Action, App};

/// Command line of `harmony top`.
#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Run directory of the firmware (default: $HARMONY_RUN_DIR, then ./harmony-data/run if
    /// a firmware is listening there, then /run/harmony).
    #[arg(long, env = "HARMONY_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
    /// How often to ask for the status, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub refresh_ms: u64,
    /// How long one request may take before the firmware counts as unreachable, in ms.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub timeout_ms: u64,
}

/// Why the TUI stopped other than by the operator's choice.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("harmony top needs an interactive terminal (use `harmony ctl status` in scripts): {0}")]
    NotATerminal(&'static str),
    #[error("cannot set up the terminal: {0}")]
    Terminal(io::Error),
    #[error("cannot draw on the terminal: {0}")]
    Draw(io::Error),
    #[error("reading the terminal failed (was it closed?): {0}")]
    Input(io::Error),
    #[error("cannot start the {what} thread: {source}")]
    Spawn {
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

/// The same rule `harmony ctl` uses when no run directory is given.
pub fn default_run_dir() -> PathBuf {
    crate::control::rundir::default_run_dir()
}

/// What the threads tell the main loop.
enum Event {
    Key(KeyEvent),
    Redraw,
    Status {
        at: Instant,
        now_ms: u64,
        result: Result<Status, String>,
    },
    Reply {
        label: String,
        result: Result<Reply, String>,
    },
    InputFailed(io::Error),
    /// An OS signal asked us to go, or the terminal hung up.
    Quit,
}

/// What the main loop asks the client thread to do.
struct Command {
    req: Request,
    label: String,
}

/// Runs the TUI until the operator quits; returns the process exit code.
pub fn main(args: TopArgs) -> Result<u8, TuiError> {
    if !io::stdout().is_terminal() {
        return Err(TuiError::NotATerminal("standard output is not a terminal"));
    }
    if !io::stdin().is_terminal() {
        return Err(TuiError::NotATerminal("standard input is not a terminal"));
    }
    let socket = socket_path(&args.run_dir.unwrap_or_else(default_run_dir));
    let refresh = Duration::from_millis(args.refresh_ms);
    let timeout = Duration::from_millis(args.timeout_ms);

    let (tx, rx) = unbounded::<Event>();
    let (cmd_tx, cmd_rx) = unbounded::<Command>();
    // Signal handlers before the terminal changes mode: a SIGTERM from now on ends it cleanly.
    let input = term::TermInput::stdin().map_err(TuiError::Signals)?;
    {
        let (socket, tx) = (socket.clone(), tx.clone());
        spawn("control client", move || {
            client_loop(&socket, refresh, timeout, &cmd_rx, &tx)
        })?;
    }
    let mut term = TerminalGuard::init()?;
    {
        let tx = tx.clone();
        spawn("terminal input", move || input_loop(input, &tx))?;
    }
    drop(tx);
    event_loop(&mut term.0, App::new(socket), &rx, &cmd_tx)
}

/// Restores the terminal when dropped, on every return path.
struct TerminalGuard(DefaultTerminal);

impl TerminalGuard {
    fn init() -> Result<Self, TuiError> {
        match ratatui::try_init() {
            Ok(t) => Ok(TerminalGuard(t)),
            Err(e) => {
                // Raw mode may already be on when entering the alternate screen failed.
                let _ = ratatui::try_restore();
                Err(TuiError::Terminal(e))
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn spawn(what: &'static str, f: impl FnOnce() + Send + 'static) -> Result<(), TuiError> {
    std::thread::Builder::new()
        .name(what.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|source| TuiError::Spawn { what, source })
}

fn event_loop(
    term: &mut DefaultTerminal,
    mut app: App,
    rx: &Receiver<Event>,
    cmds: &Sender<Command>,
) -> Result<u8, TuiError> {
    loop {
        term.draw(|f| view::render(&app, f))
            .map_err(TuiError::Draw)?;
        // Block for one event, then take whatever else is already queued before redrawing.
        let Ok(first) = rx.recv() else {
            return Ok(0);
        };
        let mut next = Some(first);
        while let Some(ev) = next {
            match ev {
                Event::Key(k) => match app.handle_key(k) {
                    Some(Action::Quit) => return Ok(0),
                    Some(Action::Send { req, label }) => {
                        app.set_message(format!("{label}..."), false);
                        if cmds.send(Command { req, label }).is_err() {
                            app.set_message("the control client thread is gone".into(), true);
                        }
                    }
                    None => {}
                },
                Event::Redraw => {}
                Event::Status { at, now_ms, result } => match result {
                    Ok(s) => app.apply_status(s, at, now_ms),
                    Err(e) => app.apply_disconnect(e),
                },
                Event::Reply { label, result } => app.apply_reply(&label, result),
                Event::InputFailed(e) => return Err(TuiError::Input(e)),
                Event::Quit => return Ok(0),
            }
            next = rx.try_recv().ok();
        }
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Asks for the status every `refresh` and carries out requests; ends when the main loop is
/// gone.
fn client_loop(
    socket: &Path,
    refresh: Duration,
    timeout: Duration,
    cmds: &Receiver<Command>,
    tx: &Sender<Event>,
) {
    let mut next = Instant::now();
    loop {
        match cmds.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Command { req, label }) => {
                let result = client::request(socket, &req, timeout).map_err(|e| e.to_string());
                if tx.send(Event::Reply { label, result }).is_err() {
                    return;
                }
                // Show the effect at once rather than up to one refresh later.
                next = Instant::now();
            }
            Err(RecvTimeoutError::Timeout) => {
                let result = client::status(socket, timeout).map_err(short_error);
                let ev = Event::Status {
                    at: Instant::now(),
                    now_ms: wall_ms(),
                    result,
                };
                if tx.send(ev).is_err() {
                    return;
                }
                next = Instant::now() + refresh;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The error without `ctl`'s hints: the header already shows the socket path.
fn short_error(e: client::ClientError) -> String {
    match e {
        client::ClientError::Connect { source, .. } => source.to_string(),
        e => e.to_string(),
    }
}

fn input_loop(mut input: term::TermInput, tx: &Sender<Event>) {
    loop {
        let events = match input.wait(None) {
            Ok(term::Wake::Events(evs)) => evs
                .into_iter()
                .filter_map(|e| match e {
                    CtEvent::Key(k) => Some(Event::Key(k)),
                    CtEvent::Resize(..) => Some(Event::Redraw),
                    _ => None,
                })
                .collect(),
            Ok(term::Wake::Resize) => vec![Event::Redraw],
            Ok(term::Wake::Nothing) => continue,
            Ok(term::Wake::Quit | term::Wake::HangUp) => vec![Event::Quit],
            Err(e) => vec![Event::InputFailed(e)],
        };
        for ev in events {
            let last = matches!(ev, Event::Quit | Event::InputFailed(_));
            if tx.send(ev).is_err() || last {
                return;
            }
        }
    }
}
