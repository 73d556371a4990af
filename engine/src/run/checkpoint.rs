//! What a `Checkpoint` event's note records, in one place: the sequencer writes it and
//! `attest resume` reads it back.
//!
//! A checkpoint is committed in one commit with the outcomes of the rows written since
//! the last one and the aggregation and coalesce events those rows caused, after the sinks
//! were fsynced. So the newest checkpoint in the ledger describes one consistent cut: every
//! effect of the first `rows_ingested` rows is recorded, nothing the sequencer did for a
//! later row is, and each sink's file is durable at the position the note gives.

use attest_ledger::Hash32;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The note's format version: `v` in the JSON.
pub const NOTE_VERSION: u32 = 2;

/// A sink's durable position: its file, the bytes and rows durable in it, and the blake3
/// of those bytes (lower-case hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkMark {
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    pub hash: String,
}

impl SinkMark {
    pub fn hash(&self) -> Option<Hash32> {
        Hash32::from_hex(&self.hash)
    }
}

/// The note: every sink with a durable position so far (by node id), and the run's
/// counters at the cut, which a resumed run continues from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointNote {
    pub v: u32,
    pub sinks: BTreeMap<String, SinkMark>,
    pub failed: u64,
    pub discarded: u64,
    pub quarantined: u64,
    /// Rows that failed because an external service gave no usable answer, and the first
    /// such error: a resumed run carries them on, so that it exits as the uninterrupted
    /// run would (1, not 0). Absent in notes written before resume of calling runs: 0.
    #[serde(default)]
    pub unanswered: u64,
    #[serde(default)]
    pub unanswered_first: Option<String>,
}

impl CheckpointNote {
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a note back; an error says why it cannot be used for a resume.
    pub fn parse(note: &str) -> Result<CheckpointNote, String> {
        let value: serde_json::Value = serde_json::from_str(note)
            .map_err(|e| format!("its checkpoint note is not JSON ({e})"))?;
        match value.get("v").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(NOTE_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "its checkpoint note has format {v}; this attest reads format {NOTE_VERSION}"
                ))
            }
            None => {
                return Err(
                    "its checkpoints were written by an attest older than resume (no sink hashes)"
                        .into(),
                )
            }
        }
        serde_json::from_value(value).map_err(|e| format!("its checkpoint note is malformed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let mut n = CheckpointNote {
            v: NOTE_VERSION,
            failed: 2,
            ..Default::default()
        };
        n.sinks.insert(
            "out".into(),
            SinkMark {
                path: "o.csv".into(),
                bytes: 10,
                rows: 2,
                hash: Hash32::of(b"x").to_hex(),
            },
        );
        assert_eq!(CheckpointNote::parse(&n.to_json()), Ok(n.clone()));
        assert_eq!(n.sinks["out"].hash(), Some(Hash32::of(b"x")));
        let unanswered = CheckpointNote {
            unanswered: 3,
            unanswered_first: Some("ask: refused".into()),
            ..n.clone()
        };
        assert_eq!(
            CheckpointNote::parse(&unanswered.to_json()),
            Ok(unanswered.clone())
        );
        // A note written before the unanswered counters were: none.
        let before = r#"{"v":2,"sinks":{},"failed":1,"discarded":0,"quarantined":0}"#;
        let parsed = CheckpointNote::parse(before).expect("older v2 note");
        assert_eq!((parsed.failed, parsed.unanswered), (1, 0));
        assert_eq!(parsed.unanswered_first, None);
        // The note of an attest before resume: sink positions without a version or hashes.
        let old = r#"{"out": {"bytes": 10, "rows": 2}}"#;
        assert!(CheckpointNote::parse(old).unwrap_err().contains("older"));
        assert!(CheckpointNote::parse("").is_err());
        assert!(CheckpointNote::parse(r#"{"v": 3}"#)
            .unwrap_err()
            .contains("format 3"));
        assert!(CheckpointNote::parse(r#"{"v": 2, "sinks": 5}"#)
            .unwrap_err()
            .contains("malformed"));
    }
}
