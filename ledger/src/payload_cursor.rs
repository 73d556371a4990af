//! Reading a run's payloads in the order its events reference them, one pass over its
//! packs.
//!
//! Re-execution reads every source row's payload, row after row. A lookup by hash
//! ([`crate::Ledger::payload`]) searches the payload index of every run and reads the pack
//! it names: tens of thousands of instructions per payload, most of re-execution's source
//! thread (`docs/benchmarks.md`). But the payloads an event references were carried by its
//! commit, and a commit's payloads are in the pack with the greatest `first_seq` not past
//! the event's seq (`docs/ledger-format.md` §8.1.2: packs are cut at commit boundaries and
//! sort in seq order). Asked in seq order, a cursor that walks the packs forward finds each
//! one in the pack it stands on.
//!
//! Whatever that pack does not hold (a payload stored outside a commit, by a ledger older
//! than packs, or by an earlier commit; a purged entry; a seq asked out of order) is
//! looked up by hash as before, so the answers are always those of
//! [`crate::Ledger::run_payload`].

use crate::error::Result;
use crate::ids::{Hash32, RunId};
use crate::ledger::Ledger;
use crate::packs;

/// A forward cursor over one run's packs; see the module documentation.
pub struct PayloadCursor {
    ledger: Ledger,
    run: RunId,
    prefix: Vec<u8>,
    packs: sled::Iter,
    /// The pack the cursor stands on: its `first_seq` and bytes.
    current: Option<(u64, sled::IVec)>,
    /// The next pack, read ahead to see whether the cursor should move onto it.
    ahead: Option<(u64, sled::IVec)>,
    /// The highest seq asked so far: the cursor only moves forward.
    last_seq: u64,
}

impl PayloadCursor {
    /// A cursor at the start of `run`'s packs.
    pub fn new(ledger: &Ledger, run: &RunId) -> PayloadCursor {
        let prefix = packs::pack_prefix(run);
        let packs = ledger.store().db.scan_prefix(&prefix);
        PayloadCursor {
            ledger: ledger.clone(),
            run: run.clone(),
            prefix,
            packs,
            current: None,
            ahead: None,
            last_seq: 0,
        }
    }

    /// The bytes of the payload `hash` that the event at `seq` references, or `None` when
    /// the ledger does not hold them (purged, or never stored).
    pub fn get(&mut self, hash: &Hash32, seq: u64) -> Result<Option<Vec<u8>>> {
        if seq >= self.last_seq {
            self.last_seq = seq;
            self.advance_to(seq)?;
            if let Some(bytes) = self.in_current(hash) {
                return Ok(Some(bytes));
            }
        }
        self.ledger.run_payload(&self.run, hash)
    }

    /// Moves onto the last pack whose `first_seq` is at most `seq`.
    fn advance_to(&mut self, seq: u64) -> Result<()> {
        loop {
            if self.ahead.is_none() {
                self.ahead = match self.packs.next() {
                    None => None,
                    Some(item) => {
                        let (key, pack) = item.map_err(|e| self.ledger.store().storage_err(e))?;
                        // A malformed key is verification's to report; here it only ends
                        // the walk, and lookups by hash answer from then on.
                        match packs::pack_seq(&key, &self.prefix) {
                            Some(first) => Some((first, pack)),
                            None => {
                                self.current = None;
                                return Ok(());
                            }
                        }
                    }
                };
            }
            match &self.ahead {
                Some((first, _)) if *first <= seq => self.current = self.ahead.take(),
                _ => return Ok(()),
            }
        }
    }

    /// The live bytes the current pack holds for `hash`.
    fn in_current(&self, hash: &Hash32) -> Option<Vec<u8>> {
        let (_, pack) = self.current.as_ref()?;
        for entry in packs::entries(pack) {
            // A pack that does not frame is verification's to report; lookups by hash
            // answer for it.
            let entry = entry.ok()?;
            if entry.hash == *hash {
                return entry.bytes.map(<[u8]>::to_vec);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::ids::NodeId;
    use crate::ledger::Commit;
    use crate::writer::Durability;

    /// Every row's payload comes back through the cursor as through a lookup by hash: in
    /// seq order, out of order, for payloads stored outside any commit, stored by an
    /// earlier commit, purged, and never stored.
    #[test]
    fn answers_as_lookups_by_hash_do() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let run = crate::test_support::source_to_sink_run(&ledger);
        let loose = ledger.put_payload(b"stored outside a commit").unwrap();
        let mut asked = Vec::new();
        let mut row = 0u64;
        // Enough commits of enough bytes for many packs.
        for group in 0..40u64 {
            let mut c = Commit::new();
            for i in 0..20u64 {
                let bytes = format!("row {group}/{i} {}", "x".repeat(200)).into_bytes();
                let payload = match i {
                    // The same bytes as a row of the first commit: the pack that holds
                    // them may be an earlier one.
                    7 if group > 0 => c.payload(format!("row 0/7 {}", "x".repeat(200)).into()),
                    9 => loose,
                    _ => c.payload(bytes),
                };
                c.push(Event::RowIngested {
                    row,
                    source: NodeId::new("src").unwrap(),
                    payload,
                });
                asked.push(payload);
                row += 1;
            }
            run.submit(c, Durability::Buffered).unwrap();
        }
        ledger.flush().unwrap();
        let mut seqs = Vec::new();
        ledger
            .for_each_event(run.id(), |seq, e| {
                if let Event::RowIngested { payload, .. } = e {
                    seqs.push((seq, payload));
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(seqs.len(), asked.len());
        let packs = ledger
            .raw_db()
            .scan_prefix(packs::pack_prefix(run.id()))
            .count();
        assert!(packs > 5, "{packs} packs");
        let by_hash = |h: &Hash32| ledger.run_payload(run.id(), h).unwrap();
        let mut cursor = PayloadCursor::new(&ledger, run.id());
        for (seq, hash) in &seqs {
            let got = cursor.get(hash, *seq).unwrap();
            assert!(got.is_some(), "seq {seq}");
            assert_eq!(got, by_hash(hash), "seq {seq}");
        }
        // Out of order, and for hashes the run does not hold.
        let absent = Hash32::of(b"never stored");
        let (first_seq, first) = seqs[3];
        assert_eq!(cursor.get(&first, first_seq).unwrap(), by_hash(&first));
        assert_eq!(cursor.get(&absent, u64::MAX).unwrap(), None);
        let mut fresh = PayloadCursor::new(&ledger, run.id());
        assert_eq!(fresh.get(&absent, 0).unwrap(), None);
        assert_eq!(fresh.get(&loose, 5).unwrap(), by_hash(&loose));
    }
}
