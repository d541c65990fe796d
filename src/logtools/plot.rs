//! `harmony log plot`: rangefinder distance and GPS altitude over the session's time, and
//! below it the CAN bus load (frames/s per DroneCAN node or CAN id, [`super::load`]), with the
//! dropouts from `events.log` marked on the time axis of both (issue #13). SVG, or PNG when the
//! output ends in `.png` (plotters' bitmap backend and PNG encoder, pure Rust).
//!
//! Text is laid out with `ab_glyph` (pure Rust) and an embedded ASCII cut of DejaVu Sans
//! (`assets/fonts/`, 10 KiB, its licence beside it): the static aarch64 binary has no
//! fontconfig and needs no font files on the Pi. An SVG names the font `sans-serif` and the
//! viewer renders the text.
//!
//! Bounded whatever the files hold (issue #17):
//! * rows are read with [`Lines`] and accepted by [`rows`]: a non-finite or absurd number, a
//!   line that is not UTF-8 or too long, is skipped and counted, never drawn (plotters loops
//!   for ever on an infinite axis);
//! * two passes over the files: the first finds the time and value ranges, the second keeps,
//!   per pixel column of the chart, only the lowest and the highest point of each series (in
//!   time order). So a chart of a million rows holds at most `2 * COLUMNS` points per series,
//!   shows every spike a full-resolution line would show, and the memory does not grow with
//!   the files;
//! * the axes are padded so that their span is never zero nor lost in a value's rounding.
//!
//! * the CAN load has at most [`COLUMNS`] bins per series, whatever the times in the log span.

use std::ffi::OsString;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::files::Dir;
use super::lines::Lines;
use super::load::{CanLoad, Dropout};
use super::{Progress, ToolError, rows};
use crate::records::RangeStatus;

/// Pixel columns of the chart, and so the buckets of the downsampling.
pub const COLUMNS: usize = 1200;
const HEIGHT: u32 = 800;
/// The CSV lines are short; a longer one is skipped.
const MAX_LINE: usize = 1024;

/// What the plot drew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlotStats {
    /// Rows that gave a point.
    pub points: u64,
    /// Rows that were unreadable or held a non-finite or absurd number.
    pub skipped: u64,
}

/// A row made into a point: `Ok(None)` for a valid row with nothing to draw.
type PointOf = fn(&[u8]) -> Result<Option<(f64, f64)>, String>;

/// A series: which files, and how a row becomes a point (`Ok(None)`: a valid row that has
/// nothing to draw, such as a weak rangefinder reading).
struct Series<'a> {
    files: &'a [OsString],
    point: PointOf,
}

fn range_point(line: &[u8]) -> Result<Option<(f64, f64)>, String> {
    let r = rows::range(line)?;
    Ok((r.status == RangeStatus::Ok)
        .then(|| (r.stamp.boot_ns as f64 / 1e9, r.distance_cm as f64 / 100.0)))
}

fn altitude_point(line: &[u8]) -> Result<Option<(f64, f64)>, String> {
    let f = rows::fix(line)?;
    Ok(f.alt_msl_m
        .map(|a| (f.stamp.boot_ns as f64 / 1e9, f64::from(a))))
}

/// Calls `f` with every point of `s`; counts the rows skipped.
fn each_point(
    dir: &Dir,
    s: &Series<'_>,
    progress: &mut Progress,
    done: &mut u64,
    stats: &mut PlotStats,
    mut f: impl FnMut(f64, f64),
) -> Result<(), ToolError> {
    for name in s.files {
        let file = dir.read(name)?;
        let path = file.path.clone();
        let mut lines = Lines::new(file.file, MAX_LINE);
        let mut last = 0;
        while let Some(l) = lines.next_line().map_err(|source| ToolError::Io {
            path: path.clone(),
            source,
        })? {
            *done += l.offset + l.len - last;
            last = l.offset + l.len;
            progress.at(*done);
            if l.no == 1 {
                continue; // the header
            }
            match (l.overlong(), (s.point)(l.bytes)) {
                (false, Ok(Some((t, v)))) if t.is_finite() && v.is_finite() => {
                    stats.points += 1;
                    f(t, v);
                }
                (false, Ok(None)) => {}
                _ => stats.skipped += 1,
            }
        }
    }
    Ok(())
}

/// Lowest and highest point of one pixel column, each with its time.
#[derive(Clone, Copy)]
struct Column {
    lo: (f64, f64),
    hi: (f64, f64),
}

/// A span that is never zero, and never so small next to the values that adding a tick step
/// to one of them changes nothing.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let magnitude = lo.abs().max(hi.abs());
    let span = (hi - lo).max(1.0).max(magnitude * 1e-6);
    (lo, lo + span)
}

