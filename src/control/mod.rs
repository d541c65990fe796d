//! How the outside world sees and steers the processor tree.
//!
//! * [`os_signals`]: one thread turns SIGTERM/SIGINT, SIGUSR1/SIGUSR2 and SIGHUP into the
//!   tree's stop-all flag, its waiting flag and named signals. The handlers are installed in
//!   `main` before any other thread starts (boringtun's pattern).
//! * [`server`]: the control socket in the run directory; `harmony ctl` and `harmony top`
//!   speak [`protocol`] to it. One `poll(2)` thread with bounded clients, a whole-request
//!   deadline and a size limit, so no client delays another or shutdown; refused requests get
//!   an error reply, are counted in the status and logged as one summary line per interval.
//! * [`state_files`]: each processor's state, written atomically to `<run_dir>/state/NAME.state`
//!   by one writer thread, so state changes on sensor threads never do I/O.
//! * [`client`]: the `harmony ctl` side.

pub mod client;
pub mod notify;
pub mod os_signals;
pub mod protocol;
pub mod rundir;
pub mod server;
pub mod state_files;
