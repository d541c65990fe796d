//! MAVLink frames in and out, shared by the uplink and the ground station.
//!
//! * [`Framer`] serializes a message into one reused frame buffer, so its size is known before
//!   the budget is asked, and signs it only when it is really sent (a signature spends a
//!   timestamp).
//! * [`Decoder`] finds frames in whatever bytes arrive (the crate's frame decoder: garbage,
//!   bad CRCs and unknown message ids are skipped) without ever blocking: bytes are pushed in
//!   as the caller reads them from a non-blocking device.
//! * Builders turn the firmware's records into messages, with every field set on purpose (the
//!   crate's defaults would say "armed" or "emergency").

use std::io::{self, Read};

use mavlink::consts::v2::IFLAG_SIGNED;
use mavlink::dialects::common::{
    CAN_FRAME_DATA, DISTANCE_SENSOR_DATA, GPS_RAW_INT_DATA, GpsFixType, HEARTBEAT_DATA,
    MavAutopilot, MavDistanceSensor, MavMessage, MavModeFlag, MavSensorOrientation, MavSeverity,
    MavState, MavType, NAMED_VALUE_INT_DATA, STATUSTEXT_DATA,
};
use mavlink::error::{MessageReadError, ParserError};
use mavlink::types::CharArray;
use mavlink::{
    MAV_STX_V2, MAVLinkMessageRaw, MAVLinkV2MessageRaw, MavHeader, MavlinkReader, Message,
};

use super::signing::Signer;
use crate::records::{CAN_EFF_FLAG, CAN_EFF_MASK, CanRecord, Fix, FixQuality, RangeRecord};

/// Serializes and signs outgoing frames.
pub struct Framer {
    system_id: u8,
    component_id: u8,
    sequence: u8,
    signer: Option<Signer>,
    raw: MAVLinkV2MessageRaw,
    len: usize,
}

impl Framer {
    pub fn new(system_id: u8, component_id: u8, signer: Option<Signer>) -> Self {
        Framer {
            system_id,
            component_id,
            sequence: 0,
            signer,
            raw: MAVLinkV2MessageRaw::new(),
            len: 0,
        }
    }

    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    pub fn signer_mut(&mut self) -> Option<&mut Signer> {
        self.signer.as_mut()
    }

    /// Serializes `msg`; returns the frame's size on the wire (signature included).
    pub fn encode(&mut self, msg: &MavMessage) -> usize {
        let header = MavHeader {
            system_id: self.system_id as u32,
            component_id: self.component_id,
            sequence: self.sequence,
        };
        self.raw = MAVLinkV2MessageRaw::new();
        if self.signer.is_some() {
            self.raw.serialize_message_for_signing(header, msg);
        } else {
            self.raw.serialize_message(header, msg);
        }
        self.len = self.raw.raw_bytes().len();
        self.len
    }

    /// Serializes a payload built by hand (a message with MAVLink 2 extension fields the
    /// crate does not know, e.g. STATUSTEXT's `id` and `chunk_seq`); trailing zero bytes are
    /// cut as MAVLink 2 does. Returns the frame's size on the wire.
    pub fn encode_payload(&mut self, msgid: u32, extra_crc: u8, payload: &[u8]) -> usize {
        let n = payload.iter().rposition(|&b| b != 0).map_or(1, |i| i + 1);
        let iflags = if self.signer.is_some() {
            IFLAG_SIGNED
        } else {
            0
        };
        let id = msgid.to_le_bytes();
        let header = [
            MAV_STX_V2,
            n as u8,
            iflags,
            0,
            self.sequence,
            self.system_id,
            self.component_id,
            id[0],
            id[1],
            id[2],
        ];
        self.raw = MAVLinkV2MessageRaw::new();
        let buf = self.raw.as_mut_slice();
        buf[..header.len()].copy_from_slice(&header);
        buf[header.len()..header.len() + n].copy_from_slice(&payload[..n]);
        let crc = mavlink::calculate_crc(&buf[1..header.len() + n], extra_crc);
        buf[header.len() + n..header.len() + n + 2].copy_from_slice(&crc.to_le_bytes());
        self.len = self.raw.raw_bytes().len();
        self.len
    }

    /// Signs the frame last encoded, advances the sequence and returns the bytes to write.
    pub fn finish(&mut self) -> &[u8] {
        if let Some(s) = &mut self.signer {
            s.sign(&mut self.raw);
        }
        self.sequence = self.sequence.wrapping_add(1);
        &self.raw.raw_bytes()[..self.len]
    }

