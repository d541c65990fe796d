//! `harmony log plot`: rangefinder distance and GPS altitude over the session's time, and
//! below it the CAN bus load (frames/s per DroneCAN node or CAN id, [`super::load`]), with the
//! dropouts from `events.log` marked on the time axis of both. SVG, or PNG when the output
//! ends in `.png` (plotters' bitmap backend and PNG encoder, pure Rust).
//!
//! Text is laid out with `ab_glyph` (pure Rust) and an embedded ASCII cut of DejaVu Sans
//! (`assets/fonts/`, 10 KiB, its licence beside it): the static aarch64 binary has no
//! fontconfig and needs no font files on the Pi. An SVG names the font `sans-serif` and the
//! viewer renders the text.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::load::{CanLoad, Dropout};
use super::{Progress, ToolError, io_err};
use crate::formats::csv::{parse_fix, parse_range};
use crate::records::RangeStatus;

fn series(
    files: &[PathBuf],
    progress: &mut Progress,
    done: &mut u64,
    mut f: impl FnMut(&str),
) -> Result<(), ToolError> {
    for p in files {
        let file = std::fs::File::open(p).map_err(io_err(p))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io_err(p))?;
            *done += line.len() as u64 + 1;
            progress.at(*done);
            if i > 0 {
                f(&line);
            }
        }
    }
    Ok(())
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
    can: Vec<(String, Vec<(f64, f64)>)>,
    drops: Vec<(f64, f64, String)>,
    t1: f64,
}

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 800;

/// Writes the chart to `out` (PNG if it ends in `.png`, else SVG); returns the number of
/// points drawn.
pub fn plot(
    range: &[PathBuf],
    fixes: &[PathBuf],
    can: &CanLoad,
    dropouts: &[Dropout],
    out: &Path,
) -> Result<usize, ToolError> {
    register_font()?;
    let total: u64 = range
        .iter()
        .chain(fixes)
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let mut progress = Progress::new("plot", total);
    let mut done = 0;
    let mut dist = Vec::new();
    series(range, &mut progress, &mut done, |l| {
        if let Ok(r) = parse_range(l)
            && r.status == RangeStatus::Ok
        {
            dist.push((r.stamp.boot_ns as f64 / 1e9, r.distance_cm as f64 / 100.0));
        }
    })?;
    let mut alt = Vec::new();
    series(fixes, &mut progress, &mut done, |l| {
        if let Ok(f) = parse_fix(l)
            && let Some(a) = f.alt_msl_m
        {
            alt.push((f.stamp.boot_ns as f64 / 1e9, a as f64));
        }
    })?;
    progress.done();
    let t0 = dist
        .iter()
        .chain(&alt)
        .map(|p| p.0)
        .chain(can.series.iter().flat_map(|(_, v)| v.iter().map(|p| p.0)))
        .chain(dropouts.iter().map(|d| d.first))
        .filter(|t| t.is_finite())
        .fold(f64::INFINITY, f64::min);
    let t0 = if t0.is_finite() { t0 } else { 0.0 };
    let mut ch = Chart {
        dist,
        alt,
        can: can.series.clone(),
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
        t1: 1.0,
    };
    for p in ch
        .dist
        .iter_mut()
        .chain(ch.alt.iter_mut())
        .chain(ch.can.iter_mut().flat_map(|(_, v)| v.iter_mut()))
    {
        p.0 -= t0;
    }
    ch.t1 = ch
        .dist
        .iter()
        .chain(&ch.alt)
        .map(|p| p.0)
        .chain(ch.can.iter().flat_map(|(_, v)| v.iter().map(|p| p.0 + 1.0)))
        .chain(ch.drops.iter().map(|d| d.1))
        .fold(1.0, f64::max);
    let png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if png {
        draw(
            BitMapBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area(),
            &ch,
        )?;
    } else {
        draw(
            SVGBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area(),
            &ch,
        )?;
    }
    Ok(ch.dist.len() + ch.alt.len() + ch.can.iter().map(|(_, v)| v.len()).sum::<usize>())
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
    let (lo, hi) = ch
        .dist
        .iter()
        .chain(&ch.alt)
        .map(|p| p.1)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo.min(0.0), hi + 1.0)
    } else {
        (0.0, 1.0)
    };
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
