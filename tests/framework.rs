//! The concurrency framework's behaviour (issue #2): stop propagation, waiting groups,
//! supervision policies and the worker pool, driven in-process.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{secs, wait_until};
use harmony::concurrency::{
    BoxError, Child, Context, Flag, FnLoop, LoopConfig, LoopProcessor, Outcome, Policy, ProcState,
    Processor, Registry, RestartPolicy, Runner, Step, StopReason, WorkerPool, run_tree,
};

type Log = Arc<Mutex<Vec<String>>>;

/// Records its hooks; optionally asks for stop-all after a delay.
struct Probe {
    name: String,
    log: Log,
    stop_all_after: Option<Duration>,
}

impl Probe {
    fn new(name: &str, log: &Log) -> Self {
        Probe {
            name: name.into(),
            log: log.clone(),
            stop_all_after: None,
        }
    }
}

impl Processor for Probe {
    fn name(&self) -> &str {
        &self.name
    }
    fn before(&mut self, _: &Context) -> Result<(), BoxError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("before:{}", self.name));
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
        self.log
            .lock()
            .unwrap()
            .push(format!("after:{}", self.name));
        Ok(())
    }
}

fn afters(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.strip_prefix("after:").map(str::to_owned))
        .collect()
}

/// Issue #2: stop requested by a leaf propagates through a three-level tree; every `after`
/// hook ran, in reverse start order.
#[test]
fn leaf_stop_propagates_through_three_levels() {
    let log: Log = Arc::default();
    let mut leaf = Probe::new("leaf", &log);
    leaf.stop_all_after = Some(Duration::from_millis(100));
    let low = Runner::new("low").child(Probe::new("c", &log)).child(leaf);
    let mid = Runner::new("mid").child(Probe::new("b", &log)).child(low);
    let mut root = Runner::new("root").child(Probe::new("a", &log)).child(mid);

    let registry = Registry::new();
    let t0 = Instant::now();
    let outcome = run_tree(&registry, &mut root);
    assert_eq!(outcome, Outcome::Completed);
    assert!(t0.elapsed() < secs(5));
    assert!(matches!(registry.stop_reason(), Some(StopReason::Finished(r)) if r.contains("leaf")));
    let befores: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.strip_prefix("before:").map(str::to_owned))
        .collect();
    assert_eq!(befores, ["a", "b", "c", "leaf"], "ordered start");
    assert_eq!(afters(&log), ["leaf", "c", "b", "a"], "reverse-order stop");
    for e in registry.entries() {
        assert_eq!(e.state(), ProcState::Stopped, "{}", e.path);
    }
}

fn counting_loop(
    name: &str,
    period: Duration,
) -> (
    LoopProcessor<impl harmony::concurrency::Loop>,
    Arc<AtomicU64>,
) {
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    let l = FnLoop::new(name, move |_ctx: &Context| {
        n2.fetch_add(1, Ordering::Relaxed);
        Ok(Step::Continue)
    });
    (LoopProcessor::with_config(l, LoopConfig::every(period)), n)
}

/// Issue #2: a waiting flag shared by two loops pauses exactly those two.
#[test]
fn waiting_group_pauses_exactly_its_members() {
    let group = Flag::new("pair");
    let (a, na) = counting_loop("a", Duration::from_millis(2));
    let (b, nb) = counting_loop("b", Duration::from_millis(2));
    let (c, nc) = counting_loop("c", Duration::from_millis(2));
    let mut root = Runner::new("root")
        .with_child(Child::new(a).in_group(&group))
        .with_child(Child::new(b).in_group(&group))
        .child(c);
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));

    let state = |n: &str| registry.find(n).map(|e| e.state());
    assert!(wait_until(secs(5), || ["a", "b", "c"]
        .iter()
        .all(|n| state(n) == Some(ProcState::Active))));
    group.set();
    assert!(wait_until(secs(5), || state("a")
        == Some(ProcState::Waiting)
        && state("b") == Some(ProcState::Waiting)));
    assert_eq!(state("c"), Some(ProcState::Active));
    let (a0, b0, c0) = (
        na.load(Ordering::SeqCst),
        nb.load(Ordering::SeqCst),
        nc.load(Ordering::SeqCst),
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(na.load(Ordering::SeqCst), a0, "a is paused");
    assert_eq!(nb.load(Ordering::SeqCst), b0, "b is paused");
    assert!(nc.load(Ordering::SeqCst) > c0 + 10, "c keeps working");
    assert!(
        registry.group("pair").is_some(),
        "the group is findable by name"
    );

    group.clear();
    assert!(wait_until(secs(5), || na.load(Ordering::SeqCst) > a0 + 10
        && nb.load(Ordering::SeqCst) > b0 + 10));
    registry.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
}

