//! What the ground station knows of the vehicle, the plain line for each message, and the
//! terminal UI that draws it. Rendering is a pure function of the view, so it is tested with
//! ratatui's test backend.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use mavlink::dialects::common::{
    CAN_FRAME_DATA, DISTANCE_SENSOR_DATA, GPS_RAW_INT_DATA, MavMessage, MavSeverity,
    STATUSTEXT_DATA, SYS_STATUS_DATA,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};

use super::protocol::{
    FC_HEALTH, PROC_PREFIX, command_name, fc_health_name, result_name, state_name,
};
use super::signing::Rejections;

/// Texts and command results kept for display.
pub const KEEP_TEXTS: usize = 200;
/// Named values kept (the firmware sends a few dozen names).
pub const MAX_VALUES: usize = 256;

/// The vehicle as last heard.
#[derive(Default)]
pub struct GroundView {
    /// Seconds since start of the last heartbeat, its system id and state.
    pub heartbeat: Option<(f64, u32, u8)>,
    pub gps: Option<(f64, GPS_RAW_INT_DATA)>,
    pub range: Option<(f64, DISTANCE_SENSOR_DATA)>,
    /// CAN id -> (seconds, last frame, frames seen).
    pub can: BTreeMap<u32, (f64, CAN_FRAME_DATA, u64)>,
    pub values: BTreeMap<String, (f64, i32)>,
    pub sys: Option<(f64, SYS_STATUS_DATA)>,
    /// `(seconds, severity, text)` of every STATUSTEXT, newest last.
    pub texts: VecDeque<(f64, MavSeverity, String)>,
    /// Command log lines (sent, acknowledged, timed out), newest last.
    pub commands: VecDeque<String>,
    pub bytes: u64,
    pub frames: u64,
    pub skipped: u64,
    pub rejected: Rejections,
    pub signed: bool,
    pub port: String,
    pub connected: bool,
    /// Long STATUSTEXTs arriving in chunks.
    pub assembler: super::frame::TextAssembler,
    /// `--out` endpoints and their counters, one short text each.
    pub routes: Vec<String>,
    /// Recent range, altitude, CAN frame rate and radio use, one sample a second (issue #13).
    pub history: crate::tui::history::History,
    /// Byte and CAN frame totals at the last history sample.
    pub history_prev: Option<(u64, u64)>,
}

/// The ground's history rows: (label, unit, stored scale).
pub const GROUND_SPARKS: [(&str, &str, f64); 4] = [
    ("range", "m", 100.0),
    ("altitude", "m", 100.0),
    ("CAN", "fr/s", 1.0),
    ("radio link", "%", 1.0),
];

impl GroundView {
    /// Takes one history sample; call once a second. `capacity_bps` is the radio's bytes per
    /// second (baud / 10): the link's use is what arrived against it.
    pub fn sample_history(&mut self, now: f64, capacity_bps: f64) {
        if self.history.series.is_empty() {
            self.history = crate::tui::history::History::new(&GROUND_SPARKS);
        }
        let fresh = |t: f64| now - t < 3.0;
        let range = self
            .range
            .as_ref()
            .filter(|(t, d)| fresh(*t) && d.current_distance <= d.max_distance)
            .map(|(_, d)| d.current_distance as f64 / 100.0);
        let alt = self
            .gps
            .as_ref()
            .filter(|(t, g)| fresh(*t) && g.fix_type as u32 >= 2)
            .map(|(_, g)| g.alt as f64 / 1000.0);
        let can_total: u64 = self.can.values().map(|(_, _, n)| *n).sum();
        let (can, radio) = match self.history_prev {
            Some((b, c)) => (
                Some(can_total.saturating_sub(c) as f64),
                (capacity_bps > 0.0)
                    .then(|| self.bytes.saturating_sub(b) as f64 * 100.0 / capacity_bps),
            ),
            None => (None, None),
        };
        self.history_prev = Some((self.bytes, can_total));
        self.history.push(&[range, alt, can, radio]);
    }
}

/// Severity without its prefix.
pub fn severity_name(s: MavSeverity) -> &'static str {
    match s {
        MavSeverity::MAV_SEVERITY_EMERGENCY => "EMERGENCY",
        MavSeverity::MAV_SEVERITY_ALERT => "ALERT",
        MavSeverity::MAV_SEVERITY_CRITICAL => "CRITICAL",
        MavSeverity::MAV_SEVERITY_ERROR => "ERROR",
        MavSeverity::MAV_SEVERITY_WARNING => "WARNING",
        MavSeverity::MAV_SEVERITY_NOTICE => "NOTICE",
        MavSeverity::MAV_SEVERITY_INFO => "INFO",
        MavSeverity::MAV_SEVERITY_DEBUG => "DEBUG",
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() >= KEEP_TEXTS {
        q.pop_front();
    }
    q.push_back(v);
}

