//! The control socket server: `<run_dir>/control.sock`, mode 0600 (0660 with a group).
//!
//! One thread sleeps in `poll(2)` on the listening socket and its waker's eventfd: no timeout,
//! no wake-ups while nobody talks to it. Each connection carries one request line and gets one
//! reply line; a client gets one second to send its line, so a stuck client cannot hold the
//! server for long. Bad requests get an error reply and change nothing.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::protocol::{GroupState, MAX_REQUEST, Reply, Request, Status};
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

/// The running control server.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
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
    pub fn start(
        registry: Arc<Registry>,
        run_dir: &Path,
        group: Option<&str>,
        id: Identity,
    ) -> Result<Self, ServerError> {
        let path = socket_path(run_dir);
        let gid = group.map(|g| group_id(g).map(|id| (g, id))).transpose()?;
        let listener = bind(&path, if gid.is_some() { 0o660 } else { 0o600 }, gid)?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Bind {
                path: path.clone(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let waker = Waker::new();
        let (s, w) = (stop.clone(), waker.clone());
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || serve(&listener, &registry, &s, &w, &id))
            .map_err(ServerError::Spawn)?;
        Ok(ControlServer {
            path,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// Stops serving and removes the socket.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(
    listener: &UnixListener,
    registry: &Registry,
    stop: &AtomicBool,
    waker: &Waker,
    id: &Identity,
) {
    let Some(wfd) = waker.fd() else {
        log::error!("control socket disabled: no eventfd available");
        return;
    };
    while !stop.load(Ordering::Acquire) {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wfd, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("control socket poll failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        if fds[1].any().unwrap_or(false) {
            waker.clear_fd();
        }
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    if let Err(e) = handle(conn, registry, id) {
                        log::debug!("control connection: {e}");
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("control socket accept failed: {e}");
                    break;
                }
            }
        }
    }
}

fn read_request(conn: &mut UnixStream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    buf.truncate(i);
                    break;
                }
                if buf.len() > MAX_REQUEST {
                    return Err(format!(
                        "request longer than {MAX_REQUEST} bytes without a newline"
                    ));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err("no complete request line within 1 s".into());
            }
            Err(e) => return Err(format!("read error: {e}")),
        }
    }
    Ok(buf)
}

fn handle(mut conn: UnixStream, registry: &Registry, id: &Identity) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    conn.set_write_timeout(Some(Duration::from_secs(1)))?;
    let (reply, after) = match read_request(&mut conn) {
        Err(e) => (Reply::err(e), None),
        Ok(line) => match std::str::from_utf8(&line)
            .map_err(|_| "request is not UTF-8".to_owned())
            .and_then(|s| {
                serde_json::from_str::<Request>(s.trim()).map_err(|e| {
                    format!(
                        "malformed request: {e}; expected one JSON line like {{\"cmd\":\"status\"}}"
                    )
                })
            }) {
            Err(e) => {
                log::warn!("control socket: {e}");
                (Reply::err(e), None)
            }
            Ok(req) => execute(req, registry, id),
        },
    };
    let mut text = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    text.push(b'\n');
    let written = conn.write_all(&text);
    // Let a client that sent too much read its reply instead of a connection reset.
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 4 * MAX_REQUEST {
        match conn.read(&mut sink) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
    if let Some(f) = after {
        f(registry);
    }
    written
}

type After = fn(&Registry);

/// Carries out one request.
pub fn execute(req: Request, registry: &Registry, id: &Identity) -> (Reply, Option<After>) {
    let lookup = |e: LookupError| Reply::err(e.to_string());
    match req {
        Request::Status {} => (
            Reply {
                ok: true,
                status: Some(status(registry, id)),
                ..Default::default()
            },
            None,
        ),
        Request::Pause { target } => match registry.pause_flag(target.as_deref()) {
            Ok(f) => {
                f.set();
                log::info!("control: pause {}", f.name());
                (Reply::ok(format!("paused {}", f.name())), None)
            }
            Err(e) => (lookup(e), None),
        },
        Request::Resume { target } => match registry.pause_flag(target.as_deref()) {
            Ok(f) => {
                f.clear();
                log::info!("control: resume {}", f.name());
                (Reply::ok(format!("resumed {}", f.name())), None)
            }
            Err(e) => (lookup(e), None),
        },
        Request::Stop {} => {
            log::info!("control: stop requested");
            (
                Reply::ok("stopping"),
                Some(|r: &Registry| {
                    r.request_stop_all(StopReason::Requested("harmony ctl stop".into()))
                }),
            )
        }
        Request::Signal { name, arg, to } => {
            let sig = match Signal::with_arg(&name, arg.as_deref().unwrap_or(""), Origin::Control) {
                Ok(s) => s,
                Err(e) => return (Reply::err(format!("bad signal: {e}")), None),
            };
            match registry.send_signal(sig, to.as_deref()) {
                Ok(paths) => {
                    log::info!("control: signal {name} to {}", paths.join(", "));
                    (
                        Reply::ok(format!("signal {name} delivered to {}", paths.join(", "))),
                        None,
                    )
                }
                Err(e) => (lookup(e), None),
            }
        }
    }
}

/// The status reply's body.
pub fn status(registry: &Registry, id: &Identity) -> Status {
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
    }
}
