//! Row buckets: how the per-row projection records are stored.
//!
//! A pipeline writes a few projection records per source row (the row, its tokens, their
//! calls), and a sled 0.34 insert costs several microseconds per key whatever its size. So
//! the records of [`ROWS_PER_BUCKET`] consecutive rows share one stored value, a *bucket*:
//! a commit group then writes one key per bucket it touched instead of one per record.
//!
//! The records keep their logical keys ([`PKey`]) everywhere above storage: the rules,
//! the writer's cache and lineage never see buckets. Which bucket a record lives in is a
//! pure function of its key ([`bucket_of`]); records with no row (run, nodes, batches, sink
//! chunks, ...) are stored under their own key as before.
//!
//! A bucket's value is its entries sorted by key suffix, each framed as
//! `suffix_len: u16 LE ‖ suffix ‖ value_len: u32 LE ‖ value`, where `suffix` is the
//! record's key less the run prefix ([`PKeyRef::encode_suffix`]) and `value` is the
//! record's encoding exactly as it would be stored under its own key.

use crate::error::{LedgerError, Result};
use crate::ids::{RunId, Subject, TokenId};
use crate::projection::{proj_prefix, PKeyRef};

/// Consecutive source rows whose records share one bucket. Small enough that rewriting a
/// bucket (a commit group rewrites each bucket it touches whole) costs less than the keys
/// it saves, large enough that a group of a thousand events touches a handful.
pub const ROWS_PER_BUCKET: u64 = 32;

/// The kind byte of a bucket's key, after the run prefix; no record kind uses it.
pub const BUCKET_KIND: u8 = b'K';

/// The bucket `key`'s record is stored in, or `None` for a record stored under its own key.
pub fn bucket_of(key: PKeyRef<'_>) -> Option<u64> {
    let row = match key {
        PKeyRef::Row(r) => r,
        PKeyRef::Token(t) => token_row(t)?,
        PKeyRef::Call(s, _) | PKeyRef::Pool(s) => match &s.subject {
            Subject::Token(t) => token_row(t)?,
            Subject::Batch(_) => return None,
        },
        _ => return None,
    };
    Some(row / ROWS_PER_BUCKET)
}

/// The source row a token id derives from: `t{row}` and the ids made from it by forking
/// (`.branch`), expanding (`/i`) and coalescing (`+node`). Tokens made by a batch have none.
fn token_row(t: &TokenId) -> Option<u64> {
    let rest = t.as_str().strip_prefix('t')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest.as_bytes().get(digits) {
        None | Some(b'.' | b'/' | b'+') if digits > 0 => rest[..digits].parse().ok(),
        _ => None,
    }
}

/// The stored key of bucket `bucket` of `run`.
pub fn bucket_key(run: &RunId, bucket: u64) -> Vec<u8> {
    let mut k = proj_prefix(run);
    k.push(BUCKET_KIND);
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

/// The bucket number in a stored key suffix (after the run prefix), if it is a bucket's.
pub fn bucket_in_suffix(suffix: &[u8]) -> Option<u64> {
    match suffix.split_first() {
        Some((&BUCKET_KIND, n)) => <[u8; 8]>::try_from(n).ok().map(u64::from_be_bytes),
        _ => None,
    }
}

/// One record for a bucket: its key suffix and its encoded value.
pub type Entry = (Vec<u8>, Vec<u8>);

fn corrupt(why: &str) -> LedgerError {
    LedgerError::Corrupt(format!("projection bucket is malformed: {why}"))
}

/// The entries of a stored bucket, in stored order, as `(suffix, value)`.
pub fn entries(bytes: &[u8]) -> Entries<'_> {
    Entries { rest: bytes }
}

pub struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Entries<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            self.rest = &[];
            return Err(corrupt("an entry runs past the end"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn next_entry(&mut self) -> Result<(&'a [u8], &'a [u8])> {
        let len = self.take(2)?;
        let suffix = self.take(usize::from(u16::from_le_bytes([len[0], len[1]])))?;
        let len = self.take(4)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
        let value = self.take(usize::try_from(len).map_err(|_| corrupt("huge value"))?)?;
        Ok((suffix, value))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.next_entry())
    }
}

