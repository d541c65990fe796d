//! The TUI's state: what the last status said, rates derived from successive samples, the
//! selection, the prompt the operator is typing into, and the last action's outcome.
//!
//! Everything here is plain data and pure functions of their inputs (a status sample carries
//! its own `Instant` and wall-clock time), so the key handling, the rate arithmetic and the
//! rendering in [`super::view`] are unit-tested without a terminal or a firmware.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::concurrency::EntrySnapshot;
use crate::control::protocol::{Reply, Request, Status};

/// How far back rates look: long enough to smooth a 5 Hz GPS, short enough to follow a stall.
pub const RATE_WINDOW: Duration = Duration::from_millis(2_500);

/// The counter whose rate each processor's row shows, first match wins. Keyed by metric name
/// so any processor publishing one of these gets a rate (the sources, the logger, the demo).
pub const RATE_METRICS: &[(&str, &str)] = &[
    ("sentences", "sent/s"),
    ("readings", "rd/s"),
    ("frames", "fr/s"),
    ("bytes_written", "B/s"),
    ("bytes_sent", "B/s"),
    ("ticks", "tick/s"),
];

/// Whether the last status request reached the firmware.
#[derive(Clone, Debug, PartialEq)]
pub enum Conn {
    /// No answer yet.
    Connecting,
    Connected,
    /// The last request failed; the client keeps retrying.
    Disconnected {
        error: String,
    },
}

/// What the keyboard is currently talking to.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Normal,
    /// Typing a signal name; `to_all` sends it to every processor accepting it instead of the
    /// selected one.
    Signal {
        input: String,
        to_all: bool,
    },
    /// `x` was pressed: stop only after an explicit `y`.
    ConfirmStop,
}

/// A selectable row: a processor (by its unique path) or a waiting group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Proc(String),
    Group(String),
}

/// What the event loop must do after a key.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send this request; `label` says what it was for in the message line.
    Send {
        req: Request,
        label: String,
    },
    Quit,
}

/// The outcome of the last action, shown on the message line.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub text: String,
    pub error: bool,
}

/// One status sample's counters, for rates.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    metrics: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The whole TUI state; [`super::view::render`] draws it.
#[derive(Clone, Debug)]
pub struct App {
    /// The control socket (shown in the header).
    pub socket: PathBuf,
    pub conn: Conn,
    /// The last status received (kept while disconnected, shown as stale).
    pub status: Option<Status>,
    /// Wall-clock milliseconds of the last sample: ages and uptime are relative to it, so
    /// rendering does not read the clock.
    pub now_ms: u64,
    /// Per processor path, per metric: events per second over [`RATE_WINDOW`].
    pub rates: BTreeMap<String, BTreeMap<String, f64>>,
    pub selected: Option<Target>,
    pub mode: Mode,
    pub message: Option<Message>,
    history: VecDeque<Sample>,
    /// Recent range, altitude, CAN rate, radio budget use and queue fill (issue #13).
    pub sparks: super::history::History,
}

impl App {
    pub fn new(socket: PathBuf) -> Self {
        App {
            socket,
            conn: Conn::Connecting,
            status: None,
            now_ms: 0,
            rates: BTreeMap::new(),
            selected: None,
            mode: Mode::Normal,
            message: None,
            history: VecDeque::new(),
            sparks: super::history::History::new(&SPARKS),
        }
    }

    /// Takes in a status sample taken at `at` (monotonic) / `now_ms` (wall clock).
    pub fn apply_status(&mut self, status: Status, at: Instant, now_ms: u64) {
        let restarted = self.status.as_ref().is_some_and(|s| s.pid != status.pid);
        if restarted || self.conn != Conn::Connected {
            // A new firmware process starts its counters at zero: old samples would give
            // negative or huge rates.
            self.history.clear();
            self.rates.clear();
        }
        if restarted {
            self.set_message(format!("firmware restarted (pid {})", status.pid), false);
        }
        self.conn = Conn::Connected;
        self.now_ms = now_ms;
        let metrics: BTreeMap<String, BTreeMap<String, u64>> = status
            .processors
            .iter()
            .map(|p| (p.path.clone(), p.metrics.clone()))
            .collect();
        self.history.push_back(Sample { at, metrics });
        while self.history.len() > 2
            && self
                .history
                .get(1)
                .is_some_and(|s| at.saturating_duration_since(s.at) >= RATE_WINDOW)
        {
            self.history.pop_front();
        }
        self.rates = compute_rates(&self.history);
        self.status = Some(status);
        self.fix_selection();
        let sample = spark_sample(self);
        self.sparks.push(&sample);
    }

