//! Drawing: a pure function of [`App`], so unit tests render into ratatui's `TestBackend` and
//! compare text.
//!
//! ```text
//! header     connection, version, board, pid, uptime, paused/stopping, socket
//! processors the tree with state, time in state, restarts, errors, drops, rate, note
//! history    sparklines: range, altitude, CAN rate, radio budget use, queue fill
//! panels     selected processor (all metrics with rates) | logger | uplink + queues
//! message    outcome of the last action
//! keys       key help, or the signal prompt / stop confirmation
//! ```

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row as TRow, Table, TableState, Wrap};

use super::app::{App, Conn, Mode, Row, Target, drops, primary_rate, queues};
use crate::concurrency::{EntrySnapshot, Kind, ProcState};

/// Metrics the logger publishes that the logger panel shows by name.
const LOGGER_KNOWN: &[&str] = &[
    "bytes_written",
    "records_dropped",
    "degraded",
    "disk_free_mb",
    "last_fsync_ms",
];

/// Draws the whole screen.
pub fn render(app: &App, f: &mut Frame) {
    let area = f.area();
    // The table takes what its rows need; the panels get the rest (none on tiny terminals).
    let avail = area.height.saturating_sub(4);
    // The history strip when there is room for it and for the panels below (issue #13).
    let hist_h = if avail >= 30 { app.sparks.height() } else { 0 };
    let avail = avail - hist_h;
    let want = u16::try_from(app.rows().len())
        .unwrap_or(u16::MAX)
        .saturating_add(3);
    let (table_h, bottom_h) = if avail >= 20 {
        let t = want.clamp(5, avail - 8);
        (t, avail - t)
    } else {
        (avail, 0)
    };
    let [header, table, hist, panels, message, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(table_h),
        Constraint::Length(hist_h),
        Constraint::Length(bottom_h),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(app, f, header);
    render_table(app, f, table);
    if hist_h > 0 {
        super::history::render(&app.sparks, "history (newest right)", f, hist);
    }
    if bottom_h > 0 {
        let [sel, logger, right] = Layout::horizontal([
            Constraint::Percentage(40),
            Constraint::Percentage(30),
            Constraint::Percentage(30),
        ])
        .areas(panels);
        render_selected(app, f, sel);
        render_logger(app, f, logger);
        let [uplink, qs] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
        render_uplink(app, f, uplink);
        render_queues(app, f, qs);
    }
    render_message(app, f, message);
    render_keys(app, f, keys);
}

fn stale(app: &App) -> bool {
    app.conn != Conn::Connected
}

fn render_header(app: &App, f: &mut Frame, area: Rect) {
    let mut l1 = vec![Span::from("harmony top  ").bold()];
    match &app.conn {
        Conn::Connected => l1.push("connected".green().bold()),
        Conn::Connecting => l1.push("connecting...".yellow().bold()),
        Conn::Disconnected { error } => {
            l1.push("disconnected, retrying".red().bold());
            l1.push(Span::from(format!(" ({error})")).red());
        }
    }
    if let Some(s) = &app.status {
        l1.push(Span::from(format!(
            "  {}  board {}  pid {}",
            s.version, s.board, s.pid
        )));
        if app.conn == Conn::Connected {
            l1.push(Span::from(format!(
                "  up {}",
                age(app.now_ms.saturating_sub(s.started_ms))
            )));
        }
        if s.paused_all {
            l1.push("  [PAUSED ALL]".yellow().bold());
        }
        if s.stopping {
            l1.push("  [STOPPING]".magenta().bold());
        }
    }
    let mut l2 = vec![Span::from(format!("socket {}", app.socket.display())).dark_gray()];
    if let Some(s) = &app.status {
        if s.log_dropped > 0 {
            l2.push(Span::from(format!("  app log dropped {}", s.log_dropped)).yellow());
        }
        if stale(app) {
            l2.push("  (last known state shown)".dark_gray());
        }
    }
    f.render_widget(Paragraph::new(vec![Line::from(l1), Line::from(l2)]), area);
}

fn state_style(s: ProcState) -> Style {
    match s {
        ProcState::Active => Style::new().green(),
        ProcState::Waiting => Style::new().yellow().bold(),
        ProcState::Stopped => Style::new().dark_gray(),
        ProcState::Failed => Style::new().red().bold(),
        ProcState::Restarting => Style::new().magenta().bold(),
        ProcState::Starting | ProcState::Stopping => Style::new().cyan(),
    }
}

fn kind_str(k: Kind) -> &'static str {
    match k {
        Kind::Plain => "plain",
        Kind::Loop => "loop",
        Kind::Runner => "runner",
        Kind::Pool => "pool",
    }
}

