//! The concurrency framework's behaviour (issue #2): stop propagation, waiting groups,
//! supervision policies, named signals and the worker pool. Issue #14: the tree tests run twice,
//! with the children as threads and as processes (each child a process of this test binary,
//! re-executed and built by name by the builders below).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{secs, wait_until};
use harmony::concurrency::process::{Build, BuildFn};
use harmony::concurrency::{
    BoxError, Child, Context, Flag, FnLoop, LoopConfig, LoopProcessor, Multitasking, Outcome,
    Policy, ProcState, Processor, Registry, RestartPolicy, Runner, Step, StopReason, WorkerPool,
    run_tree,
};

/// The subtrees this binary's child processes build.
const BUILDERS: &[(&str, BuildFn)] = &[
    ("probe", build_probe),
    ("mid", build_mid),
    ("low", build_low),
    ("counter", build_counter),
    ("crasher", build_crasher),
    ("flaky", build_flaky),
    ("ticker", build_ticker),
];

/// Not a test: the entry point of this binary's child processes (issue #14). Run without
/// `HARMONY_CHILD` it returns at once.
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

/// Runs `f` once with the children as threads and once as processes.
macro_rules! both_ways {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn threads() {
                super::$name(harmony::concurrency::Multitasking::Threads);
            }
            #[test]
            fn processes() {
                super::$name(harmony::concurrency::Multitasking::Processes);
            }
        }
    )*};
}

both_ways!(
    leaf_stop_propagates_through_three_levels,
    waiting_group_pauses_exactly_its_members,
    panic_under_stop_all_policy_stops_the_tree,
    panic_under_restart_policy_restarts_then_stops_all,
    restart_policy_recovers_a_flaky_child,
    loop_errors_are_counted_until_the_budget_is_spent,
    named_signal_reaches_the_named_processor_only,
);

fn mode_str(m: Multitasking) -> &'static str {
    match m {
        Multitasking::Threads => "threads",
        Multitasking::Processes => "processes",
    }
}

/// A builder argument: `|`-separated fields.
fn field<'a>(b: &'a Build<'_>, i: usize) -> &'a str {
    b.arg().split('|').nth(i).unwrap_or("")
}

fn mode_of(s: &str) -> Multitasking {
    if s == "processes" {
        Multitasking::Processes
    } else {
        Multitasking::Threads
    }
}

/// A file the processors of a test append lines to (threads and processes alike).
struct Log(PathBuf);

impl Log {
    fn new(dir: &Path) -> Self {
        let p = dir.join("hooks.log");
        std::fs::write(&p, "").unwrap();
        Log(p)
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|s| s.strip_prefix(prefix).map(str::to_owned))
            .collect()
    }
}

