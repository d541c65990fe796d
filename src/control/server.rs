//! The control socket server: `<run_dir>/control.sock`, mode 0600 (0660 with a group).
//!
//! Each connection carries one request line and gets one reply line ([`super::protocol`]).
//! Anyone who can open the socket is outside the firmware, so no client may hold the server:
//!
//! * **One thread, one `poll(2)`** over the listening socket, the stop eventfd and every
//!   client, all non-blocking. The thread never waits on one client: it reads what a client
//!   has sent, answers a client whose line is complete, and goes back to `poll`. A `stop` or a
//!   `status` is answered as soon as its line arrives, whatever the other clients do, and
//!   [`ControlServer::stop`] is seen at once (shutdown is never delayed by a client).
//! * **Bounded clients**: [`Limits::max_clients`] slots (32). A client coming when every slot
//!   is taken is still accepted: the server makes room by closing the slot that matters least
//!   (one already answered, else the oldest still sending, else the oldest being answered),
//!   counted as `over_capacity`. Idle connections held open by the hundred thus never keep a
//!   new client waiting in the listen backlog; a real client's line, sent right after its
//!   `connect`, is read the moment it arrives.
//! * **A whole-request deadline**: the complete line within [`Limits::request_deadline`] (1 s)
//!   of the connection, however the bytes trickle in, and the reply taken by the client within
//!   [`Limits::reply_deadline`]; then the client gets an error reply (if it still reads) and is
//!   closed (`timed_out`).
//! * **A bounded request**: at most [`MAX_REQUEST`] bytes (8 KiB) before the newline
//!   (`oversized`). After its reply the server reads and discards what else the client sent,
//!   for at most 100 ms, so a client that sent too much reads its reply rather than a reset.
//! * **Counted, rate-limited logging**: refused requests (`malformed`, `oversized`,
//!   `timed_out`, `over_capacity`) are counted ([`ControlStats`], in every `status` reply and
//!   `harmony ctl status`) and summarised in the application log at most once per
//!   [`Limits::log_interval`] (10 s): one line with the counts per reason and the last reason,
//!   never one line per request (a local client sending garbage must not fill the data card).
//!   Commands that change something (pause, resume, signal, stop) are logged one line each, up
//!   to [`Limits::commands_logged`] per interval; the rest are counted in the next summary.
//!
//! The server knows nothing of the tree beyond [`execute`], so a firmware whose processors run
//! elsewhere can keep this one socket and answer from its own registry.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::protocol::{ControlStats, GroupState, MAX_REQUEST, Reply, Request, Status};
use super::rundir::{RunDirError, group_id, restrict};
use crate::concurrency::registry::LookupError;
use crate::concurrency::wake::Waker;
use crate::concurrency::{Origin, Registry, Signal, StopReason};

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "another harmony is running with control socket {0} (stop it, or use another run directory)"
    )]
    InUse(PathBuf),
    #[error("cannot bind control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Permissions(#[from] RunDirError),
    #[error("cannot start the control thread: {0}")]
    Spawn(io::Error),
}

/// Fixed facts the status reply carries.
#[derive(Clone, Debug)]
pub struct Identity {
    pub board: String,
    pub version: String,
    pub started_ms: u64,
}

/// How much the server gives any one client (see the module docs).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Clients served at the same time.
    pub max_clients: usize,
    /// From the connection to the newline of its request.
    pub request_deadline: Duration,
    /// From the reply being ready to the client having taken all of it.
    pub reply_deadline: Duration,
    /// Longest request line.
    pub max_request: usize,
    /// At most one summary line of refused requests per interval.
    pub log_interval: Duration,
    /// Commands logged one line each per interval; beyond, only counted.
    pub commands_logged: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 32,
            request_deadline: Duration::from_secs(1),
            reply_deadline: Duration::from_secs(1),
            max_request: MAX_REQUEST,
            log_interval: Duration::from_secs(10),
            commands_logged: 10,
        }
    }
}

