//! `harmony log ...` against hostile session directories (issue #17), driving the real
//! binary: links and FIFOs where log files should be, random bytes, huge lines, non-finite
//! numbers, missing directories and files; and `log tail --follow` under signals.

mod common;

use std::io::Write;
use std::os::unix::fs::symlink;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use harmony::clock::Stamp;
use harmony::formats::candump::{MAX_LINE, format_line};
use harmony::formats::csv::{FIX_HEADER, RANGE_HEADER, write_fix, write_range};
use harmony::logger::{Manifest, QueueDropCounts};
use harmony::records::{CAN_EFF_FLAG, CanRecord, Fix, FixQuality, RangeRecord, RangeStatus};
use nix::sys::signal::Signal as Sig;

const SESSION: &str = "20260804T120000Z";

/// `$BODY*hh\r\n`.
fn nmea(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n")
}

fn can_line(i: u64) -> Vec<u8> {
    let r = CanRecord {
        id: (0x1801_5500 + (i as u32 % 200)) | CAN_EFF_FLAG,
        len: (i % 9) as u8,
        data: i.wrapping_mul(0x0101_0101_0101_0101).to_le_bytes(),
        ..Default::default()
    };
    let mut b = [0u8; MAX_LINE];
    let n = format_line(&mut b, 1_785_844_800_000_000 + i * 125, "can0", &r);
    b[..n].to_vec()
}

fn can_text(n: u64) -> Vec<u8> {
    (0..n).flat_map(can_line).collect()
}

fn stamp(i: u64) -> Stamp {
    Stamp {
        boot_ns: 10_000_000_000 + i * 100_000_000,
        wall_ns: 1_785_844_800_000_000_000 + i as i64 * 100_000_000,
    }
}

fn range_csv(n: u64) -> Vec<u8> {
    let mut v = format!("{RANGE_HEADER}\n").into_bytes();
    for i in 0..n {
        write_range(
            &mut v,
            &RangeRecord {
                stamp: stamp(i),
                distance_cm: 100 + (i % 2000) as u16,
                strength: 50,
                status: RangeStatus::Ok,
            },
        );
    }
    v
}

fn fix_csv(n: u64) -> Vec<u8> {
    let mut v = format!("{FIX_HEADER}\n").into_bytes();
    for i in 0..n {
        write_fix(
            &mut v,
            &Fix {
                stamp: stamp(i),
                utc_ns: Some(stamp(i).wall_ns),
                time_of_day_s: None,
                lat_deg: Some(48.1 + i as f64 * 1e-5),
                lon_deg: Some(11.5),
                alt_msl_m: Some(545.0 + i as f32 * 0.1),
                quality: FixQuality::Gps,
                satellites: Some(9),
                hdop: Some(0.9),
                speed_mps: Some(1.0),
                course_deg: Some(10.0),
            },
        );
    }
    v
}

fn manifest(closed: bool) -> Vec<u8> {
    let m = Manifest {
        firmware: "test".into(),
        board: "sim".into(),
        session: SESSION.into(),
        started_utc: "2026-08-04T12:00:00.000000Z".into(),
        started_mono_s: 10.0,
        clock_valid_at_start: true,
        gps_time: None,
        updated_utc: "2026-08-04T12:01:00.000000Z".into(),
        closed,
        degraded: false,
        files: vec![],
        records: vec![],
        queue_drops: QueueDropCounts::default(),
        can_transfers_per_node: Default::default(),
        fsync_errors: 0,
        segments: vec![],
    };
    serde_json::to_vec_pretty(&m).unwrap()
}

/// A session as the logger leaves it, every file valid.
fn session(data: &Path, name: &str) -> PathBuf {
    let s = data.join(name);
    std::fs::create_dir_all(&s).unwrap();
    let w = |f: &str, b: &[u8]| std::fs::write(s.join(f), b).unwrap();
    w("can.000.log", &can_text(300));
    let gga = nmea("GPGGA,120000.00,4807.0380,N,01131.3240,E,1,08,0.9,545.4,M,46.9,M,,");
    let rmc = nmea("GPRMC,120000.00,A,4807.0380,N,01131.3240,E,1.0,10.0,040826,,,A");
    w("gps.000.nmea", format!("{gga}{rmc}{gga}{rmc}").as_bytes());
    w("gps-fix.000.csv", &fix_csv(50));
    w("rangefinder.000.csv", &range_csv(200));
    let mut ev = harmony::logger::events::line("session-start", format_args!("session={name}"));
    ev.extend(harmony::logger::events::line(
        "state",
        format_args!("proc=gps state=active note=\"ok\""),
    ));
    w("events.log", &ev);
    w(
        "harmony.log",
        b"2026-08-04T12:00:00Z INFO harmony: start\n\tcontinued\n",
    );
    w("manifest.json", &manifest(true));
    s
}

