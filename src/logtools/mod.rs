//! `harmony log`: the tools for what the logger wrote.
//!
//! * `ls`: sessions, their start, duration, size and drops;
//! * `tail SOURCE [--follow]`: the newest session's file, following rotations and new sessions;
//! * `check DIR [--repair]`: every file against its format ([`check`]);
//! * `export --gpx`: the GPS track as GPX 1.1 ([`gpx`]);
//! * `export --mcap`: the whole session as one MCAP file for Foxglove / PlotJuggler ([`mcap`]);
//! * `plot`: rangefinder distance, GPS altitude and CAN bus load over time, dropouts marked,
//!   as SVG or PNG ([`plot`], [`load`]).
//!
//! Long runs print progress to stderr when it is a terminal.

pub mod check;
pub mod gpx;
pub mod load;
pub mod mcap;
pub mod plot;

use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::logger::session::list_sessions;
use crate::logger::{CAN, FIX, Manifest, NMEA, RANGE, segments};

/// `harmony log ...`
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// The data directory (default: the board's, see --board; else ./harmony-data).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Board file whose data directory to use.
    #[arg(long, global = true, env = "HARMONY_BOARD")]
    pub board: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: LogCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum LogCmd {
    /// List sessions.
    Ls,
    /// Print the newest session's file for SOURCE: can, gps, gps-fix, rangefinder, events, app.
    Tail {
        source: String,
        /// Keep printing what is appended, across rotations and new sessions.
        #[arg(short, long)]
        follow: bool,
        /// Lines to show first.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
    },
    /// Check every file of a session (or of every session under a data directory).
    Check {
        dir: PathBuf,
        /// Cut torn tails (kept aside in FILE.torn).
        #[arg(long)]
        repair: bool,
    },
    /// Export the GPS track.
    Export {
        /// GPX 1.1 (Google Earth, QGIS, gpsbabel).
        #[arg(long)]
        gpx: bool,
        /// MCAP, a channel per source (Foxglove, PlotJuggler); -o FILE (default SESSION.mcap).
        #[arg(long, conflicts_with = "gpx")]
        mcap: bool,
        /// Session directory (default: the newest).
        #[arg(long)]
        session: Option<PathBuf>,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Plot rangefinder distance, GPS altitude and CAN bus load over time, dropouts marked;
    /// SVG, or PNG when OUTPUT ends in .png.
    Plot {
        #[arg(long)]
        session: Option<PathBuf>,
        #[arg(short, long, default_value = "flight.svg")]
        output: PathBuf,
    },
}

/// Why a log tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no sessions under {0}")]
    NoSession(PathBuf),
    #[error("unknown source '{0}' (one of: can, gps, gps-fix, rangefinder, events, app)")]
    UnknownSource(String),
    #[error("choose an export format (--gpx or --mcap)")]
    NoFormat,
    #[error(transparent)]
    Check(#[from] check::CheckError),
    #[error(transparent)]
    Session(#[from] crate::logger::session::SessionError),
    #[error(transparent)]
    Board(#[from] crate::board::BoardError),
    #[error(transparent)]
    Mcap(#[from] mcap::ExportError),
    #[error("plot: {0}")]
    Plot(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ToolError + '_ {
    move |source| ToolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Progress on stderr, when it is a terminal.
pub struct Progress {
    on: bool,
    what: String,
    total: u64,
    last: u64,
}

impl Progress {
    pub fn new(what: &str, total: u64) -> Self {
        Progress {
            on: io::stderr().is_terminal() && total > 8 << 20,
            what: what.to_owned(),
            total,
            last: 0,
        }
    }

    pub fn at(&mut self, done: u64) {
        if self.on && done - self.last >= 1 << 20 {
            self.last = done;
            eprint!(
                "\r{}: {:>3}% ({} of {} MiB)",
                self.what,
                done * 100 / self.total.max(1),
                done >> 20,
                self.total >> 20
            );
        }
    }

    pub fn done(&self) {
        if self.on {
            eprintln!("\r{}: done{:30}", self.what, "");
        }
    }
}

fn data_dir(args: &LogArgs) -> Result<PathBuf, ToolError> {
    if let Some(d) = &args.data_dir {
        return Ok(d.clone());
    }
    if let Some(b) = &args.board {
        return Ok(crate::board::Board::load(b)?.board.data_dir);
    }
    Ok(crate::board::Board::sim().board.data_dir)
}

fn newest_session(data: &Path) -> Result<PathBuf, ToolError> {
    list_sessions(data)?
        .pop()
        .ok_or_else(|| ToolError::NoSession(data.to_owned()))
}

fn source_files(dir: &Path, source: &str) -> Result<Vec<PathBuf>, ToolError> {
    Ok(match source {
        "can" => segments(dir, CAN),
        "gps" | "nmea" => segments(dir, NMEA),
        "gps-fix" | "fix" => segments(dir, FIX),
        "rangefinder" | "range" => segments(dir, RANGE),
        "events" => vec![dir.join("events.log")],
        "app" | "harmony" => vec![dir.join("harmony.log")],
        other => return Err(ToolError::UnknownSource(other.to_owned())),
    })
}

fn manifest(dir: &Path) -> Option<Manifest> {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).ok()?).ok()
}

fn ls(data: &Path, out: &mut dyn Write) -> Result<(), ToolError> {
    let _ = writeln!(
        out,
        "{:<22} {:<26} {:>9} {:>10} {:>9} {:>9}  state",
        "session", "started (UTC)", "duration", "size", "q-drops", "d-drops"
    );
    for s in list_sessions(data)? {
        let name = s
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size: u64 = std::fs::read_dir(&s)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        match manifest(&s) {
            Some(m) => {
                let dur = match (
                    crate::formats::utc::parse_utc(&m.started_utc),
                    crate::formats::utc::parse_utc(&m.updated_utc),
                ) {
                    (Some(a), Some(b)) => format!("{:.0} s", (b - a) as f64 / 1e9),
                    _ => "?".into(),
                };
                let q = m.queue_drops.gps + m.queue_drops.rangefinder + m.queue_drops.can;
                let d: u64 = m.records.iter().map(|r| r.dropped_disk).sum();
                let _ = writeln!(
                    out,
                    "{:<22} {:<26} {:>9} {:>10} {:>9} {:>9}  {}{}",
                    name,
                    m.started_utc,
                    dur,
                    size,
                    q,
                    d,
                    if m.closed { "closed" } else { "open/crashed" },
                    if m.clock_valid_at_start {
                        ""
                    } else {
                        ", clock unset at start"
                    }
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{name:<22} {:<26} {:>9} {size:>10} {:>9} {:>9}  no manifest",
                    "?", "?", "?", "?"
                );
            }
        }
    }
    Ok(())
}

fn last_lines(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &data[data.len()..];
    }
    let mut count = 0;
    for (i, &b) in data.iter().enumerate().rev() {
        if b == b'\n' && i + 1 < data.len() {
            count += 1;
            if count == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

fn tail(
    data: &Path,
    source: &str,
    follow: bool,
    lines: usize,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    let mut session = newest_session(data)?;
    let mut file = source_files(&session, source)?
        .pop()
        .ok_or_else(|| ToolError::NoSession(session.clone()))?;
    let bytes = std::fs::read(&file).unwrap_or_default();
    let _ = out.write_all(last_lines(&bytes, lines));
    let _ = out.flush();
    if !follow {
        return Ok(());
    }
    let mut pos = bytes.len() as u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Ok(mut f) = std::fs::File::open(&file) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < pos {
                pos = 0; // cut by a repair: start over
            }
            if len > pos {
                f.seek(SeekFrom::Start(pos)).map_err(io_err(&file))?;
                loop {
                    let n = f.read(&mut buf).map_err(io_err(&file))?;
                    if n == 0 {
                        break;
                    }
                    pos += n as u64;
                    if out.write_all(&buf[..n]).is_err() {
                        return Ok(()); // reader went away (e.g. `| head`)
                    }
                }
                let _ = out.flush();
                continue;
            }
        }
        // Rotated to a new segment, or the firmware started a new session?
        let newest = newest_session(data).unwrap_or_else(|_| session.clone());
        let candidates = source_files(&newest, source)?;
        if let Some(last) = candidates.last()
            && *last != file
        {
            session = newest;
            file = last.clone();
            pos = 0;
            continue;
        }
        let _ = &session;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `harmony log ...`; returns the exit code (1 when a check found problems).
pub fn main(args: LogArgs) -> Result<u8, ToolError> {
    let data = data_dir(&args)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match args.cmd {
        LogCmd::Ls => {
            ls(&data, &mut out)?;
            Ok(0)
        }
        LogCmd::Tail {
            source,
            follow,
            lines,
        } => {
            tail(&data, &source, follow, lines, &mut out)?;
            Ok(0)
        }
        LogCmd::Check { dir, repair } => {
            let sessions = if dir.join("manifest.json").exists() || dir.join("events.log").exists()
            {
                vec![dir]
            } else {
                list_sessions(&dir)?
            };
            let mut bad = false;
            for s in sessions {
                for r in check::check_session(&s, repair)? {
                    let name = r.path.display();
                    if let Some((at, len)) = r.torn {
                        let _ = writeln!(
                            out,
                            "{name}: torn tail of {len} bytes at offset {at}{}",
                            if r.repaired {
                                " (cut; kept in .torn)"
                            } else {
                                " (use --repair)"
                            }
                        );
                    }
                    for (line, why) in &r.corrupt {
                        let _ = writeln!(out, "{name}:{line}: CORRUPT: {why}");
                    }
                    if r.ok() && r.torn.is_none() {
                        let _ = writeln!(out, "{name}: ok, {} records", r.records);
                    }
                    bad |= !r.ok();
                }
            }
            Ok(bad as u8)
        }
        LogCmd::Export {
            gpx,
            mcap,
            session,
            output,
        } => {
            if !gpx && !mcap {
                return Err(ToolError::NoFormat);
            }
            let session = match session {
                Some(s) => s,
                None => newest_session(&data)?,
            };
            if mcap {
                let name = session.file_name().unwrap_or_default().to_string_lossy();
                let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.mcap")));
                let report = mcap::export(&session, &path)?;
                let _ = write!(out, "{}", mcap::describe(&path, &report));
                return Ok(0);
            }
            let files = segments(&session, FIX);
            let text = gpx::export(
                &files,
                &session.file_name().unwrap_or_default().to_string_lossy(),
            )?;
            match output {
                Some(p) => std::fs::write(&p, text).map_err(io_err(&p))?,
                None => {
                    let _ = out.write_all(text.as_bytes());
                }
            }
            Ok(0)
        }
        LogCmd::Plot { session, output } => {
            let session = match session {
                Some(s) => s,
                None => newest_session(&data)?,
            };
            let n = plot::plot(
                &segments(&session, RANGE),
                &segments(&session, FIX),
                &load::can_load(&session, 1.0),
                &load::dropouts(&session),
                &output,
            )?;
            let _ = writeln!(out, "{}: {} points", output.display(), n);
            Ok(0)
        }
    }
}
