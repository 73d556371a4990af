//! The one place that knows how things become bytes.
//!
//! bincode (pinned to 2.0.1 in the workspace) encodes events and projection records with
//! its `standard` configuration: little-endian, variable-length integers, enum variants by
//! index. Keeping every use here means the encoding could be replaced by a versioned
//! migration without touching the rest of the ledger. The record framing and the hash rule
//! are specified byte by byte in `docs/ledger-format.md`.

use crate::event::Event;
use crate::ids::Hash32;
use crate::projection::PVal;
use serde::{de::DeserializeOwned, Serialize};

#[cfg(test)]
pub(crate) mod arb;
mod direct;
mod event_reader;

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
    let mut out = Vec::with_capacity(128);
    encode_into(value, &mut out)?;
    Ok(out)
}

/// bincode's writer for appending to a caller's buffer: lets hot paths reuse one buffer
/// (or write straight into a segment) instead of growing a fresh vector per value.
struct AppendWriter<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for AppendWriter<'_> {
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Appends the encoding of `value` to `out`: the same bytes [`encode`] returns.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_writer(value, AppendWriter(out), config())
        .map_err(|e| CodecError::Encode(e.to_string()))
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

/// Decodes an event: the same result as [`decode`]`::<Event>`, faster. Verification
/// decodes every event of a run, so events are read by a decoder of their own
/// ([`event_reader`]) that follows bincode's rules without going through serde; whatever
/// it refuses, and any event too long for it, is decoded by bincode, whose error is the
/// one reported.
pub fn decode_event(bytes: &[u8]) -> Result<Event, CodecError> {
    if bytes.len() <= event_reader::MAX_INPUT {
        if let Ok(event) = event_reader::read_event(bytes) {
            return Ok(event);
        }
    }
    decode(bytes)
}

/// The chain rule: `hash = blake3(version ‖ seq ‖ prev_hash ‖ event bytes)`, integers
/// little-endian.
pub fn record_hash(version: u16, seq: u64, prev: &Hash32, event_bytes: &[u8]) -> Hash32 {
    // Most events are a few dozen bytes: hashing one contiguous buffer costs about half of
    // feeding the hasher four pieces, and verification hashes every record.
    const SMALL: usize = 256;
    if event_bytes.len() <= SMALL {
        let mut buf = [0u8; 2 + 8 + 32 + SMALL];
        buf[..2].copy_from_slice(&version.to_le_bytes());
        buf[2..10].copy_from_slice(&seq.to_le_bytes());
        buf[10..42].copy_from_slice(&prev.0);
        let end = 42 + event_bytes.len();
        buf[42..end].copy_from_slice(event_bytes);
        return Hash32(*blake3::hash(&buf[..end]).as_bytes());
    }
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
        decode_event(self.event_bytes)
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

/// Appends the encoding of an event: the same bytes as [`encode_into`], written directly
/// for the events of a row's walk (`direct`), through serde for the rest.
pub fn encode_event_into(event: &Event, out: &mut Vec<u8>) -> Result<(), CodecError> {
    if direct::event(out, event) {
        return Ok(());
    }
    encode_into(event, out)
}

/// Appends the encoding of a projection record: the same bytes as [`encode_into`], written
/// directly for token and row records (`direct`), through serde for the rest.
pub fn encode_proj_into(value: &PVal, out: &mut Vec<u8>) -> Result<(), CodecError> {
    if direct::proj(out, value) {
        return Ok(());
    }
    encode_into(value, out)
}

/// Encodes `event` straight into `out` as a framed record (the same bytes as encoding it
/// and calling [`write_record`]) and returns its hash. Refuses, leaving `out` as it was,
/// an event whose encoding exceeds `max_event_len`; `Ok(Err(len))` reports its length.
pub fn append_record<T: Serialize>(
    out: &mut Vec<u8>,
    seq: u64,
    prev: &Hash32,
    event: &T,
    max_event_len: usize,
) -> Result<Result<Hash32, usize>, CodecError> {
    append_framed(out, seq, prev, max_event_len, Chain::Hashed, |out| {
        encode_into(event, out)
    })
}

/// Whether a framed record gets its chain hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    Hashed,
    /// The hash field is left zero and [`Hash32::ZERO`] returned: for records that are
    /// dropped once framed and whose chain nothing reads (a scratch ledger's).
    Skipped,
}

/// [`append_record`] for an event, encoded by [`encode_event_into`]: the writer's path.
pub fn append_event(
    out: &mut Vec<u8>,
    seq: u64,
    prev: &Hash32,
    event: &Event,
    max_event_len: usize,
    chain: Chain,
) -> Result<Result<Hash32, usize>, CodecError> {
    append_framed(out, seq, prev, max_event_len, chain, |out| {
        encode_event_into(event, out)
    })
}

