//! DroneCAN (UAVCAN v0) on classic CAN: what a frame's 29-bit ID and tail byte say.
//!
//! From the DroneCAN specification, section 4.1 (CAN bus transport layer), and libcanard:
//! ```text
//! message:   priority(5) | type ID (16)          | 0 | source node (7)
//! anonymous: priority(5) | discriminator (14) | type ID low 2 bits | 0 | 0
//! service:   priority(5) | type ID (8) | request(1) | destination (7) | 1 | source node (7)
//! tail byte: start(1) | end(1) | toggle(1) | transfer ID (5)
//! ```
//! Only extended data frames carry DroneCAN; anything else decodes to `None`.

use crate::records::CanRecord;

/// NodeStatus data type ID (`uavcan.protocol.NodeStatus`).
pub const NODE_STATUS_ID: u16 = 341;

/// What kind of transfer a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    Message {
        type_id: u16,
    },
    Anonymous {
        type_id_low: u8,
        discriminator: u16,
    },
    Service {
        type_id: u8,
        request: bool,
        destination: u8,
    },
}

/// The tail byte of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    pub start: bool,
    pub end: bool,
    pub toggle: bool,
    pub transfer_id: u8,
}

impl Tail {
    pub fn from_byte(b: u8) -> Self {
        Tail {
            start: b & 0x80 != 0,
            end: b & 0x40 != 0,
            toggle: b & 0x20 != 0,
            transfer_id: b & 0x1f,
        }
    }
}

/// A decoded DroneCAN frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub priority: u8,
    pub transfer: Transfer,
    /// 0 for anonymous frames.
    pub source: u8,
    pub tail: Tail,
}

/// Decodes the ID and tail byte of an extended data frame with at least one byte.
pub fn decode(r: &CanRecord) -> Option<Frame> {
    if !r.is_extended() || r.is_remote() || r.is_error() || r.len == 0 {
        return None;
    }
    let id = r.raw_id();
    let priority = ((id >> 24) & 0x1f) as u8;
    let source = (id & 0x7f) as u8;
    let service = (id >> 7) & 1 == 1;
    let transfer = if service {
        Transfer::Service {
            type_id: ((id >> 16) & 0xff) as u8,
            request: (id >> 15) & 1 == 1,
            destination: ((id >> 8) & 0x7f) as u8,
        }
    } else if source == 0 {
        Transfer::Anonymous {
            type_id_low: ((id >> 8) & 0x3) as u8,
            discriminator: ((id >> 10) & 0x3fff) as u16,
        }
    } else {
        Transfer::Message {
            type_id: ((id >> 8) & 0xffff) as u16,
        }
    };
    let tail = Tail::from_byte(r.data[(r.len as usize).min(8) - 1]);
    Some(Frame {
        priority,
        transfer,
        source,
        tail,
    })
}

/// `uavcan.protocol.NodeStatus` health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    Warning,
    Error,
    Critical,
}

/// A node's heartbeat, as the flight controller publishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub node: u8,
    pub uptime_s: u32,
    pub health: Health,
    /// 0 operational, 1 initialization, 2 maintenance, 3 software update, 7 offline.
    pub mode: u8,
    pub sub_mode: u8,
    pub vendor_status: u16,
}

/// Decodes a single-frame NodeStatus (7 payload bytes + tail). DSDL bit order: whole bytes
/// little-endian, sub-byte fields packed from the most significant bit down.
pub fn node_status(r: &CanRecord) -> Option<NodeStatus> {
    let f = decode(r)?;
    if f.transfer
        != (Transfer::Message {
            type_id: NODE_STATUS_ID,
        })
        || !f.tail.start
        || !f.tail.end
        || r.len != 8
    {
        return None;
    }
    let d = &r.data;
    Some(NodeStatus {
        node: f.source,
        uptime_s: u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
        health: match d[4] >> 6 {
            0 => Health::Ok,
            1 => Health::Warning,
            2 => Health::Error,
            _ => Health::Critical,
        },
        mode: (d[4] >> 3) & 0x7,
        sub_mode: d[4] & 0x7,
        vendor_status: u16::from_le_bytes([d[5], d[6]]),
    })
}

/// Counts transfers per source node (a transfer = a frame with the start bit).
#[derive(Clone, Debug)]
pub struct TransferCounter {
    per_node: [u64; 128],
    frames: u64,
    non_dronecan: u64,
}

impl Default for TransferCounter {
    fn default() -> Self {
        TransferCounter {
            per_node: [0; 128],
            frames: 0,
            non_dronecan: 0,
        }
    }
}

impl TransferCounter {
    pub fn add(&mut self, r: &CanRecord) {
        match decode(r) {
            Some(f) => {
                self.frames += 1;
                if f.tail.start {
                    self.per_node[f.source as usize & 0x7f] += 1;
                }
            }
            None => self.non_dronecan += 1,
        }
    }

