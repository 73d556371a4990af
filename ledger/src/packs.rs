//! Payload packs: how the payloads a run's commits carry are stored.
//!
//! sled 0.34 charges several microseconds for every key it inserts, and far more for a key
//! that lands at a random place in the tree, as a blake3 hash does (about 20 µs each on
//! the development machine, against 0.5 µs per payload when they share one value; see
//! `docs/benchmarks.md`). A pipeline stores about three payloads per row, so one key per
//! payload was the largest single cost of a run. Instead, the payloads of one commit group
//! for one run are stored end to end in one value, a *pack*, under a key that sorts in seq
//! order: `Q ‖ run ‖ 0x00 ‖ u64be(first_seq)`, where `first_seq` is the seq of the run's
//! first record in the group, the same as the key of the group's log segment. The pack is
//! written in the group's sled batch, so it is stored exactly when the events that
//! reference its payloads are.
//!
//! A pack is its entries end to end, each either
//! - live: `hash (32) ‖ u32le(len) ‖ bytes (len)`, where `hash = blake3(bytes)`, or
//! - purged: `hash (32) ‖ u32le(0xFFFF_FFFF)`, with no bytes: what a purge leaves.
//!
//! The store stays content-addressed: packs are found by hash through the payload index
//! ([`crate::payload_index`]). A group stores each hash once; two groups may both store the
//! same bytes, which is harmless (every copy hashes to its key).

use crate::error::{LedgerError, Result};
use crate::ids::{Hash32, RunId};

/// The first byte of a pack's key.
pub const PACK: u8 = b'Q';

/// Bytes before a live entry's payload bytes: its hash and its length.
pub const ENTRY_HEADER_LEN: usize = 32 + 4;

/// The length field of a purged entry.
const PURGED_LEN: u32 = u32::MAX;

/// `Q ‖ run ‖ 0x00`: every pack of `run` starts with this.
pub fn pack_prefix(run: &RunId) -> Vec<u8> {
    let mut k = Vec::with_capacity(run.as_str().len() + 10);
    k.push(PACK);
    k.extend_from_slice(run.as_str().as_bytes());
    k.push(0);
    k
}

/// The key of `run`'s pack whose group starts at `first_seq`.
pub fn pack_key(run: &RunId, first_seq: u64) -> Vec<u8> {
    let mut k = pack_prefix(run);
    k.extend_from_slice(&first_seq.to_be_bytes());
    k
}

/// The `first_seq` in a pack's key, given the run's prefix.
pub fn pack_seq(key: &[u8], prefix: &[u8]) -> Option<u64> {
    key.strip_prefix(prefix)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
}

/// One stored entry: the hash it is stored under and its bytes, `None` once purged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub hash: Hash32,
    pub bytes: Option<&'a [u8]>,
}

fn corrupt(why: &str) -> LedgerError {
    LedgerError::Corrupt(format!("payload pack is malformed: {why}"))
}

/// Appends a live entry.
pub fn push_live(out: &mut Vec<u8>, hash: &Hash32, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|l| *l != PURGED_LEN)
        .ok_or_else(|| {
            LedgerError::Corrupt(format!(
                "a payload of {} bytes is too large to store",
                bytes.len()
            ))
        })?;
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Appends a purged entry.
pub fn push_purged(out: &mut Vec<u8>, hash: &Hash32) {
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(&PURGED_LEN.to_le_bytes());
}

/// The entries of a stored pack, in stored order. Stops with an error at the first entry
/// that does not frame; never panics and never allocates from a length it read.
pub fn entries(bytes: &[u8]) -> Entries<'_> {
    Entries { rest: bytes }
}

pub struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Entries<'a> {
    fn next_entry(&mut self) -> Result<Entry<'a>> {
        if self.rest.len() < 36 {
            return Err(corrupt("an entry header runs past the end"));
        }
        let (head, tail) = self.rest.split_at(36);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&head[..32]);
        let len = u32::from_le_bytes([head[32], head[33], head[34], head[35]]);
        if len == PURGED_LEN {
            self.rest = tail;
            return Ok(Entry {
                hash: Hash32(hash),
                bytes: None,
            });
        }
        let len = usize::try_from(len).map_err(|_| corrupt("huge entry"))?;
        if tail.len() < len {
            return Err(corrupt("an entry's bytes run past the end"));
        }
        let (bytes, rest) = tail.split_at(len);
        self.rest = rest;
        Ok(Entry {
            hash: Hash32(hash),
            bytes: Some(bytes),
        })
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let e = self.next_entry();
        if e.is_err() {
            self.rest = &[];
        }
        Some(e)
    }
}

/// `hash`'s entry in a pack, if the pack holds one (a live entry before a purged one).
pub fn find<'a>(pack: &'a [u8], hash: &Hash32) -> Result<Option<Entry<'a>>> {
    let mut purged = None;
    for e in entries(pack) {
        let e = e?;
        if e.hash == *hash {
            if e.bytes.is_some() {
                return Ok(Some(e));
            }
            purged = Some(e);
        }
    }
    Ok(purged)
}