fn append(path: &str, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    // One write call: lines from several processes do not interleave.
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// Records its hooks; optionally asks for stop-all after a delay.
struct Probe {
    name: String,
    log: String,
    stop_all_after: Option<Duration>,
}

fn build_probe(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    Ok(Box::new(Probe {
        name: b.name().to_owned(),
        log: field(b, 0).to_owned(),
        stop_all_after: field(b, 1).parse().ok().map(Duration::from_millis),
    }))
}

impl Processor for Probe {
    fn name(&self) -> &str {
        &self.name
    }
    fn before(&mut self, _: &Context) -> Result<(), BoxError> {
        append(&self.log, &format!("before:{}", self.name));
        Ok(())
    }
    fn body(&mut self, ctx: &Context) -> Result<(), BoxError> {
        let t0 = Instant::now();
        while !ctx.should_stop() {
            match self.stop_all_after {
                Some(d) if t0.elapsed() >= d => {
                    ctx.request_stop_all("leaf is done");
                    self.stop_all_after = None;
                }
                Some(d) => ctx.sleep_until(Some(t0 + d)),
                None => ctx.sleep_until(None),
            }
        }
        Ok(())
    }
    fn after(&mut self, _: &Context) -> Result<(), BoxError> {
        append(&self.log, &format!("after:{}", self.name));
        Ok(())
    }
}

fn probe(name: &str, log: &Log) -> Child {
    Child::build_with(name, "probe", &log.arg())
}

/// `mid` = b + low, `low` = c + leaf; args: log | mode | leaf's stop-all delay (ms).
fn build_mid(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    let (log, mode) = (field(b, 0), field(b, 1));
    Ok(Box::new(
        Runner::new("mid")
            .multitasking(mode_of(mode))
            .with_child(Child::build_with("b", "probe", log))
            .with_child(Child::build_with("low", "low", b.arg())),
    ))
}

fn build_low(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    let (log, mode, ms) = (field(b, 0), field(b, 1), field(b, 2));
    Ok(Box::new(
        Runner::new("low")
            .multitasking(mode_of(mode))
            .with_child(Child::build_with("c", "probe", log))
            .with_child(Child::build_with("leaf", "probe", &format!("{log}|{ms}"))),
    ))
}

/// Issue #2, #14: stop requested by a leaf propagates through a three-level tree; every
/// `after` hook ran, in reverse start order. As processes, each runner's children are
/// processes: the leaf is a process three levels below the test.
fn leaf_stop_propagates_through_three_levels(mode: Multitasking) {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    let mid_arg = format!("{}|{}|100", log.arg(), mode_str(mode));
    let mut root = Runner::new("root")
        .multitasking(mode)
        .with_child(probe("a", &log))
        .with_child(Child::build_with("mid", "mid", &mid_arg));

    let registry = Registry::new();
    let t0 = Instant::now();
    let outcome = run_tree(&registry, &mut root);
    assert_eq!(outcome, Outcome::Completed);
    assert!(t0.elapsed() < secs(10));
    assert!(
        matches!(registry.stop_reason(), Some(StopReason::Finished(ref r)) if r.contains("leaf")),
        "{:?}",
        registry.stop_reason()
    );
    assert_eq!(
        log.with_prefix("before:"),
        ["a", "b", "c", "leaf"],
        "ordered start"
    );
    assert_eq!(
        log.with_prefix("after:"),
        ["leaf", "c", "b", "a"],
        "reverse-order stop"
    );
    let names = ["root", "a", "mid", "b", "low", "c", "leaf"];
    assert!(
        wait_until(secs(5), || names.iter().all(|n| registry.find(n).is_some())),
        "every processor, in every process, is in the tree's registry"
    );
    for e in registry.entries() {
        assert_eq!(e.state(), ProcState::Stopped, "{}", e.path);
    }
    if mode == Multitasking::Processes {
        let me = std::process::id();
        for n in ["a", "mid", "b", "low", "c", "leaf"] {
            let s = registry.find(n).unwrap().snapshot();
            assert_eq!(s.pid, 0, "{n}: its process is gone");
        }
        assert_eq!(registry.find("root").unwrap().pid(), me);
    }
}

/// A loop that counts its iterations in the metric `n`.
fn build_counter(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    let l = FnLoop::new(b.name(), move |ctx: &Context| {
        ctx.metric("n").fetch_add(1, Ordering::Relaxed);
        Ok(Step::Continue)
    });
    Ok(Box::new(LoopProcessor::with_config(
        l,
        LoopConfig::every(Duration::from_millis(2)),
    )))
}

fn metric(registry: &Registry, name: &str, m: &str) -> u64 {
    registry
        .find(name)
        .and_then(|e| e.metrics().into_iter().find(|(k, _)| k == m))
        .map_or(0, |(_, v)| v)
}

/// Issue #2, #14: a waiting flag shared by two loops pauses exactly those two (as processes:
/// the group lives in the parent and is mirrored into each child's shared memory).
fn waiting_group_pauses_exactly_its_members(mode: Multitasking) {
    setup();
    let group = Flag::new("pair");
    let mut root = Runner::new("root")
        .multitasking(mode)
        .with_child(Child::build_with("a", "counter", "").in_group(&group))
        .with_child(Child::build_with("b", "counter", "").in_group(&group))
        .with_child(Child::build_with("c", "counter", ""));
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));

    let state = |n: &str| registry.find(n).map(|e| e.state());
    assert!(wait_until(secs(10), || ["a", "b", "c"]
        .iter()
        .all(|n| state(n) == Some(ProcState::Active))));
    group.set();
    assert!(wait_until(secs(5), || state("a")
        == Some(ProcState::Waiting)
        && state("b") == Some(ProcState::Waiting)));
    assert_eq!(state("c"), Some(ProcState::Active));
    let n = |x: &str| metric(&registry, x, "n");
    let (a0, b0, c0) = (n("a"), n("b"), n("c"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(n("a"), a0, "a is paused");
    assert_eq!(n("b"), b0, "b is paused");
    assert!(n("c") > c0 + 10, "c keeps working");
    assert!(
        registry.group("pair").is_some(),
        "the group is findable by name"
    );
    assert_eq!(
        registry.find("a").unwrap().snapshot().waiting_on,
        ["pair"],
        "the status says why it waits"
    );

    group.clear();
    assert!(wait_until(secs(5), || n("a") > a0 + 10 && n("b") > b0 + 10));
    registry.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
}

/// Panics in its body the first `panics` times it runs (counted in the test's log file, so
/// runs in new processes count too).
struct Crasher {
    log: String,
    panics: usize,
}

fn build_crasher(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    Ok(Box::new(Crasher {
        log: field(b, 0).to_owned(),
        panics: field(b, 1).parse().unwrap_or(usize::MAX),
    }))
}

impl Processor for Crasher {
    fn name(&self) -> &str {
        "crasher"
    }
    fn body(&mut self, ctx: &Context) -> Result<(), BoxError> {
        let runs = Log(PathBuf::from(&self.log)).with_prefix("run:").len();
        append(&self.log, "run:crasher");
        if runs < self.panics {
            panic!("crash number {}", runs + 1);
        }
        while !ctx.should_stop() {
            ctx.sleep_until(None);
        }
        Ok(())
    }
    fn after(&mut self, _: &Context) -> Result<(), BoxError> {
        append(&self.log, "after:crasher");
        Ok(())
    }
}

fn crasher(log: &Log, panics: usize) -> Child {
    Child::build_with("crasher", "crasher", &format!("{}|{panics}", log.arg()))
}

/// Issue #2, #14: a panicking processor under the default policy stops the whole tree, and
/// every `after` hook runs, the panicking one's included (in its own process, too).
fn panic_under_stop_all_policy_stops_the_tree(mode: Multitasking) {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    let mut root = Runner::new("root")
        .multitasking(mode)
        .with_child(probe("healthy", &log))
        .with_child(crasher(&log, usize::MAX));
    let registry = Registry::new();
    let outcome = run_tree(&registry, &mut root);
    assert!(
        matches!(outcome, Outcome::Failed(ref m) if m.contains("crasher")),
        "{outcome:?}"
    );
    assert!(
        matches!(registry.stop_reason(), Some(StopReason::Failure(ref m)) if m.contains("crash number 1")),
        "{:?}",
        registry.stop_reason()
    );
    assert_eq!(log.with_prefix("run:").len(), 1);
    assert_eq!(registry.find("crasher").unwrap().state(), ProcState::Failed);
    assert_eq!(log.with_prefix("after:"), ["crasher", "healthy"]);
}

fn restart_policy(max: u32) -> Policy {
    Policy::Restart(RestartPolicy {
        max_restarts: max,
        within: Duration::from_secs(30),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
    })
}

/// Issue #2, #14: under the restart policy a panicking child is restarted with backoff, at most
/// N times within T; one more failure stops the whole tree. As a process, each restart is a
/// new process built anew.
fn panic_under_restart_policy_restarts_then_stops_all(mode: Multitasking) {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    let mut root = Runner::new("root")
        .multitasking(mode)
        .policy(restart_policy(3))
        .with_child(probe("healthy", &log))
        .with_child(crasher(&log, usize::MAX));
    let registry = Registry::new();
    let t0 = Instant::now();
    let outcome = run_tree(&registry, &mut root);
    assert!(
        matches!(outcome, Outcome::Failed(ref m) if m.contains("restart limit")),
        "{outcome:?}"
    );
    assert_eq!(log.with_prefix("run:").len(), 4, "first run + 3 restarts");
    assert_eq!(registry.find("crasher").unwrap().restarts(), 3);
    // Backoff 10 + 20 + 40 ms at least.
    assert!(
        t0.elapsed() >= Duration::from_millis(70),
        "{:?}",
        t0.elapsed()
    );
    assert!(matches!(
        registry.stop_reason(),
        Some(StopReason::Failure(_))
    ));
    let afters = log.with_prefix("after:");
    assert_eq!(afters.last().map(String::as_str), Some("healthy"));
    assert_eq!(
        afters.len(),
        5,
        "after ran for each of the 4 crashes and for healthy"
    );
}

/// Issue #2, #14: a child that recovers within the restart limit keeps the tree running.
fn restart_policy_recovers_a_flaky_child(mode: Multitasking) {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    let mut root = Runner::new("root")
        .multitasking(mode)
        .policy(restart_policy(3))
        .with_child(crasher(&log, 2));
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    assert!(wait_until(secs(10), || log.with_prefix("run:").len() == 3
        && registry.find("crasher").map(|e| e.state())
            == Some(ProcState::Active)));
    assert_eq!(registry.find("crasher").unwrap().restarts(), 2);
    assert!(!registry.is_stopping());
    registry.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
}

/// Fails every other iteration; counts iterations in the metric `n`.
fn build_flaky(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    let l = FnLoop::new(b.name(), move |ctx: &Context| -> Result<Step, BoxError> {
        let i = ctx.metric("n").fetch_add(1, Ordering::SeqCst);
        if i.is_multiple_of(2) {
            Err("odd sensor reply".into())
        } else {
            Ok(Step::Continue)
        }
    });
    let cfg = LoopConfig {
        period: Some(Duration::from_millis(1)),
        error_budget: harmony::concurrency::ErrorBudget {
            max: 5,
            window: Duration::from_secs(60),
        },
        ..Default::default()
    };
    Ok(Box::new(LoopProcessor::with_config(l, cfg)))
}

/// Issue #2, #14: a loop whose iterations fail keeps going (errors counted) until its error
/// budget is spent; then it fails.
fn loop_errors_are_counted_until_the_budget_is_spent(mode: Multitasking) {
    setup();
    let mut root = Runner::new("root")
        .multitasking(mode)
        .with_child(Child::build_with("flaky", "flaky", ""));
    let registry = Registry::new();
    let outcome = run_tree(&registry, &mut root);
    assert!(
        matches!(outcome, Outcome::Failed(ref m) if m.contains("error budget")),
        "{outcome:?}"
    );
    let e = registry.find("flaky").unwrap();
    assert_eq!(
        e.errors(),
        6,
        "the 6th error within the window spends a budget of 5"
    );
    assert_eq!(
        metric(&registry, "flaky", "n"),
        11,
        "the loop went on between errors"
    );
}

fn build_ticker(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    Ok(Box::new(LoopProcessor::with_config(
        harmony::demo::Ticker::new(b.name()),
        LoopConfig::every(Duration::from_millis(50)),
    )))
}

/// Issue #2, #14: a named signal reaches exactly the processor it names (in its process's
/// mailbox in shared memory, when it is a process), and a broadcast reaches every processor
/// that accepts it.
fn named_signal_reaches_the_named_processor_only(mode: Multitasking) {
    use harmony::concurrency::{Origin, Signal};
    setup();
    let mut root = Runner::new("root")
        .multitasking(mode)
        .with_child(Child::build_with("t1", "ticker", ""))
        .with_child(Child::build_with("t2", "ticker", ""));
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    assert!(wait_until(secs(10), || ["t1", "t2"].iter().all(|n| {
        registry
            .find(n)
            .is_some_and(|e| e.state() == ProcState::Active)
    })));
    let pings = |n: &str| {
        registry
            .find(n)
            .unwrap()
            .snapshot()
            .metrics
            .get("pings")
            .copied()
            .unwrap_or(0)
    };
    let reached = registry
        .send_signal(Signal::new("ping", Origin::Control).unwrap(), Some("t2"))
        .unwrap();
    assert_eq!(reached, ["root/t2"]);
    assert!(wait_until(secs(5), || pings("t2") == 1));
    assert_eq!(pings("t1"), 0);
    assert!(
        registry
            .send_signal(Signal::new("ping", Origin::Control).unwrap(), Some("root"))
            .is_err(),
        "a runner does not accept ping"
    );
    assert_eq!(
        registry
            .send_signal(Signal::new("ping", Origin::Control).unwrap(), None)
            .unwrap()
            .len(),
        2
    );
    assert!(wait_until(secs(5), || pings("t1") == 1 && pings("t2") == 2));
    registry.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
}

/// Issue #2: the thread-pool seed's own test: a producer pool feeding a consumer pool,
/// 100 items, all 100 counted.
#[test]
fn producer_pool_feeds_consumer_pool_all_100_counted() {
    let total = Arc::new(AtomicU64::new(0));
    let t2 = total.clone();
    let consumers = WorkerPool::unmanaged("consumers", 4, move |_motion: u32| {
        t2.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    let to_consumers = consumers.sender();
    let mut rounds = 0;
    let producers = WorkerPool::managed(
        "producers",
        4,
        Duration::from_secs(10),
        move |tx| {
            rounds += 1;
            assert_eq!(rounds, 1, "one round within the test");
            for i in 0..100 {
                tx.put(i);
            }
            Ok(100)
        },
        move |motion| {
            to_consumers.put(motion);
            Ok(())
        },
    );
    let mut root = Runner::new("root").child(consumers).child(producers);
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    // The seed allows 0.5 s; we wait for the count instead of sleeping.
    assert!(wait_until(secs(5), || total.load(Ordering::SeqCst) >= 100));
    std::thread::sleep(Duration::from_millis(50));
    registry.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    assert_eq!(total.load(Ordering::SeqCst), 100);
    let m = registry.find("consumers").unwrap().snapshot().metrics;
    assert_eq!(m["tasks_done"], 100);
    assert_eq!(m["tasks_panicked"], 0);
}

/// Issue #2: a panicking job does not kill its worker, and a round longer than the interval is
/// reported as an overrun.
#[test]
fn pool_survives_panicking_jobs_and_reports_overruns() {
    let done = Arc::new(AtomicU64::new(0));
    let d2 = done.clone();
    let pool = WorkerPool::managed(
        "pool",
        1,
        Duration::from_millis(20),
        |tx| {
            for i in 0..5u32 {
                tx.put(i);
            }
            Ok(5)
        },
        move |i| {
            if i == 2 {
                panic!("job {i} blew up");
            }
            if i == 4 {
                std::thread::sleep(Duration::from_millis(30));
            }
            d2.fetch_add(1, Ordering::SeqCst);
            Ok(())
        },
    );
    let mut root = Runner::new("root").child(pool);
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    assert!(wait_until(secs(5), || {
        registry
            .find("pool")
            .is_some_and(|e| e.snapshot().metrics.get("rounds").copied().unwrap_or(0) >= 3)
    }));
    registry.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
    let m = registry.find("pool").unwrap().snapshot().metrics;
    assert!(m["tasks_panicked"] >= 3, "{m:?}");
    assert!(
        m["overruns"] >= 3,
        "each 30 ms round overruns the 20 ms interval: {m:?}"
    );
    // One worker did every job: the panics did not kill it.
    assert_eq!(m["tasks_done"], done.load(Ordering::SeqCst));
    assert!(done.load(Ordering::SeqCst) >= 12);
}