    /// The firmware did not answer: keep the last status (shown as stale), drop the rates.
    pub fn apply_disconnect(&mut self, error: String) {
        self.conn = Conn::Disconnected { error };
        self.rates.clear();
        self.history.clear();
    }

    /// The firmware's answer to an action.
    pub fn apply_reply(&mut self, label: &str, reply: Result<Reply, String>) {
        match reply {
            Ok(r) if r.ok => {
                let text = r.message.unwrap_or_else(|| format!("{label}: ok"));
                self.set_message(text, false);
            }
            Ok(r) => {
                let e = r.error.unwrap_or_else(|| "refused".into());
                self.set_message(format!("{label}: {e}"), true);
            }
            Err(e) => self.set_message(format!("{label}: {e}"), true),
        }
    }

    pub fn set_message(&mut self, text: String, error: bool) {
        self.message = Some(Message { text, error });
    }

    /// The selectable rows in display order: the processor tree depth-first (children in
    /// start order), then the waiting groups.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let Some(s) = &self.status else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(s.processors.len() + s.groups.len());
        let mut seen = vec![false; s.processors.len()];
        walk(&s.processors, None, 0, &mut out, &mut seen);
        // Anything whose parent is missing from the list still gets a row.
        for (i, p) in s.processors.iter().enumerate() {
            if !seen[i] {
                out.push(Row::Proc { p, depth: 0 });
            }
        }
        for g in &s.groups {
            out.push(Row::Group {
                name: &g.name,
                waiting: g.waiting,
            });
        }
        out
    }

    /// Index of the selected row, if it is still there.
    pub fn selected_index(&self) -> Option<usize> {
        let sel = self.selected.as_ref()?;
        self.rows().iter().position(|r| &r.target() == sel)
    }

    /// The selected processor's snapshot, if a processor is selected.
    pub fn selected_proc(&self) -> Option<&EntrySnapshot> {
        match &self.selected {
            Some(Target::Proc(path)) => self
                .status
                .as_ref()?
                .processors
                .iter()
                .find(|p| &p.path == path),
            _ => None,
        }
    }

    /// A processor by name (first match), for the logger and uplink panels.
    pub fn proc_named(&self, name: &str) -> Option<&EntrySnapshot> {
        self.status
            .as_ref()?
            .processors
            .iter()
            .find(|p| p.name == name)
    }

    /// Keeps the selection on a row that exists; defaults to the first row.
    fn fix_selection(&mut self) {
        if self.selected_index().is_none() {
            self.selected = self.rows().first().map(Row::target);
        }
    }

    fn move_selection(&mut self, delta: isize) {
        let rows = self.rows();
        if rows.is_empty() {
            return;
        }
        let cur = self.selected_index().unwrap_or(0) as isize;
        let last = rows.len() as isize - 1;
        let next = (cur + delta).clamp(0, last) as usize;
        self.selected = Some(rows[next].target());
    }

    /// The name the firmware knows the selected row by (processor path or group name).
    fn selected_name(&self) -> Option<String> {
        match self.selected.as_ref()? {
            Target::Proc(p) => Some(p.clone()),
            Target::Group(g) => Some(g.clone()),
        }
    }

    fn selected_label(&self) -> String {
        match &self.selected {
            Some(Target::Proc(p)) => p.rsplit('/').next().unwrap_or(p).to_owned(),
            Some(Target::Group(g)) => format!("group {g}"),
            None => "nothing".into(),
        }
    }

    /// Handles one key; returns what the event loop must do.
    pub fn handle_key(&mut self, k: KeyEvent) -> Option<Action> {
        if k.kind == KeyEventKind::Release {
            return None;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal_key(k),
            Mode::ConfirmStop => match k.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Some(Action::Send {
                    req: Request::Stop {},
                    label: "stop".into(),
                }),
                _ => {
                    self.set_message("stop cancelled".into(), false);
                    None
                }
            },
            Mode::Signal { mut input, to_all } => match k.code {
                KeyCode::Esc => {
                    self.set_message("signal cancelled".into(), false);
                    None
                }
                KeyCode::Enter => {
                    let name = input.trim().to_owned();
                    if name.is_empty() {
                        self.set_message("no signal name given".into(), true);
                        return None;
                    }
                    let to = if to_all { None } else { self.selected_name() };
                    if !to_all && !matches!(self.selected, Some(Target::Proc(_))) {
                        self.set_message(
                            "select a processor, or press Tab to send to all".into(),
                            true,
                        );
                        self.mode = Mode::Signal { input, to_all };
                        return None;
                    }
                    let label = match &to {
                        Some(_) => format!("signal {name} to {}", self.selected_label()),
                        None => format!("signal {name} to all"),
                    };
                    Some(Action::Send {
                        req: Request::Signal {
                            name,
                            arg: None,
                            to,
                        },
                        label,
                    })
                }
                KeyCode::Tab => {
                    self.mode = Mode::Signal {
                        input,
                        to_all: !to_all,
                    };
                    None
                }
                KeyCode::Backspace => {
                    input.pop();
                    self.mode = Mode::Signal { input, to_all };
                    None
                }
                KeyCode::Char(c) if !c.is_control() && input.len() < 64 => {
                    input.push(c);
                    self.mode = Mode::Signal { input, to_all };
                    None
                }
                _ => {
                    self.mode = Mode::Signal { input, to_all };
                    None
                }
            },
        }
    }

    fn normal_key(&mut self, k: KeyEvent) -> Option<Action> {
        let send = |req: Request, label: String| Some(Action::Send { req, label });
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => Some(Action::Quit),
            KeyCode::Up | KeyCode::Char('k') => {
                self.move_selection(-1);
                None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.move_selection(1);
                None
            }
            KeyCode::PageUp => {
                self.move_selection(-10);
                None
            }
            KeyCode::PageDown => {
                self.move_selection(10);
                None
            }
            KeyCode::Home => {
                self.move_selection(isize::MIN / 2);
                None
            }
            KeyCode::End => {
                self.move_selection(isize::MAX / 2);
                None
            }
            KeyCode::Char('p') | KeyCode::Char('r') => {
                let pause = k.code == KeyCode::Char('p');
                let Some(target) = self.selected_name() else {
                    self.set_message("nothing selected".into(), true);
                    return None;
                };
                let label = format!(
                    "{} {}",
                    if pause { "pause" } else { "resume" },
                    self.selected_label()
                );
                let target = Some(target);
                let req = if pause {
                    Request::Pause { target }
                } else {
                    Request::Resume { target }
                };
                send(req, label)
            }
            KeyCode::Char('P') => send(Request::Pause { target: None }, "pause all".into()),
            KeyCode::Char('R') => send(Request::Resume { target: None }, "resume all".into()),
            KeyCode::Char('o') => send(
                Request::Signal {
                    name: "rotate".into(),
                    arg: None,
                    to: Some("logger".into()),
                },
                "rotate logs".into(),
            ),
            KeyCode::Char('s') => {
                self.mode = Mode::Signal {
                    input: String::new(),
                    to_all: !matches!(self.selected, Some(Target::Proc(_))),
                };
                None
            }
            KeyCode::Char('x') => {
                self.mode = Mode::ConfirmStop;
                None
            }
            _ => None,
        }
    }
}

