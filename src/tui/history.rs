//! Recent history as sparklines, for `harmony top` and `harmony ground` (issue #13): what an
//! operator would rather look at than read. A few fixed series (range, altitude, CAN frame
//! rate, radio budget use, queue fill), one value per sample, the last [`KEEP`] kept; drawn one
//! row each, a label with the newest value, then ratatui's `Sparkline` over the row's width
//! (newest at the right edge, a gap where a sample had no value; percentages on a fixed
//! 0..100 scale, other series scaled to their largest value shown).

use std::collections::VecDeque;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Sparkline};

/// Samples kept per series (two minutes at `top`'s 500 ms, at the ground's 1 s).
pub const KEEP: usize = 240;

/// One series.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: &'static str,
    /// Shown after the newest value.
    pub unit: &'static str,
    /// The value is stored multiplied by this (cm for metres: 100).
    pub scale: f64,
    pub values: VecDeque<Option<u64>>,
}

impl Series {
    /// The newest value, in its unit.
    pub fn last(&self) -> Option<f64> {
        self.values
            .back()
            .copied()
            .flatten()
            .map(|v| v as f64 / self.scale)
    }
}

/// The series of one view.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub series: Vec<Series>,
}

impl History {
    /// `(label, unit, scale)` per series.
    pub fn new(spec: &[(&'static str, &'static str, f64)]) -> Self {
        History {
            series: spec
                .iter()
                .map(|&(label, unit, scale)| Series {
                    label,
                    unit,
                    scale,
                    values: VecDeque::with_capacity(KEEP),
                })
                .collect(),
        }
    }

    /// One sample: a value (in the series' unit) per series, `None` for "not known".
    pub fn push(&mut self, values: &[Option<f64>]) {
        for (s, v) in self.series.iter_mut().zip(values) {
            if s.values.len() >= KEEP {
                s.values.pop_front();
            }
            let v = v
                .filter(|x| x.is_finite())
                .map(|x| (x * s.scale).round().max(0.0) as u64);
            s.values.push_back(v);
        }
    }

    pub fn clear(&mut self) {
        for s in &mut self.series {
            s.values.clear();
        }
    }

    /// Rows needed to draw it in a bordered block.
    pub fn height(&self) -> u16 {
        self.series.len() as u16 + 2
    }
}

const LABEL: u16 = 26;

/// Draws `h` in `area`: a bordered block titled `title`, one series per row.
pub fn render(h: &History, title: &str, f: &mut Frame, area: Rect) {
    let block = Block::bordered().title(format!(" {title} "));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let rows = Layout::vertical(vec![Constraint::Length(1); h.series.len()]).split(inner);
    let colours = [
        Color::Cyan,
        Color::Green,
        Color::Yellow,
        Color::Magenta,
        Color::Red,
        Color::Blue,
    ];
    for (i, (s, row)) in h.series.iter().zip(rows.iter()).enumerate() {
        let [label, spark] =
            Layout::horizontal([Constraint::Length(LABEL), Constraint::Fill(1)]).areas(*row);
        let now = match s.last() {
            Some(v) if s.scale >= 100.0 => format!("{v:.2} {}", s.unit),
            Some(v) => format!("{v:.0} {}", s.unit),
            None => "-".to_owned(),
        };
        f.render_widget(
            Paragraph::new(Line::from(format!("{:<13}{now:>12}", s.label))),
            label,
        );
        // Right-aligned: the newest sample is always at the right edge.
        let w = spark.width as usize;
        let shown = s.values.len().min(w);
        let data: Vec<Option<u64>> = std::iter::repeat_n(None, w - shown)
            .chain(s.values.iter().skip(s.values.len() - shown).copied())
            .collect();
        let mut line = Sparkline::default()
            .data(data)
            .style(Style::new().fg(colours[i % colours.len()]));
        if s.unit == "%" {
            // Percentages on an absolute scale: a full bar is 100 %.
            let top = s.values.iter().flatten().copied().max().unwrap_or(0);
            line = line.max(top.max(100));
        }
        f.render_widget(line, spark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    /// Issue #13: a rising series draws rising bars, newest on the right, with its last value.
    #[test]
    fn sparklines_draw_the_recent_values() {
        let mut h = History::new(&[("range", "m", 100.0), ("CAN", "fr/s", 1.0)]);
        for i in 0..300 {
            h.push(&[
                Some(i as f64 / 10.0),
                if i % 2 == 0 { None } else { Some(5.0) },
            ]);
        }
        assert_eq!(h.series[0].values.len(), KEEP);
        assert_eq!(h.series[0].last(), Some(29.9));
        let mut t = Terminal::new(TestBackend::new(60, 4)).unwrap();
        t.draw(|f| render(&h, "history", f, f.area())).unwrap();
        let buf = t.backend().buffer();
        let row =
            |y: u16| -> String { (0..60).map(|x| buf[(x, y)].symbol().to_string()).collect() };
        let r1 = row(1);
        assert!(r1.contains("range") && r1.contains("29.90 m"), "{r1}");
        // The rightmost bar is full, the leftmost of the window lower.
        assert_eq!(buf[(58, 1)].symbol(), "█", "{r1}");
        assert_ne!(buf[(27, 1)].symbol(), "█", "{r1}");
        assert!(row(0).contains("history"));
        // Few samples still end at the right edge; a percentage is on a 0..100 scale.
        let mut h = History::new(&[("fill", "%", 1.0)]);
        h.push(&[Some(50.0)]);
        let mut t = Terminal::new(TestBackend::new(60, 3)).unwrap();
        t.draw(|f| render(&h, "h", f, f.area())).unwrap();
        let buf = t.backend().buffer();
        assert_eq!(buf[(58, 1)].symbol(), "▄");
        assert_eq!(buf[(57, 1)].symbol(), " ");
    }
}