    /// Encodes and finishes in one go.
    pub fn frame(&mut self, msg: &MavMessage) -> &[u8] {
        self.encode(msg);
        self.finish()
    }
}

/// Bytes handed to the crate's reader; "would block" when they are used up.
struct Pushed {
    buf: Vec<u8>,
    pos: usize,
}

impl Read for Pushed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Finds CRC-valid frames of the common dialect in pushed bytes.
pub struct Decoder {
    reader: MavlinkReader<Pushed>,
    bytes: u64,
    frames: u64,
    frame_bytes: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            reader: MavlinkReader::with_capacity(
                4096,
                Pushed {
                    buf: Vec::with_capacity(4096),
                    pos: 0,
                },
            ),
            bytes: 0,
            frames: 0,
            frame_bytes: 0,
        }
    }
}

impl Decoder {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        let p = self.reader.get_mut();
        if p.pos >= p.buf.len() {
            p.buf.clear();
            p.pos = 0;
        }
        p.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, or `None` until more bytes are pushed.
    pub fn next_frame(&mut self) -> Option<MAVLinkMessageRaw> {
        loop {
            match self.reader.read_any_raw_message::<MavMessage>() {
                Ok(m) => {
                    self.frames += 1;
                    self.frame_bytes += frame_len(&m) as u64;
                    return Some(m);
                }
                Err(MessageReadError::Parse(_)) => continue,
                Err(MessageReadError::Io(_)) => return None,
            }
        }
    }

    /// Bytes pushed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Frames found so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes that were not part of a frame (garbage, damaged frames), roughly: bytes still
    /// buffered for an incomplete frame count too.
    pub fn skipped(&self) -> u64 {
        self.bytes.saturating_sub(self.frame_bytes)
    }
}

/// A frame's length on the wire.
pub fn frame_len(m: &MAVLinkMessageRaw) -> usize {
    match m {
        MAVLinkMessageRaw::V1(r) => r.raw_bytes().len(),
        MAVLinkMessageRaw::V2(r) => r.raw_bytes().len(),
    }
}

/// `(system, component)` of a frame's sender.
pub fn sender(m: &MAVLinkMessageRaw) -> (u32, u8) {
    (m.system_id(), m.component_id())
}

/// Decodes a frame's message.
pub fn parse(m: &MAVLinkMessageRaw) -> Result<MavMessage, ParserError> {
    MavMessage::parse(m.version(), m.message_id(), m.payload())
}

/// Our heartbeat: an onboard controller, not an autopilot, never armed.
pub fn heartbeat(mavtype: MavType, state: MavState) -> MavMessage {
    MavMessage::HEARTBEAT(HEARTBEAT_DATA {
        custom_mode: 0,
        mavtype,
        autopilot: MavAutopilot::MAV_AUTOPILOT_INVALID,
        base_mode: MavModeFlag::empty(),
        system_status: state,
        mavlink_version: mavlink::dialects::common::MINOR_MAVLINK_VERSION,
    })
}

fn fix_type(f: &Fix) -> GpsFixType {
    if f.lat_deg.is_none() || f.lon_deg.is_none() {
        return GpsFixType::GPS_FIX_TYPE_NO_FIX;
    }
    match f.quality {
        FixQuality::Invalid => GpsFixType::GPS_FIX_TYPE_NO_FIX,
        FixQuality::DGps => GpsFixType::GPS_FIX_TYPE_DGPS,
        FixQuality::Rtk => GpsFixType::GPS_FIX_TYPE_RTK_FIXED,
        FixQuality::FloatRtk => GpsFixType::GPS_FIX_TYPE_RTK_FLOAT,
        FixQuality::Manual => GpsFixType::GPS_FIX_TYPE_STATIC,
        FixQuality::Estimated => GpsFixType::GPS_FIX_TYPE_2D_FIX,
        FixQuality::Gps | FixQuality::Pps | FixQuality::Simulation => {
            if f.alt_msl_m.is_some() {
                GpsFixType::GPS_FIX_TYPE_3D_FIX
            } else {
                GpsFixType::GPS_FIX_TYPE_2D_FIX
            }
        }
    }
}

fn scaled_u16(v: Option<f32>, scale: f32) -> u16 {
    match v {
        Some(x) if x.is_finite() && x >= 0.0 => (x * scale).round().min(65534.0) as u16,
        _ => u16::MAX,
    }
}