/// A row of the processor table.
#[derive(Clone, Debug)]
pub enum Row<'a> {
    Proc { p: &'a EntrySnapshot, depth: usize },
    Group { name: &'a str, waiting: bool },
}

impl Row<'_> {
    pub fn target(&self) -> Target {
        match self {
            Row::Proc { p, .. } => Target::Proc(p.path.clone()),
            Row::Group { name, .. } => Target::Group((*name).to_owned()),
        }
    }
}

fn parent_of(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(a, _)| a)
}

fn walk<'a>(
    all: &'a [EntrySnapshot],
    parent: Option<&str>,
    depth: usize,
    out: &mut Vec<Row<'a>>,
    seen: &mut [bool],
) {
    for (i, p) in all.iter().enumerate() {
        if seen[i] || parent_of(&p.path) != parent {
            continue;
        }
        seen[i] = true;
        out.push(Row::Proc { p, depth });
        walk(all, Some(&p.path), depth + 1, out, seen);
    }
}

/// Rates between the oldest and newest sample. A counter that went down (a processor
/// restarted and re-published it) gets no rate rather than a wrong one.
fn compute_rates(h: &VecDeque<Sample>) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    let (Some(first), Some(last)) = (h.front(), h.back()) else {
        return out;
    };
    let dt = last.at.saturating_duration_since(first.at).as_secs_f64();
    if dt < 0.05 {
        return out;
    }
    for (path, now) in &last.metrics {
        let Some(then) = first.metrics.get(path) else {
            continue;
        };
        let mut m = BTreeMap::new();
        for (name, &v) in now {
            if let Some(&v0) = then.get(name)
                && v >= v0
            {
                m.insert(name.clone(), (v - v0) as f64 / dt);
            }
        }
        out.insert(path.clone(), m);
    }
    out
}