fn run(dir: &Path, args: &[&str]) -> Output {
    harmony(dir, args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn check(dir: &Path, target: &Path, repair: bool) -> Output {
    let t = target.to_str().unwrap();
    if repair {
        run(dir, &["log", "check", "--repair", t])
    } else {
        run(dir, &["log", "check", t])
    }
}

/// A small deterministic random sequence.
struct Lcg(u64);

impl Lcg {
    fn byte(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u8
    }
}

/// Issue #17: a clean session passes, as a session and through its data directory, also by
/// way of `latest`, and `--repair` changes nothing in it.
#[test]
fn a_clean_session_passes() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = session(&data, SESSION);
    symlink(SESSION, data.join("latest")).unwrap();
    // `harmony demo` logs into the data directory itself: still a data directory.
    std::fs::write(data.join("harmony.log"), b"demo\n").unwrap();
    for (target, repair) in [
        (s.clone(), false),
        (data.clone(), false),
        (data.join("latest"), true),
        (data.clone(), true),
    ] {
        let o = check(d.path(), &target, repair);
        assert!(o.status.success(), "{}", text(&o));
        let out = text(&o);
        assert!(out.contains("can.000.log: ok, 300 records"), "{out}");
        assert!(
            out.contains("rangefinder.000.csv: ok, 200 records"),
            "{out}"
        );
        assert!(out.contains("7 files checked: ok"), "{out}");
    }
    assert_eq!(std::fs::read(s.join("can.000.log")).unwrap(), can_text(300));
}

/// Issue #17: `--repair` follows no link. A segment linked to a file outside the data
/// directory, a `.torn` linked outside, a segment hard-linked to an outside file, a FIFO, a
/// session directory that is a link (alone or behind `latest`): every target is left
/// byte for byte as it was, nothing hangs, and the check fails naming each.
#[test]
fn repair_never_follows_links() {
    let d = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = session(&data, SESSION);
    // Outside files that look torn: a followed link would cut or append to them.
    let precious = outside.path().join("precious.log");
    let victim = outside.path().join("victim.torn");
    let hard = outside.path().join("hard.csv");
    let torn_can = [can_text(3), b"(17858".to_vec()].concat();
    std::fs::write(&precious, &torn_can).unwrap();
    std::fs::write(&victim, b"keep me").unwrap();
    std::fs::write(&hard, [range_csv(3), b"12.5,20".to_vec()].concat()).unwrap();
    let before = |p: &Path| std::fs::read(p).unwrap();
    let (p0, v0, h0) = (before(&precious), before(&victim), before(&hard));

    std::fs::remove_file(s.join("can.000.log")).unwrap();
    symlink(&precious, s.join("can.000.log")).unwrap();
    // A real torn segment whose .torn is a link outside.
    let nmea_torn = [before(&s.join("gps.000.nmea")), b"$GPGGA,12".to_vec()].concat();
    std::fs::write(s.join("gps.000.nmea"), &nmea_torn).unwrap();
    symlink(&victim, s.join("gps.000.nmea.torn")).unwrap();
    std::fs::remove_file(s.join("rangefinder.000.csv")).unwrap();
    std::fs::hard_link(&hard, s.join("rangefinder.000.csv")).unwrap();
    std::fs::remove_file(s.join("harmony.log")).unwrap();
    nix::unistd::mkfifo(
        &s.join("harmony.log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();

    let t0 = Instant::now();
    let o = check(d.path(), &s, true);
    let out = text(&o);
    assert!(t0.elapsed() < secs(20), "a FIFO must not block the check");
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("can.000.log: FAILED: is a symbolic link: not followed"),
        "{out}"
    );
    assert!(
        out.contains("gps.000.nmea.torn: is a symbolic link: not followed: not repaired"),
        "{out}"
    );
    assert!(
        out.contains("rangefinder.000.csv: FAILED: has 2 hard links"),
        "{out}"
    );
    assert!(out.contains("harmony.log: FAILED: is a FIFO"), "{out}");
    assert_eq!(before(&precious), p0, "the link's target is untouched");
    assert_eq!(before(&victim), v0, "the .torn link's target is untouched");
    assert_eq!(before(&hard), h0, "the hard link's other name is untouched");
    assert_eq!(
        before(&s.join("gps.000.nmea")),
        nmea_torn,
        "not cut when its bytes cannot be kept aside"
    );

    // The session directory itself as a link: refused with --repair, by name or in a data dir.
    let other = outside.path().join(SESSION);
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("can.000.log"), &torn_can).unwrap();
    let data2 = d.path().join("data2");
    std::fs::create_dir(&data2).unwrap();
    symlink(&other, data2.join(SESSION)).unwrap();
    symlink(&other, data2.join("elsewhere")).unwrap();
    let o = check(d.path(), &data2.join(SESSION), true);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = check(d.path(), &data2, true);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("is a symbolic link: not followed"),
        "{}",
        text(&o)
    );
    // `latest` may only name a session in its own directory.
    symlink("elsewhere", data2.join("latest")).unwrap();
    let o = check(d.path(), &data2.join("latest"), true);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("may only be `latest`"), "{}", text(&o));
    std::fs::remove_file(data2.join("latest")).unwrap();
    symlink(SESSION, data2.join("latest")).unwrap();
    let o = check(d.path(), &data2.join("latest"), true);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(before(&other.join("can.000.log")), torn_can);
    assert_eq!(before(&precious), p0);
}

