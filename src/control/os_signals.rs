//! Operating-system signals, turned into flags and named signals on one thread.
//!
//! | signal          | effect                                                            |
//! |-----------------|-------------------------------------------------------------------|
//! | SIGTERM, SIGINT | stop the tree (reverse order, with deadline); a second one exits now |
//! | SIGUSR1         | set the whole tree's waiting flag (pause), and signal `usr1`      |
//! | SIGUSR2         | clear it (resume), and signal `usr2`                              |
//! | SIGHUP          | named signal `hup` to every processor that accepts it (log rotation) |
//!
//! Processors react to `hup`, `usr1` and `usr2` by listing them in `Processor::signals` (the
//! seed's `register_signals`).

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::{Handle, Signals};

use crate::concurrency::{Origin, Registry, Signal, StopReason};

/// Installed handlers, not yet bound to a tree.
pub struct Installed {
    signals: Signals,
}

/// Installs the handlers. Call before starting any thread, so no thread ever sees a signal's
/// default action.
pub fn install() -> io::Result<Installed> {
    Ok(Installed {
        signals: Signals::new([SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP])?,
    })
}

/// The running signal thread.
pub struct SignalThread {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Installed {
    /// Starts the thread that maps signals onto `registry`.
    pub fn start(mut self, registry: Arc<Registry>) -> io::Result<SignalThread> {
        let handle = self.signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut stops = 0;
                for sig in self.signals.forever() {
                    react(sig, &registry, &mut stops);
                }
            })?;
        Ok(SignalThread {
            handle,
            thread: Some(thread),
        })
    }
}

fn broadcast(registry: &Registry, name: &str) {
    if let Ok(sig) = Signal::new(name, Origin::Os) {
        // Nobody listening is fine: the flag change above is the main effect.
        let _ = registry.send_signal(sig, None);
    }
}

fn react(sig: i32, registry: &Registry, stops: &mut u32) {
    match sig {
        SIGTERM | SIGINT => {
            *stops += 1;
            let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
            if *stops == 1 {
                log::info!("{name}: stopping");
                registry.request_stop_all(StopReason::Requested(name.into()));
            } else {
                // The operator insists: leave now, without waiting for the tree.
                eprintln!("harmony: second {name}, exiting immediately");
                std::process::exit(128 + sig);
            }
        }
        SIGUSR1 => {
            log::info!("SIGUSR1: pausing all processors");
            registry.tree_pause().set();
            broadcast(registry, "usr1");
        }
        SIGUSR2 => {
            log::info!("SIGUSR2: resuming all processors");
            registry.tree_pause().clear();
            broadcast(registry, "usr2");
        }
        SIGHUP => {
            log::info!("SIGHUP");
            broadcast(registry, "hup");
        }
        _ => {}
    }
}

impl SignalThread {
    pub fn stop(mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
