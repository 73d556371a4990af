//! The one place that knows how things become bytes.
//!
//! bincode (pinned to 2.0.1 in the workspace) encodes events and projection records with
//! its `standard` configuration: little-endian, variable-length integers, enum variants by
//! index. Keeping every use here means the encoding could be replaced by a versioned
//! migration without touching the rest of the ledger. The record framing and the hash rule
//! are specified byte by byte in `docs/ledger-format.md`.

use crate::event::Event;
use crate::ids::Hash32;
use serde::{de::DeserializeOwned, Serialize};

/// The format version every record carries. Bump it (and keep a decoder for the old one)
/// if the framing, the hash rule or the event encoding changes.
pub const FORMAT_VERSION: u16 = 1;

/// Bytes before the event in a record: body length, version, seq, prev hash, hash.
pub const RECORD_HEADER_LEN: usize = 4 + 2 + 8 + 32 + 32;

/// No single event or projection value may claim more than this when decoded, so a
/// corrupted or hostile length prefix cannot make the decoder allocate without bound.
pub const DECODE_LIMIT: usize = 16 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    #[error("record truncated: needs {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("unknown format version {0}")]
    Version(u16),
}

/// Encodes any serde value with the ledger's bincode configuration.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value and insists the bytes hold exactly one value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// The chain rule: `hash = blake3(version ‖ seq ‖ prev_hash ‖ event bytes)`, integers
/// little-endian.
pub fn record_hash(version: u16, seq: u64, prev: &Hash32, event_bytes: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&version.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&prev.0);
    h.update(event_bytes);
    Hash32(*h.finalize().as_bytes())
}

/// One record of a run's chain, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord<'a> {
    pub version: u16,
    pub seq: u64,
    pub prev: Hash32,
    pub hash: Hash32,
    pub event_bytes: &'a [u8],
}

impl RawRecord<'_> {
    /// The hash this record's content gives under the chain rule.
    pub fn computed_hash(&self) -> Hash32 {
        record_hash(self.version, self.seq, &self.prev, self.event_bytes)
    }

    pub fn event(&self) -> Result<Event, CodecError> {
        decode(self.event_bytes)
    }
}

/// Appends a framed record for `event_bytes` to `out` and returns its hash.
pub fn write_record(out: &mut Vec<u8>, seq: u64, prev: &Hash32, event_bytes: &[u8]) -> Hash32 {
    let hash = record_hash(FORMAT_VERSION, seq, prev, event_bytes);
    // Events are far below 4 GiB: the writer refuses anything over DECODE_LIMIT first.
    out.extend_from_slice(&(event_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&prev.0);
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(event_bytes);
    hash
}

/// Splits a stored segment (consecutive records) into records. Stops with an error at the
/// first record that does not frame correctly; never panics and never allocates from a
/// length it read.
pub fn read_segment(bytes: &[u8]) -> SegmentReader<'_> {
    SegmentReader { rest: bytes }
}

pub struct SegmentReader<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SegmentReader<'a> {
    type Item = Result<RawRecord<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = parse_record(self.rest);
        match &result {
            Ok((_, used)) => self.rest = &self.rest[*used..],
            Err(_) => self.rest = &[],
        }
        Some(result.map(|(r, _)| r))
    }
}

fn take<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn parse_record(bytes: &[u8]) -> Result<(RawRecord<'_>, usize), CodecError> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(CodecError::Truncated {
            needed: RECORD_HEADER_LEN,
            available: bytes.len(),
        });
    }
    let body_len = u32::from_le_bytes(take::<4>(bytes, 0)) as usize;
    let version = u16::from_le_bytes(take::<2>(bytes, 4));
    if version != FORMAT_VERSION {
        return Err(CodecError::Version(version));
    }
    let total = RECORD_HEADER_LEN.saturating_add(body_len);
    if bytes.len() < total {
        return Err(CodecError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    let record = RawRecord {
        version,
        seq: u64::from_le_bytes(take::<8>(bytes, 6)),
        prev: Hash32(take::<32>(bytes, 14)),
        hash: Hash32(take::<32>(bytes, 46)),
        event_bytes: &bytes[RECORD_HEADER_LEN..total],
    };
    Ok((record, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RunId;

    fn sample() -> Event {
        Event::RunStarted {
            run: RunId::new("run-1").unwrap(),
            config_hash: Hash32::of(b"cfg"),
            engine_version: "0.1.0".into(),
            started_at_ms: 42,
        }
    }

    #[test]
    fn record_round_trip() {
        let bytes = encode(&sample()).unwrap();
        let mut seg = Vec::new();
        let h0 = write_record(&mut seg, 0, &Hash32::ZERO, &bytes);
        let h1 = write_record(&mut seg, 1, &h0, &bytes);
        let recs: Vec<_> = read_segment(&seg).collect::<Result<_, _>>().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].hash, h0);
        assert_eq!(recs[1].prev, h0);
        assert_eq!(recs[1].hash, h1);
        assert_eq!(recs[1].computed_hash(), h1);
        assert_eq!(recs[0].event().unwrap(), sample());
    }

    #[test]
    fn truncated_and_garbage_segments_are_errors() {
        let bytes = encode(&sample()).unwrap();
        let mut seg = Vec::new();
        write_record(&mut seg, 0, &Hash32::ZERO, &bytes);
        for cut in 0..seg.len() {
            let r: Vec<_> = read_segment(&seg[..cut]).collect();
            if cut > 0 {
                assert!(r.last().unwrap().is_err(), "cut at {cut}");
            }
        }
        // A huge claimed length must be refused without allocating it.
        let mut bad = seg.clone();
        bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_segment(&bad).next().unwrap().is_err());
    }

    #[test]
    fn decode_rejects_trailing_bytes_and_hostile_lengths() {
        let mut bytes = encode(&sample()).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Event>(&bytes),
            Err(CodecError::Trailing(1))
        ));
        // A string claiming 2^62 bytes.
        let hostile = [0u8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x40];
        assert!(decode::<Event>(&hostile).is_err());
    }
}
