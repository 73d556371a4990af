//! The payload index: which pack of a run holds a payload, by its hash.
//!
//! Packs ([`crate::packs`]) are keyed by seq, so finding a payload by its hash needs an
//! index. One sled key per payload would bring back the cost packs remove (a key at a
//! random place in the tree per payload), so the index is written in bulk: the storing
//! stage collects the entries of the packs it stores and, every [`GENERATION`] entries and
//! when the run ends, writes them sorted as one *generation* of a few large values.
//!
//! - `H ‖ run ‖ 0x00 ‖ u32be(gen) ‖ u64be(first prefix)`: a chunk of generation `gen`,
//!   entries `u64be(prefix) ‖ u64be(pack first_seq)` sorted, where `prefix` is the first
//!   eight bytes of the payload's hash. A run of equal prefixes never straddles two chunks.
//! - `G ‖ run`: the watermark, `u32be(next_gen) ‖ u64be(next_seq)`: every pack of the run
//!   with `first_seq < next_seq` is indexed in generations `0 .. next_gen`, no later pack is.
//!
//! A lookup searches each generation, then reads the packs past the watermark (the *tail*,
//! not indexed yet). The index is derived data: it says where to look and the pack says
//! what is there, so a lost or stale index can hide a payload but never show wrong bytes,
//! and verification compares it with the packs. A generation and its watermark are written
//! in one batch. A crash can leave a tail; opening the ledger indexes it.

use crate::error::{LedgerError, Result};
use crate::ids::{Hash32, RunId};
use crate::packs;
use crate::store::Store;

/// The first byte of an index chunk's key.
pub const INDEX: u8 = b'H';
/// The first byte of a run's watermark key.
pub const WATERMARK: u8 = b'G';

/// Entries the storing stage collects for a run before writing them as a generation: 4 MiB
/// of memory, and about 90,000 source rows of a pipeline that stores three payloads a row.
pub const GENERATION: usize = 1 << 18;

/// Entries per stored chunk (7 KiB): a lookup reads one chunk per generation.
///
/// As small as the writer's segments and packs, for the same reason
/// ([`crate::writer::CHUNK_BYTES`]): sled 0.34 stores a leaf over 128 KiB as a blob
/// file, read whole and never evicted. With 32 KiB chunks a generation's leaves were
/// blobs of ~150 KiB, and a lineage query on a 1M-row run read 61 of them (about 9 MB)
/// to find its payloads. Readers do not depend on the size: old ledgers with larger
/// chunks read the same way.
const CHUNK: usize = crate::writer::CHUNK_BYTES / ENTRY;

/// Bytes per index entry.
const ENTRY: usize = 16;

/// The first eight bytes of a hash, as the index sorts them.
pub fn prefix(hash: &Hash32) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&hash.0[..8]);
    u64::from_be_bytes(p)
}

fn index_prefix(run: &RunId) -> Vec<u8> {
    let mut k = Vec::with_capacity(run.as_str().len() + 14);
    k.push(INDEX);
    k.extend_from_slice(run.as_str().as_bytes());
    k.push(0);
    k
}

fn chunk_key(run: &RunId, gen: u32, first: u64) -> Vec<u8> {
    let mut k = index_prefix(run);
    k.extend_from_slice(&gen.to_be_bytes());
    k.extend_from_slice(&first.to_be_bytes());
    k
}

fn watermark_key(run: &RunId) -> Vec<u8> {
    let mut k = vec![WATERMARK];
    k.extend_from_slice(run.as_str().as_bytes());
    k
}

/// How far a run's packs are indexed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermark {
    pub next_gen: u32,
    pub next_seq: u64,
}

fn corrupt(run: &RunId, why: &str) -> LedgerError {
    LedgerError::Corrupt(format!("run {run}'s payload index is malformed: {why}"))
}

/// The run's watermark (zero when nothing is indexed).
pub fn watermark(store: &Store, run: &RunId) -> Result<Watermark> {
    let Some(v) = store.get_raw(&watermark_key(run))? else {
        return Ok(Watermark::default());
    };
    let v: [u8; 12] = v
        .as_ref()
        .try_into()
        .map_err(|_| corrupt(run, "the watermark is not 12 bytes"))?;
    let mut gen = [0u8; 4];
    gen.copy_from_slice(&v[..4]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&v[4..]);
    Ok(Watermark {
        next_gen: u32::from_be_bytes(gen),
        next_seq: u64::from_be_bytes(seq),
    })
}

/// A run's index entries not yet written: what the storing stage holds between
/// generations.
#[derive(Debug, Default)]
pub struct Pending {
    pub watermark: Watermark,
    /// `(prefix, pack first_seq)`.
    entries: Vec<(u64, u64)>,
    /// The highest pack seq among `entries`.
    last_seq: Option<u64>,
}

impl Pending {
    /// Starts from what storage has indexed.
    pub fn at(watermark: Watermark) -> Pending {
        Pending {
            watermark,
            entries: Vec::new(),
            last_seq: None,
        }
    }

