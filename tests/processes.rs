//! Children as processes (issue #14): a producer in a child process crashes (SIGSEGV, abort,
//! SIGKILL) while its records flow through a shared-memory ring to a consumer in this process;
//! every record it published arrives bit-exact, the child is restarted within the intensity
//! limit, the consumer never stops. Also: a child's log lines reach this process's log.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{secs, wait_until};
use harmony::concurrency::process::{Build, BuildFn};
use harmony::concurrency::{
    BoxError, Child, Consumer, Context, Loop, LoopConfig, LoopProcessor, Multitasking, Origin,
    Outcome, Plain, Policy, ProcState, Processor, Producer, Region, Registry, RestartPolicy,
    Runner, Signal, Step, StopReason, run_tree,
};

const BUILDERS: &[(&str, BuildFn)] = &[("numbers", build_numbers), ("chatty", build_chatty)];

/// Not a test: the entry point of this binary's child processes (issue #14).
#[test]
fn child_process_entry() {
    harmony::concurrency::process::child_main_if_requested(BUILDERS);
}

fn setup() {
    harmony::concurrency::process::register_builders(BUILDERS);
    harmony::concurrency::process::set_child_args(&[
        "child_process_entry",
        "--exact",
        "--nocapture",
        "-q",
        "--test-threads=1",
    ]);
}

/// A record with a checksum of its own sequence number and producer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct Num {
    pid: u64,
    seq: u64,
    check: [u64; 4],
}

// SAFETY: integers only.
unsafe impl Plain for Num {}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

impl Num {
    fn new(pid: u64, seq: u64) -> Self {
        let a = mix(pid << 40 ^ seq);
        Num {
            pid,
            seq,
            check: [a, mix(a), mix(a ^ 1), !a],
        }
    }
}

/// Pushes numbered records as fast as a 1 ms tick allows (about 64 000 a second); crashes on
/// the named signal `crash` the way its argument says.
struct Numbers {
    out: Producer<Num>,
    seq: u64,
    pid: u64,
}

fn build_numbers(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    let out = b.producer::<Num>("nums")?;
    Ok(Box::new(LoopProcessor::with_config(
        Numbers {
            out,
            seq: 0,
            pid: std::process::id() as u64,
        },
        LoopConfig::every(Duration::from_millis(1)),
    )))
}

impl Loop for Numbers {
    fn name(&self) -> &str {
        "numbers"
    }
    fn signals(&self) -> Vec<String> {
        vec!["crash".into()]
    }
    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        for _ in 0..64 {
            if self.out.push(Num::new(self.pid, self.seq)) {
                self.seq += 1;
            }
        }
        ctx.metric("pushed").store(self.seq, Ordering::Relaxed);
        Ok(Step::Continue)
    }
    fn on_signal(&mut self, sig: &Signal, _ctx: &Context) -> Result<(), BoxError> {
        match sig.arg() {
            // A wild write: the kernel sends SIGSEGV.
            // SAFETY: deliberately not; this is the crash under test.
            "segv" => unsafe { std::ptr::write_volatile(16 as *mut u64, 1) },
            "abort" => std::process::abort(),
            _ => {}
        }
        Ok(())
    }
}

/// Drains the ring in this process and checks every record: per producer process, sequence
/// numbers from 0 without a gap, checksums intact.
struct Sink {
    input: Consumer<Num>,
    next: HashMap<u64, u64>,
}

impl Loop for Sink {
    fn name(&self) -> &str {
        "sink"
    }
    fn before(&mut self, ctx: &Context) -> Result<(), BoxError> {
        self.input.set_waker(ctx.waker());
        Ok(())
    }
    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        let (mut n, mut bad, mut gaps) = (0, 0, 0);
        while let Some(r) = self.input.pop() {
            n += 1;
            if r != Num::new(r.pid, r.seq) {
                bad += 1;
            }
            let want = self.next.entry(r.pid).or_insert(0);
            if r.seq != *want {
                gaps += 1;
            }
            *want = r.seq + 1;
        }
        ctx.metric("received").fetch_add(n, Ordering::Relaxed);
        ctx.metric("bad").fetch_add(bad, Ordering::Relaxed);
        ctx.metric("gaps").fetch_add(gaps, Ordering::Relaxed);
        ctx.metric("incarnations")
            .store(self.next.len() as u64, Ordering::Relaxed);
        ctx.metric("accepted")
            .store(self.input.accepted(), Ordering::Relaxed);
        ctx.metric("dropped")
            .store(self.input.dropped(), Ordering::Relaxed);
        if n > 0 || !self.input.sleep_ready() {
            return Ok(Step::Continue);
        }
        Ok(Step::Idle)
    }
    fn after(&mut self, ctx: &Context) -> Result<(), BoxError> {
        // What was accepted before the stop is drained too.
        self.work(ctx).map(|_| ())
    }
}

fn metric(registry: &Registry, name: &str, m: &str) -> u64 {
    registry
        .find(name)
        .and_then(|e| e.metrics().into_iter().find(|(k, _)| k == m))
        .map_or(0, |(_, v)| v)
}