/// After the reply is written: read and discard the rest for at most this long, this much.
const DRAIN_TIME: Duration = Duration::from_millis(100);
const DRAIN_BYTES: usize = 256 * 1024;
/// Connections accepted per wake-up before the clients get their turn again.
const ACCEPT_BATCH: usize = 128;
/// How long the listener rests when `accept` fails for lack of descriptors (it stays readable,
/// so polling it at once again would spin).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The server's counters, shared with the status reply.
#[derive(Default)]
struct Stats {
    max_clients: u32,
    clients: AtomicU32,
    accepted: AtomicU64,
    served: AtomicU64,
    malformed: AtomicU64,
    oversized: AtomicU64,
    timed_out: AtomicU64,
    over_capacity: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> ControlStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ControlStats {
            max_clients: self.max_clients,
            clients: self.clients.load(Ordering::Relaxed),
            accepted: g(&self.accepted),
            served: g(&self.served),
            malformed: g(&self.malformed),
            oversized: g(&self.oversized),
            timed_out: g(&self.timed_out),
            over_capacity: g(&self.over_capacity),
        }
    }

    fn counter(&self, r: Refusal) -> &AtomicU64 {
        match r {
            Refusal::Malformed => &self.malformed,
            Refusal::Oversized => &self.oversized,
            Refusal::TimedOut => &self.timed_out,
            Refusal::OverCapacity => &self.over_capacity,
        }
    }
}

/// The running control server.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
}

/// The socket's path in a run directory.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("control.sock")
}

/// Binds the socket under a temporary name, gives it its mode (and group), then renames it
/// into place: a client never finds the socket with the umask's looser mode.
fn bind(
    path: &Path,
    mode: u32,
    group: Option<(&str, nix::unistd::Gid)>,
) -> Result<UnixListener, ServerError> {
    let bind_err = |source| ServerError::Bind {
        path: path.to_owned(),
        source,
    };
    // A live server answers; a stale socket from a killed run does not and is replaced.
    if UnixStream::connect(path).is_ok() {
        return Err(ServerError::InUse(path.to_owned()));
    }
    let tmp = path.with_extension("sock.new");
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
    let placed = restrict(&tmp, mode, group)
        .map_err(ServerError::from)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(bind_err));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

impl ControlServer {
    /// Opens the socket in `run_dir` and serves it with the default [`Limits`].
    pub fn start(
        registry: Arc<Registry>,
        run_dir: &Path,
        group: Option<&str>,
        id: Identity,
    ) -> Result<Self, ServerError> {
        Self::start_with(registry, run_dir, group, id, Limits::default())
    }

