//! The firmware's fixed topology, built from a board file.
//!
//! ```text
//! harmony                      root runner: stop all on failure
//! ├── sim                      simulated devices (sim board only)
//! │   └── gps-sim
//! ├── housekeeping             worker pool: manifest, free-space floor, signing-state saves
//! ├── logger                   sink: drains every source's logger queue
//! ├── uplink                   sink: drains every source's uplink queue
//! └── sensors                  runner: restarts a failed source (5 in 60 s)
//!     ├── gps                  (`[processes] sensors = true`: the whole sensors subtree
//!     ├── rangefinder           runs in a child process, restarted 5 times in 60 s if it
//!     └── can                   dies, its queues shared-memory rings)
//! ```
//! Ordered start brings the sinks up before the sources; reverse-order stop stops the sources
//! first, so the sinks drain everything that was accepted; the housekeeping pool stops after
//! the sinks, so their final manifest and signing state are saved. Each source has one bounded
//! queue per sink, sized by the board (default: 2 s of the source's worst case).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::board::{BaudSetting, Board, RangeModel};
use crate::concurrency::process::{Build, BuildFn};
use crate::concurrency::{
    BoxError, Child, ErrorBudget, LoopConfig, LoopProcessor, Multitasking, Policy, Processor,
    Region, RestartPolicy, Runner, queue,
};
use crate::drivers::lidarlite::LidarLiteV3;
use crate::drivers::tfluna::TfLuna;
use crate::drivers::{FaultKind, RangeError, Rangefinder};
use crate::logger::LoggerBackend;
use crate::logger::fs::{FileSystem, RealFs};
use crate::logger::session::Session;
use crate::records::{CanRecord, GpsRecord, RangeRecord};
use crate::sim::can_replay::{CanReplay, Capture, Timing};
use crate::sim::gps::GpsSim;
use crate::sim::rangefinder::{SimHandle, SimModel, SimSensor};
use crate::sinks::drain::{Counting, SinkInputs, SinkLoop};
use crate::sources::SourceOutputs;
use crate::sources::can::{CanConfig, CanInput, CanSource};
use crate::sources::gps::{Baud, GpsConfig, GpsSource};
use crate::sources::rangefinder::{Opener, RangeConfig, RangeSource};

/// Why the topology could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("gps.sim: cannot create the pseudo-terminal pair: {0}")]
    Pty(std::io::Error),
    #[error("{field}: cannot read capture {path}: {source}")]
    Capture {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("can.replay: {0}")]
    Replay(#[from] crate::formats::candump::DumpError),
    #[error("{0}")]
    Uplink(crate::uplink::UplinkError),
    #[error("processes.sensors: {0}")]
    Shm(#[from] crate::concurrency::ShmError),
    #[error("processes.sensors: {0}")]
    Arg(String),
}

/// Handles on the simulated devices (for tests and fault injection).
#[derive(Default)]
pub struct SimHandles {
    pub gps_device: Option<PathBuf>,
    pub rangefinder: Option<SimHandle>,
}

/// The built tree.
pub struct Topology {
    pub root: Runner,
    pub sim: SimHandles,
}

/// Workers of the housekeeping pool: one job may stall on the card while another runs.
pub const HOUSEKEEPING_WORKERS: usize = 2;
/// The housekeeping manager's interval (the finest period of a periodic job).
pub const HOUSEKEEPING_TICK: Duration = Duration::from_secs(1);
/// How often the signing state is looked at (written only when the uplink published a new one).
pub const SIGNING_SAVE_CHECK: Duration = Duration::from_secs(1);

/// How long a sink sleeps between batches when records keep coming.
pub const SINK_BATCH: Duration = Duration::from_millis(10);

fn capture_bytes(
    field: &'static str,
    c: &str,
) -> Result<std::borrow::Cow<'static, [u8]>, TopologyError> {
    if let Some(n) = c.strip_prefix("builtin:")
        && let Some(b) = crate::sim::builtin(n)
    {
        return Ok(std::borrow::Cow::Borrowed(b));
    }
    std::fs::read(c)
        .map(std::borrow::Cow::Owned)
        .map_err(|source| TopologyError::Capture {
            field,
            path: PathBuf::from(c),
            source,
        })
}

