//! Reading a log file line by line in bounded memory (issue #17).
//!
//! `BufRead::lines` holds a whole line however long it is and stops at the first byte that is
//! not UTF-8; a damaged file can have both. [`Lines`] keeps at most `max` bytes of a line,
//! measures the rest, and hands out raw bytes, so one megabyte-long line costs `max` bytes of
//! memory, is reported as over-long, and every line after it is still read.

use std::io::{self, BufRead, BufReader, Read};

/// One line, without its `\n`.
#[derive(Debug)]
pub struct Line<'a> {
    /// 1-based line number.
    pub no: u64,
    /// Byte offset of its first byte in the file.
    pub offset: u64,
    /// Its bytes, at most the reader's `max` of them.
    pub bytes: &'a [u8],
    /// Its whole length, without the `\n` (more than `bytes.len()` when over-long).
    pub len: u64,
    /// Whether a `\n` ended it (the last line of a file may lack one: torn).
    pub complete: bool,
}

impl Line<'_> {
    pub fn overlong(&self) -> bool {
        self.len > self.bytes.len() as u64
    }
}

/// Lines of a byte stream, each kept to at most `max` bytes.
pub struct Lines<R> {
    inner: BufReader<R>,
    max: usize,
    buf: Vec<u8>,
    offset: u64,
    no: u64,
}

impl<R: Read> Lines<R> {
    pub fn new(r: R, max: usize) -> Self {
        Lines {
            inner: BufReader::with_capacity(64 * 1024, r),
            max,
            buf: Vec::with_capacity(max.min(64 * 1024)),
            offset: 0,
            no: 0,
        }
    }

    /// Bytes read so far (for progress).
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// The next line, `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let start = self.offset;
        let mut len = 0u64;
        let complete = loop {
            let avail = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if len == 0 {
                    return Ok(None);
                }
                break false;
            }
            let (take, used, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i, i + 1, true),
                None => (avail.len(), avail.len(), false),
            };
            let room = self.max.saturating_sub(self.buf.len()).min(take);
            self.buf.extend_from_slice(&avail[..room]);
            len += take as u64;
            self.offset += used as u64;
            self.inner.consume(used);
            if done {
                break true;
            }
        };
        self.no += 1;
        Ok(Some(Line {
            no: self.no,
            offset: start,
            bytes: &self.buf,
            len,
            complete,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_and_measured_and_the_rest_is_read() {
        let mut data = b"ab\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 1 << 20));
        data.extend_from_slice(b"\n\xff\xfe\ncd");
        let mut l = Lines::new(&data[..], 8);
        let mut got = Vec::new();
        while let Some(x) = l.next_line().unwrap() {
            got.push((x.no, x.offset, x.bytes.to_vec(), x.len, x.complete));
        }
        let big = 3 + (1 << 20) + 1;
        assert_eq!(
            got,
            [
                (1, 0, b"ab".to_vec(), 2, true),
                (2, 3, b"xxxxxxxx".to_vec(), 1 << 20, true),
                (3, big, b"\xff\xfe".to_vec(), 2, true),
                (4, big + 3, b"cd".to_vec(), 2, false),
            ]
        );
        assert_eq!(l.position(), data.len() as u64);
    }
}
