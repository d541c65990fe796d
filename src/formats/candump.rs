//! The can-utils `candump -l` log format: `(1700000000.123456) can0 123#DEADBEEF`.
//!
//! Written by hand without allocation (the logger formats every frame), read with socketcan's
//! `dump` reader (the ecosystem's parser; canplayer, python-can and cantools read the same).
//! Line format, from can-utils `lib.c` `sprint_canframe` and `candump.c`:
//! * `(%010lu.%06lu)` seconds and microseconds;
//! * the interface name;
//! * 3 hex digits for a standard ID, 8 for an extended one, 8 for an error frame (flag kept:
//!   `20000004#...`), then `#`;
//! * data as 2 upper-case hex digits per byte, or `R` (`R<len>` when len > 0) for remote frames.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use socketcan::dump::{CanDumpRecord, ParseError};
use socketcan::{CanAnyFrame, EmbeddedFrame, Frame};

use crate::records::{
    CAN_EFF_FLAG, CAN_EFF_MASK, CAN_ERR_FLAG, CAN_ERR_MASK, CAN_RTR_FLAG, CAN_SFF_MASK, CanRecord,
};

/// Longest line [`format_line`] writes: `(`10`.`6`) ` + name(15) + ` ` + 8 + `#` + 16 + `\n`.
pub const MAX_LINE: usize = 64;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[inline]
fn put_hex(out: &mut [u8], at: &mut usize, v: u32, digits: usize) {
    for i in (0..digits).rev() {
        out[*at + digits - 1 - i] = HEX[((v >> (i * 4)) & 0xf) as usize];
    }
    *at += digits;
}

