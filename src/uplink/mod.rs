//! The radio uplink (issue #5): MAVLink 2 telemetry within a byte budget, signed commands from
//! the ground. NOT IMPLEMENTED YET: this placeholder keeps the interface the topology and the
//! binary use; until it lands the topology runs a counting sink named `uplink`.

pub mod config;
pub mod ground;

use crate::concurrency::Processor;
use crate::sinks::drain::SinkInputs;

/// Why the uplink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("the radio uplink is not implemented yet")]
    NotImplemented,
}

/// Builds the uplink processor (named `uplink`) that drains `inputs`. `fc_node` is the
/// flight controller's DroneCAN node ID (its NodeStatus is reported to the ground).
pub fn build(
    _cfg: &config::UplinkSection,
    _inputs: SinkInputs,
    _fc_node: Option<u8>,
) -> Result<Box<dyn Processor>, (UplinkError, SinkInputs)> {
    Err((UplinkError::NotImplemented, _inputs))
}