fn capture_of(c: &str) -> Capture {
    if let Some(n) = c.strip_prefix("builtin:")
        && let Some(b) = crate::sim::builtin(n)
    {
        let name: &'static str = crate::sim::BUILTIN_NAMES
            .iter()
            .find(|x| **x == n)
            .copied()
            .unwrap_or("capture");
        return Capture::Builtin(name, b);
    }
    Capture::File(PathBuf::from(c))
}

fn range_opener(r: &crate::board::RangeSection, handles: &mut SimHandles) -> Opener {
    let address = r.address.unwrap_or(r.model.default_address());
    match (&r.sim, r.model) {
        (Some(_), model) => {
            let sim_model = if model == RangeModel::TfLuna {
                SimModel::TfLuna
            } else {
                SimModel::LidarLiteV3
            };
            let sensor = SimSensor::new(sim_model);
            handles.rangefinder = Some(sensor.handle());
            Box::new(move || -> Result<Box<dyn Rangefinder>, RangeError> {
                Ok(match sim_model {
                    SimModel::TfLuna => Box::new(TfLuna::with_address(sensor.bus(), address)),
                    SimModel::LidarLiteV3 => {
                        Box::new(LidarLiteV3::with_address(sensor.bus(), address))
                    }
                })
            })
        }
        (None, RangeModel::LidarLiteV3Pwm) => {
            let pin = r.pwm_pin.unwrap_or(0);
            let trigger = r.trigger_pin;
            Box::new(move || -> Result<Box<dyn Rangefinder>, RangeError> {
                crate::drivers::pwm::LidarLitePwm::open(pin, trigger)
                    .map(|d| Box::new(d) as Box<dyn Rangefinder>)
                    .map_err(|e| RangeError {
                        model: "lidar-lite-v3-pwm",
                        kind: FaultKind::Bus,
                        message: e.to_string(),
                    })
            })
        }
        (None, model) => {
            let bus = r.i2c_bus;
            Box::new(move || -> Result<Box<dyn Rangefinder>, RangeError> {
                let i2c = rppal::i2c::I2c::with_bus(bus).map_err(|e| RangeError {
                    model: if model == RangeModel::TfLuna { "tf-luna" } else { "lidar-lite-v3" },
                    kind: FaultKind::Bus,
                    message: format!(
                        "cannot open /dev/i2c-{bus}: {e} (is dtparam=i2c_arm=on in config.txt and the service user in the i2c group?)"
                    ),
                })?;
                Ok(match model {
                    RangeModel::TfLuna => Box::new(TfLuna::with_address(i2c, address)),
                    _ => Box::new(LidarLiteV3::with_address(i2c, address)),
                })
            })
        }
    }
}

/// Builds the firmware tree for `board`, logging into `session` (without one, the logger is a
/// counting sink: for tests and benchmarks of the rest).
pub fn build(board: &Board, session: Option<Session>) -> Result<Topology, TopologyError> {
    build_with(board, session, Arc::new(RealFs))
}