/// Issue #17: 64 random bytes in the middle of a CAN file fail the check (also when they are
/// printable, so not only UTF-8 catches them), with the line numbers; the lines after them
/// are all still checked.
#[test]
fn random_bytes_in_the_middle_fail_the_check() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = session(&data, SESSION);
    let good = can_text(300);
    // Inside line 151 (each line is shorter than 64 bytes, so the middle of one).
    let at = good
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(149)
        .unwrap()
        .0
        + 20;
    let mut rng = Lcg(17);
    let random: Vec<u8> = (0..64).map(|_| rng.byte()).collect();
    let printable: Vec<u8> = (0..64).map(|_| b'!' + rng.byte() % 90).collect();
    for (what, junk) in [("random", &random), ("printable", &printable)] {
        let mut bad = good.clone();
        bad.splice(at..at, junk.iter().copied());
        // And a second bad line far after the first: the scan goes on.
        let late = bad.len() - 200;
        bad.splice(late..late, *b"\xff\xfe\n");
        std::fs::write(s.join("can.000.log"), &bad).unwrap();
        let o = check(d.path(), &s, false);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {out}");
        assert!(out.contains("can.000.log:151: CORRUPT"), "{what}: {out}");
        let corrupt = out.matches("can.000.log:").count();
        assert!(corrupt >= 2, "{what}: {out}");
        assert!(!out.contains("can.000.log: ok"), "{what}: {out}");
        // The --repair does not "repair" corruption away.
        let o = check(d.path(), &s, true);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", text(&o));
        assert_eq!(std::fs::read(s.join("can.000.log")).unwrap(), bad);
    }
}

/// Issue #17: a 1 MiB line does not hide the lines after it: it is an error, every later
/// line is checked (a bad one 200 lines on is found at its right number) and counted.
#[test]
fn a_huge_line_does_not_hide_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = session(&data, SESSION);
    let mut v = can_text(10);
    v.extend(std::iter::repeat_n(b'7', 1 << 20));
    v.push(b'\n');
    for i in 0..300 {
        if i == 200 {
            v.extend_from_slice(b"(1785844800.000000) can0 123#XYZ\n");
        }
        v.extend(can_line(i));
    }
    std::fs::write(s.join("can.000.log"), &v).unwrap();
    let o = check(d.path(), &s, false);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("can.000.log:11: CORRUPT: line of 1048576 bytes"),
        "{out}"
    );
    assert!(out.contains("can.000.log:212: CORRUPT: bad data"), "{out}");
    assert_eq!(out.matches("CORRUPT").count(), 2, "{out}");
}

