//! `harmony log plot` (issue #13): the CAN bus load per node under the sensor series, the
//! dropouts of `events.log` marked on the time axis, PNG as well as SVG.

mod common;

use std::path::Path;

use common::*;

/// A small session: 20 s of rangefinder rows, CAN frames of two DroneCAN nodes, one dropout
/// from 10 s to 11 s after the start.
fn session(dir: &Path) -> std::path::PathBuf {
    let s = dir.join("data/20260804T120000Z");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(
        s.join("events.log"),
        "2026-08-04T12:00:00.000000Z mono=100.000000 session-start session=s clock_valid=true\n\
         2026-08-04T12:00:12.000000Z mono=112.000000 dropout source=can sink=logger count=500 first_mono=110.000000 last_mono=111.000000\n",
    )
    .unwrap();
    let mut range = String::from("mono_s,utc,distance_m,strength,status\n");
    let mut can = String::new();
    for i in 0..200 {
        let t = i as f64 * 0.1;
        range.push_str(&format!(
            "{:.6},2026-08-04T12:00:{:09.6}Z,{:.2},200,ok\n",
            100.0 + t,
            t,
            1.0 + t
        ));
        // Node 76 at 10 frames/s, node 44 at 5 frames/s.
        let us = (t * 1e6).round() as u64;
        let line = |node: u32| {
            format!(
                "({}.{:06}) can0 {:08X}#01C0\n",
                1_785_844_800 + us / 1_000_000,
                us % 1_000_000,
                0x09F1_1200 | node
            )
        };
        can.push_str(&line(76));
        if i % 2 == 0 {
            can.push_str(&line(44));
        }
    }
    std::fs::write(s.join("rangefinder.000.csv"), range).unwrap();
    std::fs::write(s.join("can.000.log"), can).unwrap();
    s
}

fn plot(dir: &Path, session: &Path, out: &str) -> String {
    let o = harmony(
        dir,
        &[
            "log",
            "plot",
            "--session",
            session.to_str().unwrap(),
            "-o",
            out,
        ],
    )
    .output()
    .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Issue #13: the SVG has the CAN load panel with a series per node and the dropout marked.
#[test]
fn svg_has_can_load_per_node_and_the_dropout() {
    let dir = tempfile::tempdir().unwrap();
    let s = session(dir.path());
    plot(dir.path(), &s, "flight.svg");
    let svg = std::fs::read_to_string(dir.path().join("flight.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    for want in [
        "CAN bus load",
        "node 76",
        "node 44",
        "dropout (1)",
        "frames/s",
    ] {
        assert!(svg.contains(want), "{want} missing");
    }
}

/// Issue #13: a PNG (decoded here) of the full size, with text drawn, and the dropout as a
/// band over the columns of 10 s..11 s of the 20 s axis, on both panels.
#[test]
fn png_is_a_real_png_with_the_dropout_band() {
    let dir = tempfile::tempdir().unwrap();
    let s = session(dir.path());
    plot(dir.path(), &s, "flight.png");
    let bytes = std::fs::read(dir.path().join("flight.png")).unwrap();
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 800));
    let ch = info.color_type.samples();
    let px = |x: u32, y: u32| {
        let i = ((y * info.width + x) as usize) * ch;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    // The dropout band: red at a quarter over white.
    let pink =
        |(r, g, b): (u8, u8, u8)| r > 240 && (170..215).contains(&g) && (170..215).contains(&b);
    let band: Vec<u32> = (0..info.width)
        .filter(|&x| (0..info.height).filter(|&y| pink(px(x, y))).count() > 300)
        .collect();
    assert!(!band.is_empty(), "no dropout band");
    // The plot area runs from about x = 62 to 1188 for 0..20 s: 10..11 s is x ~ 625..681.
    let (a, b) = (band[0], *band.last().unwrap());
    assert!(
        (600..=700).contains(&a) && (600..=710).contains(&b),
        "band at x {a}..{b}"
    );
    // Text was drawn: dark pixels in the caption row above the first chart.
    let dark = (300..900)
        .flat_map(|x| (5..30).map(move |y| (x, y)))
        .filter(|&(x, y)| px(x, y).0 < 100)
        .count();
    assert!(dark > 50, "no caption text: {dark}");
}
