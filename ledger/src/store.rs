//! sled storage: one tree holds a run's log segments, its projections, the run index and
//! the payload store (packs and their index), under distinct key prefixes (see
//! `projection::tag`, [`crate::packs`], [`crate::payload_index`]). Keeping them in
//! one tree is what lets a commit group be one `apply_batch`: atomic, all or nothing.

use crate::bucket;
use crate::codec;
use crate::error::{LedgerError, Result};
use crate::ids::{Hash32, RunId};
use crate::payload_index;
use crate::projection::{self, PKey, PKeyRef, PVal};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;

/// Most memory sled may use for cached tree nodes when reading a whole run (verification,
/// lineage): a cache smaller than the tree makes scans page nodes back in and decode them
/// again. An upper bound, not an allocation.
pub const READ_CACHE: u64 = 1024 * 1024 * 1024;
/// The cache while running a pipeline: the writer touches recent keys only, and a small
/// cache keeps a run's peak memory low (64 MiB gave 258 MB peak RSS on the 100k-row
/// benchmark, 16 MiB 147 MB, at the same speed).
pub const WRITE_CACHE: u64 = 16 * 1024 * 1024;

/// sled's segment size for new ledgers: 2 MiB, four times sled's default.
///
/// Opening a sled 0.34 database settles every segment, and settling one counts all of
/// them (`SegmentAccountant::deactivate_segment`): opening costs the square of the
/// segment count. A 1M-row ledger has about 5,700 segments of 512 KiB, and that count was
/// 60% of `attest lineage`'s CPU. Four times larger segments make it sixteen times
/// cheaper and the segment headers read at open four times fewer. sled fixes the size
/// when it creates a database, so existing ledgers keep theirs ([`segment_size_of`]).
pub const SEGMENT_SIZE: usize = 2 * 1024 * 1024;