/// Issue #17: near the end of a file `--repair` cuts the torn tail only: a bad line and a
/// 1 MiB line followed by five valid frames stay (reported), the frames stay, the cut bytes
/// are in `.torn`. (Before, the long line shifted the line numbers and the five frames were
/// taken for a torn tail and cut.)
#[test]
fn repair_cuts_only_the_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = session(&data, SESSION);
    let mut v = can_text(100);
    v.extend_from_slice(b"(1785844800.000000) can0 12\n");
    v.extend(std::iter::repeat_n(b'A', 1 << 20));
    v.push(b'\n');
    v.extend((100..105).flat_map(can_line));
    let whole = v.len();
    v.extend_from_slice(b"(1785844801.0");
    std::fs::write(s.join("can.000.log"), &v).unwrap();
    let o = check(d.path(), &s, true);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "corruption stays: {out}");
    assert!(out.contains("can.000.log:101: CORRUPT"), "{out}");
    assert!(out.contains("can.000.log:102: CORRUPT: line of"), "{out}");
    assert!(
        out.contains(&format!(
            "torn tail of 13 bytes at offset {whole} (cut; kept in .torn)"
        )),
        "{out}"
    );
    assert_eq!(std::fs::read(s.join("can.000.log")).unwrap(), v[..whole]);
    assert_eq!(
        std::fs::read(s.join("can.000.log.torn")).unwrap(),
        b"(1785844801.0"
    );
    // A valid-looking last line without its newline is torn too (it may be cut short).
    std::fs::write(s.join("rangefinder.000.csv"), {
        let mut r = range_csv(20);
        r.pop();
        r
    })
    .unwrap();
    let o = check(d.path(), &s.join(""), true);
    let out = text(&o);
    assert!(out.contains("rangefinder.000.csv: torn tail"), "{out}");
    assert_eq!(
        std::fs::read(s.join("rangefinder.000.csv")).unwrap(),
        range_csv(19)
    );
}

/// Issue #17: every format is checked line by line: a bad line in each is reported with its
/// number, and non-UTF-8 does not end the scan.
#[test]
fn every_format_is_checked() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = session(&data, SESSION);
    let w = |f: &str, b: Vec<u8>| std::fs::write(s.join(f), b).unwrap();
    let gga = nmea("GPGGA,120000.00,4807.0380,N,01131.3240,E,1,08,0.9,545.4,M,46.9,M,,");
    w(
        "gps.000.nmea",
        [
            gga.as_bytes(),
            b"junk",
            gga.as_bytes(),
            b"$GPGGA,120000.00,4807.0380,N*00\r\n",
            "$GPGGA,12é000.00*00\r\n".as_bytes(),
            gga.as_bytes(),
        ]
        .concat(),
    );
    let mut fix = fix_csv(5);
    let row = |alt: &str| {
        format!("10.0,2026-08-04T12:00:00.000000Z,,48.1,11.5,{alt},gps,8,0.9,,\n").into_bytes()
    };
    fix.extend(row("inf"));
    fix.extend(row("1e308"));
    fix.extend(b"10.0,\xff\n");
    fix.extend(row("12.5"));
    w("gps-fix.000.csv", fix);
    let mut range = range_csv(5);
    range.extend(b"1.0,2026-08-04T12:00:00.000000Z,NaN,1,ok\n");
    range.extend(b"1.0,2026-08-04T12:00:00.000000Z,1.0,1,ok,extra\n");
    range.extend(&range_csv(2)[RANGE_HEADER.len() + 1..]);
    w("rangefinder.000.csv", range);
    let mut ev = std::fs::read(s.join("events.log")).unwrap();
    ev.extend(b"2026-08-04T12:00:00Z mono=x state\n");
    ev.extend(b"2026-08-04T12:00:00.000000Z mono=1.0 state proc=\x1b[2J\n");
    ev.extend(harmony::logger::events::line("state", format_args!("a=b")));
    w("events.log", ev);
    w("harmony.log", b"ok\n\0\0\0\0\nok\n".to_vec());
    let mut m = manifest(true);
    m.extend(b"}garbage");
    w("manifest.json", m);
    let o = check(d.path(), &s, false);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for want in [
        "gps.000.nmea:2: CORRUPT",
        "gps.000.nmea:3: CORRUPT",
        "gps.000.nmea:4: CORRUPT",
        "gps-fix.000.csv:7: CORRUPT: alt_msl_m is not a finite number",
        "gps-fix.000.csv:8: CORRUPT: alt_msl_m is not a finite number",
        "gps-fix.000.csv:9: CORRUPT: not UTF-8",
        "rangefinder.000.csv:7: CORRUPT: distance_m \"NaN\"",
        "rangefinder.000.csv:8: CORRUPT: expected 5 fields",
        "events.log:3: CORRUPT",
        "events.log:4: CORRUPT: control byte 0x1b",
        "harmony.log:2: CORRUPT: control byte 0x00",
        "manifest.json:",
        "CORRUPT: not JSON",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    assert_eq!(out.matches("CORRUPT").count(), 12, "{out}");
}

