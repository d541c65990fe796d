//! `harmony log plot`: rangefinder distance and GPS altitude over the session's time, as SVG
//! (plotters' SVG backend: no font files needed, the viewer renders the text).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

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

/// Writes the chart to `out`; returns the number of points drawn.
pub fn plot(range: &[PathBuf], fixes: &[PathBuf], out: &Path) -> Result<usize, ToolError> {
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
        .fold(f64::INFINITY, f64::min);
    let t0 = if t0.is_finite() { t0 } else { 0.0 };
    for p in dist.iter_mut().chain(alt.iter_mut()) {
        p.0 -= t0;
    }
    let t1 = dist.iter().chain(&alt).map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = dist
        .iter()
        .chain(&alt)
        .map(|p| p.1)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo.min(0.0), hi + 1.0)
    } else {
        (0.0, 1.0)
    };
    let err = |e: &dyn std::fmt::Display| ToolError::Plot(e.to_string());
    let root = SVGBackend::new(out, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("rangefinder distance and GPS altitude", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..t1, lo..hi)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s, boot clock)")
        .y_desc("metres")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(dist.iter().copied(), &BLUE))
        .map_err(|e| err(&e))?
        .label("rangefinder distance")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(alt.iter().copied(), &RED))
        .map_err(|e| err(&e))?
        .label("GPS altitude (MSL)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(dist.len() + alt.len())
}