fn render_table(app: &App, f: &mut Frame, area: Rect) {
    let block = Block::bordered().title(" processors ");
    let rows = app.rows();
    if rows.is_empty() {
        let text = match &app.conn {
            Conn::Disconnected { .. } => "no firmware answering on the control socket yet",
            _ => "waiting for the first status...",
        };
        f.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    // Narrow terminals (an 80-column SSH window) get tighter columns and short headings.
    let wide = area.width >= 120;
    let header = TRow::new(if wide {
        [
            "processor",
            "kind",
            "state",
            "for",
            "restarts",
            "errors",
            "drops",
            "rate",
            "note",
        ]
    } else {
        [
            "processor",
            "kind",
            "state",
            "for",
            "rst",
            "err",
            "drop",
            "rate",
            "note",
        ]
    })
    .style(Style::new().bold().underlined());
    let trows: Vec<TRow> = rows
        .iter()
        .map(|r| match r {
            Row::Proc { p, depth } => proc_row(app, p, *depth),
            Row::Group { name, waiting } => TRow::new(vec![
                Cell::from(format!("[group] {name}")),
                Cell::from("group"),
                if *waiting {
                    Cell::from("waiting").style(state_style(ProcState::Waiting))
                } else {
                    Cell::from("clear")
                },
                Cell::from(""),
                Cell::from(""),
                Cell::from(""),
                Cell::from(""),
                Cell::from(""),
                Cell::from("pause/resume applies to every member"),
            ]),
        })
        .collect();
    let widths = if wide {
        [
            Constraint::Length(24),
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(14),
            Constraint::Fill(1),
        ]
    } else {
        [
            Constraint::Length(18),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(3),
            Constraint::Length(4),
            Constraint::Length(5),
            Constraint::Length(12),
            Constraint::Fill(1),
        ]
    };
    let mut table = Table::new(trows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    if stale(app) {
        table = table.style(Style::new().dark_gray());
    }
    let mut state = TableState::default().with_selected(app.selected_index());
    f.render_stateful_widget(table, area, &mut state);
}

fn proc_row<'a>(app: &App, p: &'a EntrySnapshot, depth: usize) -> TRow<'a> {
    let name = format!("{}{}", "  ".repeat(depth), p.name);
    let mut state = p.state.as_str().to_owned();
    if p.paused && p.state != ProcState::Waiting {
        // Paused but not yet parked (e.g. mid-read): say so.
        state.push('*');
    }
    let rate = primary_rate(app, p)
        .map(|(r, unit)| format!("{} {unit}", num(r)))
        .unwrap_or_default();
    let mut note = p.note.clone();
    if !p.waiting_on.is_empty() && p.state == ProcState::Waiting {
        let why = format!("[on {}]", p.waiting_on.join(","));
        note = if note.is_empty() {
            why
        } else {
            format!("{why} {note}")
        };
    }
    TRow::new(vec![
        Cell::from(name),
        Cell::from(kind_str(p.kind)),
        Cell::from(state).style(state_style(p.state)),
        Cell::from(age(app.now_ms.saturating_sub(p.since_ms))),
        Cell::from(p.restarts.to_string()).style(if p.restarts > 0 {
            Style::new().magenta()
        } else {
            Style::new()
        }),
        Cell::from(p.errors.to_string()).style(if p.errors > 0 {
            Style::new().red()
        } else {
            Style::new()
        }),
        Cell::from(drops(p).map(|d| d.to_string()).unwrap_or_default()).style(
            if drops(p).unwrap_or(0) > 0 {
                Style::new().yellow()
            } else {
                Style::new()
            },
        ),
        Cell::from(rate),
        Cell::from(note),
    ])
}

