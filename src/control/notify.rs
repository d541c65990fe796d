//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`), through the sd-notify crate.
//!
//! * `READY=1` once the whole tree has started: every source is up, or has reported why not
//!   (a source whose device is missing is active and says so in its note; it does not hold
//!   READY back).
//! * `WATCHDOG=1` every quarter of the watchdog interval while the tree is healthy: no
//!   processor has been inside one piece of work for longer than half the interval. A loop
//!   waiting for its device is idle, not stuck (see `Context::wait_io`). A stuck processor
//!   stops the pings, so systemd restarts the service. "For longer than" is measured on the
//!   boot clock (see `concurrency::state`): the Pi's wall clock steps when NTP or the GPS sets
//!   it, which must neither fake a stuck processor nor hide one; this thread's own pacing uses
//!   `Instant` (`CLOCK_MONOTONIC`, which does not step either).
//! * `STOPPING=1` as soon as a stop is requested; `STATUS=` lines say why.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) nothing runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::concurrency::Registry;
use crate::concurrency::wake::{Waker, park_until};

/// The running notifier thread.
pub struct Notifier {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify: {e}");
    }
}

impl Notifier {
    /// Starts the notifier if the process was started with `NOTIFY_SOCKET`.
    pub fn start(registry: Arc<Registry>) -> std::io::Result<Option<Self>> {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Ok(None);
        }
        let watchdog = sd_notify::watchdog_enabled();
        let stop = Arc::new(AtomicBool::new(false));
        let waker = Waker::new();
        let (s, w) = (stop.clone(), waker.clone());
        let thread = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                w.bind_current();
                run(&registry, watchdog, &s)
            })?;
        Ok(Some(Notifier {
            stop,
            waker,
            thread: Some(thread),
        }))
    }

    /// Sends STOPPING=1 (if not yet sent) and stops the thread.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(registry: &Registry, watchdog: Option<Duration>, stop: &AtomicBool) {
    let limit_ms = watchdog.map_or(10_000, |d| (d.as_millis() as u64 / 2).max(1));
    let tick = watchdog.map_or(Duration::from_secs(1), |d| {
        (d / 4).max(Duration::from_millis(10))
    });
    let mut ready = false;
    let mut stopping = false;
    let mut withheld = false;
    loop {
        let done = stop.load(Ordering::Acquire);
        if (registry.is_stopping() || done) && !stopping {
            stopping = true;
            send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        }
        if done {
            return;
        }
        if !ready && registry.tree_started() {
            ready = true;
            let n = registry.entries().len();
            log::info!("all {n} processors started: READY=1");
            send(&[
                NotifyState::Ready,
                NotifyState::Status(&format!("running, {n} processors")),
            ]);
        }
        if ready && watchdog.is_some() && !stopping {
            let stuck = registry.stuck(limit_ms);
            if stuck.is_empty() {
                if withheld {
                    log::warn!("no processor stuck any more: watchdog pings resume");
                    withheld = false;
                }
                send(&[NotifyState::Watchdog]);
            } else if !withheld {
                withheld = true;
                let msg = format!(
                    "stuck for more than {limit_ms} ms: {}; withholding watchdog pings",
                    stuck.join(", ")
                );
                log::error!("{msg}");
                send(&[NotifyState::Status(&msg)]);
            }
        }
        let wait = if ready {
            tick
        } else {
            tick.min(Duration::from_millis(50))
        };
        park_until(Some(Instant::now() + wait));
    }
}