/// A processor that panics in its body the first `panics` times it runs.
struct Crasher {
    runs: Arc<AtomicU64>,
    panics: u64,
    log: Log,
}

impl Processor for Crasher {
    fn name(&self) -> &str {
        "crasher"
    }
    fn body(&mut self, ctx: &Context) -> Result<(), BoxError> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        if n < self.panics {
            panic!("crash number {}", n + 1);
        }
        while !ctx.should_stop() {
            ctx.sleep_until(None);
        }
        Ok(())
    }
    fn after(&mut self, _: &Context) -> Result<(), BoxError> {
        self.log.lock().unwrap().push("after:crasher".into());
        Ok(())
    }
}

/// Issue #2: a panicking processor under the default policy stops the whole tree, and every
/// `after` hook runs, the panicking one's included.
#[test]
fn panic_under_stop_all_policy_stops_the_tree() {
    let log: Log = Arc::default();
    let runs = Arc::new(AtomicU64::new(0));
    let mut root = Runner::new("root")
        .child(Probe::new("healthy", &log))
        .child(Crasher {
            runs: runs.clone(),
            panics: u64::MAX,
            log: log.clone(),
        });
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
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(registry.find("crasher").unwrap().state(), ProcState::Failed);
    assert_eq!(afters(&log), ["crasher", "healthy"]);
}

fn restart_policy(max: u32) -> Policy {
    Policy::Restart(RestartPolicy {
        max_restarts: max,
        within: Duration::from_secs(30),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
    })
}

/// Issue #2: under the restart policy a panicking child is restarted with backoff, at most N
/// times within T; one more failure stops the whole tree.
#[test]
fn panic_under_restart_policy_restarts_then_stops_all() {
    let log: Log = Arc::default();
    let runs = Arc::new(AtomicU64::new(0));
    let mut root = Runner::new("root")
        .policy(restart_policy(3))
        .child(Probe::new("healthy", &log))
        .child(Crasher {
            runs: runs.clone(),
            panics: u64::MAX,
            log: log.clone(),
        });
    let registry = Registry::new();
    let t0 = Instant::now();
    let outcome = run_tree(&registry, &mut root);
    assert!(
        matches!(outcome, Outcome::Failed(ref m) if m.contains("restart limit")),
        "{outcome:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 4, "first run + 3 restarts");
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
    assert_eq!(afters(&log).last().map(String::as_str), Some("healthy"));
    assert_eq!(
        afters(&log).len(),
        5,
        "after ran for each of the 4 crashes and for healthy"
    );
}

/// Issue #2: a child that recovers within the restart limit keeps the tree running.
#[test]
fn restart_policy_recovers_a_flaky_child() {
    let log: Log = Arc::default();
    let runs = Arc::new(AtomicU64::new(0));
    let mut root = Runner::new("root")
        .policy(restart_policy(3))
        .child(Crasher {
            runs: runs.clone(),
            panics: 2,
            log: log.clone(),
        });
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    assert!(wait_until(secs(5), || runs.load(Ordering::SeqCst) == 3
        && registry.find("crasher").map(|e| e.state())
            == Some(ProcState::Active)));
    assert_eq!(registry.find("crasher").unwrap().restarts(), 2);
    assert!(!registry.is_stopping());
    registry.request_stop_all(StopReason::Requested("test".into()));
    assert_eq!(h.join().unwrap(), Outcome::Completed);
}

/// Issue #2: a loop whose iterations fail keeps going (errors counted) until its error budget
/// is spent; then it fails.
#[test]
fn loop_errors_are_counted_until_the_budget_is_spent() {
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    let l = FnLoop::new("flaky", move |_: &Context| -> Result<Step, BoxError> {
        let i = n2.fetch_add(1, Ordering::SeqCst);
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
    let mut root = Runner::new("root").child(LoopProcessor::with_config(l, cfg));
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
        n.load(Ordering::SeqCst),
        11,
        "the loop went on between errors"
    );
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

/// Issue #2: a named signal reaches exactly the processor it names, and a broadcast reaches
/// every processor that accepts it.
#[test]
fn named_signal_reaches_the_named_processor_only() {
    use harmony::concurrency::{Origin, Signal};
    use harmony::demo::Ticker;
    let mut root = Runner::new("root")
        .child(LoopProcessor::with_config(
            Ticker::new("t1"),
            LoopConfig::every(Duration::from_millis(50)),
        ))
        .child(LoopProcessor::with_config(
            Ticker::new("t2"),
            LoopConfig::every(Duration::from_millis(50)),
        ));
    let registry = Registry::new();
    let r2 = registry.clone();
    let h = std::thread::spawn(move || run_tree(&r2, &mut root));
    assert!(wait_until(secs(5), || registry
        .find("t2")
        .is_some_and(|e| e.state() == ProcState::Active)));
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