/// Issue #17: a directory that does not exist is an error with a non-zero exit for `check`,
/// `ls`, `export`, `plot` and `tail`; a session without `events.log` or `manifest.json`
/// fails the check naming what is missing; an open manifest is a warning only.
#[test]
fn missing_input_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let nowhere = d.path().join("nowhere");
    let n = nowhere.to_str().unwrap();
    for args in [
        vec!["log", "check", n],
        vec!["log", "check", "--repair", n],
        vec!["log", "--data-dir", n, "ls"],
        vec!["log", "--data-dir", n, "export", "--gpx"],
        vec!["log", "export", "--gpx", "--session", n],
        vec!["log", "--data-dir", n, "plot"],
        vec!["log", "plot", "--session", n],
        vec!["log", "--data-dir", n, "tail", "can"],
    ] {
        let o = run(d.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("nowhere"), "{args:?}: {}", text(&o));
    }
    // A directory that is neither a session nor a data directory.
    std::fs::create_dir(d.path().join("empty")).unwrap();
    let o = check(d.path(), &d.path().join("empty"), false);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let data = d.path().join("data");
    let s = session(&data, SESSION);
    std::fs::remove_file(s.join("events.log")).unwrap();
    std::fs::remove_file(s.join("manifest.json")).unwrap();
    for target in [&s, &data] {
        let o = check(d.path(), target, false);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(out.contains("events.log: FAILED: MISSING"), "{out}");
        assert!(out.contains("manifest.json: FAILED: MISSING"), "{out}");
    }
    // A crashed run: events.log and an open manifest; a warning, the check passes.
    std::fs::write(
        s.join("events.log"),
        harmony::logger::events::line("session-start", format_args!("x=1")),
    )
    .unwrap();
    std::fs::write(s.join("manifest.json"), manifest(false)).unwrap();
    let o = check(d.path(), &s, false);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("manifest.json: WARNING: not closed"),
        "{}",
        text(&o)
    );
    // Nothing to export or plot in a session without those files.
    for f in ["gps-fix.000.csv", "rangefinder.000.csv"] {
        std::fs::remove_file(s.join(f)).unwrap();
    }
    let ss = s.to_str().unwrap();
    let o = run(d.path(), &["log", "export", "--gpx", "--session", ss]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // The plot draws the CAN load too (issue #13): without CAN frames as well, nothing.
    for f in harmony::logger::segments(&s, harmony::logger::CAN) {
        std::fs::remove_file(f).unwrap();
    }
    let o = run(d.path(), &["log", "plot", "--session", ss]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// Issue #17: `plot` and `export` finish in bounded time on any value: inf, NaN, ±1e308,
/// 3e38 and 200,000 rows; the SVG stays small (downsampled per pixel column) and the GPX
/// holds no inf or NaN.
#[test]
fn plot_and_export_finish_on_any_value() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = session(&data, SESSION);
    let rows = 200_000;
    let mut range = range_csv(rows);
    let mut fix = fix_csv(100);
    for v in ["inf", "-inf", "NaN", "1e308", "-1e308", "3e38", "-3e38"] {
        range.extend(format!("12.0,2026-08-04T12:00:00.000000Z,{v},1,ok\n").bytes());
        range.extend(format!("{v},2026-08-04T12:00:00.000000Z,1.0,1,ok\n").bytes());
        fix.extend(
            format!("12.0,2026-08-04T12:00:00.000000Z,,48.1,11.5,{v},gps,8,0.9,,\n").bytes(),
        );
        fix.extend(format!("12.0,2026-08-04T12:00:00.000000Z,,{v},11.5,1.0,gps,8,{v},,\n").bytes());
    }
    std::fs::write(s.join("rangefinder.000.csv"), &range).unwrap();
    std::fs::write(s.join("gps-fix.000.csv"), &fix).unwrap();
    let svg = d.path().join("flight.svg");
    let gpx = d.path().join("track.gpx");
    let ss = s.to_str().unwrap();
    for (args, out) in [
        (
            vec!["log", "plot", "--session", ss, "-o", svg.to_str().unwrap()],
            &svg,
        ),
        (
            vec![
                "log",
                "export",
                "--gpx",
                "--session",
                ss,
                "-o",
                gpx.to_str().unwrap(),
            ],
            &gpx,
        ),
    ] {
        let log = d.path().join("out.txt");
        let mut child = KillOnDrop(
            harmony(d.path(), &args)
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::from(
                    std::fs::File::create(d.path().join("err.txt")).unwrap(),
                ))
                .spawn()
                .unwrap(),
        );
        let t0 = Instant::now();
        let status = wait_exit(&mut child, secs(60));
        let said = format!(
            "{}{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(d.path().join("err.txt")).unwrap_or_default()
        );
        assert!(status.is_some(), "{args:?} did not finish in 60 s");
        assert!(status.unwrap().success(), "{args:?}: {said}");
        eprintln!("{args:?}: {:?}: {said}", t0.elapsed());
        assert!(said.contains("rows skipped"), "{said}");
        assert!(out.exists());
    }
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg_text.len() < 512 * 1024,
        "{} bytes of SVG for {rows} rows",
        svg_text.len()
    );
    let g = std::fs::read_to_string(&gpx).unwrap().to_ascii_lowercase();
    assert_eq!(g.matches("<trkpt").count(), 100 + 2, "{g}");
    assert!(!g.contains("inf") && !g.contains("nan"), "{g}");
}