    /// Notes the hashes of a stored pack.
    pub fn add(&mut self, pack_seq: u64, hashes: &[Hash32]) {
        self.entries
            .extend(hashes.iter().map(|h| (prefix(h), pack_seq)));
        self.last_seq = Some(self.last_seq.map_or(pack_seq, |s| s.max(pack_seq)));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the next generation (every pending entry, sorted and chunked) and the moved
    /// watermark to `batch`, and starts over. Nothing when nothing is pending.
    pub fn write_generation(&mut self, run: &RunId, batch: &mut sled::Batch) {
        let Some(last) = self.last_seq.take() else {
            return;
        };
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable();
        let gen = self.watermark.next_gen;
        let mut start = 0;
        while start < entries.len() {
            let mut end = (start + CHUNK).min(entries.len());
            // Equal prefixes stay in one chunk, so a lookup reads exactly one.
            while end < entries.len() && entries[end].0 == entries[end - 1].0 {
                end += 1;
            }
            let mut value = Vec::with_capacity((end - start) * ENTRY);
            for (p, seq) in &entries[start..end] {
                value.extend_from_slice(&p.to_be_bytes());
                value.extend_from_slice(&seq.to_be_bytes());
            }
            batch.insert(chunk_key(run, gen, entries[start].0), value);
            start = end;
        }
        self.watermark = Watermark {
            next_gen: gen + 1,
            next_seq: last + 1,
        };
        let mut wm = Vec::with_capacity(12);
        wm.extend_from_slice(&self.watermark.next_gen.to_be_bytes());
        wm.extend_from_slice(&self.watermark.next_seq.to_be_bytes());
        batch.insert(watermark_key(run), wm);
    }
}

fn parse_entries<'a>(
    run: &'a RunId,
    chunk: &'a [u8],
) -> Result<impl Iterator<Item = (u64, u64)> + 'a> {
    if chunk.is_empty() || !chunk.len().is_multiple_of(ENTRY) {
        return Err(corrupt(run, "a chunk is not a whole number of entries"));
    }
    Ok(chunk.chunks_exact(ENTRY).map(|e| {
        let mut p = [0u8; 8];
        p.copy_from_slice(&e[..8]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&e[8..]);
        (u64::from_be_bytes(p), u64::from_be_bytes(s))
    }))
}

/// The seqs of the packs the index names for `hash`, generation by generation.
fn indexed_packs(store: &Store, run: &RunId, wm: Watermark, hash: &Hash32) -> Result<Vec<u64>> {
    let want = prefix(hash);
    let mut out = Vec::new();
    for gen in 0..wm.next_gen {
        let from = chunk_key(run, gen, 0);
        let to = chunk_key(run, gen, want);
        let Some(item) = store.db.range(from..=to).next_back() else {
            continue;
        };
        let (_, chunk) = item.map_err(|e| store.storage_err(e))?;
        out.extend(
            parse_entries(run, &chunk)?
                .filter(|(p, _)| *p == want)
                .map(|(_, seq)| seq),
        );
    }
    Ok(out)
}

/// What a run's packs hold for a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Live(Vec<u8>),
    /// Only purged entries.
    Purged,
    Absent,
}

/// Looks `hash` up among `run`'s packs: indexed ones first, then the tail.
pub fn find(store: &Store, run: &RunId, hash: &Hash32) -> Result<Found> {
    let wm = watermark(store, run)?;
    let mut found = Found::Absent;
    let mut look = |pack: &[u8]| -> Result<bool> {
        match packs::find(pack, hash)? {
            Some(packs::Entry {
                bytes: Some(bytes), ..
            }) => {
                found = Found::Live(bytes.to_vec());
                Ok(true)
            }
            Some(_) => {
                found = Found::Purged;
                Ok(false)
            }
            None => Ok(false),
        }
    };
    for seq in indexed_packs(store, run, wm, hash)? {
        if let Some(pack) = store.get_raw(&packs::pack_key(run, seq))? {
            if look(&pack)? {
                return Ok(found);
            }
        }
    }
    let prefix = packs::pack_prefix(run);
    for item in store.db.range(packs::pack_key(run, wm.next_seq)..) {
        let (key, pack) = item.map_err(|e| store.storage_err(e))?;
        if !key.starts_with(&prefix) {
            break;
        }
        if look(&pack)? {
            return Ok(found);
        }
    }
    Ok(found)
}

/// Every pack of `run` that holds an entry for one of `hashes` (by the index and the
/// tail), in seq order.
pub fn packs_holding(store: &Store, run: &RunId, hashes: &[Hash32]) -> Result<Vec<u64>> {
    let wm = watermark(store, run)?;
    let mut seqs = std::collections::BTreeSet::new();
    for h in hashes {
        seqs.extend(indexed_packs(store, run, wm, h)?);
    }
    let prefix = packs::pack_prefix(run);
    for item in store.db.range(packs::pack_key(run, wm.next_seq)..) {
        let (key, _) = item.map_err(|e| store.storage_err(e))?;
        match packs::pack_seq(&key, &prefix) {
            Some(seq) => seqs.insert(seq),
            None => break,
        };
    }
    Ok(seqs.into_iter().collect())
}

