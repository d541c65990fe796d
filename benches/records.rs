//! Record-path benchmarks (issue #3). `cargo bench --bench records [queue|cpu]`.
//!
//! * queue: CAN records from a producer thread through the source->sink queue to a consumer
//!   thread that sleeps the way a sink does (eventcount + park), against a bare
//!   crossbeam-channel bounded channel (blocking send / recv) moving the same records, same
//!   run, same capacity.
//! * cpu: the whole firmware (`harmony run`, simulated board) with the CAN replay at 16,000
//!   frames/s, CPU of the process from /proc over 10 s.

#[path = "common/mod.rs"]
mod common;

use std::hint::spin_loop;
use std::time::{Duration, Instant};

use harmony::clock::Stamp;
use harmony::concurrency::queue;
use harmony::concurrency::wake::Waker;
use harmony::records::{CAN_EFF_FLAG, CanRecord};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const N: u64 = 20_000_000;
const CAP: usize = 4096;

fn record(i: u64) -> CanRecord {
    CanRecord {
        stamp: Stamp {
            boot_ns: i,
            wall_ns: i as i64,
        },
        id: CAN_EFF_FLAG | (i as u32 & 0x1fff_ffff),
        len: 8,
        data: i.to_le_bytes(),
    }
}

fn ours() -> f64 {
    let (tx, rx) = queue::<CanRecord>(CAP, "bench");
    let t0 = Instant::now();
    let consumer = std::thread::spawn(move || {
        let w = Waker::for_current();
        rx.set_waker(&w);
        let mut n = 0u64;
        let mut sum = 0u64;
        while n < N {
            match rx.pop() {
                Some(r) => {
                    sum = sum.wrapping_add(r.stamp.boot_ns);
                    n += 1;
                }
                None => {
                    if rx.sleep_ready() {
                        std::thread::park_timeout(Duration::from_millis(10));
                    }
                }
            }
        }
        sum
    });
    for i in 0..N {
        let mut r = record(i);
        loop {
            match tx.try_push(r) {
                Ok(()) => break,
                Err(back) => {
                    r = back;
                    spin_loop();
                }
            }
        }
    }
    let sum = consumer.join().unwrap();
    assert_eq!(sum, (0..N).sum::<u64>());
    N as f64 / t0.elapsed().as_secs_f64()
}

fn crossbeam() -> f64 {
    let (tx, rx) = crossbeam_channel::bounded::<CanRecord>(CAP);
    let t0 = Instant::now();
    let consumer = std::thread::spawn(move || {
        let mut sum = 0u64;
        for _ in 0..N {
            sum = sum.wrapping_add(rx.recv().unwrap().stamp.boot_ns);
        }
        sum
    });
    for i in 0..N {
        tx.send(record(i)).unwrap();
    }
    let sum = consumer.join().unwrap();
    assert_eq!(sum, (0..N).sum::<u64>());
    N as f64 / t0.elapsed().as_secs_f64()
}

fn queue_bench() {
    // Interleave runs; report medians.
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..5 {
        a.push(ours());
        b.push(crossbeam());
    }
    a.sort_by(|x, y| x.partial_cmp(y).unwrap());
    b.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let (ma, mb) = (a[2], b[2]);
    println!(
        "record path (CanRecord {} B, capacity {CAP}, {N} records, median of 5): source->sink queue {:.2} M records/s \
         ({:.1} ns/record); bare crossbeam-channel bounded {:.2} M records/s ({:.1} ns/record); cost ratio {:.2}x",
        std::mem::size_of::<CanRecord>(),
        ma / 1e6,
        1e9 / ma,
        mb / 1e6,
        1e9 / mb,
        mb / ma
    );
}

fn metric(run: &std::path::Path, p: &str, m: &str) -> u64 {
    harmony::control::state_files::read_state_file(&harmony::control::state_files::state_path(
        run, p,
    ))
    .ok()
    .and_then(|s| s.get(&format!("metric.{m}")).and_then(|v| v.parse().ok()))
    .unwrap_or(0)
}

/// CPU of `harmony run` (all its processes) with the board's CAN replay at `fps`; `split`:
/// the sensors in a child process. Returns % of one core and the frames/s measured.
pub fn topology_cpu(extra_board: &str, secs: u64, split: bool) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::spawn_sim_split(dir.path(), extra_board, split);
    let run = dir.path().join("harmony-data/run");
    std::thread::sleep(Duration::from_secs(3));
    let (c0, f0) = (
        common::tree_ticks(child.id()),
        metric(&run, "can", "frames"),
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, f1) = (
        common::tree_ticks(child.id()),
        metric(&run, "can", "frames"),
    );
    let wall = t0.elapsed().as_secs_f64();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    child.wait().unwrap();
    let cpu = (c1 - c0) as f64 / common::clk_tck() / wall * 100.0;
    let fps = (f1 - f0) as f64 / wall;
    assert!(fps > 0.0, "harmony run did not replay CAN (board refused?)");
    (cpu, fps)
}

fn cpu_bench() {
    // Interleaved, median of 3: the Pi's split (sensors in a child process) and all threads.
    let (mut split, mut threads) = (Vec::new(), Vec::new());
    let mut fps = 0.0;
    for _ in 0..3 {
        let (c, f) = topology_cpu("fps = 16000.0\n", 10, true);
        split.push(c);
        fps = f;
        threads.push(topology_cpu("fps = 16000.0\n", 10, false).0);
    }
    let (s, t) = (
        common::percentile(&mut split, 0.5),
        common::percentile(&mut threads, 0.5),
    );
    println!(
        "whole topology, CAN replay at 16,000 frames/s (sim board: GPS 5 Hz, rangefinder 100 Hz, logger, uplink on its simulated radio), \
         10 s, median of 3: sensors in a child process (the Pi's split) {s:.2}% of one core ({fps:.0} frames/s measured); \
         all threads {t:.2}%; ratio {:.2}x",
        s / t
    );
}

fn main() {
    let want = common::wanted();
    if want("queue") {
        queue_bench();
    }
    if want("cpu") {
        cpu_bench();
    }
}