/// A text for a plain line: quoted, with quotes and backslashes escaped.
fn quoted(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                o.push('\\');
                o.push(c);
            }
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl GroundView {
    /// Takes in a message from `sys`; returns its plain line (without the time).
    pub fn apply(&mut self, t: f64, sys: u32, comp: u8, msg: &MavMessage) -> Option<String> {
        let mut l = String::with_capacity(96);
        match msg {
            MavMessage::HEARTBEAT(h) => {
                self.heartbeat = Some((t, sys, h.system_status as u8));
                let _ = write!(
                    l,
                    "HEARTBEAT sys={sys} comp={comp} type={} state={} base_mode={}",
                    h.mavtype as u32,
                    h.system_status as u32,
                    h.base_mode.bits()
                );
            }
            MavMessage::GPS_RAW_INT(g) => {
                self.gps = Some((t, g.clone()));
                let _ = write!(
                    l,
                    "GPS time_usec={} fix={} lat={:.7} lon={:.7} alt_m={:.3} sats={} eph={} vel={} cog={}",
                    g.time_usec,
                    g.fix_type as u32,
                    g.lat as f64 / 1e7,
                    g.lon as f64 / 1e7,
                    g.alt as f64 / 1000.0,
                    g.satellites_visible,
                    g.eph,
                    g.vel,
                    g.cog
                );
            }
            MavMessage::DISTANCE_SENSOR(d) => {
                self.range = Some((t, d.clone()));
                let _ = write!(
                    l,
                    "RANGE cm={} min={} max={} time_boot_ms={}",
                    d.current_distance, d.min_distance, d.max_distance, d.time_boot_ms
                );
            }
            MavMessage::CAN_FRAME(c) => {
                let e = self.can.entry(c.id).or_insert((t, c.clone(), 0));
                *e = (t, c.clone(), e.2 + 1);
                let ext = c.id & 0x8000_0000 != 0;
                let _ = write!(
                    l,
                    "CAN id={:X} ext={} len={} data=",
                    c.id & 0x1fff_ffff,
                    ext as u8,
                    c.len
                );
                for b in &c.data[..(c.len as usize).min(8)] {
                    let _ = write!(l, "{b:02X}");
                }
            }
            MavMessage::NAMED_VALUE_INT(v) => {
                let name = v.name.to_str().unwrap_or("?").to_owned();
                let _ = write!(l, "VALUE name={name} value={}", v.value);
                if name.starts_with(PROC_PREFIX) {
                    let _ = write!(l, " state={}", state_name(v.value));
                } else if name == FC_HEALTH {
                    let _ = write!(l, " health={}", fc_health_name(v.value));
                }
                // Names come from the link: keep the table bounded (the firmware sends a few
                // dozen); a new name past the limit replaces the stalest one.
                if self.values.len() >= MAX_VALUES
                    && !self.values.contains_key(&name)
                    && let Some(old) = self
                        .values
                        .iter()
                        .min_by(|a, b| a.1.0.total_cmp(&b.1.0))
                        .map(|(k, _)| k.clone())
                {
                    self.values.remove(&old);
                }
                self.values.insert(name, (t, v.value));
            }
            MavMessage::SYS_STATUS(s) => {
                self.sys = Some((t, s.clone()));
                let _ = write!(
                    l,
                    "SYS present=0x{:08X} enabled=0x{:08X} health=0x{:08X} load={} errors_comm={} drop_rate_comm={} q_drop={} log_drop={} failed={} texts_dropped={}",
                    s.onboard_control_sensors_present.bits(),
                    s.onboard_control_sensors_enabled.bits(),
                    s.onboard_control_sensors_health.bits(),
                    s.load,
                    s.errors_comm,
                    s.drop_rate_comm,
                    s.errors_count1,
                    s.errors_count2,
                    s.errors_count3,
                    s.errors_count4
                );
            }
            MavMessage::STATUSTEXT(s) => return self.apply_text(t, sys, s, 0, 0),
            MavMessage::COMMAND_ACK(a) => {
                let _ = write!(
                    l,
                    "ACK command={} id={} result={}",
                    command_name(a.command),
                    a.command as u32,
                    result_name(a.result)
                );
                push_bounded(&mut self.commands, format!("{t:8.1} {l}"));
            }
            _ => return None,
        }
        Some(l)
    }

    /// Takes in one STATUSTEXT chunk (`id`, `chunk_seq`: MAVLink 2 long texts); returns the
    /// plain line once the text is whole.
    pub fn apply_text(
        &mut self,
        t: f64,
        sys: u32,
        s: &STATUSTEXT_DATA,
        id: u16,
        seq: u8,
    ) -> Option<String> {
        let text = self.assembler.push(sys, id, seq, s.text.as_slice())?;
        let l = format!(
            "TEXT severity={} text={}",
            severity_name(s.severity),
            quoted(&text)
        );
        push_bounded(&mut self.texts, (t, s.severity, text));
        Some(l)
    }

    /// Notes a line about our own commands in the command log.
    pub fn note_command(&mut self, t: f64, line: &str) {
        push_bounded(&mut self.commands, format!("{t:8.1} {line}"));
    }
}