fn append_framed(
    out: &mut Vec<u8>,
    seq: u64,
    prev: &Hash32,
    max_event_len: usize,
    chain: Chain,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<(), CodecError>,
) -> Result<Result<Hash32, usize>, CodecError> {
    let start = out.len();
    out.resize(start + RECORD_HEADER_LEN, 0);
    if let Err(e) = encode(out) {
        out.truncate(start);
        return Err(e);
    }
    let body = start + RECORD_HEADER_LEN;
    let len = out.len() - body;
    if len > max_event_len {
        out.truncate(start);
        return Ok(Err(len));
    }
    let hash = match chain {
        Chain::Hashed => record_hash(FORMAT_VERSION, seq, prev, &out[body..]),
        Chain::Skipped => Hash32::ZERO,
    };
    let header = &mut out[start..body];
    header[..4].copy_from_slice(&(len as u32).to_le_bytes());
    header[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[6..14].copy_from_slice(&seq.to_le_bytes());
    header[14..46].copy_from_slice(&prev.0);
    header[46..78].copy_from_slice(&hash.0);
    Ok(Ok(hash))
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
    use crate::codec::arb;
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
    fn append_record_frames_exactly_as_write_record() {
        let ev = sample();
        let bytes = encode(&ev).unwrap();
        let mut a = Vec::new();
        let ha = write_record(&mut a, 7, &Hash32::of(b"p"), &bytes);
        let mut b = vec![9u8; 3];
        let hb = append_record(&mut b, 7, &Hash32::of(b"p"), &ev, DECODE_LIMIT)
            .unwrap()
            .unwrap();
        assert_eq!(ha, hb);
        assert_eq!(&b[3..], &a[..]);
        // Too large: refused, buffer untouched.
        assert_eq!(
            append_record(&mut b, 8, &ha, &ev, 4).unwrap(),
            Err(bytes.len())
        );
        assert_eq!(&b[3..], &a[..]);
        // A long event takes the streaming hash path and still agrees with the rule.
        let long = vec![7u8; 1000];
        let mut h = blake3::Hasher::new();
        h.update(&1u16.to_le_bytes());
        h.update(&5u64.to_le_bytes());
        h.update(&ha.0);
        h.update(&long);
        assert_eq!(record_hash(1, 5, &ha, &long).0, *h.finalize().as_bytes());
        let short = vec![7u8; 100];
        let mut h = blake3::Hasher::new();
        h.update(&1u16.to_le_bytes());
        h.update(&5u64.to_le_bytes());
        h.update(&ha.0);
        h.update(&short);
        assert_eq!(record_hash(1, 5, &ha, &short).0, *h.finalize().as_bytes());
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

    /// The newest variant's vector in `docs/ledger-format.md` Appendix A: its index is
    /// 22, after every variant that existed before it.
    #[test]
    fn row_detail_encodes_as_documented() {
        let ev = Event::RowDetail {
            row: 3,
            detail: Hash32::of(b"row"),
        };
        let bytes = encode(&ev).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "160306f1a15f1e5e38208ceeeb21d27bf5e07ce8b01afd9148419bbe14fd51daa65e"
        );
        assert_eq!(decode::<Event>(&bytes).unwrap(), ev);
    }

    /// The test vector of `Event::PoolStats` (`docs/ledger-format.md`, Appendix A): its
    /// first byte, `17`, is the variant index 23, after `RowDetail` (22). A variant merged
    /// in ahead of it would renumber this byte, the Appendix A entry and the §7.3 row.
    #[test]
    fn pool_stats_test_vector() {
        let event = Event::PoolStats {
            state: crate::ids::StateId {
                subject: crate::ids::Subject::Token(crate::ids::TokenId::new("t0").unwrap()),
                node: crate::ids::NodeId::new("map").unwrap(),
                attempt: 2,
            },
            capacity_retries: 3,
            peak_delay_us: 400_000,
            throttled_us: 1000,
        };
        let bytes = encode(&event).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "1700027430036d61700203fc801a0600fbe803");
        assert_eq!(decode::<Event>(&bytes).unwrap(), event);
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

    proptest::proptest! {
        // Every variant is drawn, and `direct` writes only some: enough cases that each of
        // those is drawn hundreds of times.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// The hand-written event encoder writes serde's bytes, and they decode back.
        #[test]
        fn direct_events_are_serde_bytes(event in arb::event()) {
            let mut direct = vec![7u8];
            encode_event_into(&event, &mut direct).unwrap();
            let mut serde = vec![7u8];
            encode_into(&event, &mut serde).unwrap();
            proptest::prop_assert_eq!(&direct, &serde);
            proptest::prop_assert_eq!(decode::<Event>(&direct[1..]).unwrap(), event.clone());
            // Framed, the record and its hash are append_record's.
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let prev = Hash32::of(b"prev");
            let ha = append_event(&mut a, 9, &prev, &event, DECODE_LIMIT, Chain::Hashed).unwrap();
            let hb = append_record(&mut b, 9, &prev, &event, DECODE_LIMIT).unwrap();
            proptest::prop_assert_eq!((a, ha), (b, hb));
        }

        /// The hand-written record encoder writes serde's bytes, and they decode back.
        #[test]
        fn direct_records_are_serde_bytes(value in arb::proj()) {
            let mut direct = Vec::new();
            encode_proj_into(&value, &mut direct).unwrap();
            proptest::prop_assert_eq!(&direct, &encode(&value).unwrap());
            proptest::prop_assert_eq!(decode::<PVal>(&direct).unwrap(), value);
        }

        /// Varints on both sides of every boundary, as bincode writes a u64.
        #[test]
        fn direct_varints_are_bincode_varints(v in arb::num()) {
            let event = Event::Checkpoint { rows_ingested: v, note: String::new() };
            let serde = encode(&event).unwrap();
            let mut direct = Vec::new();
            direct::varint_for_tests(&mut direct, v);
            // Variant 18, then the varint, then an empty string.
            proptest::prop_assert_eq!(&serde[1..serde.len() - 1], &direct[..]);
        }
    }
}