/// The segment size to open the sled database in `db_dir` with: the one it was created
/// with, which sled keeps as a `segment_size: N` line of its `conf` file and insists on,
/// or [`SEGMENT_SIZE`] for a new one.
fn segment_size_of(db_dir: &Path) -> usize {
    std::fs::read(db_dir.join("conf"))
        .ok()
        .and_then(|conf| {
            String::from_utf8_lossy(&conf).lines().find_map(|line| {
                line.strip_prefix("segment_size:")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(SEGMENT_SIZE)
}

/// The name of the lock file inside a ledger directory.
pub const LOCK_FILE: &str = "attest.lock";

/// How long opening waits for a lock that is held before it reports the ledger in use.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes the ledger's exclusive lock, waiting up to [`LOCK_PATIENCE`] for a holder to let
/// go. A lock is held a little past its owner's end whenever a process forks at that
/// moment: the child holds a copy of every descriptor until it executes its program, and a
/// `flock` lasts while any copy is open. A program that opens a ledger, closes it and
/// starts `attest` on it while another of its threads starts some other program would
/// otherwise find its own ledger "in use" now and then. A ledger that stays held is still
/// reported in use, after the second, not waited on.
fn take_lock(lock: &File) -> std::result::Result<(), std::fs::TryLockError> {
    let started = std::time::Instant::now();
    loop {
        match lock.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_PATIENCE => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// A failure of the storage underneath the ledger, as a user reads it.
pub(crate) trait StorageCause {
    fn describe(&self) -> String;
}

impl StorageCause for sled::Error {
    /// sled passes an OS error on in its `Debug` form: when it copies an error to hand it
    /// to several waiters (sled 0.34 `result.rs`), the copy's text is the original's
    /// `Os { code: 28, kind: StorageFull, .. }`. The OS's own words ("No space left on
    /// device (os error 28)") are what a user can act on, so they are recovered from the
    /// code.
    fn describe(&self) -> String {
        match self {
            sled::Error::Io(e) if e.raw_os_error().is_some() => e.to_string(),
            sled::Error::Io(e) => {
                let text = e.to_string();
                match os_code_in_debug(&text) {
                    Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
                    None => text,
                }
            }
            other => other.to_string(),
        }
    }
}

/// The `code` of an `std::io::Error`'s `Debug` text (`Os { code: 28, kind: .. }`).
fn os_code_in_debug(text: &str) -> Option<i32> {
    let rest = text.strip_prefix("Os { code: ")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

impl StorageCause for std::io::Error {
    fn describe(&self) -> String {
        self.to_string()
    }
}

/// A cause already put into words (the writer's storing stage passes its failure on as
/// text to every command of the group).
impl StorageCause for String {
    fn describe(&self) -> String {
        self.clone()
    }
}

impl<T: StorageCause + ?Sized> StorageCause for &T {
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// An open sled database plus the exclusive lock that makes this process its only writer.
pub struct Store {
    pub(crate) db: sled::Db,
    pub(crate) path: PathBuf,
    /// Payload index entries a run collects before they are written as a generation
    /// ([`payload_index::GENERATION`]; tests lower it to exercise several generations).
    pub(crate) index_generation: AtomicUsize,
    /// `None` for a temporary store, which no other process can find.
    _lock: Option<File>,
}

impl Store {
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        let storage = |e: &dyn StorageCause| LedgerError::Storage {
            path: dir.display().to_string(),
            message: e.describe(),
        };
        std::fs::create_dir_all(dir).map_err(|e| storage(&e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| storage(&e))?;
        // Taken before sled opens, so a second process gets a clear error instead of
        // sled's own lock error or a wait.
        take_lock(&lock).map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => LedgerError::Locked {
                path: dir.display().to_string(),
                lock: lock_path.display().to_string(),
            },
            std::fs::TryLockError::Error(e) => storage(&e),
        })?;
        let db_dir = dir.join("db");
        let db = sled::Config::new()
            .segment_size(segment_size_of(&db_dir))
            .path(db_dir)
            // Chosen by use (WRITE_CACHE, READ_CACHE). A cache smaller than the tree makes
            // every scan that reaches an evicted node read it back from the log and decode
            // it: with 64 MiB, verifying a million events spent more time paging nodes in
            // than checking them. It is an upper bound, not an allocation.
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| storage(&e))?;
        Ok(Store {
            db,
            path: dir.to_path_buf(),
            index_generation: AtomicUsize::new(payload_index::GENERATION),
            _lock: Some(lock),
        })
    }

    /// An empty store that sled deletes when it is dropped: what a scratch ledger reads
    /// (and never writes).
    pub(crate) fn temporary() -> Result<Store> {
        let path = PathBuf::from("(scratch ledger)");
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(1024 * 1024)
            .open()
            .map_err(|e| LedgerError::Storage {
                path: path.display().to_string(),
                message: e.describe(),
            })?;
        Ok(Store {
            db,
            path,
            index_generation: AtomicUsize::new(payload_index::GENERATION),
            _lock: None,
        })
    }

    pub(crate) fn storage_err(&self, e: impl StorageCause) -> LedgerError {
        LedgerError::Storage {
            path: self.path.display().to_string(),
            message: e.describe(),
        }
    }

    pub fn get_raw(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.db.get(key).map_err(|e| self.storage_err(e))
    }

    pub fn get_proj(&self, run: &RunId, key: &PKey) -> Result<Option<PVal>> {
        self.load_proj(run, key.as_ref())
    }

    pub fn load_proj(&self, run: &RunId, key: PKeyRef<'_>) -> Result<Option<PVal>> {
        match self.proj_bytes(run, key)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        }
    }

    /// The stored encoding of one projection record, wherever it lives (its own key or its
    /// row's bucket, see [`bucket`]).
    pub fn proj_bytes(&self, run: &RunId, key: PKeyRef<'_>) -> Result<Option<Vec<u8>>> {
        let Some(b) = bucket::bucket_of(key) else {
            return Ok(self.get_raw(&key.encode(run))?.map(|v| v.to_vec()));
        };
        let Some(stored) = self.get_raw(&bucket::bucket_key(run, b))? else {
            return Ok(None);
        };
        let mut suffix = Vec::with_capacity(32);
        key.encode_suffix(&mut suffix);
        Ok(bucket::find(&stored, &suffix)?.map(<[u8]>::to_vec))
    }

    /// Stores raw bytes for one projection record (or removes it), bypassing the rules:
    /// for tests that tamper with storage.
    pub fn put_proj_bytes(
        &self,
        run: &RunId,
        key: PKeyRef<'_>,
        bytes: Option<&[u8]>,
    ) -> Result<()> {
        let err = |e| self.storage_err(e);
        let Some(b) = bucket::bucket_of(key) else {
            let k = key.encode(run);
            match bytes {
                Some(v) => self.db.insert(k, v).map(|_| ()).map_err(err)?,
                None => self.db.remove(k).map(|_| ()).map_err(err)?,
            }
            return Ok(());
        };
        let bkey = bucket::bucket_key(run, b);
        let old = self.get_raw(&bkey)?;
        let mut suffix = Vec::with_capacity(32);
        key.encode_suffix(&mut suffix);
        let mut kept = Vec::new();
        for e in bucket::entries(old.as_deref().unwrap_or(&[])) {
            let (s, v) = e?;
            if s != suffix.as_slice() {
                kept.push((s.to_vec(), v.to_vec()));
            }
        }
        if let Some(v) = bytes {
            kept.push((suffix, v.to_vec()));
            kept.sort();
        }
        let merged = bucket::merge(None, &kept)?;
        self.db.insert(bkey, merged).map(|_| ()).map_err(err)
    }

    /// A payload's bytes wherever they are stored: under a key of their own (payloads
    /// stored outside a commit, and every payload of a ledger written before packs), else
    /// in any run's packs. `None` when absent or purged.
    pub fn payload(&self, hash: &Hash32) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.get_raw(&projection::payload_key(hash))? {
            return Ok(Some(v.to_vec()));
        }
        for run in self.run_ids()? {
            if let payload_index::Found::Live(bytes) = payload_index::find(self, &run, hash)? {
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    /// As [`Store::payload`], looking in `run`'s packs first.
    pub fn run_payload(&self, run: &RunId, hash: &Hash32) -> Result<Option<Vec<u8>>> {
        match payload_index::find(self, run, hash)? {
            payload_index::Found::Live(bytes) => Ok(Some(bytes)),
            _ => self.payload(hash),
        }
    }

    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.storage_err(e))
    }

    /// Every run id recorded, in id order.
    pub fn run_ids(&self) -> Result<Vec<RunId>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([projection::tag::RUN_INDEX]) {
            let (k, _) = item.map_err(|e| self.storage_err(e))?;
            let id = std::str::from_utf8(&k[1..])
                .map_err(|_| LedgerError::Corrupt("run index key is not UTF-8".into()))?;
            out.push(RunId::new(id)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{segment_size_of, StorageCause, Store, SEGMENT_SIZE, WRITE_CACHE};

    #[test]
    fn a_new_ledger_gets_the_larger_segments_and_an_old_one_keeps_its_own() {
        let new = tempfile::tempdir().unwrap();
        drop(Store::open(new.path(), WRITE_CACHE).unwrap());
        assert_eq!(segment_size_of(&new.path().join("db")), SEGMENT_SIZE);

        // A ledger made before SEGMENT_SIZE, with sled's default segments.
        let old = tempfile::tempdir().unwrap();
        let sled_default = 512 * 1024;
        assert_ne!(sled_default, SEGMENT_SIZE);
        drop(
            sled::Config::new()
                .path(old.path().join("db"))
                .open()
                .unwrap(),
        );
        assert_eq!(segment_size_of(&old.path().join("db")), sled_default);
        let reopened = Store::open(old.path(), WRITE_CACHE);
        assert!(
            reopened.is_ok(),
            "sled refuses another size: {:?}",
            reopened.err()
        );
    }

    #[test]
    fn an_os_error_copied_by_sled_reads_as_the_os_says_it() {
        let original = std::io::Error::from_raw_os_error(28);
        let copied = std::io::Error::new(original.kind(), format!("{original:?}"));
        assert_eq!(
            sled::Error::Io(copied).describe(),
            original.to_string(),
            "the Debug form is turned back into the OS's words"
        );
        assert_eq!(
            sled::Error::Io(std::io::Error::other("not an OS error")).describe(),
            "not an OS error"
        );
        assert_eq!(
            sled::Error::Io(std::io::Error::from_raw_os_error(13)).describe(),
            std::io::Error::from_raw_os_error(13).to_string()
        );
    }
}