/// [`build`] with the logger writing through `fs` (tests inject stalls and faults).
pub fn build_with(
    board: &Board,
    session: Option<Session>,
    fs: Arc<dyn FileSystem>,
) -> Result<Topology, TopologyError> {
    let sizes = board.queue_sizes();
    let (gps_l_tx, mut gps_l_rx) = queue::<GpsRecord>(sizes.gps_logger, "gps->logger");
    let (gps_u_tx, mut gps_u_rx) = queue::<GpsRecord>(sizes.gps_uplink, "gps->uplink");
    let (rng_l_tx, mut rng_l_rx) = queue::<RangeRecord>(sizes.range_logger, "rangefinder->logger");
    let (rng_u_tx, mut rng_u_rx) = queue::<RangeRecord>(sizes.range_uplink, "rangefinder->uplink");
    let (can_l_tx, mut can_l_rx) = queue::<CanRecord>(sizes.can_logger, "can->logger");
    let (can_u_tx, mut can_u_rx) = queue::<CanRecord>(sizes.can_uplink, "can->uplink");

    let mut handles = SimHandles::default();
    let (housekeeping, hk_pool) = crate::concurrency::Housekeeping::new(
        "housekeeping",
        HOUSEKEEPING_WORKERS,
        HOUSEKEEPING_TICK,
    );
    let mut sim = Runner::new("sim");
    let mut gps_device = None;
    if let Some(g) = &board.gps {
        gps_device = Some(match &g.sim {
            Some(s) => {
                let bytes = capture_bytes("gps.sim.capture", &s.capture)?;
                let gs = GpsSim::new("gps-sim", &bytes, s.speed, s.looped)
                    .map_err(TopologyError::Pty)?;
                let path = gs.device_path();
                handles.gps_device = Some(path.clone());
                sim.push(Child::new(LoopProcessor::new(gs)));
                path
            }
            None => g.device.clone().unwrap_or_default(),
        });
    }
    let any_sensor = board.gps.is_some() || board.rangefinder.is_some() || board.can.is_some();
    let sensors = if !any_sensor {
        None
    } else if board.processes.sensors {
        // The sensors in a child process: their queues are rings in its region.
        let region = Region::builder("sensors")
            .ring::<GpsRecord>("gps->logger", sizes.gps_logger)
            .ring::<GpsRecord>("gps->uplink", sizes.gps_uplink)
            .ring::<RangeRecord>("rangefinder->logger", sizes.range_logger)
            .ring::<RangeRecord>("rangefinder->uplink", sizes.range_uplink)
            .ring::<CanRecord>("can->logger", sizes.can_logger)
            .ring::<CanRecord>("can->uplink", sizes.can_uplink)
            .build()?;
        gps_l_rx = region.consumer("gps->logger")?;
        gps_u_rx = region.consumer("gps->uplink")?;
        rng_l_rx = region.consumer("rangefinder->logger")?;
        rng_u_rx = region.consumer("rangefinder->uplink")?;
        can_l_rx = region.consumer("can->logger")?;
        can_u_rx = region.consumer("can->uplink")?;
        let arg = serde_json::to_string(&SensorsArg {
            board: board.clone(),
            gps_device: gps_device.clone(),
        })
        .map_err(|e| TopologyError::Arg(e.to_string()))?;
        Some(
            Child::build_with("sensors", "sensors", &arg)
                .mode(Multitasking::Processes)
                .region(region)
                .policy(sensors_policy()),
        )
    } else {
        let outs = SensorOutputs {
            gps: SourceOutputs::new(gps_l_tx, gps_u_tx),
            range: SourceOutputs::new(rng_l_tx, rng_u_tx),
            can: SourceOutputs::new(can_l_tx, can_u_tx),
        };
        Some(Child::new(sensors_runner(
            board,
            gps_device,
            outs,
            &mut handles,
        )?))
    };

    let logger_inputs = SinkInputs {
        gps: gps_l_rx,
        range: rng_l_rx,
        can: can_l_rx,
    };
    let logger: Box<dyn Processor> = match session {
        Some(s) => Box::new(LoopProcessor::new(SinkLoop::new(
            "logger",
            logger_inputs,
            LoggerBackend::new(board.logger_config(), s, fs, &housekeeping),
            SINK_BATCH,
        ))),
        None => Box::new(LoopProcessor::new(SinkLoop::new(
            "logger",
            logger_inputs,
            Counting::default(),
            SINK_BATCH,
        ))),
    };
    let uplink_inputs = SinkInputs {
        gps: gps_u_rx,
        range: rng_u_rx,
        can: can_u_rx,
    };
    let fc_node = board.can.as_ref().and_then(|c| c.flight_controller_node);
    let uplink: Box<dyn Processor> = match &board.uplink {
        Some(u) => match crate::uplink::build(u, &board.board.data_dir, uplink_inputs, fc_node) {
            Ok(b) => {
                if let Some(p) = b.persister {
                    crate::uplink::persist::add_job(p, &housekeeping, SIGNING_SAVE_CHECK);
                }
                b.processor
            }
            Err((e, _)) if e.is_board_error() => return Err(TopologyError::Uplink(e)),
            // Not the board's fault: record without it, shown as failed (issue #11).
            Err((e, inputs)) => Box::new(LoopProcessor::new(
                crate::sinks::standin::FailedSink::new("uplink", inputs, e.to_string(), SINK_BATCH),
            )),
        },
        None => Box::new(LoopProcessor::new(SinkLoop::new(
            "uplink",
            uplink_inputs,
            Counting::default(),
            SINK_BATCH,
        ))),
    };

    let mut root = Runner::new("harmony");
    if !sim.is_empty() {
        root = root.child(sim);
    }
    root = root
        .child(hk_pool)
        .with_child(Child::boxed(logger))
        .with_child(Child::boxed(uplink));
    if let Some(c) = sensors {
        root = root.with_child(c);
    }
    Ok(Topology { root, sim: handles })
}