enum Crash {
    Segv,
    Abort,
    Kill,
}

fn crash_while_records_flow(how: Crash, cause: &str) {
    setup();
    let region = Region::builder("numbers")
        .ring::<Num>("nums", 1 << 16)
        .build()
        .unwrap();
    let input = region.consumer::<Num>("nums").unwrap();
    let mut root = Runner::new("root")
        .policy(Policy::Restart(RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
        }))
        .child(LoopProcessor::new(Sink {
            input,
            next: HashMap::new(),
        }))
        .with_child(
            Child::build("numbers")
                .mode(Multitasking::Processes)
                .region(region),
        );
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    let got = |m: &str| metric(&registry, "sink", m);
    let sink_ok = || registry.find("sink").unwrap().state() == ProcState::Active;

    assert!(
        wait_until(secs(10), || got("received") > 5_000),
        "records flow"
    );
    let numbers = registry.find("numbers").unwrap();
    let pid0 = numbers.pid();
    assert_ne!(pid0, 0);
    assert_ne!(pid0, std::process::id(), "the producer is another process");
    match how {
        Crash::Segv | Crash::Abort => {
            let arg = if matches!(how, Crash::Segv) {
                "segv"
            } else {
                "abort"
            };
            let sig = Signal::with_arg("crash", arg, Origin::Control).unwrap();
            registry.send_signal(sig, Some("numbers")).unwrap();
        }
        Crash::Kill => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap(),
    }
    let t0 = Instant::now();
    let mut sink_active = true;
    assert!(
        wait_until(secs(10), || {
            sink_active &= sink_ok();
            numbers.restarts() == 1 && numbers.state() == ProcState::Active
        }),
        "restarted: {:?} {}",
        numbers.state(),
        numbers.note()
    );
    assert!(
        numbers.note().contains(cause),
        "the exit cause is shown: {}",
        numbers.note()
    );
    let pid1 = numbers.pid();
    assert!(pid1 != 0 && pid1 != pid0, "a new process: {pid0} -> {pid1}");
    let after_restart = got("received");
    assert!(
        wait_until(secs(10), || {
            sink_active &= sink_ok();
            got("incarnations") == 2 && got("received") > after_restart + 5_000
        }),
        "records flow again from the new process"
    );
    assert!(sink_active, "the consumer never stopped");
    assert_eq!(registry.find("sink").unwrap().restarts(), 0);
    assert!(!registry.is_stopping(), "within the intensity limit");
    eprintln!("restart took {:?}", t0.elapsed());

    registry.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    assert_eq!(got("bad"), 0, "every record bit-exact");
    assert_eq!(
        got("gaps"),
        0,
        "no record missing in either process's sequence"
    );
    assert_eq!(got("dropped"), 0);
    assert_eq!(
        got("received"),
        got("accepted"),
        "every record published before (and after) the crash arrived"
    );
}

/// Issue #14: a producer process killed by SIGSEGV while records flow loses none it published;
/// it is restarted; the consumer never stopped.
#[test]
fn producer_crashing_with_sigsegv_loses_no_published_record() {
    crash_while_records_flow(Crash::Segv, "SIGSEGV");
}

/// Issue #14: the same with an abort.
#[test]
fn producer_aborting_loses_no_published_record() {
    crash_while_records_flow(Crash::Abort, "SIGABRT");
}

/// Issue #14: the same with SIGKILL from outside (`kill -9`, the OOM killer).
#[test]
fn producer_killed_with_sigkill_loses_no_published_record() {
    crash_while_records_flow(Crash::Kill, "SIGKILL");
}

/// Logs a line with a marker, then idles.
fn build_chatty(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    struct Chatty(String);
    impl Processor for Chatty {
        fn name(&self) -> &str {
            "chatty"
        }
        fn body(&mut self, ctx: &Context) -> Result<(), BoxError> {
            log::warn!("hello from {} in pid {}", self.0, std::process::id());
            while !ctx.should_stop() {
                ctx.sleep_until(None);
            }
            Ok(())
        }
    }
    Ok(Box::new(Chatty(b.arg().to_owned())))
}

static LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct Collect;
impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        LINES.lock().unwrap().push(format!("{}", r.args()));
    }
    fn flush(&self) {}
}

/// Issue #14: a child process's log records reach this process's log (one application log).
#[test]
fn child_log_lines_reach_the_parents_log() {
    setup();
    let _ = log::set_boxed_logger(Box::new(Collect));
    log::set_max_level(log::LevelFilter::Info);
    let mut root = Runner::new("root").with_child(
        Child::build_with("chatty", "chatty", "marker-7f3a").mode(Multitasking::Processes),
    );
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    let child_pid = || registry.find("chatty").map_or(0, |e| e.pid());
    assert!(wait_until(secs(10), || {
        LINES
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("hello from marker-7f3a"))
    }));
    let line = LINES
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("marker-7f3a"))
        .cloned()
        .unwrap();
    assert!(
        line.contains(&format!("pid {}", child_pid())),
        "it came from the child: {line}"
    );
    registry.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
}
