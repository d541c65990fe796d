//! Concurrent Harmony: drone firmware for a Raspberry Pi 4b, and the small concurrency framework
//! it is built from.
//!
//! * [`concurrency`]: processors, loops, runners, flags, queues, pools (the framework).
//! * [`control`]: signals, control socket, state files (how the outside steers the tree).
//! * [`applog`]: the application log through one queue and one sink thread.
//! * [`board`]: board files (devices, rates, queue sizes) and their validation.
//! * [`app`]: the firmware process around a tree.

pub mod app;
pub mod applog;
pub mod board;
pub mod clock;
pub mod concurrency;
pub mod control;
pub mod demo;
pub mod drivers;
pub mod formats;
pub mod logger;
pub mod logtools;
pub mod records;
pub mod sim;
pub mod sinks;
pub mod sources;
pub mod timefmt;
pub mod topology;
pub mod tui;
pub mod uplink;
pub mod version;

/// Every subtree a child process of the firmware can build by name (see
/// [`concurrency::process`]).
pub fn builders() -> Vec<(&'static str, concurrency::process::BuildFn)> {
    let mut b = demo::BUILDERS.to_vec();
    b.extend_from_slice(topology::BUILDERS);
    b
}