/// The value stored for `suffix` in a bucket.
pub fn find<'a>(bytes: &'a [u8], suffix: &[u8]) -> Result<Option<&'a [u8]>> {
    for e in entries(bytes) {
        let (s, v) = e?;
        if s == suffix {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

fn push_entry(out: &mut Vec<u8>, suffix: &[u8], value: &[u8]) -> Result<()> {
    let slen = u16::try_from(suffix.len()).map_err(|_| corrupt("key too long"))?;
    let vlen = u32::try_from(value.len()).map_err(|_| corrupt("value too long"))?;
    out.extend_from_slice(&slen.to_le_bytes());
    out.extend_from_slice(suffix);
    out.extend_from_slice(&vlen.to_le_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// A bucket with `changes` (sorted by suffix, no suffix twice) written over `old`'s
/// entries: a change replaces the entry of its suffix or joins in suffix order.
pub fn merge(old: Option<&[u8]>, changes: &[Entry]) -> Result<Vec<u8>> {
    let old = old.unwrap_or(&[]);
    let mut out =
        Vec::with_capacity(old.len() + changes.iter().map(|c| c.1.len() + 32).sum::<usize>());
    let mut new = changes.iter().peekable();
    for e in entries(old) {
        let (s, v) = e?;
        while let Some((ns, nv)) = new.next_if(|(ns, _)| ns.as_slice() < s) {
            push_entry(&mut out, ns, nv)?;
        }
        match new.next_if(|(ns, _)| ns.as_slice() == s) {
            Some((ns, nv)) => push_entry(&mut out, ns, nv)?,
            None => push_entry(&mut out, s, v)?,
        }
    }
    for (ns, nv) in new {
        push_entry(&mut out, ns, nv)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, StateId};
    use crate::projection::PKey;

    fn t(s: &str) -> TokenId {
        TokenId::new(s).unwrap()
    }

    #[test]
    fn records_of_one_row_share_its_bucket() {
        let b = |k: PKey| bucket_of(k.as_ref());
        assert_eq!(b(PKey::Row(70)), Some(2));
        assert_eq!(b(PKey::Token(t("t70"))), Some(2));
        assert_eq!(b(PKey::Token(t("t70.a/3+join"))), Some(2));
        let state = StateId {
            subject: Subject::Token(t("t95")),
            node: NodeId::new("llm").unwrap(),
            attempt: 1,
        };
        assert_eq!(b(PKey::Call(state, 0)), Some(2));
        assert_eq!(b(PKey::Token(t("t96"))), Some(3));
    }

    #[test]
    fn records_without_a_row_keep_their_own_key() {
        for id in ["agg#b1/0", "t", "tx5", "t5#b1/0", "t5x"] {
            assert_eq!(bucket_of(PKeyRef::Token(&t(id))), None, "{id}");
        }
        assert_eq!(bucket_of(PKeyRef::Run), None);
    }

    #[test]
    fn merge_replaces_and_inserts_in_suffix_order() {
        let ch = |s: &str, v: &str| (s.as_bytes().to_vec(), v.as_bytes().to_vec());
        let one = merge(None, &[ch("b", "1"), ch("d", "2")]).unwrap();
        let two = merge(Some(&one), &[ch("a", "0"), ch("d", "22"), ch("e", "3")]).unwrap();
        let got: Vec<(String, String)> = entries(&two)
            .map(|e| {
                let (s, v) = e.unwrap();
                (
                    String::from_utf8_lossy(s).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect();
        let want = [("a", "0"), ("b", "1"), ("d", "22"), ("e", "3")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
        assert_eq!(find(&two, b"d").unwrap(), Some(&b"22"[..]));
        assert_eq!(find(&two, b"c").unwrap(), None);
    }

    #[test]
    fn a_truncated_bucket_is_an_error_not_a_panic() {
        let full = merge(None, &[(b"key".to_vec(), b"value".to_vec())]).unwrap();
        for cut in 1..full.len() {
            assert!(entries(&full[..cut]).any(|e| e.is_err()), "cut at {cut}");
            assert!(find(&full[..cut], b"zzz").is_err());
        }
    }
}