#[inline]
fn put_dec_padded(out: &mut [u8], at: &mut usize, mut v: u64, digits: usize) {
    for i in (0..digits).rev() {
        out[*at + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    *at += digits;
}

/// Formats one frame as a candump log line (with `\n`) into `out`; returns its length.
/// `iface` longer than 15 bytes is cut (Linux interface names are at most 15).
#[inline]
pub fn format_line(out: &mut [u8; MAX_LINE], t_us: u64, iface: &str, r: &CanRecord) -> usize {
    let mut at = 0;
    out[at] = b'(';
    at += 1;
    let secs = t_us / 1_000_000;
    let digits = if secs >= 10_000_000_000 { 20 } else { 10 };
    let digits = digits.min(MAX_LINE - 45);
    put_dec_padded(out, &mut at, secs, digits);
    out[at] = b'.';
    at += 1;
    put_dec_padded(out, &mut at, t_us % 1_000_000, 6);
    out[at] = b')';
    out[at + 1] = b' ';
    at += 2;
    let name = &iface.as_bytes()[..iface.len().min(15)];
    out[at..at + name.len()].copy_from_slice(name);
    at += name.len();
    out[at] = b' ';
    at += 1;
    if r.is_error() {
        put_hex(out, &mut at, r.id & (CAN_ERR_MASK | CAN_ERR_FLAG), 8);
    } else if r.is_extended() {
        put_hex(out, &mut at, r.id & CAN_EFF_MASK, 8);
    } else {
        put_hex(out, &mut at, r.id & CAN_SFF_MASK, 3);
    }
    out[at] = b'#';
    at += 1;
    if r.is_remote() && !r.is_error() {
        out[at] = b'R';
        at += 1;
        if r.len > 0 {
            out[at] = b'0' + r.len.min(8);
            at += 1;
        }
    } else {
        for &b in &r.data[..(r.len as usize).min(8)] {
            out[at] = HEX[(b >> 4) as usize];
            out[at + 1] = HEX[(b & 0xf) as usize];
            at += 2;
        }
    }
    out[at] = b'\n';
    at + 1
}

/// Converts a parsed candump frame into a record. CAN FD frames are not supported.
pub fn record_from_frame(f: &CanAnyFrame) -> Option<CanRecord> {
    let mut r = CanRecord::default();
    match f {
        CanAnyFrame::Normal(d) => {
            r.id = d.id_word();
            let data = d.data();
            r.len = data.len().min(8) as u8;
            r.data[..r.len as usize].copy_from_slice(&data[..r.len as usize]);
        }
        CanAnyFrame::Remote(d) => {
            r.id = d.id_word() | CAN_RTR_FLAG;
            r.len = d.dlc().min(8) as u8;
        }
        CanAnyFrame::Error(e) => {
            r.id = (e.id_word() & CAN_ERR_MASK) | CAN_ERR_FLAG;
            let data = e.data();
            r.len = data.len().min(8) as u8;
            r.data[..r.len as usize].copy_from_slice(&data[..r.len as usize]);
        }
        CanAnyFrame::Fd(_) => return None,
    }
    if r.id & CAN_EFF_FLAG == 0 && r.id & CAN_ERR_FLAG == 0 {
        r.id &= CAN_SFF_MASK | CAN_RTR_FLAG;
    }
    Some(r)
}

/// Why a line of a candump file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: malformed candump line ({cause:?})")]
    Malformed {
        path: PathBuf,
        line: u64,
        cause: ParseError,
    },
    #[error("{path}:{line}: CAN FD frames are not supported")]
    Fd { path: PathBuf, line: u64 },
}

/// Passes the lines of a candump file through, minus `#` comments and blank lines, and
/// remembers each passed line's number so errors can name it.
struct LineFilter<R> {
    inner: R,
    line_no: u64,
    pending: Vec<u8>,
    pos: usize,
    numbers: Arc<Mutex<VecDeque<u64>>>,
}

const MAX_DUMP_LINE: u64 = 64 * 1024;

impl<R: BufRead> Read for LineFilter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.pending.len() {
            self.pending.clear();
            self.pos = 0;
            let n = (&mut self.inner)
                .take(MAX_DUMP_LINE)
                .read_until(b'\n', &mut self.pending)?;
            if n == 0 {
                return Ok(0);
            }
            self.line_no += 1;
            let t = self.pending.trim_ascii();
            if t.is_empty() || t.starts_with(b"#") {
                self.pending.clear();
                continue;
            }
            if !self.pending.ends_with(b"\n") {
                self.pending.push(b'\n');
            }
            self.numbers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(self.line_no);
        }
        let n = (self.pending.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// One frame from a candump file, with its recorded time and line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpFrame {
    pub line: u64,
    pub t_us: u64,
    pub device: String,
    pub record: CanRecord,
}

/// Reads a candump log with socketcan's reader, skipping comments and blank lines, naming the
/// file and line of every malformed one.
pub struct DumpReader<R: Read> {
    path: PathBuf,
    reader: socketcan::dump::Reader<BufReader<LineFilter<BufReader<R>>>>,
    numbers: Arc<Mutex<VecDeque<u64>>>,
}

impl DumpReader<std::fs::File> {
    pub fn open(path: &Path) -> Result<Self, DumpError> {
        let f = std::fs::File::open(path).map_err(|source| DumpError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::new(f, path))
    }
}

impl<R: Read> DumpReader<R> {
    /// Reads from any byte source; `path` names it in errors.
    pub fn new(r: R, path: &Path) -> Self {
        let numbers = Arc::new(Mutex::new(VecDeque::new()));
        let filter = LineFilter {
            inner: BufReader::new(r),
            line_no: 0,
            pending: Vec::with_capacity(128),
            pos: 0,
            numbers: numbers.clone(),
        };
        DumpReader {
            path: path.to_owned(),
            reader: socketcan::dump::Reader::from_reader(filter),
            numbers,
        }
    }

    /// The next frame; `Ok(None)` at the end. After an error the reader goes on.
    pub fn next_frame(&mut self) -> Result<Option<DumpFrame>, DumpError> {
        let res = self.reader.next_record();
        let line = self
            .numbers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .unwrap_or(0);
        match res {
            Ok(None) => Ok(None),
            Ok(Some(CanDumpRecord {
                t_us,
                device,
                frame,
                ..
            })) => match record_from_frame(&frame) {
                Some(record) => Ok(Some(DumpFrame {
                    line,
                    t_us,
                    device,
                    record,
                })),
                None => Err(DumpError::Fd {
                    path: self.path.clone(),
                    line,
                }),
            },
            Err(ParseError::Io(source)) => Err(DumpError::Io {
                path: self.path.clone(),
                source,
            }),
            Err(cause) => Err(DumpError::Malformed {
                path: self.path.clone(),
                line,
                cause,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t_us: u64, r: &CanRecord) -> String {
        let mut b = [0u8; MAX_LINE];
        let n = format_line(&mut b, t_us, "can0", r);
        String::from_utf8(b[..n].to_vec()).unwrap()
    }

    fn rec(id: u32, data: &[u8]) -> CanRecord {
        let mut r = CanRecord {
            id,
            len: data.len() as u8,
            ..Default::default()
        };
        r.data[..data.len()].copy_from_slice(data);
        r
    }

    #[test]
    fn formats_like_candump() {
        assert_eq!(
            line(
                1_700_000_000_123_456,
                &rec(0x123, &[0xde, 0xad, 0xbe, 0xef])
            ),
            "(1700000000.123456) can0 123#DEADBEEF\n"
        );
        assert_eq!(
            line(1_000_001, &rec(0x1801_550A | CAN_EFF_FLAG, &[1, 2])),
            "(0000000001.000001) can0 1801550A#0102\n"
        );
        assert_eq!(line(0, &rec(0x7ff, &[])), "(0000000000.000000) can0 7FF#\n");
        let mut r = rec(0x123 | CAN_RTR_FLAG, &[]);
        assert_eq!(line(0, &r), "(0000000000.000000) can0 123#R\n");
        r.len = 4;
        assert_eq!(line(0, &r), "(0000000000.000000) can0 123#R4\n");
        assert_eq!(
            line(0, &rec(0x4 | CAN_ERR_FLAG, &[0, 0x0c, 0, 0, 0, 0, 0, 0])),
            "(0000000000.000000) can0 20000004#000C000000000000\n"
        );
    }

    #[test]
    fn written_lines_read_back_bit_exact() {
        let frames = [
            rec(0x123, &[0xde, 0xad]),
            rec(0x1801_550A | CAN_EFF_FLAG, &[1, 2, 3, 4, 5, 6, 7, 8]),
            rec(0x7ff | CAN_RTR_FLAG, &[]),
            rec(0x10 | CAN_EFF_FLAG | CAN_RTR_FLAG, &[]),
            rec(0x4 | CAN_ERR_FLAG, &[0, 0x0c, 0, 0, 0, 0, 0, 0]),
            rec(0x000, &[]),
        ];
        let mut text = String::from("# comment\n\n");
        for (i, f) in frames.iter().enumerate() {
            text.push_str(&line(1_700_000_000_000_000 + i as u64, f));
        }
        let mut rd = DumpReader::new(text.as_bytes(), Path::new("mem"));
        for (i, f) in frames.iter().enumerate() {
            let d = rd.next_frame().unwrap().unwrap();
            assert_eq!(d.record, *f, "frame {i}");
            assert_eq!(d.t_us, 1_700_000_000_000_000 + i as u64);
            assert_eq!(d.line, i as u64 + 3);
            assert_eq!(d.device, "can0");
        }
        assert!(rd.next_frame().unwrap().is_none());
    }

    #[test]
    fn malformed_lines_name_file_and_line_and_reading_goes_on() {
        let text =
            "(1.000000) can0 123#00\nnot a frame\n(2.000000) can0 12G#00\n(3.000000) can0 124#01\n";
        let mut rd = DumpReader::new(text.as_bytes(), Path::new("trip.log"));
        assert_eq!(rd.next_frame().unwrap().unwrap().line, 1);
        let e = rd.next_frame().unwrap_err().to_string();
        assert!(e.starts_with("trip.log:2: malformed"), "{e}");
        let e = rd.next_frame().unwrap_err().to_string();
        assert!(e.starts_with("trip.log:3: malformed"), "{e}");
        let f = rd.next_frame().unwrap().unwrap();
        assert_eq!((f.line, f.record.id), (4, 0x124));
        assert!(rd.next_frame().unwrap().is_none());
    }
}