    /// `(node, transfers)` for every node seen.
    pub fn nodes(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.per_node
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (i as u8, *n))
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn non_dronecan(&self) -> u64 {
        self.non_dronecan
    }
}

/// Encodes a NodeStatus frame (for the simulator and tests).
pub fn encode_node_status(priority: u8, s: &NodeStatus, transfer_id: u8) -> CanRecord {
    let id = crate::records::CAN_EFF_FLAG
        | (priority as u32 & 0x1f) << 24
        | (NODE_STATUS_ID as u32) << 8
        | (s.node as u32 & 0x7f);
    let up = s.uptime_s.to_le_bytes();
    let v = s.vendor_status.to_le_bytes();
    let h = match s.health {
        Health::Ok => 0,
        Health::Warning => 1,
        Health::Error => 2,
        Health::Critical => 3,
    };
    CanRecord {
        stamp: Default::default(),
        id,
        len: 8,
        data: [
            up[0],
            up[1],
            up[2],
            up[3],
            h << 6 | (s.mode & 7) << 3 | (s.sub_mode & 7),
            v[0],
            v[1],
            0xc0 | (transfer_id & 0x1f),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::CAN_EFF_FLAG;

    fn frame(id: u32, data: &[u8]) -> CanRecord {
        let mut d = [0u8; 8];
        d[..data.len()].copy_from_slice(data);
        CanRecord {
            stamp: Default::default(),
            id: id | CAN_EFF_FLAG,
            len: data.len() as u8,
            data: d,
        }
    }

    #[test]
    fn node_status_matches_the_libcanard_vector() {
        // uptime 1, health 2 (error), mode 1, sub_mode 5, vendor 0x1234, from node 10, prio 24:
        // libcanard encodes 01 00 00 00 8D 34 12 + tail.
        let r = frame(0x1801_550A, &[0x01, 0, 0, 0, 0x8D, 0x34, 0x12, 0xC3]);
        let f = decode(&r).unwrap();
        assert_eq!(f.priority, 24);
        assert_eq!(f.source, 10);
        assert_eq!(f.transfer, Transfer::Message { type_id: 341 });
        assert_eq!(
            f.tail,
            Tail {
                start: true,
                end: true,
                toggle: false,
                transfer_id: 3
            }
        );
        let s = node_status(&r).unwrap();
        assert_eq!(
            s,
            NodeStatus {
                node: 10,
                uptime_s: 1,
                health: Health::Error,
                mode: 1,
                sub_mode: 5,
                vendor_status: 0x1234
            }
        );
        assert_eq!(encode_node_status(24, &s, 3), r);
    }

    #[test]
    fn service_and_anonymous_frames() {
        // GetNodeInfo (1) request from node 5 to node 10, prio 30.
        let id = 30 << 24 | 1 << 16 | 1 << 15 | 10 << 8 | 1 << 7 | 5;
        let f = decode(&frame(id, &[0x80])).unwrap();
        assert_eq!(
            f.transfer,
            Transfer::Service {
                type_id: 1,
                request: true,
                destination: 10
            }
        );
        assert_eq!(f.source, 5);
        assert!(f.tail.start && !f.tail.end);
        // Anonymous allocation message (type 1), discriminator 0x1234.
        let id = 30 << 24 | 0x1234 << 10 | 1 << 8;
        let f = decode(&frame(id, &[0, 0xc0])).unwrap();
        assert_eq!(
            f.transfer,
            Transfer::Anonymous {
                type_id_low: 1,
                discriminator: 0x1234
            }
        );
    }

    #[test]
    fn standard_remote_and_empty_frames_are_not_dronecan() {
        let mut r = frame(0x123, &[1]);
        r.id = 0x123;
        assert_eq!(decode(&r), None);
        assert_eq!(decode(&frame(0x1801550A, &[])), None);
    }

    #[test]
    fn transfers_are_counted_per_node() {
        let mut c = TransferCounter::default();
        c.add(&frame(0x1801_550A, &[0, 0, 0, 0, 0, 0, 0, 0xC0]));
        c.add(&frame(0x1801_550A, &[0, 0, 0, 0, 0, 0, 0, 0xC1]));
        // Multi-frame: start, middle, end from node 7: one transfer.
        c.add(&frame(0x1000_0107, &[1, 2, 3, 4, 5, 6, 7, 0x80]));
        c.add(&frame(0x1000_0107, &[1, 2, 3, 4, 5, 6, 7, 0x20]));
        c.add(&frame(0x1000_0107, &[1, 2, 0x40]));
        let mut rs = frame(0x123, &[1]);
        rs.id = 0x123;
        c.add(&rs);
        assert_eq!(c.nodes().collect::<Vec<_>>(), [(7, 1), (10, 2)]);
        assert_eq!(c.frames(), 5);
        assert_eq!(c.non_dronecan(), 1);
    }
}
