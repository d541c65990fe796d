//! `harmony log`: the tools for what the logger wrote.
//!
//! * `ls`: sessions, their start, duration, size and drops;
//! * `tail SOURCE [--follow]`: the newest session's file, following rotations and new sessions
//!   ([`tail`]);
//! * `check DIR [--repair]`: every file against its format ([`check`]);
//! * `export --gpx`: the GPS track as GPX 1.1 ([`gpx`]);
//! * `export --mcap`: the whole session as one MCAP file for Foxglove / PlotJuggler ([`mcap`]);
//! * `plot`: rangefinder distance, GPS altitude and CAN bus load over time, dropouts marked,
//!   as SVG or PNG ([`plot`], [`load`]).
//!
//! Files are hostile input (issue #17): they are opened without following links
//! ([`files`]), read line by line in bounded memory ([`lines`]), and a number that is not
//! finite is refused ([`rows`]). A directory that does not exist, a session with nothing to
//! export or plot, is an error (exit 2); `check` exits 1 when it found problems.
//!
//! Long runs print progress to stderr when it is a terminal.

pub mod check;
pub mod files;
pub mod gpx;
pub mod lines;
pub mod load;
pub mod mcap;
pub mod plot;
pub mod rows;
pub mod tail;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use self::files::{ArgDir, Dir, FileError};
use crate::logger::session::list_sessions;
use crate::logger::{CAN, FIX, NMEA, RANGE, segments};

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
    #[error("{0}: no such data directory (give --data-dir, or --board for the board's)")]
    NoDataDir(PathBuf),
    #[error("{path}: {what}")]
    NoInput { path: PathBuf, what: String },
    #[error(transparent)]
    File(#[from] FileError),
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

/// The data directory must exist: an empty answer for a wrong path would look like "no
/// flights" (issue #17).
fn require_data_dir(data: &Path) -> Result<(), ToolError> {
    match Dir::open_arg(data, ArgDir::Follow) {
        Ok(_) => Ok(()),
        Err(FileError::Missing(_)) => Err(ToolError::NoDataDir(data.to_owned())),
        Err(e) => Err(e.into()),
    }
}

fn newest_session(data: &Path) -> Result<PathBuf, ToolError> {
    require_data_dir(data)?;
    list_sessions(data)?
        .pop()
        .ok_or_else(|| ToolError::NoSession(data.to_owned()))
}

/// `--session DIR` (followed: reading only) or the newest session.
fn session_dir(data: &Path, session: Option<PathBuf>) -> Result<Dir, ToolError> {
    let path = match session {
        Some(s) => s,
        None => newest_session(data)?,
    };
    Ok(Dir::open_arg(&path, ArgDir::Follow)?)
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

/// The names of a session's segments of `file`, in order.
fn segment_names(dir: &Dir, file: crate::logger::writer::FileId) -> Vec<OsString> {
    segments(dir.path(), file)
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_owned()))
        .collect()
}