/// The fix's time for GPS_RAW_INT: UTC µs when the receiver gave a date, else boot µs.
pub fn fix_time_usec(f: &Fix) -> u64 {
    match f.utc_ns {
        Some(ns) if ns > 0 => ns as u64 / 1000,
        _ => f.stamp.boot_ns / 1000,
    }
}

/// GPS_RAW_INT from a fix (unknown values as the message defines them: UINT16_MAX etc.).
pub fn gps_raw_int(f: &Fix) -> MavMessage {
    let deg = |v: Option<f64>| v.map_or(0, |d| (d * 1e7).round() as i32);
    MavMessage::GPS_RAW_INT(GPS_RAW_INT_DATA {
        time_usec: fix_time_usec(f),
        lat: deg(f.lat_deg),
        lon: deg(f.lon_deg),
        alt: f.alt_msl_m.map_or(0, |a| (a * 1000.0).round() as i32),
        eph: scaled_u16(f.hdop, 100.0),
        epv: u16::MAX,
        vel: scaled_u16(f.speed_mps, 100.0),
        cog: scaled_u16(f.course_deg.map(|c| c.rem_euclid(360.0)), 100.0),
        fix_type: fix_type(f),
        satellites_visible: f.satellites.unwrap_or(u8::MAX),
    })
}

/// DISTANCE_SENSOR from a reading, pointing down. A reading the sensor flagged (weak,
/// saturated, invalid, fault) is sent as `max + 1` cm: "no valid distance", as ArduPilot does.
pub fn distance_sensor(r: &RangeRecord, min_cm: u16, max_cm: u16) -> MavMessage {
    let current = if r.status == crate::records::RangeStatus::Ok {
        r.distance_cm
    } else {
        max_cm.saturating_add(1)
    };
    MavMessage::DISTANCE_SENSOR(DISTANCE_SENSOR_DATA {
        time_boot_ms: (r.stamp.boot_ns / 1_000_000) as u32,
        min_distance: min_cm,
        max_distance: max_cm,
        current_distance: current,
        mavtype: MavDistanceSensor::MAV_DISTANCE_SENSOR_LASER,
        id: 0,
        orientation: MavSensorOrientation::MAV_SENSOR_ROTATION_PITCH_270,
        covariance: u8::MAX,
    })
}

/// CAN_FRAME from a data frame; the id keeps bit 31 for extended frames (Linux's and
/// ArduPilot's convention).
pub fn can_frame(r: &CanRecord) -> MavMessage {
    let id = if r.is_extended() {
        CAN_EFF_FLAG | (r.id & CAN_EFF_MASK)
    } else {
        r.raw_id()
    };
    MavMessage::CAN_FRAME(CAN_FRAME_DATA {
        id,
        target_system: 0,
        target_component: 0,
        bus: 0,
        len: r.len.min(8),
        data: r.data,
    })
}

/// A named integer (names longer than 10 bytes are cut, as the message allows no more).
pub fn named_int(name: CharArray<10>, value: i32, boot_ms: u32) -> MavMessage {
    MavMessage::NAMED_VALUE_INT(NAMED_VALUE_INT_DATA {
        time_boot_ms: boot_ms,
        value,
        name,
    })
}

/// A name cut to 10 bytes at a character boundary.
pub fn name10(s: &str) -> CharArray<10> {
    CharArray::from(cut(s, 10))
}

/// STATUSTEXT's message id, CRC extra, and its MAVLink 2 payload with the extensions.
pub const STATUSTEXT_ID: u32 = 253;
pub const STATUSTEXT_CRC_EXTRA: u8 = 83;
pub const STATUSTEXT_LEN: usize = 54;
/// Text bytes per STATUSTEXT chunk.
pub const TEXT_CHUNK: usize = 50;

/// Chunk `seq` of a long text (MAVLink 2: chunks of 50 bytes sharing a non-zero `id`, the last
/// one shorter, i.e. ending in a zero byte; `id` 0 for a text that fits one message).
pub fn statustext_chunk(
    severity: MavSeverity,
    text: &[u8],
    id: u16,
    seq: u8,
) -> [u8; STATUSTEXT_LEN] {
    let mut p = [0u8; STATUSTEXT_LEN];
    p[0] = severity as u8;
    let from = (seq as usize * TEXT_CHUNK).min(text.len());
    let to = (from + TEXT_CHUNK).min(text.len());
    p[1..1 + to - from].copy_from_slice(&text[from..to]);
    p[51..53].copy_from_slice(&id.to_le_bytes());
    p[53] = seq;
    p
}

