//! The client side of the control socket (`harmony ctl`, and `harmony top`).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{Reply, Request, Status};

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path} (is harmony running? is --run-dir right?)")]
    Connect { path: PathBuf, source: io::Error },
    #[error("control socket I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the firmware sent a reply that is not valid JSON: {0}")]
    BadReply(serde_json::Error),
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and returns the reply (an `ok: false` reply is still `Ok` here).
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    let mut s = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req).map_err(ClientError::BadReply)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    serde_json::from_str(reply.trim()).map_err(ClientError::BadReply)
}

/// Fetches the status.
pub fn status(socket: &Path, timeout: Duration) -> Result<Status, ClientError> {
    let r = request(socket, &Request::Status {}, timeout)?;
    match (r.ok, r.status) {
        (true, Some(s)) => Ok(s),
        _ => Err(ClientError::Refused(
            r.error
                .unwrap_or_else(|| "status missing from reply".into()),
        )),
    }
}

/// A plain-text table of the tree for terminals and logs.
pub fn format_status(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "harmony {} pid {} board {}{}{}",
        s.version,
        s.pid,
        s.board,
        if s.paused_all { "  [paused]" } else { "" },
        if s.stopping { "  [stopping]" } else { "" }
    );
    let _ = writeln!(
        out,
        "{:<34} {:<7} {:<10} {:>7} {:>8} {:>7}  note",
        "processor", "kind", "state", "pid", "restarts", "errors"
    );
    // Depth-first from the root, children in start order.
    fn walk(out: &mut String, all: &[crate::concurrency::EntrySnapshot], parent: Option<&str>) {
        use std::fmt::Write as _;
        for p in all.iter().filter(|p| {
            let up = p.path.rsplit_once('/').map(|(a, _)| a);
            up == parent
        }) {
            let depth = p.path.matches('/').count();
            let name = format!("{}{}", "  ".repeat(depth), p.name);
            let kind = serde_json::to_value(p.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            // A processor whose process is not running (stopped, died) shows `-`.
            let pid = match p.pid {
                0 => "-".to_owned(),
                n => n.to_string(),
            };
            let _ = writeln!(
                out,
                "{:<34} {:<7} {:<10} {:>7} {:>8} {:>7}  {}",
                name, kind, p.state, pid, p.restarts, p.errors, p.note
            );
            walk(out, all, Some(&p.path));
        }
    }
    walk(&mut out, &s.processors, None);
    if !s.groups.is_empty() {
        let g: Vec<String> = s
            .groups
            .iter()
            .map(|g| format!("{}{}", g.name, if g.waiting { " (waiting)" } else { "" }))
            .collect();
        let _ = writeln!(out, "groups: {}", g.join(", "));
    }
    let c = &s.control;
    let _ = writeln!(
        out,
        "control socket: {} of {} clients, {} accepted, {} served, {} rejected (malformed {}, oversized {}, timed out {}, over capacity {})",
        c.clients,
        c.max_clients,
        c.accepted,
        c.served,
        c.rejected(),
        c.malformed,
        c.oversized,
        c.timed_out,
        c.over_capacity
    );
    out
}