fn sensors_policy() -> Policy {
    Policy::Restart(RestartPolicy {
        max_restarts: 5,
        within: Duration::from_secs(60),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(5),
    })
}

/// The producing ends of the sensors' queues (in-process queues, or rings to the parent).
struct SensorOutputs {
    gps: SourceOutputs<GpsRecord>,
    range: SourceOutputs<RangeRecord>,
    can: SourceOutputs<CanRecord>,
}

/// What the sensors' child process is built from: the parent's board, and the simulated GPS's
/// pseudo-terminal (made by the parent, where the simulator runs).
#[derive(serde::Serialize, serde::Deserialize)]
struct SensorsArg {
    board: Board,
    gps_device: Option<PathBuf>,
}

/// The subtrees a child process of the firmware builds by name.
pub const BUILDERS: &[(&str, BuildFn)] = &[("sensors", build_sensors)];

fn build_sensors(b: &mut Build<'_>) -> Result<Box<dyn Processor>, BoxError> {
    let arg: SensorsArg = serde_json::from_str(b.arg())?;
    let outs = SensorOutputs {
        gps: SourceOutputs::new(b.producer("gps->logger")?, b.producer("gps->uplink")?),
        range: SourceOutputs::new(
            b.producer("rangefinder->logger")?,
            b.producer("rangefinder->uplink")?,
        ),
        can: SourceOutputs::new(b.producer("can->logger")?, b.producer("can->uplink")?),
    };
    let mut handles = SimHandles::default();
    Ok(Box::new(sensors_runner(
        &arg.board,
        arg.gps_device,
        outs,
        &mut handles,
    )?))
}

/// The sensors' runner: one loop per source the board has.
fn sensors_runner(
    board: &Board,
    gps_device: Option<PathBuf>,
    outs: SensorOutputs,
    handles: &mut SimHandles,
) -> Result<Runner, TopologyError> {
    let mut sensors = Runner::new("sensors").policy(sensors_policy());
    if let Some(g) = &board.gps {
        let baud = match g.baud {
            BaudSetting::Rate(r) => Baud::Fixed(r),
            BaudSetting::Word(_) => Baud::Auto(9600),
        };
        let src = GpsSource::new(
            GpsConfig {
                name: "gps".into(),
                device: gps_device.unwrap_or_default(),
                baud,
                hunt_dwell: crate::sources::gps::HUNT_DWELL,
            },
            outs.gps,
        );
        sensors.push(Child::new(LoopProcessor::new(src)));
    }

    if let Some(r) = &board.rangefinder {
        let open = range_opener(r, handles);
        let src = RangeSource::new(
            RangeConfig {
                name: "rangefinder".into(),
                rate_hz: r.rate_hz,
                retries: r.retries,
                give_up_after: (r.rate_hz / 4).max(5),
            },
            open,
            outs.range,
        );
        let cfg = LoopConfig {
            error_budget: ErrorBudget::UNLIMITED,
            ..LoopConfig::every(Duration::from_secs_f64(1.0 / r.rate_hz as f64))
        };
        sensors.push(Child::new(LoopProcessor::with_config(src, cfg)));
    }

    if let Some(c) = &board.can {
        let input = match &c.replay {
            Some(rp) => {
                let timing = match (rp.speed, rp.fps, rp.fast) {
                    (_, Some(f), _) => Timing::Fps(f),
                    (_, _, true) => Timing::Fast,
                    (s, _, _) => Timing::Recorded {
                        speed: s.unwrap_or(1.0),
                    },
                };
                CanInput::Replay(Box::new(CanReplay::open(
                    capture_of(&rp.capture),
                    timing,
                    rp.looped,
                )?))
            }
            None => CanInput::Socket(c.interface.clone()),
        };
        let src = CanSource::new(
            CanConfig {
                name: "can".into(),
                uplink_ids: c.uplink_ids.clone(),
            },
            input,
            outs.can,
        );
        sensors.push(Child::new(LoopProcessor::new(src)));
    }
    Ok(sensors)
}