/// The history rows of `harmony top`: (label, unit, stored scale).
pub const SPARKS: [(&str, &str, f64); 5] = [
    ("range", "m", 100.0),
    ("altitude", "m", 100.0),
    ("CAN", "fr/s", 1.0),
    ("radio budget", "%", 1.0),
    ("queue fill", "%", 1.0),
];

/// One sample of [`SPARKS`] from the last status: the rangefinder's last valid distance, the
/// GPS altitude, the CAN source's frame rate, the uplink's bytes per second against its
/// budget, and the fullest queue.
fn spark_sample(app: &App) -> [Option<f64>; 5] {
    let metric = |proc: &str, m: &str| app.proc_named(proc)?.metrics.get(m).copied();
    let rate = |proc: &str, m: &str| {
        let p = app.proc_named(proc)?;
        app.rates.get(&p.path)?.get(m).copied()
    };
    let range = metric("rangefinder", "distance_cm").map(|cm| cm as f64 / 100.0);
    let alt = metric("gps", "alt_msl_cm")
        .filter(|_| metric("gps", "fixes").unwrap_or(0) > 0)
        .map(|cm| cm as f64 / 100.0);
    let can = rate("can", "frames");
    let budget = metric("uplink", "budget_bps")
        .filter(|b| *b > 0)
        .and_then(|b| Some(rate("uplink", "bytes_written")? * 100.0 / b as f64));
    let fill = queues(app)
        .iter()
        .filter(|q| q.capacity > 0)
        .map(|q| q.len as f64 * 100.0 / q.capacity as f64)
        .reduce(f64::max);
    [range, alt, can, budget, fill]
}

/// The primary rate shown in a processor's row: (value, unit).
pub fn primary_rate(app: &App, p: &EntrySnapshot) -> Option<(f64, &'static str)> {
    let rates = app.rates.get(&p.path)?;
    RATE_METRICS
        .iter()
        .find_map(|(m, unit)| rates.get(*m).map(|r| (*r, *unit)))
}

/// Sum of the counters that count dropped records (`dropped`, `records_dropped`,
/// `queue.logger.dropped`, ...).
pub fn drops(p: &EntrySnapshot) -> Option<u64> {
    let mut any = false;
    let mut sum = 0u64;
    for (k, v) in &p.metrics {
        let last = k.rsplit(['.', '_']).next().unwrap_or(k);
        if last == "dropped" || k.starts_with("dropped") {
            any = true;
            sum = sum.saturating_add(*v);
        }
    }
    any.then_some(sum)
}

/// A bounded queue a processor reports as `queue.NAME.len` and `queue.NAME.capacity`
/// (optionally `queue.NAME.dropped`).
#[derive(Clone, Debug, PartialEq)]
pub struct QueueFill {
    pub owner: String,
    pub name: String,
    pub len: u64,
    pub capacity: u64,
    pub dropped: Option<u64>,
}