/// Every entry of `run`'s index, sorted, with its watermark: what verification compares
/// with the packs.
pub fn read_all(store: &Store, run: &RunId) -> Result<(Watermark, Vec<(u64, u64)>)> {
    let wm = watermark(store, run)?;
    let mut out = Vec::new();
    for item in store.db.scan_prefix(index_prefix(run)) {
        let (key, chunk) = item.map_err(|e| store.storage_err(e))?;
        let gen = key
            .get(index_prefix(run).len()..)
            .and_then(|k| k.get(..4))
            .and_then(|g| <[u8; 4]>::try_from(g).ok())
            .map(u32::from_be_bytes);
        if gen.is_none_or(|g| g >= wm.next_gen) {
            return Err(corrupt(run, "a chunk lies outside the watermark"));
        }
        out.extend(parse_entries(run, &chunk)?);
    }
    out.sort_unstable();
    Ok((wm, out))
}

impl Pending {
    /// What storage holds for `run`: its watermark and the tail past it. A pack that does
    /// not frame contributes the entries before the fault (verification reports it).
    pub fn load(store: &Store, run: &RunId) -> Result<Pending> {
        let mut pending = Pending::at(watermark(store, run)?);
        let prefix = packs::pack_prefix(run);
        let mut hashes = Vec::new();
        for item in store
            .db
            .range(packs::pack_key(run, pending.watermark.next_seq)..)
        {
            let (key, pack) = item.map_err(|e| store.storage_err(e))?;
            let Some(seq) = packs::pack_seq(&key, &prefix) else {
                break;
            };
            hashes.clear();
            hashes.extend(packs::entries(&pack).map_while(|e| e.ok()).map(|e| e.hash));
            pending.add(seq, &hashes);
        }
        Ok(pending)
    }
}

/// Indexes every run's tail: what a crash left unindexed. Run when a ledger is opened for
/// writing, so that lookups read a tail only while its run is being written.
pub(crate) fn index_tails(store: &Store) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut any = false;
    for run in store.run_ids()? {
        let mut pending = Pending::load(store, &run)?;
        if !pending.is_empty() {
            pending.write_generation(&run, &mut batch);
            any = true;
        }
    }
    if any {
        store
            .db
            .apply_batch(batch)
            .map_err(|e| store.storage_err(e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_with_prefix(prefix: u64, tail: u8) -> Hash32 {
        let mut h = [tail; 32];
        h[..8].copy_from_slice(&prefix.to_be_bytes());
        Hash32(h)
    }

    /// A generation larger than a chunk is cut into chunks no larger than the writer's
    /// values (so sled keeps them inline), a run of equal prefixes is never cut, and
    /// every entry is found again.
    #[test]
    fn a_generation_is_cut_into_small_chunks_that_find_every_entry() {
        let store = Store::temporary().unwrap();
        let run = RunId::new("r").unwrap();
        let mut pending = Pending::at(Watermark::default());
        let mut expected = Vec::new();
        for i in 0..(3 * CHUNK as u64 + 17) {
            // Prefixes spread over the u64 range; five entries share the prefix that
            // straddles the first chunk boundary.
            let sorted_pos = if (CHUNK as u64 - 2..CHUNK as u64 + 3).contains(&i) {
                CHUNK as u64 - 2
            } else {
                i
            };
            let h = hash_with_prefix(sorted_pos * 1_000_003, i as u8);
            pending.add(i, &[h]);
            expected.push((h, i));
        }
        let mut batch = sled::Batch::default();
        pending.write_generation(&run, &mut batch);
        store.db.apply_batch(batch).unwrap();

        let chunks: Vec<_> = store
            .db
            .scan_prefix(index_prefix(&run))
            .map(|kv| kv.unwrap().1)
            .collect();
        assert!(chunks.len() >= 4, "{} chunks", chunks.len());
        let shared = (CHUNK as u64 - 2) * 1_000_003;
        let holding_shared = chunks
            .iter()
            .filter(|c| parse_entries(&run, c).unwrap().any(|(p, _)| p == shared))
            .count();
        assert_eq!(holding_shared, 1, "equal prefixes stay in one chunk");
        for c in &chunks {
            let equal_run_extra = 4 * ENTRY;
            assert!(
                c.len() <= crate::writer::CHUNK_BYTES + equal_run_extra,
                "a chunk of {} bytes",
                c.len()
            );
        }
        let wm = watermark(&store, &run).unwrap();
        for (h, seq) in expected {
            assert!(
                indexed_packs(&store, &run, wm, &h).unwrap().contains(&seq),
                "entry {seq} not found"
            );
        }
    }
}