fn kv(k: &str, v: String) -> Line<'static> {
    Line::from(vec![
        Span::from(format!("{k:<15} ")).dark_gray(),
        Span::from(v),
    ])
}

fn metric_line(app: &App, p: &EntrySnapshot, name: &str, v: u64) -> Line<'static> {
    let rate = app
        .rates
        .get(&p.path)
        .and_then(|m| m.get(name))
        .filter(|r| **r > 0.0)
        .map(|r| format!("  {}/s", num(*r)))
        .unwrap_or_default();
    kv(name, format!("{v}{rate}"))
}

fn render_selected(app: &App, f: &mut Frame, area: Rect) {
    let mut lines = Vec::new();
    let title = match (&app.selected, app.selected_proc()) {
        (_, Some(p)) => {
            lines.push(kv(
                "state",
                format!(
                    "{}{} for {}",
                    p.state,
                    if p.paused { " (paused)" } else { "" },
                    age(app.now_ms.saturating_sub(p.since_ms))
                ),
            ));
            if !p.waiting_on.is_empty() {
                lines.push(kv("waiting on", p.waiting_on.join(", ")));
            }
            if !p.note.is_empty() {
                lines.push(kv("note", p.note.clone()));
            }
            lines.push(kv(
                "signals",
                if p.signals.is_empty() {
                    "none".into()
                } else {
                    p.signals.join(", ")
                },
            ));
            if p.mail_dropped > 0 {
                lines.push(kv("mail dropped", p.mail_dropped.to_string()));
            }
            for (k, v) in &p.metrics {
                lines.push(metric_line(app, p, k, *v));
            }
            format!(" {} ", p.path)
        }
        (Some(Target::Group(g)), None) => {
            lines.push(Line::from(format!(
                "waiting group {g}: p pauses and r resumes every processor in it"
            )));
            format!(" group {g} ")
        }
        _ => {
            lines.push(Line::from("nothing selected"));
            " selected ".into()
        }
    };
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(title))
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// The bordered panel of processor `name`, and its first line (the state); when the firmware
/// has no such processor, the panel says so and this returns `None`.
fn proc_panel<'a>(
    app: &'a App,
    f: &mut Frame,
    area: Rect,
    name: &str,
) -> Option<(&'a EntrySnapshot, Block<'static>, Vec<Line<'static>>)> {
    let block = Block::bordered().title(format!(" {name} "));
    let Some(p) = app.proc_named(name) else {
        f.render_widget(
            Paragraph::new(format!("no processor named {name}")).block(block),
            area,
        );
        return None;
    };
    let lines = vec![Line::from(vec![
        Span::from(format!("{:<15} ", "state")).dark_gray(),
        Span::styled(p.state.as_str().to_owned(), state_style(p.state)),
    ])];
    Some((p, block, lines))
}