/// Every queue any processor reports, in tree order.
pub fn queues(app: &App) -> Vec<QueueFill> {
    let mut out = Vec::new();
    for row in app.rows() {
        let Row::Proc { p, .. } = row else { continue };
        for (k, &cap) in &p.metrics {
            let Some(name) = k
                .strip_prefix("queue.")
                .and_then(|r| r.strip_suffix(".capacity"))
            else {
                continue;
            };
            let len = p
                .metrics
                .get(&format!("queue.{name}.len"))
                .copied()
                .unwrap_or(0);
            out.push(QueueFill {
                owner: p.name.clone(),
                name: name.to_owned(),
                len,
                capacity: cap,
                dropped: p.metrics.get(&format!("queue.{name}.dropped")).copied(),
            });
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::concurrency::{Kind, ProcState};
    use crate::control::protocol::GroupState;

    pub fn snap(path: &str, state: ProcState, metrics: &[(&str, u64)]) -> EntrySnapshot {
        EntrySnapshot {
            name: path.rsplit('/').next().unwrap_or(path).into(),
            path: path.into(),
            kind: if path.contains('/') {
                Kind::Loop
            } else {
                Kind::Runner
            },
            state,
            since_ms: 1_000,
            restarts: 0,
            errors: 0,
            paused: state == ProcState::Waiting,
            waiting_on: Vec::new(),
            note: String::new(),
            signals: Vec::new(),
            mail_dropped: 0,
            metrics: metrics.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
            pid: 1,
        }
    }

    pub fn status(pid: u32, gps_sentences: u64) -> Status {
        Status {
            pid,
            version: "0.1.0+test".into(),
            board: "sim".into(),
            started_ms: 1_000,
            stopping: false,
            paused_all: false,
            log_dropped: 0,
            groups: vec![GroupState {
                name: "sensors-group".into(),
                waiting: false,
            }],
            processors: vec![
                snap("harmony", ProcState::Active, &[]),
                snap(
                    "harmony/logger",
                    ProcState::Active,
                    &[("bytes_written", 10 * gps_sentences), ("dropped", 3)],
                ),
                snap("harmony/sensors", ProcState::Active, &[]),
                snap(
                    "harmony/sensors/gps",
                    ProcState::Active,
                    &[
                        ("sentences", gps_sentences),
                        ("queue.logger.len", 25),
                        ("queue.logger.capacity", 100),
                        ("queue.logger.dropped", 2),
                    ],
                ),
                snap("harmony/sensors/can", ProcState::Active, &[("frames", 0)]),
            ],
            control: Default::default(),
        }
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn app_with_status() -> App {
        let mut app = App::new("/tmp/x/control.sock".into());
        app.apply_status(status(7, 0), Instant::now(), 2_000);
        app
    }

    #[test]
    fn rows_are_the_tree_then_the_groups() {
        let app = app_with_status();
        let names: Vec<String> = app
            .rows()
            .iter()
            .map(|r| match r {
                Row::Proc { p, depth } => format!("{depth}:{}", p.name),
                Row::Group { name, .. } => format!("g:{name}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "0:harmony",
                "1:logger",
                "1:sensors",
                "2:gps",
                "2:can",
                "g:sensors-group"
            ]
        );
        assert_eq!(app.selected, Some(Target::Proc("harmony".into())));
    }

    #[test]
    fn rates_come_from_successive_samples_and_reset_on_restart() {
        let t0 = Instant::now();
        let mut app = App::new("s".into());
        app.apply_status(status(7, 100), t0, 2_000);
        assert!(app.rates.is_empty(), "one sample gives no rate");
        app.apply_status(status(7, 150), t0 + Duration::from_secs(1), 3_000);
        app.apply_status(status(7, 200), t0 + Duration::from_secs(2), 4_000);
        let gps = app.proc_named("gps").unwrap().clone();
        let (r, unit) = primary_rate(&app, &gps).unwrap();
        assert!((r - 50.0).abs() < 1e-9, "{r}");
        assert_eq!(unit, "sent/s");
        // Old samples leave the window.
        for i in 3..10 {
            app.apply_status(status(7, 200 + i * 10), t0 + Duration::from_secs(i), 5_000);
        }
        let (r, _) = primary_rate(&app, &gps).unwrap();
        assert!((r - 10.0).abs() < 1e-9, "{r}");
        // A new pid: counters start again, no negative rates.
        app.apply_status(status(8, 5), t0 + Duration::from_secs(11), 6_000);
        assert!(app.rates.is_empty());
        assert!(app.message.as_ref().unwrap().text.contains("restarted"));
        app.apply_disconnect("gone".into());
        assert!(matches!(app.conn, Conn::Disconnected { .. }));
        assert!(app.status.is_some(), "last status kept while disconnected");
    }

    #[test]
    fn keys_map_to_requests() {
        let mut app = app_with_status();
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Down));
        assert_eq!(
            app.selected,
            Some(Target::Proc("harmony/sensors/gps".into()))
        );
        assert_eq!(
            app.handle_key(key(KeyCode::Char('p'))),
            Some(Action::Send {
                req: Request::Pause {
                    target: Some("harmony/sensors/gps".into())
                },
                label: "pause gps".into()
            })
        );
        assert!(matches!(
            app.handle_key(key(KeyCode::Char('r'))),
            Some(Action::Send {
                req: Request::Resume { .. },
                ..
            })
        ));
        assert!(matches!(
            app.handle_key(key(KeyCode::Char('P'))),
            Some(Action::Send {
                req: Request::Pause { target: None },
                ..
            })
        ));
        assert!(matches!(
            app.handle_key(key(KeyCode::Char('R'))),
            Some(Action::Send {
                req: Request::Resume { target: None },
                ..
            })
        ));
        assert_eq!(
            app.handle_key(key(KeyCode::Char('o'))),
            Some(Action::Send {
                req: Request::Signal {
                    name: "rotate".into(),
                    arg: None,
                    to: Some("logger".into())
                },
                label: "rotate logs".into()
            })
        );
        // Selection stops at the ends.
        for _ in 0..20 {
            app.handle_key(key(KeyCode::Down));
        }
        assert_eq!(app.selected, Some(Target::Group("sensors-group".into())));
        assert!(matches!(
            app.handle_key(key(KeyCode::Char('p'))),
            Some(Action::Send { req: Request::Pause { target: Some(t) }, .. }) if t == "sensors-group"
        ));
        app.handle_key(key(KeyCode::Home));
        assert_eq!(app.selected, Some(Target::Proc("harmony".into())));
        assert_eq!(app.handle_key(key(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(app.handle_key(key(KeyCode::Esc)), Some(Action::Quit));
        assert_eq!(
            app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
    }

    #[test]
    fn stop_needs_confirmation() {
        let mut app = app_with_status();
        assert_eq!(app.handle_key(key(KeyCode::Char('x'))), None);
        assert_eq!(app.mode, Mode::ConfirmStop);
        assert_eq!(app.handle_key(key(KeyCode::Char('n'))), None);
        assert_eq!(app.mode, Mode::Normal);
        app.handle_key(key(KeyCode::Char('x')));
        assert_eq!(
            app.handle_key(key(KeyCode::Char('y'))),
            Some(Action::Send {
                req: Request::Stop {},
                label: "stop".into()
            })
        );
    }

    #[test]
    fn signal_prompt() {
        let mut app = app_with_status();
        app.handle_key(key(KeyCode::Down)); // logger
        app.handle_key(key(KeyCode::Char('s')));
        for c in "pinq".chars() {
            // `q` is text here, not quit.
            assert_eq!(app.handle_key(key(KeyCode::Char(c))), None);
        }
        app.handle_key(key(KeyCode::Backspace));
        app.handle_key(key(KeyCode::Char('g')));
        assert_eq!(
            app.mode,
            Mode::Signal {
                input: "ping".into(),
                to_all: false
            }
        );
        assert_eq!(
            app.handle_key(key(KeyCode::Enter)),
            Some(Action::Send {
                req: Request::Signal {
                    name: "ping".into(),
                    arg: None,
                    to: Some("harmony/logger".into())
                },
                label: "signal ping to logger".into()
            })
        );
        // Tab sends to everyone accepting it.
        app.handle_key(key(KeyCode::Char('s')));
        app.handle_key(key(KeyCode::Char('h')));
        app.handle_key(key(KeyCode::Tab));
        assert!(matches!(
            app.handle_key(key(KeyCode::Enter)),
            Some(Action::Send {
                req: Request::Signal { to: None, .. },
                ..
            })
        ));
        // Esc cancels without quitting; an empty name sends nothing.
        app.handle_key(key(KeyCode::Char('s')));
        assert_eq!(app.handle_key(key(KeyCode::Esc)), None);
        assert_eq!(app.mode, Mode::Normal);
        app.handle_key(key(KeyCode::Char('s')));
        assert_eq!(app.handle_key(key(KeyCode::Enter)), None);
        assert!(app.message.as_ref().unwrap().error);
    }

    #[test]
    fn replies_become_messages() {
        let mut app = app_with_status();
        app.apply_reply("pause gps", Ok(Reply::ok("paused gps")));
        assert_eq!(
            app.message,
            Some(Message {
                text: "paused gps".into(),
                error: false
            })
        );
        app.apply_reply(
            "rotate logs",
            Ok(Reply::err("logger does not accept rotate")),
        );
        assert!(app.message.as_ref().unwrap().error);
        app.apply_reply("stop", Err("cannot connect".into()));
        assert_eq!(app.message.as_ref().unwrap().text, "stop: cannot connect");
    }

    #[test]
    fn drops_and_queues_are_found_by_name() {
        let app = app_with_status();
        assert_eq!(drops(app.proc_named("logger").unwrap()), Some(3));
        assert_eq!(drops(app.proc_named("gps").unwrap()), Some(2));
        assert_eq!(drops(app.proc_named("can").unwrap()), None);
        assert_eq!(
            queues(&app),
            [QueueFill {
                owner: "gps".into(),
                name: "logger".into(),
                len: 25,
                capacity: 100,
                dropped: Some(2)
            }]
        );
    }
}
