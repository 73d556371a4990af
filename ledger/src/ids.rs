//! Identifiers and hashes.
//!
//! Every identifier inside a run is derived deterministically from the run's structure
//! (row index, node, branch, attempt, batch sequence), so that re-executing a run reproduces
//! the same ids and the two can be compared id for id. The derivation rules live here and
//! nowhere else.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A blake3 digest. Displayed as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Hash32(pub [u8; 32]);

/// A digest's bytes are already uniformly distributed, so eight of them key a hash table as
/// well as all 32, for a fraction of the hashing: verification keeps sets of a run's
/// payload hashes, hundreds of thousands of lookups. Equal digests hash equally, as `Eq`
/// requires; the table's own seeded hasher still mixes the word.
impl std::hash::Hash for Hash32 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

impl Hash32 {
    /// The `prev_hash` of a run's first record.
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// blake3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash32 {
        Hash32(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
        s
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Hash32> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Hash32(out))
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", &self.to_hex()[..16])
    }
}

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// The longest identifier accepted. Keeps keys and records bounded.
pub const MAX_ID_LEN: usize = 256;

/// Identifiers become parts of storage keys separated by NUL bytes, so a NUL (or an empty
/// id) would make two different keys collide. This is the one check every id passes.
fn check_id(kind: &'static str, value: &str) -> Result<(), InvalidId> {
    let reason = if value.is_empty() {
        "empty"
    } else if value.len() > MAX_ID_LEN {
        "longer than 256 bytes"
    } else if value.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(InvalidId {
        kind,
        value: value.chars().take(80).collect(),
        reason,
    })
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                check_id($kind, &value)?;
                Ok($name(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// An id as read from a stored event, unchecked, exactly as serde's decoding
            /// makes it (`codec`'s event reader): checked with [`Self::validate`] where used.
            pub(crate) fn decoded(value: String) -> Self {
                $name(value)
            }
            /// Ids that arrive inside decoded records are re-checked with this before use.
            pub fn validate(&self) -> Result<(), InvalidId> {
                check_id($kind, &self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

string_id!(
    /// A run. Unlike the ids inside a run it is not derived: it must be unique per ledger.
    RunId,
    "run"
);
string_id!(
    /// A node of the pipeline graph (source, transform, gate, aggregation, coalesce, sink):
    /// its configured name.
    NodeId,
    "node"
);
string_id!(
    /// A token: one row's journey through the graph (forks and expansions make more).
    TokenId,
    "token"
);
string_id!(
    /// A batch formed by an aggregation node.
    BatchId,
    "batch"
);

impl RunId {
    /// A fresh run id: the start time (ms since the epoch) and a digest of the
    /// configuration hash, time, process and a caller-provided salt. The ledger refuses a
    /// run id that already exists, so a collision is an error rather than a merge.
    pub fn generate(config_hash: &Hash32, started_at_ms: u64, salt: u64) -> RunId {
        let mut h = blake3::Hasher::new();
        h.update(&config_hash.0);
        h.update(&started_at_ms.to_le_bytes());
        h.update(&std::process::id().to_le_bytes());
        h.update(&salt.to_le_bytes());
        let digest = Hash32(*h.finalize().as_bytes()).to_hex();
        RunId(format!("run-{started_at_ms}-{}", &digest[..12]))
    }
}

impl TokenId {
    /// The token a source row starts as.
    pub fn for_row(row_index: u64) -> TokenId {
        TokenId(format!("t{row_index}"))
    }
    /// A fork child: one per branch.
    pub fn fork_child(parent: &TokenId, branch: &str) -> TokenId {
        TokenId(format!("{}.{}", parent.0, branch))
    }
    /// The i-th element of an expansion (json_explode, replication).
    pub fn expanded(parent: &TokenId, index: u64) -> TokenId {
        TokenId(format!("{}/{}", parent.0, index))
    }
    /// The token a coalesce node makes when it merges the branches of `fork_parent`.
    pub fn coalesced(fork_parent: &TokenId, node: &NodeId) -> TokenId {
        TokenId(format!("{}+{}", fork_parent.0, node.0))
    }
    /// The i-th output row of a batch flushed in transform mode.
    pub fn batch_output(batch: &BatchId, index: u64) -> TokenId {
        TokenId(format!("{}/{}", batch.0, index))
    }
}

impl BatchId {
    /// The `seq`-th batch (from 0) formed by aggregation `node`.
    pub fn for_node(node: &NodeId, seq: u64) -> BatchId {
        BatchId(format!("{}#b{}", node.0, seq))
    }
}

/// What a node state processes: one token, or (for aggregations) one batch.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
pub enum Subject {
    Token(TokenId),
    Batch(BatchId),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Token(t) => write!(f, "{t}"),
            Subject::Batch(b) => write!(f, "{b}"),
        }
    }
}

/// A node state: one attempt (from 1) of one node on one subject. Derived, never invented:
/// a state id names exactly the (subject, node, attempt) it belongs to, so no synthetic id
/// can refer to a state that was never opened without the ledger noticing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
pub struct StateId {
    pub subject: Subject,
    pub node: NodeId,
    pub attempt: u32,
}

impl fmt::Display for StateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.subject, self.node, self.attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = Hash32::of(b"abc");
        assert_eq!(Hash32::from_hex(&h.to_hex()), Some(h));
        assert_eq!(Hash32::from_hex("zz"), None);
        assert_eq!(h.to_hex().len(), 64);
    }

    #[test]
    fn ids_refuse_nul_and_empty() {
        assert!(TokenId::new("").is_err());
        assert!(NodeId::new("a\0b").is_err());
        assert!(NodeId::new("x".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(NodeId::new("mapper").is_ok());
    }

    #[test]
    fn derived_ids_are_deterministic_and_distinct() {
        let t = TokenId::for_row(7);
        assert_eq!(t.as_str(), "t7");
        let a = TokenId::fork_child(&t, "a");
        let b = TokenId::fork_child(&t, "b");
        assert_ne!(a, b);
        assert_eq!(a, TokenId::fork_child(&TokenId::for_row(7), "a"));
        let batch = BatchId::for_node(&NodeId::new("agg").unwrap(), 3);
        assert_eq!(TokenId::batch_output(&batch, 0).as_str(), "agg#b3/0");
    }
}