    /// [`ControlServer::start`] with other limits.
    pub fn start_with(
        registry: Arc<Registry>,
        run_dir: &Path,
        group: Option<&str>,
        id: Identity,
        limits: Limits,
    ) -> Result<Self, ServerError> {
        let path = socket_path(run_dir);
        let gid = group.map(|g| group_id(g).map(|id| (g, id))).transpose()?;
        let listener = bind(&path, if gid.is_some() { 0o660 } else { 0o600 }, gid)?;
        let cleanup = |e: ServerError| {
            let _ = std::fs::remove_file(&path);
            e
        };
        listener.set_nonblocking(true).map_err(|source| {
            cleanup(ServerError::Bind {
                path: path.clone(),
                source,
            })
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let waker = Waker::new();
        // The eventfd exists before the thread does: without it stop could not reach `poll`.
        if waker.fd().is_none() {
            return Err(cleanup(ServerError::Spawn(io::Error::other(
                "no eventfd available for the control thread",
            ))));
        }
        let stats = Arc::new(Stats {
            max_clients: limits.max_clients.min(u32::MAX as usize) as u32,
            ..Default::default()
        });
        let mut server = Server {
            listener,
            registry,
            id,
            limits,
            stats: stats.clone(),
            clients: Vec::new(),
            log: RefusalLog::default(),
            accept_rest_until: None,
            scratch: Box::new([0; 4096]),
        };
        let (s, w) = (stop.clone(), waker.clone());
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || server.serve(&s, &w))
            .map_err(|e| cleanup(ServerError::Spawn(e)))?;
        Ok(ControlServer {
            path,
            stop,
            waker,
            thread: Some(thread),
            stats,
        })
    }

    /// The server's counters now.
    pub fn stats(&self) -> ControlStats {
        self.stats.snapshot()
    }

    /// Stops serving (at once: the thread waits on no client) and removes the socket.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a request was refused (each has its counter in [`ControlStats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Malformed,
    Oversized,
    TimedOut,
    OverCapacity,
}

/// Refusals and commands since the last summary line; see the module docs.
#[derive(Default)]
struct RefusalLog {
    malformed: u64,
    oversized: u64,
    timed_out: u64,
    over_capacity: u64,
    last_reason: String,
    /// Commands not logged because the interval's allowance was used up.
    unlogged_commands: u64,
    commands_in_window: u32,
    window_start: Option<Instant>,
    last_summary: Option<Instant>,
}

impl RefusalLog {
    fn pending(&self) -> u64 {
        self.malformed + self.oversized + self.timed_out + self.over_capacity
    }

    fn refused(&mut self, r: Refusal, reason: &str) {
        match r {
            Refusal::Malformed => self.malformed += 1,
            Refusal::Oversized => self.oversized += 1,
            Refusal::TimedOut => self.timed_out += 1,
            Refusal::OverCapacity => self.over_capacity += 1,
        }
        // A client's bytes may be quoted in the reason (an unknown command's name): bounded,
        // and control characters escaped so a request cannot forge log lines.
        self.last_reason.clear();
        for c in reason.chars() {
            if self.last_reason.len() >= 200 {
                self.last_reason.push('…');
                break;
            }
            if c.is_control() {
                self.last_reason.extend(c.escape_default());
            } else {
                self.last_reason.push(c);
            }
        }
    }

    fn command(&mut self, now: Instant, limits: &Limits, line: impl FnOnce() -> String) {
        if self
            .window_start
            .is_none_or(|t| now.duration_since(t) >= limits.log_interval)
        {
            self.window_start = Some(now);
            self.commands_in_window = 0;
        }
        if self.commands_in_window < limits.commands_logged {
            self.commands_in_window += 1;
            log::info!("{}", line());
        } else {
            self.unlogged_commands += 1;
        }
    }

    /// When the next summary line is due (None: nothing to say).
    fn due(&self, now: Instant, interval: Duration) -> Option<Instant> {
        if self.pending() == 0 && self.unlogged_commands == 0 {
            return None;
        }
        Some(self.last_summary.map_or(now, |t| t + interval))
    }

    /// Writes the summary line if one is due.
    fn flush(&mut self, now: Instant, interval: Duration) {
        if self.due(now, interval).is_some_and(|d| d <= now) {
            self.write(now);
        }
    }

    /// Writes the summary line of what is pending, due or not.
    fn write(&mut self, now: Instant) {
        let since = match self.last_summary {
            Some(t) => format!("in the last {} s", now.duration_since(t).as_secs()),
            None => "since start".to_owned(),
        };
        if self.pending() > 0 {
            log::warn!(
                "control socket: rejected {} request(s) {since} (malformed {}, oversized {}, timed out {}, over capacity {}); last: {}; totals in `harmony ctl status`",
                self.pending(),
                self.malformed,
                self.oversized,
                self.timed_out,
                self.over_capacity,
                self.last_reason
            );
        }
        if self.unlogged_commands > 0 {
            log::info!(
                "control socket: {} more command(s) {since} carried out but not logged one by one",
                self.unlogged_commands
            );
        }
        *self = RefusalLog {
            last_summary: Some(now),
            window_start: self.window_start,
            commands_in_window: self.commands_in_window,
            ..Default::default()
        };
    }
}

/// Where one connection is in its life.
enum Phase {
    /// Waiting for the request line.
    Reading,
    /// Sending the reply.
    Writing {
        reply: Vec<u8>,
        off: usize,
    },
    /// Answered: reading and discarding what else it sent, until its end or a short time.
    Draining {
        bytes: usize,
    },
    Done,
}

struct Client {
    conn: UnixStream,
    accepted: Instant,
    deadline: Instant,
    phase: Phase,
    buf: Vec<u8>,
    /// What the request does once its reply is out (stop); run whatever becomes of the client.
    after: Option<After>,
}

impl Client {
    fn interest(&self) -> PollFlags {
        match self.phase {
            Phase::Writing { .. } => PollFlags::POLLOUT,
            _ => PollFlags::POLLIN,
        }
    }

