//! `harmony ground`: the ground station on the laptop at the other end of the radio.
//!
//! It opens the ground radio's serial device (for the simulated board: the uplink's
//! pseudo-terminal), decodes the MAVLink stream (garbage and damaged frames are skipped and
//! counted), keeps the latest GPS fix, range, CAN frames, flight-controller and firmware
//! health and every STATUSTEXT, sends a GCS heartbeat once a second and sends commands,
//! signed when a key is given; with a key, telemetry that is not correctly signed is rejected
//! and counted. The terminal UI draws [`super::ground_view`]; `--plain` prints one line per
//! message instead (see `harmony ground --help` for the format). `--out` forwards the stream to
//! other ground tools and their frames up the radio ([`super::route`]).
//!
//! One `poll(2)` waits for the radio, the `--out` endpoints' sockets, the signal self-pipe
//! (SIGTERM, SIGINT, SIGHUP: the station installs its own handlers) and, in the UI, the
//! terminal ([`crate::tui::term`]): a signal or the terminal hanging up ends the station within
//! one wake-up, never a spin on a dead terminal (issue #11).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mavlink::dialects::common::{MavMessage, MavResult, MavState, MavType};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::frame::{self, Decoder, Framer};
use super::ground_view::{GroundView, render};
use super::protocol::{Command, GROUND_COMPONENT_ID};
use super::radio::{Port, Wrote};
use super::route::{RouteError, Router, relay_bytes};
use super::signing::{self, KeyError, Signer, Verdict, Verifier};
use crate::drivers::serial::SerialError;
use crate::sources::Reopen;
use crate::tui::term::{Signals, TermInput, Wake};

const AFTER_HELP: &str = "\
Commands (--send, the UI's ':' prompt, or one per line on stdin with --plain):
  pause:SOURCE  resume:SOURCE     SOURCE = gps | rangefinder | can
  rotate                          rotate the log files
  rate:STREAM:HZ                  STREAM = gps | range | can | fc | sys | health; HZ, off or default
  stop                            stop the firmware
Each command is sent as a COMMAND_LONG (see src/uplink/mod.rs for the command table), at
most 3 times in all, until its COMMAND_ACK arrives.

Plain output (--plain), one line per event, fields separated by spaces:
  SECONDS KIND key=value ...      SECONDS since start, 3 decimals
  KIND: HEARTBEAT GPS RANGE CAN VALUE SYS TEXT ACK SENT TIMEOUT REJECT LINK ERROR
  e.g. 12.345 GPS time_usec=... fix=3 lat=53.3613367 lon=-6.5056200 alt_m=61.700 sats=8 ...
       12.400 TEXT severity=ERROR text=\"gps failed (restart 1)\"
       12.500 ACK command=pause id=31010 result=ACCEPTED
       13.000 LINK bytes=2890 frames=71 skipped=0 unsigned=0 bad_signature=0 replayed=0
  LINK comes once a second with running totals, and with --out one ROUTE line per endpoint:
       13.000 ROUTE endpoint=udpout:127.0.0.1:14550 down=70 down_dropped=0 up=2 up_dropped=0
              clients=0 disconnects=0 errors=0
  At start each --out endpoint says where it is: ROUTE endpoint=tcpin:0.0.0.0:5760 local=0.0.0.0:5760