fn age(now: f64, t: f64) -> String {
    format!("{:.1}s ago", (now - t).max(0.0))
}

/// Draws the view. `prompt` is the command being typed (None: not typing).
pub fn render(v: &GroundView, now: f64, prompt: Option<&str>, f: &mut Frame) {
    let hist_h = if f.area().height >= 30 && !v.history.series.is_empty() {
        v.history.height()
    } else {
        0
    };
    let [top, mid, hist, texts, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(10),
        Constraint::Length(hist_h),
        Constraint::Length(8),
        Constraint::Length(2),
    ])
    .areas(f.area());
    if hist_h > 0 {
        crate::tui::history::render(&v.history, "history (newest right, 1 s)", f, hist);
    }
    let link = match v.heartbeat {
        Some((t, sys, _)) if now - t < 3.0 => {
            Span::from(format!("LINK UP (system {sys})")).green().bold()
        }
        Some(_) => Span::from("LINK LOST").red().bold(),
        None if v.connected => Span::from("NO HEARTBEAT YET").yellow(),
        None => Span::from("RADIO NOT OPEN").red().bold(),
    };
    let rej = v.rejected;
    f.render_widget(
        Line::from(vec![
            Span::from(format!("{}  ", v.port)),
            link,
            Span::from(format!(
                "  {} B, {} frames, {} skipped, rejected {}/{}/{} (unsigned/bad sig/replay) {}",
                v.bytes,
                v.frames,
                v.skipped,
                rej.unsigned,
                rej.bad_signature,
                rej.replayed,
                if v.signed { "signed" } else { "UNSIGNED" }
            )),
        ]),
        top,
    );
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(mid);

    let mut rows: Vec<Row> = Vec::new();
    match &v.gps {
        Some((t, g)) => {
            rows.push(Row::new(vec![
                "gps".to_string(),
                format!(
                    "{:.6},{:.6} {:.0}m fix{} {}sat ({})",
                    g.lat as f64 / 1e7,
                    g.lon as f64 / 1e7,
                    g.alt as f64 / 1000.0,
                    g.fix_type as u32,
                    g.satellites_visible,
                    age(now, *t)
                ),
            ]));
        }
        None => rows.push(Row::new(vec!["gps".to_string(), "-".to_string()])),
    }
    match &v.range {
        Some((t, d)) => rows.push(Row::new(vec![
            "range".to_string(),
            if d.current_distance > d.max_distance {
                format!("no valid reading ({})", age(now, *t))
            } else {
                format!("{} cm  ({})", d.current_distance, age(now, *t))
            },
        ])),
        None => rows.push(Row::new(vec!["range".to_string(), "-".to_string()])),
    }
    for (name, (t, val)) in &v.values {
        if !name.starts_with("fc_") {
            continue;
        }
        let shown = if name == FC_HEALTH {
            fc_health_name(*val).to_string()
        } else {
            val.to_string()
        };
        rows.push(Row::new(vec![
            name.clone(),
            format!("{shown}  ({})", age(now, *t)),
        ]));
    }
    for (id, (t, c, n)) in &v.can {
        let mut data = String::new();
        for b in &c.data[..(c.len as usize).min(8)] {
            let _ = write!(data, "{b:02X}");
        }
        rows.push(Row::new(vec![
            format!("can {:X}", id & 0x1fff_ffff),
            format!("{data}  #{n}  ({})", age(now, *t)),
        ]));
    }
    f.render_widget(
        Table::new(rows, [Constraint::Length(12), Constraint::Fill(1)])
            .block(Block::bordered().title("vehicle")),
        left,
    );

    let mut rows: Vec<Row> = Vec::new();
    if let Some((_, s)) = &v.sys {
        rows.push(Row::new(vec![
            "sys".to_string(),
            format!(
                "load {:.1}%  healthy 0x{:X}/0x{:X}",
                s.load as f64 / 10.0,
                s.onboard_control_sensors_health.bits(),
                s.onboard_control_sensors_present.bits()
            ),
        ]));
    }
    for (name, (_, val)) in &v.values {
        if name.starts_with("fc_") {
            continue;
        }
        let (shown, style) = match name.strip_prefix(PROC_PREFIX) {
            Some(_) => {
                let st = state_name(*val);
                let style = match st {
                    "active" => Style::default().fg(Color::Green),
                    "failed" | "restarting" => Style::default().fg(Color::Red),
                    _ => Style::default().fg(Color::Yellow),
                };
                (st.to_string(), style)
            }
            None => (val.to_string(), Style::default()),
        };
        rows.push(Row::new(vec![name.clone(), shown]).style(style));
    }
    f.render_widget(
        Table::new(rows, [Constraint::Length(12), Constraint::Fill(1)])
            .block(Block::bordered().title("firmware health")),
        right,
    );

    let [tl, cl] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(texts);
    let h = tl.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = v
        .texts
        .iter()
        .rev()
        .take(h)
        .rev()
        .map(|(t, s, text)| {
            let style = match s {
                MavSeverity::MAV_SEVERITY_EMERGENCY
                | MavSeverity::MAV_SEVERITY_ALERT
                | MavSeverity::MAV_SEVERITY_CRITICAL
                | MavSeverity::MAV_SEVERITY_ERROR => Style::default().fg(Color::Red),
                MavSeverity::MAV_SEVERITY_WARNING => Style::default().fg(Color::Yellow),
                _ => Style::default(),
            };
            Line::from(format!("{t:7.1} {:<8} {text}", severity_name(*s))).style(style)
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("messages")),
        tl,
    );
    let h = cl.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = v
        .commands
        .iter()
        .rev()
        .take(h)
        .rev()
        .map(|s| Line::from(s.as_str()))
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("commands")),
        cl,
    );
    let help = match prompt {
        Some(p) => Line::from(vec![Span::from(":").bold(), Span::from(p.to_string())]),
        None => Line::from(
            "q quit  : command (pause:gps resume:gps rotate rate:range:20 rate:can:off stop)",
        ),
    };
    let mut bottom_lines = vec![help];
    if !v.routes.is_empty() {
        bottom_lines.push(Line::from(format!("out: {}", v.routes.join("  |  "))));
    }
    f.render_widget(Paragraph::new(bottom_lines), bottom);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::frame;
    use mavlink::dialects::common::{MavState, MavType};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn text_of(t: &Terminal<TestBackend>) -> String {
        let b = t.backend().buffer();
        (0..b.area.height)
            .map(|y| {
                (0..b.area.width)
                    .map(|x| b[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn named_values_from_the_link_stay_bounded() {
        let mut v = GroundView::default();
        for i in 0..(MAX_VALUES + 50) {
            let name = format!("n{i}");
            v.apply(
                i as f64,
                1,
                191,
                &frame::named_int(frame::name10(&name), 1, 0),
            );
        }
        assert_eq!(v.values.len(), MAX_VALUES);
        assert!(
            v.values.contains_key(&format!("n{}", MAX_VALUES + 49)),
            "newest kept"
        );
        assert!(!v.values.contains_key("n0"), "stalest replaced");
    }

    #[test]
    fn view_takes_messages_and_renders_them() {
        let mut v = GroundView {
            port: "/dev/pts/9".into(),
            connected: true,
            ..Default::default()
        };
        let hb = frame::heartbeat(
            MavType::MAV_TYPE_ONBOARD_CONTROLLER,
            MavState::MAV_STATE_ACTIVE,
        );
        assert!(
            v.apply(1.0, 1, 191, &hb)
                .unwrap()
                .starts_with("HEARTBEAT sys=1 comp=191 type=18 state=4 base_mode=0")
        );
        let l = v
            .apply(
                1.5,
                1,
                191,
                &frame::statustext(MavSeverity::MAV_SEVERITY_ERROR, "gps \"x\" failed"),
            )
            .unwrap();
        assert_eq!(l, r#"TEXT severity=ERROR text="gps \"x\" failed""#);
        let l = v
            .apply(2.0, 1, 191, &frame::named_int(frame::name10("p.gps"), 5, 0))
            .unwrap();
        assert_eq!(l, "VALUE name=p.gps value=5 state=failed");
        let mut t = Terminal::new(TestBackend::new(100, 24)).unwrap();
        t.draw(|f| render(&v, 2.0, None, f)).unwrap();
        let s = text_of(&t);
        assert!(s.contains("LINK UP (system 1)"), "{s}");
        assert!(s.contains("p.gps"), "{s}");
        assert!(s.contains("failed"), "{s}");
        assert!(s.contains("gps \"x\" failed"), "{s}");
        t.draw(|f| render(&v, 9.0, Some("pause:gps"), f)).unwrap();
        let s = text_of(&t);
        assert!(s.contains("LINK LOST"), "{s}");
        assert!(s.contains(":pause:gps"), "{s}");
    }
}
