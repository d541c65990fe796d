//! The concurrency framework: the Python seed's processors, runners, events and pools, rebuilt
//! on threads, processes and atomics.
//!
//! | seed                                  | here                                             |
//! |---------------------------------------|--------------------------------------------------|
//! | `Processor.run` before / body / after | [`Processor`], hooks run by [`run_hooks`]        |
//! | `LoopProcessor`                       | [`Loop`] + [`LoopProcessor`]                     |
//! | `stop_event`, `waiting_event`         | [`Flag`]: one atomic plus wake-ups               |
//! | `ProcessorsRunner` (nested)           | [`Runner`], with a restart [`Policy`]            |
//! | `multitasking_type` (THREADS/PROCESSES) | [`Multitasking`]; processes: [`process`], [`shm`], [`ring`] |
//! | `set_events_to_processors`            | runners hand stop and waiting flags to children  |
//! | `SignalContext` user signals          | [`Signal`]s in each processor's mailbox          |
//! | `StateInFile`                         | [`Entry`] atomics, written out by `control`      |
//! | `WorkerThreadPool`                    | [`WorkerPool`]                                   |
//!
//! A runner's children are threads of its process or processes of their own ([`process`]):
//! a child process shares its subtree's state entries, flags, mailboxes and record rings with
//! its parent through one shared-memory [`shm::Region`]; the fixed layout of an entry is
//! [`cells::Cells`], the same on the heap and in shared memory.
//!
//! Nothing here polls. A thread with nothing to do is parked (or in `poll(2)`) and is woken by
//! whatever it waits for: a flag change, a signal in its mailbox, a record in its queue, a
//! child's exit, or its own deadline. See [`wake`] for how.
//!
//! [`run_hooks`]: processor::run_hooks

pub mod cells;
pub mod flag;
pub mod looping;
pub mod pool;
pub mod process;
pub mod processor;
pub mod queue;
pub mod registry;
pub mod ring;
pub mod runner;
pub mod shm;
pub mod signal;
pub mod state;
pub mod wake;

pub use cells::Counter;
pub use ring::Plain;
pub use shm::{Region, ShmError};

pub use flag::Flag;
pub use looping::{ErrorBudget, FnLoop, Loop, LoopConfig, LoopProcessor, Step};
pub use pool::{Housekeeping, JobHandle, TaskSender, WorkerPool};
pub use processor::{BoxError, Context, Outcome, Processor};
pub use queue::{Consumer, Doorbell, DropReport, Producer, QueueGauge, queue};
pub use registry::{LookupError, Registry, StopReason};
pub use runner::{Child, Multitasking, Policy, RestartPolicy, RunError, Runner, run_tree};
pub use signal::{Origin, Signal};
pub use state::{Entry, EntrySnapshot, Kind, ProcState};
pub use wake::Waker;
