//! sled storage: one tree holds a run's log segments, its projections, the run index and
//! the payload store, under distinct key prefixes (see `projection::tag`). Keeping them in
//! one tree is what lets a commit group be one `apply_batch`: atomic, all or nothing.

use crate::codec;
use crate::error::{LedgerError, Result};
use crate::ids::{Hash32, RunId};
use crate::projection::{self, PKey, PKeyRef, PVal};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Most memory sled may use for cached tree nodes when reading a whole run (verification,
/// lineage): a cache smaller than the tree makes scans page nodes back in and decode them
/// again. An upper bound, not an allocation.
pub const READ_CACHE: u64 = 1024 * 1024 * 1024;
/// The cache while running a pipeline: the writer touches recent keys only, and a small
/// cache keeps a run's peak memory low (64 MiB gave 258 MB peak RSS on the 100k-row
/// benchmark, 16 MiB 147 MB, at the same speed).
pub const WRITE_CACHE: u64 = 16 * 1024 * 1024;

/// The name of the lock file inside a ledger directory.
pub const LOCK_FILE: &str = "attest.lock";

/// An open sled database plus the exclusive lock that makes this process its only writer.
pub struct Store {
    pub(crate) db: sled::Db,
    pub(crate) path: PathBuf,
    _lock: File,
}

impl Store {
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        let storage = |e: &dyn std::fmt::Display| LedgerError::Storage {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| storage(&e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| storage(&e))?;
        // Taken before sled opens, so a second process gets a clear error at once instead
        // of sled's own lock error or a wait.
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    path: dir.display().to_string(),
                    lock: lock_path.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(storage(&e)),
        }
        let db = sled::Config::new()
            .path(dir.join("db"))
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
            _lock: lock,
        })
    }

    pub(crate) fn storage_err(&self, e: impl std::fmt::Display) -> LedgerError {
        LedgerError::Storage {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    pub fn get_raw(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.db.get(key).map_err(|e| self.storage_err(e))
    }

    pub fn get_proj(&self, run: &RunId, key: &PKey) -> Result<Option<PVal>> {
        self.load_proj(run, key.as_ref())
    }

    pub fn load_proj(&self, run: &RunId, key: PKeyRef<'_>) -> Result<Option<PVal>> {
        match self.get_raw(&key.encode(run))? {
            None => Ok(None),
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        }
    }

    pub fn payload(&self, hash: &Hash32) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_raw(&projection::payload_key(hash))?
            .map(|v| v.to_vec()))
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