/// What [`rewrite`] does with one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit<'a> {
    Keep,
    /// Keep the hash, drop the bytes (what a purge does).
    Purge,
    /// Remove the entry altogether (only tampering does this).
    Remove,
    /// Store other bytes under the same hash (only tampering does this).
    Replace(&'a [u8]),
}

/// `pack` with each entry edited as `edit` says; `None` when nothing changes. Returns how
/// many entries changed.
pub fn rewrite<'e>(
    pack: &[u8],
    mut edit: impl FnMut(&Entry<'_>) -> Edit<'e>,
) -> Result<Option<(Vec<u8>, usize)>> {
    let mut out = Vec::with_capacity(pack.len());
    let mut changed = 0;
    for e in entries(pack) {
        let e = e?;
        let mut edited = true;
        match (edit(&e), e.bytes) {
            (Edit::Keep, _) | (Edit::Purge, None) => {
                edited = false;
                match e.bytes {
                    Some(bytes) => push_live(&mut out, &e.hash, bytes)?,
                    None => push_purged(&mut out, &e.hash),
                }
            }
            (Edit::Purge, Some(_)) => push_purged(&mut out, &e.hash),
            (Edit::Remove, _) => {}
            (Edit::Replace(bytes), _) => push_live(&mut out, &e.hash, bytes)?,
        }
        changed += usize::from(edited);
    }
    Ok((changed > 0).then_some((out, changed)))
}

/// `pack` with every live entry whose hash `purge` accepts turned into a purged entry;
/// `None` when nothing in it changes. Returns how many entries were purged.
pub fn purge_entries(
    pack: &[u8],
    mut purge: impl FnMut(&Hash32) -> bool,
) -> Result<Option<(Vec<u8>, usize)>> {
    rewrite(pack, |e| {
        if e.bytes.is_some() && purge(&e.hash) {
            Edit::Purge
        } else {
            Edit::Keep
        }
    })
}

/// A commit group's pack for one run in the making: each hash once.
#[derive(Default)]
pub struct PackBuilder {
    bytes: Vec<u8>,
    hashes: Vec<Hash32>,
    seen: hashbrown::HashSet<Hash32>,
}

impl PackBuilder {
    /// Adds a payload unless the pack already holds its hash. `hash` must be the blake3 of
    /// `bytes` (commits hash their payloads as they are added, see [`crate::Commit`]).
    pub fn add(&mut self, hash: Hash32, bytes: &[u8]) -> Result<()> {
        if self.seen.insert(hash) {
            push_live(&mut self.bytes, &hash, bytes)?;
            self.hashes.push(hash);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The bytes the pack's stored value has so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The pack's stored value and the hashes in it, in order.
    pub fn finish(self) -> (Vec<u8>, Vec<Hash32>) {
        (self.bytes, self.hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash32 {
        Hash32::of(s.as_bytes())
    }

    #[test]
    fn a_pack_holds_each_hash_once_and_finds_it() {
        let mut b = PackBuilder::default();
        b.add(h("a"), b"a").unwrap();
        b.add(h("b"), b"b").unwrap();
        b.add(h("a"), b"a").unwrap();
        b.add(h(""), b"").unwrap();
        let (pack, hashes) = b.finish();
        assert_eq!(hashes, vec![h("a"), h("b"), h("")]);
        let all: Vec<Entry> = entries(&pack).collect::<Result<_>>().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            find(&pack, &h("b")).unwrap().unwrap().bytes,
            Some(&b"b"[..])
        );
        assert_eq!(find(&pack, &h("")).unwrap().unwrap().bytes, Some(&b""[..]));
        assert_eq!(find(&pack, &h("c")).unwrap(), None);
    }

    #[test]
    fn purging_keeps_the_hash_and_drops_the_bytes() {
        let mut b = PackBuilder::default();
        for s in ["a", "bb", "ccc"] {
            b.add(h(s), s.as_bytes()).unwrap();
        }
        let (pack, _) = b.finish();
        let (purged, n) = purge_entries(&pack, |x| *x == h("bb")).unwrap().unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            find(&purged, &h("bb")).unwrap(),
            Some(Entry {
                hash: h("bb"),
                bytes: None
            })
        );
        assert_eq!(
            find(&purged, &h("ccc")).unwrap().unwrap().bytes,
            Some(&b"ccc"[..])
        );
        assert!(!purged.windows(2).any(|w| w == b"bb"), "the bytes are gone");
        // Purging again changes nothing.
        assert_eq!(purge_entries(&purged, |x| *x == h("bb")).unwrap(), None);
    }

    #[test]
    fn a_truncated_pack_is_an_error_not_a_panic() {
        let mut b = PackBuilder::default();
        b.add(h("value"), b"value").unwrap();
        let (pack, _) = b.finish();
        for cut in 1..pack.len() {
            assert!(entries(&pack[..cut]).any(|e| e.is_err()), "cut at {cut}");
        }
        // A length that claims more than there is.
        let mut bad = pack.clone();
        bad[32..36].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert!(entries(&bad).any(|e| e.is_err()));
    }
}