/// How many chunks a text of `len` bytes takes (one more, empty, when it fills its last one,
/// so the receiver sees where it ends).
pub fn text_chunks(len: usize) -> usize {
    if len <= TEXT_CHUNK {
        1
    } else {
        len / TEXT_CHUNK + 1
    }
}

/// A STATUSTEXT's `(id, chunk_seq)` extension fields (0, 0 when the sender left them out).
pub fn statustext_ids(m: &MAVLinkMessageRaw) -> (u16, u8) {
    let p = m.payload();
    let at = |i: usize| p.get(i).copied().unwrap_or(0);
    (u16::from_le_bytes([at(51), at(52)]), at(53))
}

/// Puts long STATUSTEXTs back together on the ground (a few texts at a time, bounded).
#[derive(Default)]
pub struct TextAssembler {
    /// `(sender, id)`, the next chunk expected, the text so far.
    parts: Vec<((u32, u16), u8, Vec<u8>)>,
}

/// Texts being assembled at once, and the longest text kept.
const MAX_ASSEMBLING: usize = 8;
const MAX_ASSEMBLED: usize = 255 * TEXT_CHUNK;

impl TextAssembler {
    /// Takes a chunk; returns the whole text once its last chunk came. A chunk missing in
    /// between drops the text so far (the rest is shown as it comes, marked as cut).
    pub fn push(&mut self, sender: u32, id: u16, seq: u8, text: &[u8]) -> Option<String> {
        let end = text.iter().position(|&b| b == 0);
        let body = &text[..end.unwrap_or(text.len())];
        if id == 0 {
            return Some(String::from_utf8_lossy(body).into_owned());
        }
        let key = (sender, id);
        let i = match self.parts.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None => {
                if self.parts.len() >= MAX_ASSEMBLING {
                    self.parts.remove(0);
                }
                self.parts.push((key, 0, Vec::new()));
                self.parts.len() - 1
            }
        };
        let (_, next, buf) = &mut self.parts[i];
        if seq != *next {
            buf.clear();
            buf.extend_from_slice(b"...");
        }
        *next = seq.wrapping_add(1);
        if buf.len() + body.len() <= MAX_ASSEMBLED {
            buf.extend_from_slice(body);
        }
        if end.is_some() || text.len() < TEXT_CHUNK {
            let (_, _, buf) = self.parts.remove(i);
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        None
    }
}

/// A STATUSTEXT (text cut to 50 bytes at a character boundary).
pub fn statustext(severity: MavSeverity, text: &str) -> MavMessage {
    MavMessage::STATUSTEXT(STATUSTEXT_DATA {
        severity,
        text: CharArray::from(cut(text, 50)),
    })
}

