//! `harmony`: the firmware binary. Parses the command line, installs the firmware's signal
//! handlers before any thread starts (for `run` and `demo` only), hands over to the library,
//! and maps the result to an exit code: 0 stopped as asked, 1 a processor failed, 2 bad usage
//! or configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use harmony::app::{self, AppConfig};
use harmony::applog::LogSink;
use harmony::board::Board;
use harmony::concurrency::{Registry, Runner};
use harmony::control::client;
use harmony::control::os_signals::Installed;
use harmony::control::protocol::Request;
use harmony::control::rundir::{RunDir, RunDirError};
use harmony::control::server::socket_path;
use harmony::demo::{self, DemoOptions};

#[derive(Parser)]
#[command(name = "harmony", version = harmony_version(), about = "Drone firmware for a Raspberry Pi 4b")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

fn harmony_version() -> &'static str {
    Box::leak(harmony::version::long().into_boxed_str())
}

#[derive(clap::Args, Clone)]
struct Where {
    /// Board file (default: the simulated board built into the binary).
    #[arg(long, env = "HARMONY_BOARD")]
    board: Option<PathBuf>,
    /// Override the board's data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override the board's run directory (control socket, state files).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace (default: the board's).
    #[arg(long)]
    log_level: Option<log::LevelFilter>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the firmware (default: the simulated board).
    Run(Where),
    /// Send a command to the running firmware over its control socket.
    Ctl {
        /// Run directory of the firmware (default: $HARMONY_RUN_DIR, then the sim board's).
        #[arg(long, env = "HARMONY_RUN_DIR")]
        run_dir: Option<PathBuf>,
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Tools for the log files: ls, tail, check, export, plot.
    Log(harmony::logtools::LogArgs),
    /// The operator's terminal UI over the control socket.
    Top(harmony::tui::TopArgs),
    /// The ground station: decode the radio's telemetry, send commands.
    Ground(harmony::uplink::ground::GroundArgs),
    /// Run the framework's demo topology (ticking loops, waiting group, worker pools).
    Demo {
        #[command(flatten)]
        at: Where,
        /// Number of ticking loops.
        #[arg(long, default_value_t = 4)]
        loops: usize,
        /// Tick period in milliseconds.
        #[arg(long, default_value_t = 200)]
        period_ms: u64,
        /// Leave out the worker pools.
        #[arg(long)]
        no_pools: bool,
        /// Start with every loop waiting (paused).
        #[arg(long)]
        start_waiting: bool,
        /// Make tick-1 hang after this many milliseconds (exercises the systemd watchdog).
        #[arg(long, hide = true)]
        stall_after_ms: Option<u64>,
        /// Run the loops in a child process (the framework's process mode).
        #[arg(long)]
        processes: bool,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// Show every processor's state.
    Status,
    /// Pause a processor or group (all when omitted).
    Pause { target: Option<String> },
    /// Resume a processor or group (all when omitted).
    Resume { target: Option<String> },
    /// Stop the firmware.
    Stop,
    /// Send a named signal.
    Signal {
        name: String,
        /// Only to this processor.
        #[arg(long)]
        to: Option<String>,
        /// An argument for the signal.
        #[arg(long)]
        arg: Option<String>,
    },
}

/// The firmware's signal handlers (SIGTERM/SIGINT stop the tree, SIGHUP rotates, SIGUSR1/2
/// pause and resume), for `run` and `demo` only, installed before any thread exists. Every
/// other command keeps the default actions, so Ctrl-C, SIGTERM or SIGHUP end `harmony log tail
/// --follow` and `ctl` (issue #17); the TUIs handle their own.
fn firmware_signals() -> Result<Installed> {
    app::install_signals().context("cannot install signal handlers")
}

fn main() -> ExitCode {
    // A child process of the firmware (a process subtree) runs its subtree and exits here,
    // before anything else happens in this process.
    harmony::concurrency::process::child_main_if_requested(&harmony::builders());
    let cli = Cli::parse();
    let result = match cli.cmd.unwrap_or(Cmd::Run(Where {
        board: None,
        data_dir: None,
        run_dir: None,
        log_level: None,
    })) {
        Cmd::Run(at) => firmware_signals().and_then(|signals| run_firmware(&at, signals)),
        Cmd::Demo {
            at,
            loops,
            period_ms,
            no_pools,
            start_waiting,
            stall_after_ms,
            processes,
        } => firmware_signals().and_then(|signals| {
            run_tree(&at, signals, |_| {
                Ok(demo::topology(&DemoOptions {
                    loops,
                    period: Duration::from_millis(period_ms),
                    pools: !no_pools,
                    start_waiting,
                    stall_after: stall_after_ms.map(Duration::from_millis),
                    processes,
                }))
            })
        }),
        Cmd::Ctl {
            run_dir,
            json,
            action,
        } => ctl(run_dir, json, action),
        Cmd::Log(args) => harmony::logtools::main(args).map_err(Into::into),
        Cmd::Top(args) => harmony::tui::main(args).map_err(Into::into),
        Cmd::Ground(args) => harmony::uplink::ground::main(args).map_err(Into::into),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("harmony: {}", chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each cause once (many messages already quote their cause).
fn chain(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !s.contains(&c) {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(&c);
        }
    }
    s
}

fn load_board(at: &Where) -> Result<Board> {
    let mut b = match &at.board {
        Some(p) => Board::load(p)?,
        None => Board::sim(),
    };
    if let Some(d) = &at.data_dir {
        b.board.data_dir = d.clone();
        if at.run_dir.is_none() && at.board.is_none() {
            b.board.run_dir = d.join("run");
        }
    }
    if let Some(r) = &at.run_dir {
        b.board.run_dir = r.clone();
    }
    Ok(b)
}

/// The board, checked whole against this machine, and its run directory held (one firmware at
/// a time): both before anything touches the data directory (issue #11).
fn hold(at: &Where) -> Result<(Board, RunDir)> {
    let board = load_board(at)?;
    board.check_host()?;
    let held = RunDir::hold(&board.board.run_dir, board.board.socket_group.as_deref()).map_err(
        |e| match e {
            RunDirError::Busy { .. } => anyhow::Error::from(e),
            e => board.field_error("board.run_dir", e.to_string()).into(),
        },
    )?;
    Ok((board, held))
}

/// Runs a tree with the firmware's infrastructure; `log_file` is the application log. A
/// `provisional` session is kept only if the tree started.
fn run_with(
    board: &Board,
    at: &Where,
    held: &RunDir,
    signals: Installed,
    log_file: &std::path::Path,
    mut root: Runner,
    provisional: Option<app::Provisional>,
) -> Result<u8> {
    let level = at
        .log_level
        .or_else(|| board.log_level())
        .unwrap_or(log::LevelFilter::Info);
    let sink = LogSink::install(level, Some(log_file), true)?;
    root = root.stop_timeout(Duration::from_millis(board.board.stop_timeout_ms));
    let cfg = AppConfig {
        board: board.board.name.clone(),
        run_dir: board.board.run_dir.clone(),
        socket_group: board.board.socket_group.clone(),
    };
    let finished = app::run(&cfg, held, Registry::new(), &mut root, Some(signals));
    // The tree ran: the session stays. Otherwise it goes now, before the log sink.
    if let Some(p) = provisional
        && finished.is_ok()
    {
        p.keep();
    }
    sink.shutdown();
    Ok(finished?.exit_code() as u8)
}

/// `harmony run`: the firmware topology, logging into a new session directory.
fn run_firmware(at: &Where, signals: Installed) -> Result<u8> {
    // Keep what is logged before the log file exists (board, topology); the sink writes it.
    let _early = harmony::applog::capture_early(at.log_level.unwrap_or(log::LevelFilter::Debug));
    let (board, held) = hold(at)?;
    let (session, provisional) = app::Provisional::session(&board.board.data_dir)
        .map_err(|e| board.field_error("board.data_dir", e.to_string()))?;
    let log_file = session.dir.join("harmony.log");
    // A failure here drops `provisional`: the session goes again.
    let topo = harmony::topology::build(&board, Some(session))?;
    run_with(
        &board,
        at,
        &held,
        signals,
        &log_file,
        topo.root,
        Some(provisional),
    )
}

/// `harmony demo`: a framework topology, logging to `<data_dir>/harmony.log`.
fn run_tree(
    at: &Where,
    signals: Installed,
    build: impl FnOnce(&Board) -> Result<Runner>,
) -> Result<u8> {
    let _early = harmony::applog::capture_early(at.log_level.unwrap_or(log::LevelFilter::Debug));
    let (board, held) = hold(at)?;
    std::fs::create_dir_all(&board.board.data_dir).map_err(|e| {
        board.field_error(
            "board.data_dir",
            format!("cannot create {}: {e}", board.board.data_dir.display()),
        )
    })?;
    let log_file = board.board.data_dir.join("harmony.log");
    let root = build(&board)?;
    run_with(&board, at, &held, signals, &log_file, root, None)
}

fn ctl(run_dir: Option<PathBuf>, json: bool, action: CtlAction) -> Result<u8> {
    let socket = socket_path(&run_dir.unwrap_or_else(harmony::control::rundir::default_run_dir));
    let req = match action {
        CtlAction::Status => Request::Status {},
        CtlAction::Pause { target } => Request::Pause { target },
        CtlAction::Resume { target } => Request::Resume { target },
        CtlAction::Stop => Request::Stop {},
        CtlAction::Signal { name, to, arg } => Request::Signal { name, arg, to },
    };
    let reply = client::request(&socket, &req, Duration::from_secs(5))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else if let Some(s) = &reply.status {
        print!("{}", client::format_status(s));
    } else if let Some(m) = &reply.message {
        println!("{m}");
    }
    if !reply.ok {
        if !json {
            let e = reply.error.unwrap_or_else(|| "request refused".into());
            eprintln!("harmony ctl: {e}");
        }
        return Ok(1);
    }
    Ok(0)
}
