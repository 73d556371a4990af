//! Physical lines as Python reads them from a file opened with `newline=''`.
//!
//! `\r\n`, `\n` and a lone `\r` each end a line, and the terminator stays part of the line.
//! ELSPETH's line numbers (`reader.line_num`, JSONL `enumerate(f)`) count exactly these
//! lines, so both the CSV and the JSONL reader are built on this.

use std::io::{self, BufRead};

/// What one call to [`PhysicalLines::next_line`] produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineRead {
    /// A line (with its terminator, if it had one) is in the buffer.
    Line,
    /// The input is exhausted; the buffer is empty.
    Eof,
    /// The line grew past the limit; reading stops.
    TooLong,
}

pub(crate) struct PhysicalLines<R> {
    inner: R,
}

impl<R: BufRead> PhysicalLines<R> {
    pub(crate) fn new(inner: R) -> Self {
        PhysicalLines { inner }
    }

    /// Read the next line into `buf` (cleared first), refusing lines longer than `limit`
    /// bytes so a file without line breaks cannot exhaust memory.
    pub(crate) fn next_line(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<LineRead> {
        buf.clear();
        loop {
            let available = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(if buf.is_empty() {
                    LineRead::Eof
                } else {
                    LineRead::Line
                });
            }
            match available.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    let is_cr = available[i] == b'\r';
                    buf.extend_from_slice(&available[..=i]);
                    self.inner.consume(i + 1);
                    if is_cr {
                        // `\r\n` is one terminator even when the buffer splits it.
                        let next = loop {
                            match self.inner.fill_buf() {
                                Ok(a) => break a.first().copied(),
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                                Err(e) => return Err(e),
                            }
                        };
                        if next == Some(b'\n') {
                            buf.push(b'\n');
                            self.inner.consume(1);
                        }
                    }
                    return Ok(if buf.len() > limit {
                        LineRead::TooLong
                    } else {
                        LineRead::Line
                    });
                }
                None => {
                    let n = available.len();
                    buf.extend_from_slice(available);
                    self.inner.consume(n);
                    if buf.len() > limit {
                        return Ok(LineRead::TooLong);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn lines(input: &[u8], capacity: usize) -> Vec<Vec<u8>> {
        let mut r = PhysicalLines::new(BufReader::with_capacity(capacity, input));
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Ok(LineRead::Line) = r.next_line(&mut buf, usize::MAX) {
            out.push(buf.clone());
        }
        out
    }

    #[test]
    fn all_terminators() {
        for cap in [1, 2, 3, 64] {
            let got = lines(b"a\r\nb\nc\rd\r\r\ne", cap);
            let want: Vec<&[u8]> = vec![b"a\r\n", b"b\n", b"c\r", b"d\r", b"\r\n", b"e"];
            assert_eq!(got, want, "capacity {cap}");
        }
    }

    #[test]
    fn empty_input_has_no_lines() {
        assert!(lines(b"", 8).is_empty());
    }

    #[test]
    fn limit_is_enforced() {
        let data = [b'x'; 100];
        let mut r = PhysicalLines::new(BufReader::with_capacity(8, &data[..]));
        let mut buf = Vec::new();
        assert_eq!(r.next_line(&mut buf, 50).ok(), Some(LineRead::TooLong));
    }
}