    /// Eviction order: answered ones first, then the oldest still sending, then the rest.
    fn eviction_rank(&self) -> (u8, Instant) {
        let r = match self.phase {
            Phase::Done | Phase::Draining { .. } => 0,
            Phase::Reading => 1,
            Phase::Writing { .. } => 2,
        };
        (r, self.accepted)
    }
}

/// What reading a request produced.
enum Got {
    /// Nothing more to read now.
    Pending,
    /// The line (without its newline) is in the buffer; at end of stream, whatever came.
    Line,
    Oversized,
    Failed,
}

struct Server {
    listener: UnixListener,
    registry: Arc<Registry>,
    id: Identity,
    limits: Limits,
    stats: Arc<Stats>,
    clients: Vec<Client>,
    log: RefusalLog,
    accept_rest_until: Option<Instant>,
    scratch: Box<[u8; 4096]>,
}

impl Server {
    fn serve(&mut self, stop: &AtomicBool, waker: &Waker) {
        let Some(wfd) = waker.fd() else { return };
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let listening = self.accept_rest_until.is_none_or(|t| now >= t);
            let timeout = self.next_deadline().map_or(PollTimeout::NONE, |d| {
                // Round up: waking a little early would only poll again.
                let ms = d.saturating_duration_since(now).as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(60_000) as u64).unwrap_or(PollTimeout::MAX)
            });
            let mut fds = Vec::with_capacity(self.clients.len() + 2);
            fds.push(PollFd::new(wfd, PollFlags::POLLIN));
            if listening {
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            }
            let first_client = fds.len();
            for c in &self.clients {
                fds.push(PollFd::new(c.conn.as_fd(), c.interest()));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    // Not expected with valid descriptors; do not spin if it happens.
                    log::error!("control socket: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let woken = ready(&fds[0]);
            let incoming = listening && ready(&fds[1]);
            let busy: Vec<bool> = fds[first_client..].iter().map(ready).collect();
            drop(fds);
            if woken {
                waker.clear_fd();
            }
            if stop.load(Ordering::Acquire) {
                break;
            }
            for (i, b) in busy.into_iter().enumerate() {
                if b {
                    self.progress(i);
                }
            }
            if incoming {
                self.accept();
            }
            self.expire(Instant::now());
            self.clients.retain(|c| !matches!(c.phase, Phase::Done));
            self.stats
                .clients
                .store(self.clients.len() as u32, Ordering::Relaxed);
            self.log.flush(Instant::now(), self.limits.log_interval);
        }
        // What is still waiting for its interval goes out now: no count is lost from the log.
        if self
            .log
            .due(Instant::now(), self.limits.log_interval)
            .is_some()
        {
            self.log.write(Instant::now());
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let clients = self.clients.iter().map(|c| c.deadline).min();
        let log = self.log.due(Instant::now(), self.limits.log_interval);
        let rest = self.accept_rest_until;
        [clients, log, rest].into_iter().flatten().min()
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((conn, _)) => {
                    if conn.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    if self.clients.len() >= self.limits.max_clients.max(1) {
                        self.evict();
                    }
                    let now = Instant::now();
                    self.clients.push(Client {
                        conn,
                        accepted: now,
                        deadline: now + self.limits.request_deadline,
                        phase: Phase::Reading,
                        buf: Vec::new(),
                        after: None,
                    });
                    // Its line may be there already.
                    self.progress(self.clients.len() - 1);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.accept_rest_until = None;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or a connection gone before accept:
                    // rest the listener briefly instead of spinning on it.
                    self.accept_rest_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    self.refuse_log(Refusal::OverCapacity, &format!("accept failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Closes the client that matters least to make room for a new one.
    fn evict(&mut self) {
        let Some(i) = (0..self.clients.len()).min_by_key(|&i| self.clients[i].eviction_rank())
        else {
            return;
        };
        let mut c = self.clients.swap_remove(i);
        if matches!(c.phase, Phase::Reading | Phase::Writing { .. }) {
            let why = format!(
                "too many clients ({} slots): closed the oldest",
                self.limits.max_clients
            );
            self.refuse(Refusal::OverCapacity, &why);
            if matches!(c.phase, Phase::Reading) {
                let _ = c.conn.write(&reply_bytes(&Reply::err(why)));
            }
        }
        if let Some(f) = c.after.take() {
            f(&self.registry);
        }
    }

    fn refuse(&mut self, r: Refusal, reason: &str) {
        self.stats.counter(r).fetch_add(1, Ordering::Relaxed);
        self.refuse_log(r, reason);
    }

    fn refuse_log(&mut self, r: Refusal, reason: &str) {
        self.log.refused(r, reason);
        self.log.flush(Instant::now(), self.limits.log_interval);
    }

    /// Moves client `i` as far as its socket allows without waiting.
    fn progress(&mut self, i: usize) {
        loop {
            let now = Instant::now();
            match self.clients[i].phase {
                Phase::Reading => {
                    let got = read_request(
                        &mut self.clients[i],
                        &mut self.scratch[..],
                        self.limits.max_request,
                    );
                    match got {
                        Got::Pending => return,
                        Got::Failed => {
                            self.clients[i].phase = Phase::Done;
                            return;
                        }
                        Got::Line => {
                            let line = std::mem::take(&mut self.clients[i].buf);
                            let reply = self.answer(i, &line, now);
                            self.respond(i, &reply, now);
                        }
                        Got::Oversized => {
                            let why = format!(
                                "request longer than {} bytes without a newline",
                                self.limits.max_request
                            );
                            self.refuse(Refusal::Oversized, &why);
                            self.clients[i].buf = Vec::new();
                            self.respond(i, &Reply::err(why), now);
                        }
                    }
                }
                Phase::Writing { .. } => {
                    let c = &mut self.clients[i];
                    let Phase::Writing { reply, off } = &mut c.phase else {
                        return;
                    };
                    match c.conn.write(&reply[*off..]) {
                        Ok(n) => {
                            *off += n;
                            if *off >= reply.len() {
                                // All of it is out: let the client see the end of the reply,
                                // carry out what the request asked (stop), drain the rest.
                                let _ = c.conn.shutdown(std::net::Shutdown::Write);
                                c.phase = Phase::Draining { bytes: 0 };
                                c.deadline = now + DRAIN_TIME;
                                if let Some(f) = c.after.take() {
                                    f(&self.registry);
                                }
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            c.phase = Phase::Done;
                            if let Some(f) = c.after.take() {
                                f(&self.registry);
                            }
                            return;
                        }
                    }
                }
                Phase::Draining { bytes } => {
                    let c = &mut self.clients[i];
                    match c.conn.read(&mut self.scratch[..]) {
                        Ok(n) if n > 0 && bytes + n < DRAIN_BYTES => {
                            c.phase = Phase::Draining { bytes: bytes + n }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        _ => {
                            c.phase = Phase::Done;
                            return;
                        }
                    }
                }
                Phase::Done => return,
            }
        }
    }

    /// Queues `reply` for client `i`, to be taken within the reply deadline.
    fn respond(&mut self, i: usize, reply: &Reply, now: Instant) {
        let c = &mut self.clients[i];
        c.phase = Phase::Writing {
            reply: reply_bytes(reply),
            off: 0,
        };
        c.deadline = now + self.limits.reply_deadline;
    }

    /// Parses and carries out one request line.
    fn answer(&mut self, i: usize, line: &[u8], now: Instant) -> Reply {
        let req = std::str::from_utf8(line)
            .map_err(|_| "request is not UTF-8".to_owned())
            .and_then(|s| {
                serde_json::from_str::<Request>(s.trim()).map_err(|e| {
                    format!(
                        "malformed request: {e}; expected one JSON line like {{\"cmd\":\"status\"}}"
                    )
                })
            });
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                self.refuse(Refusal::Malformed, &e);
                return Reply::err(e);
            }
        };
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        let done = execute(req, &self.registry, &self.id, &self.stats.snapshot());
        match done.log {
            Some(l) if done.always_log => log::info!("{l}"),
            Some(l) => self.log.command(now, &self.limits, || l),
            None => {}
        }
        self.clients[i].after = done.after;
        done.reply
    }

    /// Deadlines: a request not complete in time gets an error reply; a reply not taken in
    /// time, or a drain over, closes the connection.
    fn expire(&mut self, now: Instant) {
        for i in 0..self.clients.len() {
            if self.clients[i].deadline > now {
                continue;
            }
            match self.clients[i].phase {
                Phase::Reading => {
                    let why = format!(
                        "no complete request line within {} ms",
                        self.limits.request_deadline.as_millis()
                    );
                    self.refuse(Refusal::TimedOut, &why);
                    self.clients[i].buf = Vec::new();
                    self.respond(i, &Reply::err(why), now);
                    self.progress(i);
                }
                Phase::Writing { .. } => {
                    self.refuse(Refusal::TimedOut, "reply not taken within the deadline");
                    let c = &mut self.clients[i];
                    c.phase = Phase::Done;
                    if let Some(f) = c.after.take() {
                        f(&self.registry);
                    }
                }
                Phase::Draining { .. } | Phase::Done => self.clients[i].phase = Phase::Done,
            }
        }
    }
}

/// Reads what client `c` has sent, up to `max` bytes of request line.
fn read_request(c: &mut Client, scratch: &mut [u8], max: usize) -> Got {
    loop {
        // Never hold more than one byte past the limit: that byte says "too long".
        let room = (max + 1).saturating_sub(c.buf.len()).min(scratch.len());
        match c.conn.read(&mut scratch[..room]) {
            Ok(0) => return Got::Line,
            Ok(n) => {
                let start = c.buf.len();
                c.buf.extend_from_slice(&scratch[..n]);
                if let Some(p) = c.buf[start..].iter().position(|&b| b == b'\n') {
                    c.buf.truncate(start + p);
                    return Got::Line;
                }
                if c.buf.len() > max {
                    return Got::Oversized;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Got::Pending,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Got::Failed,
        }
    }
}

fn reply_bytes(reply: &Reply) -> Vec<u8> {
    let mut text = serde_json::to_vec(reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    text.push(b'\n');
    text
}

type After = fn(&Registry);

/// A request carried out: the reply, what to do once it is sent, and the log line it is worth.
pub struct Executed {
    pub reply: Reply,
    pub after: Option<After>,
    pub log: Option<String>,
    /// Logged even past the interval's allowance (stop: it happens once and ends the run).
    pub always_log: bool,
}

impl Executed {
    fn quiet(reply: Reply) -> Self {
        Executed {
            reply,
            after: None,
            log: None,
            always_log: false,
        }
    }

    fn logged(reply: Reply, log: String) -> Self {
        Executed {
            reply,
            after: None,
            log: Some(log),
            always_log: false,
        }
    }
}

/// Carries out one request against the tree; `control` is the server's own counters for the
/// status reply.
pub fn execute(
    req: Request,
    registry: &Registry,
    id: &Identity,
    control: &ControlStats,
) -> Executed {
    let lookup = |e: LookupError| Executed::quiet(Reply::err(e.to_string()));
    match req {
        Request::Status {} => Executed::quiet(Reply {
            ok: true,
            status: Some(status(registry, id, control.clone())),
            ..Default::default()
        }),
        Request::Pause { target } => match registry.pause_flag(target.as_deref()) {
            Ok(f) => {
                f.set();
                Executed::logged(
                    Reply::ok(format!("paused {}", f.name())),
                    format!("control: pause {}", f.name()),
                )
            }
            Err(e) => lookup(e),
        },
        Request::Resume { target } => match registry.pause_flag(target.as_deref()) {
            Ok(f) => {
                f.clear();
                Executed::logged(
                    Reply::ok(format!("resumed {}", f.name())),
                    format!("control: resume {}", f.name()),
                )
            }
            Err(e) => lookup(e),
        },
        Request::Stop {} => Executed {
            reply: Reply::ok("stopping"),
            after: Some(|r: &Registry| {
                r.request_stop_all(StopReason::Requested("harmony ctl stop".into()))
            }),
            log: Some("control: stop requested".into()),
            always_log: true,
        },
        Request::Signal { name, arg, to } => {
            let sig = match Signal::with_arg(&name, arg.as_deref().unwrap_or(""), Origin::Control) {
                Ok(s) => s,
                Err(e) => return Executed::quiet(Reply::err(format!("bad signal: {e}"))),
            };
            match registry.send_signal(sig, to.as_deref()) {
                Ok(paths) => Executed::logged(
                    Reply::ok(format!("signal {name} delivered to {}", paths.join(", "))),
                    format!("control: signal {name} to {}", paths.join(", ")),
                ),
                Err(e) => lookup(e),
            }
        }
    }
}

/// The status reply's body.
pub fn status(registry: &Registry, id: &Identity, control: ControlStats) -> Status {
    Status {
        pid: std::process::id(),
        version: id.version.clone(),
        board: id.board.clone(),
        started_ms: id.started_ms,
        stopping: registry.is_stopping(),
        paused_all: registry.tree_pause().is_set(),
        log_dropped: crate::applog::dropped_messages(),
        groups: registry
            .group_names()
            .into_iter()
            .map(|n| GroupState {
                waiting: registry.group(&n).is_some_and(|f| f.is_set()),
                name: n,
            })
            .collect(),
        processors: registry.snapshot(),
        control,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    fn start(dir: &Path, limits: Limits) -> ControlServer {
        let id = Identity {
            board: "test".into(),
            version: "0".into(),
            started_ms: 0,
        };
        ControlServer::start_with(Registry::new(), dir, None, id, limits).unwrap()
    }

    fn ask(sock: &Path, line: &[u8]) -> Reply {
        let mut s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(line).unwrap();
        let mut r = String::new();
        BufReader::new(s).read_line(&mut r).unwrap();
        serde_json::from_str(&r).unwrap()
    }

    /// Issue #11: a line of exactly the limit is read (and judged on its content); one byte
    /// more is refused as oversized; both counted.
    #[test]
    fn request_size_is_bounded_to_the_byte() {
        let dir = tempfile::tempdir().unwrap();
        let srv = start(
            dir.path(),
            Limits {
                max_request: 64,
                ..Limits::default()
            },
        );
        let sock = socket_path(dir.path());
        let mut line = vec![b' '; 64 - 16];
        line.extend_from_slice(br#"{"cmd":"status"}"#);
        line.push(b'\n');
        assert!(ask(&sock, &line).ok, "64 bytes before the newline are fine");
        let mut long = vec![b' '; 65];
        long.push(b'\n');
        let r = ask(&sock, &long);
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("longer than 64")),
            "{r:?}"
        );
        let st = srv.stats();
        assert_eq!((st.served, st.oversized), (1, 1), "{st:?}");
        srv.stop();
    }

    /// Issue #11: with every slot held by a silent client, a new client evicts the oldest
    /// and is answered at once; the evicted one is told why and counted.
    #[test]
    fn a_full_house_evicts_the_oldest_silent_client() {
        let dir = tempfile::tempdir().unwrap();
        let srv = start(
            dir.path(),
            Limits {
                max_clients: 2,
                ..Limits::default()
            },
        );
        let sock = socket_path(dir.path());
        let mut first = UnixStream::connect(&sock).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let _second = UnixStream::connect(&sock).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        let r = ask(&sock, b"{\"cmd\":\"status\"}\n");
        assert!(r.ok && t0.elapsed() < Duration::from_millis(500), "{r:?}");
        let status = r.status.unwrap();
        assert_eq!(status.control.max_clients, 2);
        assert_eq!(status.control.over_capacity, 1, "{:?}", status.control);
        first
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = String::new();
        let _ = first.read_to_string(&mut got);
        assert!(got.contains("too many clients"), "{got:?}");
        srv.stop();
    }

    /// Issue #11: a client that never completes its line gets an error reply at the
    /// whole-request deadline, however it trickles its bytes, and is counted.
    #[test]
    fn the_deadline_is_for_the_whole_request() {
        let dir = tempfile::tempdir().unwrap();
        let srv = start(
            dir.path(),
            Limits {
                request_deadline: Duration::from_millis(300),
                ..Limits::default()
            },
        );
        let mut s = UnixStream::connect(socket_path(dir.path())).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let t0 = Instant::now();
        let mut got = Vec::new();
        while t0.elapsed() < Duration::from_secs(3) {
            if s.write_all(b" ").is_err() {
                break;
            }
            let mut b = [0u8; 512];
            match s.read(&mut b) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(_) => {}
            }
        }
        let took = t0.elapsed();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.contains("no complete request line within 300 ms"),
            "{text}"
        );
        assert!(took < Duration::from_millis(1500), "closed after {took:?}");
        assert_eq!(srv.stats().timed_out, 1);
        srv.stop();
    }

    /// Issue #11: stop is immediate even while a client is half-way through its line.
    #[test]
    fn stop_does_not_wait_for_a_client() {
        let dir = tempfile::tempdir().unwrap();
        let srv = start(dir.path(), Limits::default());
        let mut s = UnixStream::connect(socket_path(dir.path())).unwrap();
        s.write_all(b"{\"cmd\":").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        srv.stop();
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "{:?}",
            t0.elapsed()
        );
        assert!(!socket_path(dir.path()).exists());
    }

    /// Issue #11: refusals make at most one summary line per interval, the first at once.
    #[test]
    fn refusals_are_summarised_once_per_interval() {
        let mut l = RefusalLog::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        assert_eq!(l.due(t0, every), None);
        l.refused(Refusal::Malformed, "x");
        assert_eq!(l.due(t0, every), Some(t0), "the first one at once");
        l.flush(t0, every);
        assert_eq!(l.pending(), 0);
        l.refused(Refusal::Malformed, "unknown variant `a\n[ERROR] forged`");
        assert!(!l.last_reason.contains('\n'), "{}", l.last_reason);
        l.refused(Refusal::Malformed, &"x".repeat(5000));
        assert!(l.last_reason.len() < 210);
        for _ in 0..1000 {
            l.refused(Refusal::Oversized, "y");
        }
        assert_eq!(
            l.due(t0, every),
            Some(t0 + every),
            "the rest wait for the interval"
        );
        l.flush(t0 + Duration::from_secs(5), every);
        assert_eq!(l.pending(), 1002, "nothing written before the interval");
        l.flush(t0 + every, every);
        assert_eq!(l.pending(), 0);
    }
}