/// Runs `harmony log tail --follow` as a shell would for a foreground job: the signals it
/// is about at their default action (a test runner may have been started with them ignored).
fn spawn_tail(dir: &Path, data: &Path, out: &Path) -> KillOnDrop {
    let mut c = harmony(
        dir,
        &[
            "log",
            "--data-dir",
            data.to_str().unwrap(),
            "tail",
            "can",
            "--follow",
            "-n",
            "2",
        ],
    );
    c.stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null());
    unsafe {
        c.pre_exec(|| {
            use nix::sys::signal::{SigHandler, signal};
            for s in [Sig::SIGINT, Sig::SIGTERM, Sig::SIGHUP] {
                signal(s, SigHandler::SigDfl).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    KillOnDrop(c.spawn().unwrap())
}

/// Issue #17: `harmony log tail --follow` ends on SIGINT, SIGHUP and SIGTERM (the firmware's
/// handlers are for `run` and `demo` only), after following what was appended.
#[test]
fn tail_follow_exits_on_signals() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = session(&data, SESSION);
    for (i, sig) in [Sig::SIGINT, Sig::SIGHUP, Sig::SIGTERM]
        .into_iter()
        .enumerate()
    {
        let out = d.path().join(format!("tail-{sig}.txt"));
        let mut child = spawn_tail(d.path(), &data, &out);
        let read = || std::fs::read(&out).unwrap_or_default();
        // The file's last two lines: each round appends one (1000, 1001, ...).
        let last_two = [[298, 299], [299, 1000], [1000, 1001]][i]
            .map(can_line)
            .concat();
        assert!(
            wait_until(secs(10), || read() == last_two),
            "{sig}: {:?}",
            String::from_utf8_lossy(&read())
        );
        let appended = can_line(1000 + i as u64);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(s.join("can.000.log"))
            .unwrap();
        f.write_all(&appended).unwrap();
        assert!(
            wait_until(secs(10), || read().ends_with(&appended)),
            "{sig}: follows"
        );
        std::thread::sleep(Duration::from_millis(100));
        send_signal(&child, sig);
        let status = wait_exit(&mut child, secs(5));
        assert!(
            status.is_some(),
            "{sig}: still running 5 s after the signal"
        );
        assert_eq!(status.unwrap().signal(), Some(sig as i32), "{sig}");
    }
}

fn state_file(run: &Path, proc: &str) -> std::collections::BTreeMap<String, String> {
    harmony::control::state_files::read_state_file(&harmony::control::state_files::state_path(
        run, proc,
    ))
    .map(|m| m.into_iter().collect())
    .unwrap_or_default()
}

/// Issue #17: a capture with non-ASCII bytes and invalid UTF-8 does not panic the firmware:
/// `harmony run` with such a simulated GPS keeps running with the simulator never restarted,
/// logs exactly the valid sentences, stops cleanly, and its session passes `log check`.
#[test]
fn non_ascii_capture_does_not_panic_the_firmware() {
    let d = tempfile::tempdir().unwrap();
    let (data, run_dir) = (d.path().join("data"), d.path().join("run"));
    let good = |t: &str| {
        nmea(&format!(
            "GPGGA,{t},4807.0380,N,01131.3240,E,1,08,0.9,545.4,M,46.9,M,,"
        ))
    };
    let mut capture = Vec::new();
    capture.extend_from_slice(good("120000.00").as_bytes());
    capture.extend_from_slice("$Gé GA,120000.00,x*00\r\n".as_bytes());
    capture.extend_from_slice("$GPGGA,1é0001.00,4807.0380,N*00\r\n".as_bytes());
    capture.extend_from_slice(b"$GPRMC,12\xff\xfe01.00,A*00\r\n\xc3\r\n\xff\n");
    capture.extend_from_slice("$GPGLL,4807.0380,N,01131.3240,E,éé0001.00,A*00\r\n".as_bytes());
    capture.extend_from_slice(good("120001.00").as_bytes());
    capture.extend_from_slice(good("120002.00").as_bytes());
    let cap = d.path().join("capture.nmea");
    std::fs::write(&cap, &capture).unwrap();
    let board = d.path().join("board.toml");
    std::fs::write(
        &board,
        format!(
            "[board]\nname = \"t\"\ndata_dir = \"{}\"\nrun_dir = \"{}\"\n\
             [gps]\nbaud = 115200\n[gps.sim]\ncapture = \"{}\"\nspeed = 4.0\nloop = false\n",
            data.display(),
            run_dir.display(),
            cap.display()
        ),
    )
    .unwrap();
    let mut child = spawn_harmony(d.path(), &["run", "--board", board.to_str().unwrap()]);
    assert!(
        wait_until(secs(30), || state_file(&run_dir, "gps-sim")
            .get("note")
            .is_some_and(|n| n == "capture finished")),
        "{}",
        stderr_of(d.path())
    );
    // The counters reach the state files about once a second.
    let sentences = || {
        state_file(&run_dir, "gps")
            .get("metric.sentences")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(secs(10), || sentences() >= 3),
        "{}",
        stderr_of(d.path())
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "{}",
        stderr_of(d.path())
    );
    let sim = state_file(&run_dir, "gps-sim");
    assert_eq!(
        sim.get("restarts").map(String::as_str),
        Some("0"),
        "{sim:?}"
    );
    assert_eq!(sim.get("errors").map(String::as_str), Some("0"), "{sim:?}");
    send_signal(&child, Sig::SIGTERM);
    let status = wait_exit(&mut child, secs(10)).expect("stops");
    assert!(status.success(), "{}", stderr_of(d.path()));
    let session = harmony::logger::session::list_sessions(&data)
        .unwrap()
        .pop()
        .unwrap();
    let logged = std::fs::read(session.join("gps.000.nmea")).unwrap();
    let want = [good("120000.00"), good("120001.00"), good("120002.00")].concat();
    assert_eq!(String::from_utf8_lossy(&logged), want);
    let o = check(d.path(), &session, false);
    assert!(o.status.success(), "{}", text(&o));
}