Other ground tools (--out, repeatable; MAVProxy's convention, pymavlink connection strings):
  udpout:HOST:PORT   send to a tool listening there (QGroundControl listens on 14550)
  udpin:HOST:PORT    listen there; answer whoever last sent to it
  tcpin:HOST:PORT    a TCP server for several tools (MAVProxy --master=tcp:HOST:PORT)
Every frame accepted from the radio goes to every endpoint (with --key: only correctly signed
ones); the tools' frames go up the radio, signed with --key when given.

The port is reopened every 2 s when it goes away (a USB radio unplugged). A pseudo-terminal
(/dev/pts/N) that hung up is not: its number is soon another program's. Through a symlink
(the simulated board's harmony-data/radio) the station waits for the link to be made anew.

Exit status: 0 done (every command accepted), 1 a command was refused, 3 a command got no
answer, 2 the port or key could not be used (or the pseudo-terminal went away).";

/// Command line of `harmony ground`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = AFTER_HELP)]
pub struct GroundArgs {
    /// The ground radio's serial device (for the simulated board: harmony-data/radio).
    #[arg(long)]
    pub port: PathBuf,
    /// The radio's serial rate.
    #[arg(long, default_value_t = 57600)]
    pub baud: u32,
    /// Signing key: 32 raw bytes, mode 0600 (the vehicle's `uplink.signing_key`). Commands are
    /// signed and telemetry not correctly signed is rejected.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// One line per message on stdout, for scripts, instead of the terminal UI; commands are
    /// also read from stdin, one per line.
    #[arg(long)]
    pub plain: bool,
    /// Our MAVLink system id.
    #[arg(long, default_value_t = super::protocol::GROUND_SYSTEM_ID)]
    pub system_id: u8,
    /// The vehicle's system id (`uplink.system_id`).
    #[arg(long, default_value_t = 1)]
    pub target: u8,
    /// The link id in our signatures.
    #[arg(long, default_value_t = 0)]
    pub link_id: u8,
    /// A command to send, in order (repeatable); see below.
    #[arg(long = "send", value_name = "CMD")]
    pub send: Vec<String>,
    /// Stop after this many seconds (default: once every --send is answered, or never).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds to wait for a command's ACK before sending it again.
    #[arg(long, default_value_t = 1.5)]
    pub ack_timeout: f64,
    /// Forward the stream to another ground tool: udpout:HOST:PORT, udpin:HOST:PORT or
    /// tcpin:HOST:PORT (repeatable; see below).
    #[arg(long = "out", value_name = "ENDPOINT")]
    pub out: Vec<String>,
}

/// Why the ground station stopped.
#[derive(Debug, thiserror::Error)]
pub enum GroundError {
    #[error("--key: {0}")]
    Key(#[from] KeyError),
    #[error("--send: {0}")]
    BadCommand(String),
    #[error("--port: {0}")]
    Port(#[from] SerialError),
    #[error("--baud: {0} is not a supported rate")]
    Baud(u32),
    #[error("{0}: must be a positive number of seconds")]
    Seconds(&'static str),
    #[error("terminal: {0}")]
    Terminal(io::Error),
    #[error("poll: {0}")]
    Poll(nix::Error),
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// How many times a command is sent before giving up.
pub const TRIES: u32 = 3;

struct InFlight {
    cmd: Command,
    sent_at: Instant,
    tries: u32,
}

/// The station's state shared by both front ends.
struct Station {
    args: GroundArgs,
    port: Option<Port>,
    reopen: Reopen,
    decoder: Decoder,
    framer: Framer,
    verifier: Option<Verifier>,
    view: GroundView,
    queue: VecDeque<Command>,
    inflight: Option<InFlight>,
    refused: bool,
    timed_out: bool,
    heartbeat_at: Instant,
    link_at: Instant,
    t0: Instant,
    plain: Option<io::StdoutLock<'static>>,
    buf: Box<[u8; 2048]>,
    /// SIGINT, SIGTERM or SIGHUP came, or the terminal hung up: stop.
    quit: bool,
    /// Whether the open port is a pseudo-terminal, and the inode of the symlink it was
    /// opened through (the simulated radio's `harmony-data/radio`).
    port_is_pty: bool,
    port_link: Option<u64>,
    /// The pseudo-terminal hung up: the link inode it had (see `open`).
    pty_gone: Option<Option<u64>>,
    /// The pseudo-terminal is gone and there is no link to wait for: stop.
    gone: bool,
    /// `--out` endpoints.
    router: Router,
}

/// The inode of `path` when it is a symlink.
fn link_inode(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_symlink())
        .map(|m| m.ino())
}

impl Station {
    fn new(args: GroundArgs) -> Result<Self, GroundError> {
        if crate::drivers::serial::baud_rate(args.baud).is_none() {
            return Err(GroundError::Baud(args.baud));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0 && v < 1e9;
        if !positive(args.ack_timeout) {
            return Err(GroundError::Seconds("--ack-timeout"));
        }
        if args.duration.is_some_and(|d| !positive(d)) {
            return Err(GroundError::Seconds("--duration"));
        }
        let key = args.key.as_deref().map(signing::load_key).transpose()?;
        let queue = args
            .send
            .iter()
            .map(|s| Command::parse(s).map_err(GroundError::BadCommand))
            .collect::<Result<VecDeque<_>, _>>()?;
        let now = Instant::now();
        let mut view = GroundView {
            signed: key.is_some(),
            port: args.port.display().to_string(),
            ..Default::default()
        };
        view.connected = false;
        let router = Router::open(&args.out)?;
        Ok(Station {
            framer: Framer::new(
                args.system_id,
                GROUND_COMPONENT_ID,
                key.map(|k| Signer::new(k, args.link_id, 0)),
            ),
            verifier: key.map(Verifier::new),
            plain: args.plain.then(|| io::stdout().lock()),
            args,
            port: None,
            reopen: Reopen::default(),
            decoder: Decoder::default(),
            view,
            queue,
            inflight: None,
            refused: false,
            timed_out: false,
            heartbeat_at: now,
            link_at: now + Duration::from_secs(1),
            t0: now,
            buf: Box::new([0; 2048]),
            quit: false,
            port_is_pty: false,
            port_link: None,
            pty_gone: None,
            gone: false,
            router,
        })
    }

    fn t(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn line(&mut self, l: &str) {
        let t = self.t();
        if let Some(out) = &mut self.plain {
            // A closed stdout (the script went away) is not worth dying for.
            let _ = writeln!(out, "{t:.3} {l}");
            let _ = out.flush();
        }
    }

    fn open(&mut self) {
        let now = Instant::now();
        if self.port.is_some() || !self.reopen.due(now) {
            return;
        }
        self.reopen.attempted(now);
        let link = link_inode(&self.args.port);
        if let Some(gone) = self.pty_gone {
            // A pseudo-terminal that hung up is gone for good; its number is soon someone
            // else's. Only a new link (the firmware started again) is worth opening.
            match (gone, link) {
                // Opened through a link: wait for a new one.
                (Some(old), Some(new)) if new != old => {}
                (Some(_), _) => return,
                // Opened as /dev/pts/N itself: nothing to wait for.
                (None, _) => {
                    let l = format!(
                        "ERROR port={} reason=\"pseudo-terminal gone; not reopening a number another program may get\"",
                        self.args.port.display()
                    );
                    self.line(&l);
                    self.gone = true;
                    return;
                }
            }
        }
        match Port::open(&self.args.port, self.args.baud) {
            Ok(p) => {
                self.reopen.succeeded();
                self.port_is_pty =
                    std::fs::canonicalize(&self.args.port).is_ok_and(|p| p.starts_with("/dev/pts"));
                self.pty_gone = None;
                self.port_link = link;
                self.port = Some(p);
                self.decoder = Decoder::default();
                self.view.connected = true;
            }
            Err(e) => {
                if self.reopen.failed() {
                    let l = format!("ERROR port={} reason={e}", self.args.port.display());
                    self.line(&l);
                    if self.plain.is_none() {
                        self.view.note_command(self.t(), &format!("radio: {e}"));
                    }
                }
                self.view.connected = false;
            }
        }
    }

    fn lost(&mut self, why: &str) {
        let l = format!("ERROR port={} reason=\"{why}\"", self.args.port.display());
        self.line(&l);
        if self.port_is_pty {
            self.pty_gone = Some(self.port_link);
        }
        self.port = None;
        self.view.connected = false;
        self.reopen.attempted(Instant::now());
    }

    fn send(&mut self, msg: &MavMessage) {
        if self.port.is_none() {
            return;
        }
        let bytes = self.framer.frame(msg).to_vec();
        self.write_radio(&bytes);
    }

    /// Writes a whole frame to the radio; returns whether it went.
    fn write_radio(&mut self, bytes: &[u8]) -> bool {
        let Some(port) = &mut self.port else {
            return false;
        };
        let mut off = 0;
        let deadline = Instant::now() + Duration::from_millis(200);
        while off < bytes.len() {
            match port.write(&bytes[off..]) {
                Ok(Wrote::Bytes(n)) if n > 0 => off += n,
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                Ok(_) => return false,
                Err(e) => {
                    let why = e.to_string();
                    self.lost(&why);
                    return false;
                }
            }
        }
        true
    }

    /// Services the `--out` endpoints: their tools' frames go up the radio (signed with the
    /// key, if any).
    fn pump_router(&mut self) {
        if self.router.is_empty() {
            return;
        }
        let mut router = std::mem::take(&mut self.router);
        router.pump(&mut |raw| {
            self.port.is_some()
                && relay_bytes(raw, self.framer.signer_mut()).is_some_and(|b| self.write_radio(&b))
        });
        self.router = router;
    }

    /// Says where each `--out` endpoint is (the port a `:0` endpoint got).
    fn announce_routes(&mut self) {
        let lines: Vec<String> = self
            .router
            .endpoints
            .iter()
            .map(|e| {
                let local = e.local.map(|a| a.to_string()).unwrap_or_default();
                format!("ROUTE endpoint={} local={local}", e.name)
            })
            .collect();
        for l in lines {
            self.line(&l);
        }
    }

    fn read(&mut self) {
        loop {
            let Some(port) = &mut self.port else { return };
            let n = match port.read(&mut self.buf[..]) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    let why = e.to_string();
                    self.lost(&why);
                    return;
                }
            };
            self.decoder.push(&self.buf[..n]);
            while let Some(raw) = self.decoder.next_frame() {
                self.frame(&raw);
            }
            self.view.bytes = self.decoder.bytes();
            self.view.frames = self.decoder.frames();
            self.view.skipped = self.decoder.skipped();
            if n < self.buf.len() {
                return;
            }
        }
    }

    fn frame(&mut self, raw: &mavlink::MAVLinkMessageRaw) {
        let (sys, comp) = frame::sender(raw);
        if let Some(v) = &mut self.verifier {
            let now = self.framer.signer().map_or(0, |s| s.now());
            let verdict = v.check(raw, now);
            self.view.rejected = v.rejected;
            match verdict {
                Verdict::Accepted(ts) => {
                    if let Some(s) = self.framer.signer_mut() {
                        s.observe(ts);
                    }
                }
                other => {
                    let reason = match other {
                        Verdict::Unsigned => "unsigned",
                        Verdict::BadSignature => "bad_signature",
                        _ => "replayed",
                    };
                    let l = format!(
                        "REJECT reason={reason} msgid={} sys={sys} comp={comp}",
                        raw.message_id()
                    );
                    self.line(&l);
                    return;
                }
            }
        }
        if sys != self.args.system_id as u32 {
            // Accepted (with a key: correctly signed): on to the other ground tools.
            self.router.forward(raw);
        }
        let Ok(msg) = frame::parse(raw) else { return };
        if sys == self.args.system_id as u32 {
            return;
        }
        let t = self.t();
        if let MavMessage::COMMAND_ACK(a) = &msg
            && let Some(f) = &self.inflight
            && f.cmd.mav_cmd() == a.command
        {
            if a.result != MavResult::MAV_RESULT_ACCEPTED {
                self.refused = true;
            }
            self.inflight = None;
        }
        let line = match &msg {
            MavMessage::STATUSTEXT(s) => {
                let (id, seq) = frame::statustext_ids(raw);
                self.view.apply_text(t, sys, s, id, seq)
            }
            _ => self.view.apply(t, sys, comp, &msg),
        };
        if let Some(l) = line {
            self.line(&l);
        }
    }

    /// Heartbeat, LINK lines, command (re)transmission.
    fn tick(&mut self) {
        let now = Instant::now();
        if now >= self.heartbeat_at {
            self.heartbeat_at = now + Duration::from_secs(1);
            self.send(&frame::heartbeat(
                MavType::MAV_TYPE_GCS,
                MavState::MAV_STATE_ACTIVE,
            ));
        }
        if now >= self.link_at {
            self.link_at += Duration::from_secs(1);
            let r = self.view.rejected;
            let l = format!(
                "LINK bytes={} frames={} skipped={} unsigned={} bad_signature={} replayed={}",
                self.view.bytes,
                self.view.frames,
                self.view.skipped,
                r.unsigned,
                r.bad_signature,
                r.replayed
            );
            self.line(&l);
            for l in self.router.lines() {
                self.line(&l);
            }
            self.view.routes = self.router.summary();
            self.view
                .sample_history(self.t(), self.args.baud as f64 / 10.0);
        }
        let timeout = Duration::from_secs_f64(self.args.ack_timeout);
        if let Some(f) = &self.inflight
            && now.duration_since(f.sent_at) >= timeout
        {
            if f.tries >= TRIES {
                let l = format!("TIMEOUT command={}", f.cmd);
                self.timed_out = true;
                self.inflight = None;
                self.line(&l);
                let t = self.t();
                self.view.note_command(t, &l);
            } else {
                let (cmd, tries) = (f.cmd, f.tries + 1);
                self.transmit(cmd, tries);
            }
        }
        if self.inflight.is_none()
            && self.port.is_some()
            && let Some(cmd) = self.queue.pop_front()
        {
            self.transmit(cmd, 1);
        }
    }

    fn transmit(&mut self, cmd: Command, tries: u32) {
        let msg = MavMessage::COMMAND_LONG(cmd.to_message(self.args.target, (tries - 1) as u8));
        self.send(&msg);
        self.inflight = Some(InFlight {
            cmd,
            sent_at: Instant::now(),
            tries,
        });
        let l = format!("SENT command={cmd} try={tries}");
        self.line(&l);
        let t = self.t();
        self.view.note_command(t, &l);
    }

    /// Takes a typed command; reports a bad one.
    fn submit(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        match Command::parse(text) {
            Ok(c) => self.queue.push_back(c),
            Err(e) => {
                let l = format!("ERROR command=\"{text}\" reason=\"{e}\"");
                self.line(&l);
                let t = self.t();
                self.view.note_command(t, &l);
            }
        }
    }

    fn finished(&self) -> bool {
        if self.quit || self.gone {
            return true;
        }
        match self.args.duration {
            Some(d) => self.t() >= d,
            None => self.commands_done(),
        }
    }

    /// Every `--send` command was answered (or timed out).
    fn commands_done(&self) -> bool {
        !self.args.send.is_empty() && self.queue.is_empty() && self.inflight.is_none()
    }

    fn exit_code(&self) -> u8 {
        if self.gone && !self.commands_done() {
            2
        } else if self.timed_out {
            3
        } else if self.refused {
            1
        } else {
            0
        }
    }

    /// Waits up to `max` for the radio, stdin in plain mode, and `input` (the quit signals;
    /// in the UI also the terminal); returns whether stdin is readable and what `input` said.
    /// A quit signal or a hang-up sets [`Station::quit`].
    fn wait(
        &mut self,
        max: Duration,
        stdin: bool,
        input: &mut Input,
    ) -> Result<(bool, Wake), GroundError> {
        let now = Instant::now();
        let mut until = self.heartbeat_at.min(self.link_at).min(now + max);
        if let Some(f) = &self.inflight {
            until = until.min(f.sent_at + Duration::from_secs_f64(self.args.ack_timeout));
        }
        if self.port.is_none() {
            until = until.min(self.reopen.next());
        }
        let ms = until.saturating_duration_since(now).as_millis().min(1000) as u16;
        let stdin_handle = io::stdin();
        let in_fd = stdin_handle.as_fd();
        let mut fds: Vec<PollFd> = Vec::with_capacity(8);
        if let Some(p) = &self.port {
            fds.push(PollFd::new(p.fd(), PollFlags::POLLIN));
        }
        let routes = fds.len();
        fds.extend(
            self.router
                .fds()
                .into_iter()
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        let stdin_at = fds.len();
        if stdin {
            fds.push(PollFd::new(in_fd, PollFlags::POLLIN));
        }
        let base = fds.len();
        match &*input {
            Input::Plain(s) => {
                fds.push(PollFd::new(s.quit_fd(), PollFlags::POLLIN));
            }
            Input::Tui(t) => {
                fds.extend(t.poll_fds());
            }
        }
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(GroundError::Poll(e)),
        }
        let revents = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty())
        };
        let port_ready = self.port.is_some() && !revents(0).is_empty();
        let stdin_ready = stdin && !revents(stdin_at).is_empty();
        let route_ready = (routes..stdin_at).any(|i| !revents(i).is_empty());
        let theirs = [revents(base), revents(base + 1), revents(base + 2)];
        drop(fds);
        let wake = match input {
            Input::Plain(s) if !theirs[0].is_empty() && s.take_quit() => Wake::Quit,
            Input::Plain(_) => Wake::Nothing,
            Input::Tui(t) => t.after_poll(theirs),
        };
        if matches!(wake, Wake::Quit | Wake::HangUp) {
            self.quit = true;
        }
        if port_ready {
            self.read();
        }
        if route_ready {
            self.pump_router();
        }
        Ok((stdin_ready, wake))
    }
}

/// What besides the radio the station waits for.
enum Input {
    /// `--plain`: the quit signals only (stdin carries commands, not keys).
    Plain(Signals),
    /// The terminal UI: keys, resizes, hang-up and the quit signals ([`crate::tui::term`]).
    Tui(TermInput),
}

/// Runs the ground station; returns the process exit code.
pub fn main(args: GroundArgs) -> Result<u8, GroundError> {
    let plain = args.plain;
    let mut st = Station::new(args)?;
    st.announce_routes();
    // Our own handlers for SIGTERM, SIGINT and SIGHUP: the binary's serve the firmware only.
    if plain {
        let signals = Signals::install().map_err(GroundError::Terminal)?;
        run_plain(&mut st, Input::Plain(signals))
    } else {
        let input = TermInput::stdin().map_err(GroundError::Terminal)?;
        run_tui(&mut st, Input::Tui(input))
    }
}

fn run_plain(st: &mut Station, mut input: Input) -> Result<u8, GroundError> {
    let mut stdin_open = true;
    let mut pending = Vec::new();
    loop {
        st.open();
        st.tick();
        if st.finished() {
            return Ok(st.exit_code());
        }
        if st
            .wait(Duration::from_millis(500), stdin_open, &mut input)?
            .0
        {
            let mut b = [0u8; 512];
            match nix::unistd::read(io::stdin().as_fd(), &mut b) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    pending.extend_from_slice(&b[..n]);
                    while let Some(i) = pending.iter().position(|&c| c == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        st.submit(&String::from_utf8_lossy(&line));
                    }
                }
            }
        }
    }
}

fn run_tui(st: &mut Station, mut input: Input) -> Result<u8, GroundError> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
    let mut terminal = ratatui::try_init().map_err(GroundError::Terminal)?;
    let mut prompt: Option<String> = None;
    let result = (|| -> Result<u8, GroundError> {
        loop {
            st.open();
            st.tick();
            if st.finished() {
                return Ok(st.exit_code());
            }
            let now = st.t();
            terminal
                .draw(|f| render(&st.view, now, prompt.as_deref(), f))
                .map_err(GroundError::Terminal)?;
            let Wake::Events(events) = st.wait(Duration::from_millis(100), false, &mut input)?.1
            else {
                // Quit and hang-up set `quit`; resize and time just redraw.
                continue;
            };
            for e in events {
                let Event::Key(k) = e else { continue };
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                if k.code == KeyCode::Char('c')
                    && k.modifiers.contains(event::KeyModifiers::CONTROL)
                {
                    return Ok(st.exit_code());
                }
                match (&mut prompt, k.code) {
                    (None, KeyCode::Char('q')) => return Ok(st.exit_code()),
                    (None, KeyCode::Char(':')) => prompt = Some(String::new()),
                    (Some(_), KeyCode::Esc) => prompt = None,
                    (Some(p), KeyCode::Enter) => {
                        let text = std::mem::take(p);
                        prompt = None;
                        st.submit(&text);
                    }
                    (Some(p), KeyCode::Backspace) => {
                        p.pop();
                    }
                    (Some(p), KeyCode::Char(c)) => p.push(c),
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    result
}