fn cut(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = n;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Stamp;

    // Issue #16: a text longer than 50 bytes goes in chunks sharing an id, with chunk_seq
    // counting up, signed or not; the crate still decodes each chunk, and the assembler puts
    // the text back together (also one of exactly 100 bytes, ended by an empty chunk).
    #[test]
    fn long_statustext_chunks_and_reassembles() {
        for signer in [None, Some(Signer::new([3; 32], 0, 0))] {
            for text in [
                "x".repeat(100),
                (0..130)
                    .map(|i| (b'a' + i % 26) as char)
                    .collect::<String>(),
                "short".to_owned(),
            ] {
                let mut f =
                    Framer::new(1, 191, signer.as_ref().map(|_| Signer::new([3; 32], 0, 0)));
                let id = if text.len() > TEXT_CHUNK { 7 } else { 0 };
                let mut dec = Decoder::default();
                let n = text_chunks(text.len());
                for seq in 0..n {
                    let p = statustext_chunk(
                        MavSeverity::MAV_SEVERITY_WARNING,
                        text.as_bytes(),
                        id,
                        seq as u8,
                    );
                    let size = f.encode_payload(STATUSTEXT_ID, STATUSTEXT_CRC_EXTRA, &p);
                    let bytes = f.finish().to_vec();
                    assert_eq!(bytes.len(), size);
                    assert!(size <= 80, "{size}");
                    dec.push(&bytes);
                }
                let mut asm = TextAssembler::default();
                let mut got = Vec::new();
                let mut seqs = Vec::new();
                while let Some(raw) = dec.next_frame() {
                    let MavMessage::STATUSTEXT(t) = parse(&raw).unwrap() else {
                        panic!("not a STATUSTEXT");
                    };
                    let (rid, seq) = statustext_ids(&raw);
                    assert_eq!(rid, id);
                    seqs.push(seq);
                    got.extend(asm.push(1, rid, seq, t.text.as_slice()));
                }
                assert_eq!(seqs, (0..n as u8).collect::<Vec<_>>());
                assert_eq!(got, std::slice::from_ref(&text), "{n} chunks");
            }
        }
        assert_eq!(text_chunks(100), 3);
        assert_eq!(text_chunks(101), 3);
        assert_eq!(text_chunks(50), 1);
    }

    #[test]
    fn frames_decode_through_garbage_and_split_reads() {
        let mut f = Framer::new(1, 191, None);
        let mut wire = b"\xfd\x00garbage\xfe\x09".to_vec();
        wire.extend_from_slice(f.frame(&heartbeat(
            MavType::MAV_TYPE_ONBOARD_CONTROLLER,
            MavState::MAV_STATE_ACTIVE,
        )));
        wire.extend_from_slice(b"\x00\xfd\xfd\xff");
        wire.extend_from_slice(f.frame(&statustext(MavSeverity::MAV_SEVERITY_ERROR, "gps failed")));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            d.push(chunk);
            while let Some(m) = d.next_frame() {
                got.push(parse(&m).unwrap());
            }
        }
        assert_eq!(got.len(), 2);
        match &got[0] {
            MavMessage::HEARTBEAT(h) => {
                assert!(h.base_mode.is_empty(), "never armed");
                assert_eq!(h.mavtype, MavType::MAV_TYPE_ONBOARD_CONTROLLER);
            }
            m => panic!("{m:?}"),
        }
        match &got[1] {
            MavMessage::STATUSTEXT(t) => assert_eq!(t.text.to_str().unwrap(), "gps failed"),
            m => panic!("{m:?}"),
        }
        assert_eq!(d.frames(), 2);
        assert!(d.skipped() >= 13);
    }

    #[test]
    fn flagged_ranges_are_sent_as_no_valid_distance() {
        let mut r = RangeRecord {
            stamp: Stamp::default(),
            distance_cm: 1234,
            strength: 80,
            status: crate::records::RangeStatus::Ok,
        };
        let current = |r: &RangeRecord| match distance_sensor(r, 5, 4000) {
            MavMessage::DISTANCE_SENSOR(d) => {
                assert_eq!((d.min_distance, d.max_distance), (5, 4000));
                assert_eq!(
                    d.orientation,
                    MavSensorOrientation::MAV_SENSOR_ROTATION_PITCH_270
                );
                d.current_distance
            }
            m => panic!("{m:?}"),
        };
        assert_eq!(current(&r), 1234);
        r.status = crate::records::RangeStatus::Weak;
        assert_eq!(current(&r), 4001, "max + 1: no valid distance");
    }

    #[test]
    fn fix_fields_are_scaled_and_unknowns_marked() {
        let fix = Fix {
            stamp: Stamp::default(),
            utc_ns: Some(1_700_000_000_000_000_000),
            lat_deg: Some(53.3613367),
            lon_deg: Some(-6.50562),
            alt_msl_m: Some(61.7),
            quality: FixQuality::Gps,
            satellites: Some(8),
            hdop: Some(1.03),
            speed_mps: None,
            course_deg: None,
            time_of_day_s: None,
        };
        let MavMessage::GPS_RAW_INT(g) = gps_raw_int(&fix) else {
            panic!()
        };
        assert_eq!(g.lat, 533_613_367);
        assert_eq!(g.lon, -65_056_200);
        assert_eq!(g.alt, 61_700);
        assert_eq!(g.eph, 103);
        assert_eq!(g.vel, u16::MAX);
        assert_eq!(g.fix_type, GpsFixType::GPS_FIX_TYPE_3D_FIX);
        assert_eq!(g.time_usec, 1_700_000_000_000_000);
    }

    #[test]
    fn names_and_texts_are_cut_at_char_boundaries() {
        assert_eq!(name10("rangefinder-long").to_str().unwrap(), "rangefinde");
        assert_eq!(cut("ééééééé", 5), "éé");
    }
}
