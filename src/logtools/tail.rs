//! `harmony log tail SOURCE [--follow]`: the newest session's file for a source.
//!
//! The last lines are found by reading backwards from the end in growing windows (at most
//! [`WINDOW_MAX`]), so a huge file or one huge line costs bounded memory. `--follow` polls the
//! file every 200 ms, goes on to the next segment when the logger rotates and to the next
//! session when the firmware restarts; a file cut by a repair is read again from its start.
//! It runs until it is killed: the binary leaves SIGINT, SIGTERM and SIGHUP at their default
//! action for the log tools (issue #17), and a closed stdout (`| head`) ends it too.
//! Files are opened as [`super::files`] does (no links, no FIFOs).

use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use super::files::{ArgDir, Dir};
use super::{ToolError, newest_session, source_files};

/// Largest window read backwards for the first lines.
pub const WINDOW_MAX: u64 = 16 << 20;

/// The last `n` lines of `data` (a last line without `\n` counts).
pub fn last_lines(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &data[data.len()..];
    }
    let mut count = 0;
    for (i, &b) in data.iter().enumerate().rev() {
        if b == b'\n' && i + 1 < data.len() {
            count += 1;
            if count == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

/// The last `n` lines of the file `f` of length `len`, reading at most [`WINDOW_MAX`].
fn last_lines_of(f: &mut std::fs::File, len: u64, n: usize) -> io::Result<Vec<u8>> {
    let mut window = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        Read::by_ref(f).take(len - start).read_to_end(&mut buf)?;
        let got = last_lines(&buf, n).len();
        if got < buf.len() || start == 0 {
            return Ok(buf.split_off(buf.len() - got));
        }
        if window >= WINDOW_MAX {
            // Fewer than n lines in the window: start at its first whole line.
            let at = buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |i| i + 1);
            return Ok(buf.split_off(at));
        }
        window *= 4;
    }
}

/// Opens `name` in `session` and reads from `pos`; returns the new position.
fn copy_from(
    session: &Dir,
    name: &OsString,
    mut pos: u64,
    buf: &mut [u8],
    out: &mut dyn Write,
) -> Result<Option<u64>, ToolError> {
    let Ok(mut f) = session.read(name) else {
        return Ok(Some(pos));
    };
    if f.len < pos {
        pos = 0; // cut by a repair: start over
    }
    if f.len == pos {
        return Ok(Some(pos));
    }
    let path = f.path.clone();
    let io = |source| ToolError::Io {
        path: path.clone(),
        source,
    };
    f.file.seek(SeekFrom::Start(pos)).map_err(io)?;
    loop {
        let n = f.file.read(buf).map_err(io)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        if out.write_all(&buf[..n]).is_err() {
            return Ok(None); // the reader went away (`| head`)
        }
    }
    if out.flush().is_err() {
        return Ok(None);
    }
    Ok(Some(pos))
}

fn newest_file(data: &Path, source: &str) -> Result<(Dir, OsString), ToolError> {
    let session = newest_session(data)?;
    let dir = Dir::open_arg(&session, ArgDir::Strict)?;
    let name = source_files(&session, source)?
        .pop()
        .and_then(|p| p.file_name().map(|n| n.to_owned()))
        .ok_or_else(|| ToolError::NoInput {
            path: session.clone(),
            what: format!("no {source} file"),
        })?;
    Ok((dir, name))
}

/// Prints the last `lines` lines, then with `follow` everything appended.
pub fn tail(
    data: &Path,
    source: &str,
    follow: bool,
    lines: usize,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    let (mut dir, mut name) = newest_file(data, source)?;
    let mut pos = match dir.read(&name) {
        Ok(mut f) => {
            let text =
                last_lines_of(&mut f.file, f.len, lines).map_err(|source| ToolError::Io {
                    path: f.path.clone(),
                    source,
                })?;
            let _ = out.write_all(&text).and_then(|()| out.flush());
            f.len
        }
        Err(e) if follow && e.is_missing() => 0,
        Err(e) => return Err(e.into()),
    };
    if !follow {
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Some(p) = copy_from(&dir, &name, pos, &mut buf, out)? else {
            return Ok(());
        };
        if p != pos {
            pos = p;
            continue;
        }
        // Rotated to a new segment, or the firmware started a new session?
        if let Ok((d, n)) = newest_file(data, source)
            && (d.path() != dir.path() || n != name)
        {
            // Whatever the old file got since the last look, then the new one from its start.
            if copy_from(&dir, &name, pos, &mut buf, out)?.is_none() {
                return Ok(());
            }
            (dir, name, pos) = (d, n, 0);
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_of_a_big_file_reads_a_bounded_window() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let mut data = vec![b'x'; 20 << 20];
        data.extend_from_slice(b"\na\nb\nc\n");
        std::fs::write(&p, &data).unwrap();
        let mut f = std::fs::File::open(&p).unwrap();
        assert_eq!(
            last_lines_of(&mut f, data.len() as u64, 2).unwrap(),
            b"b\nc\n"
        );
        // More lines asked than the window holds: whole lines of the window only.
        let got = last_lines_of(&mut f, data.len() as u64, 10).unwrap();
        assert_eq!(got, b"a\nb\nc\n");
        assert_eq!(last_lines(b"a\nb", 1), b"b");
    }
}