fn render_logger(app: &App, f: &mut Frame, area: Rect) {
    let Some((p, block, mut lines)) = proc_panel(app, f, area, "logger") else {
        return;
    };
    lines.push(kv(
        "file",
        if p.note.is_empty() {
            "-".into()
        } else {
            p.note.clone()
        },
    ));
    let m = &p.metrics;
    if let Some(b) = m.get("bytes_written") {
        let rate = app
            .rates
            .get(&p.path)
            .and_then(|r| r.get("bytes_written"))
            .map(|r| format!("  {}/s", bytes(*r as u64)))
            .unwrap_or_default();
        lines.push(kv("written", format!("{}{rate}", bytes(*b))));
    }
    if let Some(d) = m.get("records_dropped") {
        lines.push(kv("dropped", d.to_string()));
    }
    if let Some(d) = m.get("degraded") {
        lines.push(Line::from(vec![
            Span::from(format!("{:<15} ", "degraded")).dark_gray(),
            if *d == 0 {
                Span::from("no")
            } else {
                "YES".red().bold()
            },
        ]));
    }
    if let Some(d) = m.get("disk_free_mb") {
        lines.push(kv("disk free", format!("{d} MB")));
    }
    if let Some(t) = m.get("last_fsync_ms") {
        lines.push(kv("last fsync", fsync_text(*t, app.now_ms)));
    }
    for (k, v) in m
        .iter()
        .filter(|(k, _)| !LOGGER_KNOWN.contains(&k.as_str()))
    {
        lines.push(metric_line(app, p, k, *v));
    }
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// `last_fsync_ms` is read as a wall-clock timestamp when it looks like one (ms since 1970,
/// after 2001), otherwise as the duration of the last fsync.
fn fsync_text(t: u64, now_ms: u64) -> String {
    const EPOCH_2001_MS: u64 = 978_307_200_000;
    if t == 0 {
        "never".into()
    } else if t > EPOCH_2001_MS {
        format!("{} ago", age(now_ms.saturating_sub(t)))
    } else {
        format!("took {t} ms")
    }
}

fn render_uplink(app: &App, f: &mut Frame, area: Rect) {
    let Some((p, block, mut lines)) = proc_panel(app, f, area, "uplink") else {
        return;
    };
    if !p.note.is_empty() {
        lines.push(kv("note", p.note.clone()));
    }
    // Budget use first: it is what the operator watches on a thin radio link. The uplink
    // publishes its budget (`budget_bps`), the bytes it wrote and its busiest 10 s window.
    if let Some(&budget) = p.metrics.get("budget_bps").filter(|b| **b > 0) {
        if let Some(rate) = app.rates.get(&p.path).and_then(|r| r.get("bytes_written")) {
            let pct = rate * 100.0 / budget as f64;
            lines.push(Line::from(vec![
                Span::from(format!("{:<15} ", "budget use")).dark_gray(),
                Span::styled(
                    format!("{pct:.0}%"),
                    if pct > 100.0 {
                        Style::new().red().bold()
                    } else {
                        Style::new().green()
                    },
                ),
                Span::from(format!(" ({} of {budget} B/s)", num(*rate))),
            ]));
        }
        if let Some(&peak) = p.metrics.get("max_bytes_10s") {
            let pct = peak as f64 * 100.0 / (budget as f64 * 10.0);
            lines.push(kv("peak 10 s", format!("{pct:.0}% ({peak} B)")));
        }
    }
    let (budget, rest): (Vec<_>, Vec<_>) =
        p.metrics.iter().partition(|(k, _)| k.contains("budget"));
    for (k, v) in budget.into_iter().chain(rest) {
        lines.push(metric_line(app, p, k, *v));
    }
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn render_queues(app: &App, f: &mut Frame, area: Rect) {
    let block = Block::bordered().title(" queues ");
    let qs = queues(app);
    let mut lines: Vec<Line> = Vec::new();
    for q in &qs {
        let pct = q
            .len
            .saturating_mul(100)
            .checked_div(q.capacity)
            .unwrap_or(0)
            .min(100);
        let bar_w = 10usize;
        let filled = (pct as usize * bar_w).div_ceil(100).min(bar_w);
        let style = if pct >= 90 {
            Style::new().red().bold()
        } else if pct >= 50 {
            Style::new().yellow()
        } else {
            Style::new().green()
        };
        lines.push(Line::from(vec![
            Span::from(format!("{:<16} ", format!("{}->{}", q.owner, q.name))),
            Span::styled("#".repeat(filled), style),
            Span::from(".".repeat(bar_w - filled)).dark_gray(),
            Span::from(format!(
                " {pct:>3}% {}/{}{}",
                q.len,
                q.capacity,
                q.dropped.map(|d| format!(" -{d}")).unwrap_or_default()
            )),
        ]));
    }
    if lines.is_empty() {
        // No fill figures published: the sinks' drop counters are the next best thing.
        for name in ["logger", "uplink"] {
            if let Some(d) = app.proc_named(name).and_then(drops) {
                lines.push(kv(&format!("{name} drops"), d.to_string()));
            }
        }
        lines.push(Line::from("no queue fill published").dark_gray());
    }
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn render_message(app: &App, f: &mut Frame, area: Rect) {
    let line = match &app.message {
        Some(m) if m.error => Line::from(m.text.clone()).red(),
        Some(m) => Line::from(m.text.clone()).green(),
        None => Line::from(""),
    };
    f.render_widget(Paragraph::new(line), area);
}

fn render_keys(app: &App, f: &mut Frame, area: Rect) {
    let line = match &app.mode {
        Mode::Normal => Line::from(
            "up/down select  p/r pause/resume  P/R all  s signal  o rotate  x stop  q quit",
        )
        .dark_gray(),
        Mode::ConfirmStop => Line::from("Stop the firmware? y = stop, any other key = cancel")
            .red()
            .bold(),
        Mode::Signal { input, to_all } => {
            let to = if *to_all {
                "all accepting it".to_owned()
            } else {
                match &app.selected {
                    Some(Target::Proc(p)) => p.rsplit('/').next().unwrap_or(p).to_owned(),
                    _ => "?".into(),
                }
            };
            let accepts = app
                .selected_proc()
                .filter(|_| !*to_all)
                .map(|p| {
                    if p.signals.is_empty() {
                        "  (accepts none)".to_owned()
                    } else {
                        format!("  (accepts {})", p.signals.join(", "))
                    }
                })
                .unwrap_or_default();
            Line::from(vec![
                Span::from("signal: ").bold(),
                Span::from(format!("{input}_")).yellow(),
                Span::from(format!(" -> {to}{accepts}")),
                Span::from("   Enter send, Tab target, Esc cancel").dark_gray(),
            ])
        }
    };
    f.render_widget(Paragraph::new(line), area);
}

/// `3s`, `5m02s`, `1h02m`, `3d04h`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A rate with a sensible number of digits: `0.2`, `12.5`, `980`, `16.0k`.
pub fn num(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Bytes in binary units.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::super::app::tests::{snap, status};
    use super::*;

    fn lines(buf: &Buffer) -> Vec<String> {
        (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect())
            .collect()
    }

    fn draw(app: &App, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| render(app, f)).unwrap();
        lines(t.backend().buffer())
    }

    fn row<'a>(screen: &'a [String], needle: &str) -> &'a str {
        screen
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{}", screen.join("\n")))
    }

    fn live_app() -> App {
        let t0 = Instant::now();
        let mut app = App::new("/run/harmony/control.sock".into());
        let mut s = status(42, 100);
        s.processors[3].state = ProcState::Waiting;
        s.processors[3].paused = true;
        s.processors[3].waiting_on = vec!["gps".into()];
        s.processors[1].note = "session-0007/flight.bin".into();
        s.processors[1]
            .metrics
            .extend([("degraded".into(), 1), ("disk_free_mb".into(), 2048)]);
        s.processors.push(snap(
            "harmony/uplink",
            ProcState::Active,
            &[
                ("bytes_written", 1_000),
                ("budget_bps", 100),
                ("max_bytes_10s", 600),
            ],
        ));
        app.apply_status(s.clone(), t0, 61_000);
        for p in &mut s.processors {
            if let Some(v) = p.metrics.get_mut("sentences") {
                *v += 10;
            }
            if p.name == "uplink"
                && let Some(v) = p.metrics.get_mut("bytes_written")
            {
                *v += 100; // 50 B/s of a 100 B/s budget
            }
        }
        app.apply_status(s, t0 + Duration::from_secs(2), 63_000);
        app
    }

    #[test]
    fn renders_tree_states_rates_and_panels() {
        let app = live_app();
        let screen = draw(&app, 160, 50);
        let all = screen.join("\n");
        assert!(row(&screen, "harmony top").contains("connected"), "{all}");
        assert!(row(&screen, "harmony top").contains("board sim"));
        assert!(row(&screen, "harmony top").contains("up 1m02s"));
        let gps = row(&screen, "    gps ");
        assert!(gps.contains("waiting"), "{gps}");
        assert!(gps.contains("5.0 sent/s"), "{gps}");
        assert!(gps.contains("[on gps]"), "{gps}");
        assert!(row(&screen, "  logger ").contains("session-0007/flight.bin"));
        assert!(row(&screen, "[group] sensors-group").contains("clear"));
        // The root is selected first and highlighted with the marker.
        assert!(row(&screen, "> harmony ").contains("active"));
        // Logger panel: file, degraded, disk free.
        assert!(all.contains("YES"), "{all}");
        assert!(row(&screen, "disk free").contains("2048 MB"));
        // Uplink panel shows the budget first; queues panel shows the fill.
        assert!(
            row(&screen, "budget use").contains("50% (50.0 of 100 B/s)"),
            "{all}"
        );
        assert!(row(&screen, "peak 10 s").contains("60% (600 B)"), "{all}");
        assert!(
            row(&screen, "gps->logger").contains("25% 25/100 -2"),
            "{all}"
        );
        assert!(row(&screen, "up/down select").contains("q quit"));
    }

    #[test]
    fn selection_and_prompts_show() {
        let mut app = live_app();
        for _ in 0..3 {
            app.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
        }
        let screen = draw(&app, 160, 50);
        assert!(row(&screen, "> ").contains("gps"));
        assert!(row(&screen, "harmony/sensors/gps").contains("─"));
        assert!(row(&screen, "waiting on").contains("gps"));
        app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE));
        app.handle_key(KeyEvent::new(KeyCode::Char('h'), KeyModifiers::NONE));
        let screen = draw(&app, 160, 50);
        assert!(row(&screen, "signal: h_").contains("-> gps"));
        app.handle_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        app.handle_key(KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE));
        let screen = draw(&app, 160, 50);
        assert!(row(&screen, "Stop the firmware?").contains("y = stop"));
    }

    #[test]
    fn disconnected_keeps_last_state_and_says_so() {
        let mut app = live_app();
        app.apply_disconnect("connection refused".into());
        let screen = draw(&app, 160, 50);
        assert!(row(&screen, "harmony top").contains("disconnected, retrying"));
        assert!(row(&screen, "harmony top").contains("connection refused"));
        assert!(row(&screen, "last known state").contains("socket"));
        // Nothing ever connected: a plain explanation instead of an empty table.
        let mut fresh = App::new("/nowhere/control.sock".into());
        fresh.apply_disconnect("No such file or directory".into());
        let screen = draw(&fresh, 100, 30);
        assert!(row(&screen, "no firmware answering").contains("│"));
    }

    #[test]
    fn small_terminals_do_not_panic() {
        let app = live_app();
        for (w, h) in [(80, 24), (40, 10), (20, 5), (1, 1), (200, 3)] {
            draw(&app, w, h);
        }
        let screen = draw(&app, 80, 24);
        assert!(row(&screen, "    gps ").contains("waiting"));
    }

    #[test]
    fn number_formats() {
        assert_eq!(age(3_400), "3s");
        assert_eq!(age(302_000), "5m02s");
        assert_eq!(age(3_720_000), "1h02m");
        assert_eq!(age(273_600_000), "3d04h");
        assert_eq!(num(0.25), "0.2");
        assert_eq!(num(980.4), "980");
        assert_eq!(num(16_000.0), "16.0k");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(fsync_text(0, 5), "never");
        assert_eq!(fsync_text(12, 5), "took 12 ms");
        assert_eq!(fsync_text(1_700_000_000_000, 1_700_000_003_000), "3s ago");
    }
}