fn manifest(dir: &Path) -> Option<crate::logger::Manifest> {
    let d = Dir::open_arg(dir, ArgDir::Strict).ok()?;
    let bytes = d
        .read_bounded("manifest.json".as_ref(), check::MANIFEST_MAX)
        .ok()?
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn ls(data: &Path, out: &mut dyn Write) -> Result<(), ToolError> {
    require_data_dir(data)?;
    let sessions = list_sessions(data)?;
    if sessions.is_empty() {
        eprintln!("no sessions under {}", data.display());
        return Ok(());
    }
    let _ = writeln!(
        out,
        "{:<22} {:<26} {:>9} {:>10} {:>9} {:>9}  state",
        "session", "started (UTC)", "duration", "size", "q-drops", "d-drops"
    );
    for s in sessions {
        let name = s
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size: u64 = std::fs::read_dir(&s)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok()) // DirEntry::metadata does not follow links
            .filter(|m| m.is_file())
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

/// Prints the reports of `harmony log check`; returns whether everything was fine.
fn print_check(reports: &[check::FileReport], out: &mut dyn Write) -> bool {
    let mut failed = 0;
    for r in reports {
        let name = r.path.display();
        if let Some(p) = &r.problem {
            let _ = writeln!(out, "{name}: FAILED: {p}");
        }
        if let Some((at, len)) = r.torn {
            let _ = writeln!(
                out,
                "{name}: torn tail of {len} bytes at offset {at}{}",
                if r.repaired {
                    " (cut; kept in .torn)"
                } else if r.problem.is_some() {
                    ""
                } else {
                    " (use --repair)"
                }
            );
        }
        for (line, why) in &r.corrupt {
            let _ = writeln!(out, "{name}:{line}: CORRUPT: {why}");
        }
        let more = r.corrupt_lines - r.corrupt.len() as u64;
        if more > 0 {
            let _ = writeln!(out, "{name}: ... and {more} more corrupt lines");
        }
        for w in &r.warnings {
            let _ = writeln!(out, "{name}: WARNING: {w}");
        }
        if r.ok() && r.torn.is_none() {
            match r.kind {
                check::FileKind::Manifest => {
                    let _ = writeln!(out, "{name}: ok");
                }
                _ => {
                    let _ = writeln!(out, "{name}: ok, {} records", r.records);
                }
            }
        }
        failed += !r.ok() as usize;
    }
    let _ = if failed == 0 {
        writeln!(out, "{} files checked: ok", reports.len())
    } else {
        writeln!(out, "{} files checked: {failed} FAILED", reports.len())
    };
    failed == 0
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
            tail::tail(&data, &source, follow, lines, &mut out)?;
            Ok(0)
        }
        LogCmd::Check { dir, repair } => {
            let reports = check::check_dir(&dir, repair)?;
            Ok(if print_check(&reports, &mut out) {
                0
            } else {
                1
            })
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
            let dir = session_dir(&data, session)?;
            if mcap {
                let name = dir.path().file_name().unwrap_or_default().to_string_lossy();
                let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.mcap")));
                let report = mcap::export(&dir, &path)?;
                let _ = write!(out, "{}", mcap::describe(&path, &report));
                return Ok(0);
            }
            let files = segment_names(&dir, FIX);
            if files.is_empty() {
                return Err(ToolError::NoInput {
                    path: dir.path().to_owned(),
                    what: "no gps-fix files: nothing to export".into(),
                });
            }
            let name = dir
                .path()
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let stats = match &output {
                Some(p) => {
                    let f = std::fs::File::create(p).map_err(io_err(p))?;
                    let mut w = io::BufWriter::new(f);
                    let s = gpx::export(&dir, &files, &name, &mut w)?;
                    w.into_inner()
                        .map_err(|e| e.into_error())
                        .and_then(|f| f.sync_all())
                        .map_err(io_err(p))?;
                    s
                }
                None => gpx::export(&dir, &files, &name, &mut out)?,
            };
            if stats.skipped > 0 {
                eprintln!(
                    "export: {} points; {} rows skipped (unreadable or not finite)",
                    stats.points, stats.skipped
                );
            }
            Ok(0)
        }
        LogCmd::Plot { session, output } => {
            let dir = session_dir(&data, session)?;
            let (range, fixes) = (segment_names(&dir, RANGE), segment_names(&dir, FIX));
            let can = load::can_load(&dir);
            if range.is_empty() && fixes.is_empty() && can.frames == 0 {
                return Err(ToolError::NoInput {
                    path: dir.path().to_owned(),
                    what: "no rangefinder, gps-fix or can files: nothing to plot".into(),
                });
            }
            let s = plot::plot(&dir, &range, &fixes, &can, &load::dropouts(&dir), &output)?;
            let _ = write!(out, "{}: {} points", output.display(), s.points);
            if s.skipped > 0 {
                let _ = write!(
                    out,
                    "; {} rows skipped (unreadable or not finite)",
                    s.skipped
                );
            }
            let _ = writeln!(out);
            Ok(0)
        }
    }
}
