//! The sinks: threads that drain the sources' queues.
//!
//! [`drain::SinkLoop`] is the common part: it empties its queues in batches, reports dropouts,
//! sleeps while the queues are empty (woken by the next record or by stop, never polling) and,
//! at stop, drains everything that was accepted before returning. What a sink does with the
//! records is its [`drain::Backend`]. A sink that cannot start is replaced by
//! [`standin::FailedSink`], which drains its queues and shows the failure (issue #11).

pub mod drain;
pub mod standin;
