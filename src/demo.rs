//! A small topology that exercises the framework on its own: ticking loops (some in a waiting
//! group), a producer pool feeding a consumer pool. `harmony demo` runs it; the framework
//! benchmarks (stop latency, idle cost) use it with `--loops N`. With `--processes` the loops'
//! runner is a child process (built by name by [`BUILDERS`]), its loops threads in it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::concurrency::process::{Build, BuildFn};
use crate::concurrency::{
    BoxError, Child, Context, Flag, Loop, LoopConfig, LoopProcessor, Multitasking, Processor,
    Runner, Signal, Step, WorkerPool,
};

/// A loop that counts its ticks and the `ping` signals it receives.
pub struct Ticker {
    name: String,
    /// Hang inside `work` after this long (to exercise the watchdog).
    stall_after: Option<Duration>,
    started: std::time::Instant,
}

impl Ticker {
    pub fn new(name: impl Into<String>) -> Self {
        Ticker {
            name: name.into(),
            stall_after: None,
            started: std::time::Instant::now(),
        }
    }

    /// A ticker that gets stuck in its work after `d` (a hung driver, for watchdog tests).
    pub fn stalling(name: impl Into<String>, d: Duration) -> Self {
        Ticker {
            stall_after: Some(d),
            ..Ticker::new(name)
        }
    }
}

impl Loop for Ticker {
    fn name(&self) -> &str {
        &self.name
    }

    fn signals(&self) -> Vec<String> {
        vec!["ping".into()]
    }

    fn work(&mut self, ctx: &Context) -> Result<Step, BoxError> {
        ctx.metric("ticks").fetch_add(1, Ordering::Relaxed);
        if self
            .stall_after
            .is_some_and(|d| self.started.elapsed() >= d)
        {
            log::warn!("{}: simulating a hang", ctx.path());
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Ok(Step::Continue)
    }

    fn on_signal(&mut self, sig: &Signal, ctx: &Context) -> Result<(), BoxError> {
        if sig.name() == "ping" {
            ctx.metric("pings").fetch_add(1, Ordering::Relaxed);
            log::info!("{}: ping ({:?})", ctx.path(), sig.origin);
        }
        Ok(())
    }
}

/// Options of the demo topology.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Ticking loops; the first two share the waiting group `demo-group`.
    pub loops: usize,
    pub period: Duration,
    /// Add the producer and consumer pools.
    pub pools: bool,
    /// Start with every loop waiting.
    pub start_waiting: bool,
    /// Make `tick-1` hang after this long.
    pub stall_after: Option<Duration>,
    /// Run the loops' runner as a child process.
    pub processes: bool,
}

impl DemoOptions {
    /// The options a child process needs to build the loops (`loops,period_ms,waiting,stall_ms`).
    fn to_arg(&self) -> String {
        format!(
            "{},{},{},{}",
            self.loops,
            self.period.as_millis(),
            self.start_waiting as u8,
            self.stall_after.map_or(0, |d| d.as_millis())
        )
    }

    fn from_arg(a: &str) -> Result<Self, BoxError> {
        let v: Vec<u64> = a
            .split(',')
            .map(|x| x.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("demo-loops argument '{a}': {e}"))?;
        let [loops, period, waiting, stall] = v[..] else {
            return Err(format!("demo-loops argument '{a}': want 4 numbers").into());
        };
        Ok(DemoOptions {
            loops: loops as usize,
            period: Duration::from_millis(period),
            start_waiting: waiting != 0,
            stall_after: (stall > 0).then(|| Duration::from_millis(stall)),
            ..Default::default()
        })
    }
}

/// The demo's subtrees that a child process builds by name.
pub const BUILDERS: &[(&str, BuildFn)] = &[("demo-loops", build_loops)];

fn build_loops(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    Ok(Box::new(loops(&DemoOptions::from_arg(b.arg())?)))
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            loops: 4,
            period: Duration::from_millis(200),
            pools: true,
            start_waiting: false,
            stall_after: None,
            processes: false,
        }
    }
}

/// The ticking loops' runner.
fn loops(o: &DemoOptions) -> Runner {
    let group = Flag::new("demo-group");
    let mut loops = Runner::new("demo-loops");
    for i in 0..o.loops {
        let cfg = LoopConfig {
            start_active: !o.start_waiting,
            ..LoopConfig::every(o.period)
        };
        let name = format!("tick-{}", i + 1);
        let ticker = match o.stall_after {
            Some(d) if i == 0 => Ticker::stalling(name, d),
            _ => Ticker::new(name),
        };
        let p = LoopProcessor::with_config(ticker, cfg);
        let c = if i < 2 {
            Child::new(p).in_group(&group)
        } else {
            Child::new(p)
        };
        loops.push(c);
    }
    loops
}

/// Builds the demo tree under a root runner named `harmony`.
pub fn topology(o: &DemoOptions) -> Runner {
    let mut root = Runner::new("harmony");
    if o.pools {
        let consumed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let consumers = WorkerPool::unmanaged("demo-consumers", 2, move |_item: u64| {
            consumed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        let to_consumers = consumers.sender();
        let mut next = 0u64;
        let producers = WorkerPool::managed(
            "demo-producers",
            2,
            Duration::from_secs(1),
            move |tx| {
                for _ in 0..10 {
                    tx.put(next);
                    next += 1;
                }
                Ok(10)
            },
            move |item| {
                to_consumers.put(item);
                Ok(())
            },
        );
        root = root.child(consumers).child(producers);
    }
    if o.processes {
        root.with_child(
            Child::build_with("demo-loops", "demo-loops", &o.to_arg())
                .mode(Multitasking::Processes),
        )
    } else {
        root.child(loops(o))
    }
}