/// Writes the chart to `out` (PNG if it ends in `.png`, else SVG).
pub fn plot(
    dir: &Dir,
    range: &[OsString],
    fixes: &[OsString],
    can: &CanLoad,
    dropouts: &[Dropout],
    out: &Path,
) -> Result<PlotStats, ToolError> {
    register_font()?;
    let series = [
        Series {
            files: range,
            point: range_point,
        },
        Series {
            files: fixes,
            point: altitude_point,
        },
    ];
    let total: u64 = range
        .iter()
        .chain(fixes)
        .filter_map(|f| dir.read(f).ok())
        .map(|f| f.len)
        .sum();
    let mut progress = Progress::new("plot", total * 2);
    let mut done = 0;
    // Pass 1: the ranges.
    let mut stats = PlotStats::default();
    let (mut t0, mut t1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for s in &series {
        each_point(dir, s, &mut progress, &mut done, &mut stats, |t, v| {
            (t0, t1) = (t0.min(t), t1.max(t));
            (lo, hi) = (lo.min(v), hi.max(v));
        })?;
    }
    if stats.points == 0 {
        (lo, hi) = (0.0, 1.0);
    }
    // The CAN load and the dropouts share the time axis.
    for t in can
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .chain(dropouts.iter().flat_map(|d| [d.first, d.last]))
        .filter(|t| t.is_finite())
    {
        (t0, t1) = (t0.min(t), t1.max(t));
    }
    if t0 > t1 {
        (t0, t1) = (0.0, 1.0);
    }
    let (_, width) = padded(0.0, t1 - t0);
    let (lo, hi) = padded(lo.min(0.0), hi + (hi - lo.min(0.0)) * 0.02);
    // Pass 2: per pixel column, the lowest and the highest point of each series.
    let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut second = PlotStats::default();
    for s in &series {
        let mut cols: Vec<Option<Column>> = vec![None; COLUMNS];
        each_point(dir, s, &mut progress, &mut done, &mut second, |t, v| {
            let x = t - t0;
            let i = ((x / width) * (COLUMNS - 1) as f64).round();
            let c = &mut cols[(i.max(0.0) as usize).min(COLUMNS - 1)];
            match c {
                None => {
                    *c = Some(Column {
                        lo: (x, v),
                        hi: (x, v),
                    })
                }
                Some(c) => {
                    if v < c.lo.1 {
                        c.lo = (x, v);
                    }
                    if v > c.hi.1 {
                        c.hi = (x, v);
                    }
                }
            }
        })?;
        let mut pts = Vec::with_capacity(2 * COLUMNS);
        for c in cols.into_iter().flatten() {
            let (a, b) = if c.lo.0 <= c.hi.0 {
                (c.lo, c.hi)
            } else {
                (c.hi, c.lo)
            };
            pts.push(a);
            if b != a {
                pts.push(b);
            }
        }
        lines.push(pts);
    }
    progress.done();
    let mut lines = lines.into_iter();
    let ch = Chart {
        dist: lines.next().unwrap_or_default(),
        alt: lines.next().unwrap_or_default(),
        lo,
        hi,
        can: can
            .series
            .iter()
            .map(|(l, v)| (l.clone(), v.iter().map(|(t, r)| (t - t0, *r)).collect()))
            .collect(),
        drops: dropouts
            .iter()
            .map(|d| {
                (
                    d.first - t0,
                    d.last - t0,
                    format!("{} {}", d.source, d.count),
                )
            })
            .collect(),
        t1: width,
    };
    let png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if png {
        draw(
            BitMapBackend::new(out, (COLUMNS as u32, HEIGHT)).into_drawing_area(),
            &ch,
        )?;
    } else {
        draw(
            SVGBackend::new(out, (COLUMNS as u32, HEIGHT)).into_drawing_area(),
            &ch,
        )?;
    }
    Ok(stats)
}

/// The embedded font (see the module docs).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-ascii.ttf");

fn register_font() -> Result<(), ToolError> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| ToolError::Plot("the embedded font cannot be read".into()))
}

/// Colours of the CAN series, in turn.
const PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Everything drawn, on one time axis (seconds since the first point).
struct Chart {
    dist: Vec<(f64, f64)>,
    alt: Vec<(f64, f64)>,
    /// The sensor panel's value range.
    lo: f64,
    hi: f64,
    can: Vec<(String, Vec<(f64, f64)>)>,
    drops: Vec<(f64, f64, String)>,
    t1: f64,
}

fn err(e: &dyn std::fmt::Display) -> ToolError {
    ToolError::Plot(e.to_string())
}

/// Red bands over the dropouts, on a chart with y from `lo` to `hi`.
fn mark_dropouts<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    drops: &[(f64, f64, String)],
    lo: f64,
    hi: f64,
    t1: f64,
) -> Result<(), ToolError> {
    if drops.is_empty() {
        return Ok(());
    }
    // At least 0.3 % of the axis wide, so a dropout of a few ms is still seen.
    let min_w = t1 * 0.003;
    chart
        .draw_series(drops.iter().map(|(a, b, _)| {
            let b = b.max(a + min_w);
            Rectangle::new([(*a, lo), (b, hi)], RED.mix(0.25).filled())
        }))
        .map_err(|e| err(&e))?
        .label(format!("dropout ({})", drops.len()))
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], RED.mix(0.25).filled()));
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, ch: &Chart) -> Result<(), ToolError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(HEIGHT * 5 / 8);
    let (lo, hi) = (ch.lo, ch.hi);
    let mut chart = ChartBuilder::on(&top)
        .caption("rangefinder distance and GPS altitude", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..ch.t1, lo..hi)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s, boot clock)")
        .y_desc("metres")
        .draw()
        .map_err(|e| err(&e))?;
    mark_dropouts(&mut chart, &ch.drops, lo, hi, ch.t1)?;
    chart
        .draw_series(LineSeries::new(ch.dist.iter().copied(), &BLUE))
        .map_err(|e| err(&e))?
        .label("rangefinder distance")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(ch.alt.iter().copied(), &RED))
        .map_err(|e| err(&e))?
        .label("GPS altitude (MSL)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;

    let top_rate = ch
        .can
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let hi = (top_rate * 1.1).max(1.0);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            if ch.can.is_empty() {
                "CAN bus load: no frames"
            } else {
                "CAN bus load (frames/s per DroneCAN node or CAN id)"
            },
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..ch.t1, 0f64..hi)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s, boot clock)")
        .y_desc("frames/s")
        .draw()
        .map_err(|e| err(&e))?;
    mark_dropouts(&mut chart, &ch.drops, 0.0, hi, ch.t1)?;
    for (i, (label, pts)) in ch.can.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), &c))
            .map_err(|e| err(&e))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    if !ch.can.is_empty() || !ch.drops.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
