//! What the CSV and JSON sinks share: durability points, artifacts, errors, header renaming
//! and the byte-counting output file.
//!
//! attest writes rows as they finish (ELSPETH writes everything at the end), records a row's
//! outcome only once the write is durable, and on resume cuts the file back to the last
//! durable length. So every sink counts the bytes it has written and can report a
//! [`DurablePoint`] after `fsync`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A state of a sink's file that is on disk: its length, the rows it holds and the hash of
/// its bytes. Resuming from it checks that the file still begins with exactly those bytes,
/// truncates it to `bytes` and continues with row `rows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DurablePoint {
    pub bytes: u64,
    pub rows: u64,
    /// blake3 of the file's first `bytes` bytes.
    pub hash: [u8; 32],
}

impl DurablePoint {
    /// The point of a file that does not exist yet (or is about to be truncated).
    pub fn empty() -> DurablePoint {
        DurablePoint {
            bytes: 0,
            rows: 0,
            hash: *blake3::hash(b"").as_bytes(),
        }
    }
}

/// The finished output file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    pub path: PathBuf,
    pub size: u64,
    /// blake3 of the file's bytes (the whole file, including content that was there before
    /// an append).
    pub content_hash: [u8; 32],
    /// Rows written by this sink (across resumes), not counting earlier appended content.
    pub rows: u64,
}

impl ArtifactInfo {
    pub fn content_hash_hex(&self) -> String {
        blake3::Hash::from(self.content_hash).to_hex().to_string()
    }
}

/// `mode` of a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// Truncate at the first row written.
    #[default]
    Write,
    /// Add to an existing file (csv: reusing its header; json: jsonl only).
    Append,
}

/// `headers` of a sink: how field names appear in the header row (CSV) or as keys (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HeaderMode {
    /// Field names as they are.
    #[default]
    Normalized,
    /// The source's original header text (field → text, e.g. from
    /// [`HeaderResolution::original_names`](super::headers::HeaderResolution::original_names));
    /// fields without one (added by transforms) keep their name.
    Original(BTreeMap<String, String>),
    /// `{field: header}`: listed fields renamed, others kept.
    Custom(BTreeMap<String, String>),
}

impl HeaderMode {
    /// The name written for a field.
    pub fn display<'a>(&'a self, field: &'a str) -> &'a str {
        match self {
            HeaderMode::Normalized => field,
            HeaderMode::Original(map) | HeaderMode::Custom(map) => {
                map.get(field).map_or(field, String::as_str)
            }
        }
    }

    /// The field a written name stands for (inverse of [`display`](Self::display)), used to
    /// read an existing header back when appending.
    pub fn field_of<'a>(&'a self, display: &'a str) -> &'a str {
        match self {
            HeaderMode::Normalized => display,
            HeaderMode::Original(map) | HeaderMode::Custom(map) => map
                .iter()
                .find(|(_, d)| d.as_str() == display)
                .map_or(display, |(f, _)| f.as_str()),
        }
    }
}

/// Why a sink refused a row or failed. Row errors (`UnknownField`, `MissingField`,
/// `KeyCollision`) leave the sink usable; the others do not.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {message}", path = path.display())]
    Config { path: PathBuf, message: String },

    #[error("{path}: {op}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(
        "{path}: row {row}: field '{field}' is not a column of this file (columns: {columns:?})",
        path = path.display()
    )]
    UnknownField {
        path: PathBuf,
        row: u64,
        field: String,
        columns: Vec<String>,
    },

    #[error(
        "{path}: row {row}: required field '{field}' of the sink schema is missing",
        path = path.display()
    )]
    MissingField {
        path: PathBuf,
        row: u64,
        field: String,
    },

    #[error(
        "{path}: row {row}: fields '{first}' and '{second}' are both written as '{key}'",
        path = path.display()
    )]
    KeyCollision {
        path: PathBuf,
        row: u64,
        key: String,
        first: String,
        second: String,
    },

    #[error("{path}: existing header does not fit the schema: {message}", path = path.display())]
    HeaderMismatch { path: PathBuf, message: String },

    #[error("{path}: cannot resume: {message}", path = path.display())]
    Resume { path: PathBuf, message: String },

    #[error("{path}: the sink failed earlier and cannot write more", path = path.display())]
    Failed { path: PathBuf },
}

impl SinkError {
    /// True when only this row was refused and the sink can go on.
    pub fn is_row_error(&self) -> bool {
        matches!(
            self,
            SinkError::UnknownField { .. }
                | SinkError::MissingField { .. }
                | SinkError::KeyCollision { .. }
        )
    }
}

pub(crate) fn io_error<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> SinkError + 'a {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// An output file that knows its length and the hash of its content, and can be made
/// durable.
///
/// The hash is kept running as bytes are written, so a durable point's hash costs nothing
/// to compute. Bytes written with [`SinkFile::write_tail`] are *provisional* (a JSON array's
/// closing bracket, written at each durable point so the file is valid there): they are on
/// disk and in the point's hash, but the next write cuts them off first.
pub(crate) struct SinkFile {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    /// blake3 of the bytes before the provisional tail.
    hasher: blake3::Hasher,
    tail: Vec<u8>,
    /// A newly created file's directory entry must be synced once, or a crash can lose the
    /// file even though its bytes were synced.
    dir_needs_sync: bool,
}

impl SinkFile {
    /// Create or truncate.
    pub(crate) fn create(path: &Path) -> Result<SinkFile, SinkError> {
        let file = File::create(path).map_err(io_error(path, "create"))?;
        Ok(SinkFile::wrap(path, file, 0, blake3::Hasher::new(), true))
    }

    /// Open for appending (creating it if missing), positioned at the end. The content
    /// already there is read once, for the hash.
    pub(crate) fn append(path: &Path) -> Result<SinkFile, SinkError> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(false)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(io_error(path, "open for append"))?;
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(io_error(path, "seek"))?;
        let mut hasher = blake3::Hasher::new();
        hash_prefix(path, len, &mut hasher)?;
        Ok(SinkFile::wrap(path, file, len, hasher, !existed))
    }

    /// Continue a file from a durable point: check that the file still holds the point's
    /// bytes (a file that is shorter, or whose content differs, was changed outside attest
    /// and is refused, not repaired), cut off whatever follows (a write the crash tore) and
    /// position at the end.
    ///
    /// `tail` is the point's provisional tail (see [`SinkFile::write_tail`]), known to the
    /// caller: a write after the point may have replaced it on disk, so only the bytes
    /// before it are read; the tail is written back.
    pub(crate) fn resume(
        path: &Path,
        point: DurablePoint,
        tail: &[u8],
    ) -> Result<SinkFile, SinkError> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => resume_error(
                    path,
                    format!(
                        "the file is missing; {} rows ({} bytes) were recorded as written to it",
                        point.rows, point.bytes
                    ),
                ),
                _ => io_error(path, "open for resume")(e),
            })?;
        let Some(body) = point.bytes.checked_sub(tail.len() as u64) else {
            return Err(resume_error(
                path,
                format!(
                    "{} bytes cannot end with the {} bytes this file ends with",
                    point.bytes,
                    tail.len()
                ),
            ));
        };
        let actual = file.metadata().map_err(io_error(path, "stat"))?.len();
        if actual < body {
            return Err(resume_error(
                path,
                format!(
                    "the file has {actual} bytes but {} were recorded as durable; it was changed outside attest",
                    point.bytes
                ),
            ));
        }
        let mut hasher = blake3::Hasher::new();
        hash_prefix(path, body, &mut hasher)?;
        let mut whole = hasher.clone();
        whole.update(tail);
        if *whole.finalize().as_bytes() != point.hash {
            return Err(resume_error(
                path,
                format!(
                    "its first {} bytes are not the ones recorded as durable ({} rows); it was changed outside attest",
                    point.bytes, point.rows
                ),
            ));
        }
        file.set_len(body).map_err(io_error(path, "truncate"))?;
        file.seek(SeekFrom::Start(body))
            .map_err(io_error(path, "seek"))?;
        let mut out = SinkFile::wrap(path, file, body, hasher, false);
        if !tail.is_empty() {
            out.write_tail(tail)?;
        }
        out.sync()?;
        Ok(out)
    }

    fn wrap(
        path: &Path,
        file: File,
        len: u64,
        hasher: blake3::Hasher,
        dir_needs_sync: bool,
    ) -> SinkFile {
        SinkFile {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(64 * 1024, file),
            len,
            hasher,
            tail: Vec::new(),
            dir_needs_sync,
        }
    }

    /// Appends `bytes` (after cutting off a provisional tail).
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.cut_tail()?;
        self.out
            .write_all(bytes)
            .map_err(io_error(&self.path, "write"))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Appends provisional bytes, replacing any earlier tail: they end the file until the
    /// next [`SinkFile::write`] cuts them off.
    pub(crate) fn write_tail(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.cut_tail()?;
        self.out
            .write_all(bytes)
            .map_err(io_error(&self.path, "write"))?;
        self.len += bytes.len() as u64;
        self.tail = bytes.to_vec();
        Ok(())
    }

    pub(crate) fn has_tail(&self) -> bool {
        !self.tail.is_empty()
    }

    fn cut_tail(&mut self) -> Result<(), SinkError> {
        if self.tail.is_empty() {
            return Ok(());
        }
        let len = self.len - self.tail.len() as u64;
        self.out.flush().map_err(io_error(&self.path, "flush"))?;
        let file = self.out.get_mut();
        file.set_len(len)
            .map_err(io_error(&self.path, "truncate"))?;
        file.seek(SeekFrom::Start(len))
            .map_err(io_error(&self.path, "seek"))?;
        self.len = len;
        self.tail.clear();
        Ok(())
    }

    /// blake3 of the file's bytes as written so far, tail included.
    pub(crate) fn content_hash(&self) -> [u8; 32] {
        let mut h = self.hasher.clone();
        h.update(&self.tail);
        *h.finalize().as_bytes()
    }

    /// Flush and fsync (plus the directory entry of a new file).
    pub(crate) fn sync(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(io_error(&self.path, "flush"))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(io_error(&self.path, "fsync"))?;
        if self.dir_needs_sync {
            sync_parent_dir(&self.path)?;
            self.dir_needs_sync = false;
        }
        Ok(())
    }

    /// Sync, then make it durable and describe it as a point.
    pub(crate) fn durable_point(&mut self, rows: u64) -> Result<DurablePoint, SinkError> {
        self.sync()?;
        Ok(DurablePoint {
            bytes: self.len,
            rows,
            hash: self.content_hash(),
        })
    }

    /// Sync and describe the file (its hash is the running one: the bytes are not read
    /// back).
    pub(crate) fn finish(mut self, rows: u64) -> Result<ArtifactInfo, SinkError> {
        self.sync()?;
        Ok(ArtifactInfo {
            size: self.len,
            content_hash: self.content_hash(),
            path: self.path,
            rows,
        })
    }
}

fn resume_error(path: &Path, message: String) -> SinkError {
    SinkError::Resume {
        path: path.to_path_buf(),
        message,
    }
}

/// Feeds the first `len` bytes of `path` to `hasher`.
fn hash_prefix(path: &Path, len: u64, hasher: &mut blake3::Hasher) -> Result<(), SinkError> {
    if len == 0 {
        return Ok(());
    }
    let file = File::open(path).map_err(io_error(path, "open for hashing"))?;
    let mut limited = file.take(len);
    let copied = io::copy(&mut limited, hasher).map_err(io_error(path, "read for hashing"))?;
    if copied < len {
        return Err(resume_error(
            path,
            format!("the file has {copied} bytes, expected at least {len}"),
        ));
    }
    Ok(())
}

fn sync_parent_dir(path: &Path) -> Result<(), SinkError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Directories can be opened read-only and fsynced on Unix; elsewhere this is a no-op
    // best effort.
    if let Ok(d) = File::open(dir) {
        d.sync_all().map_err(io_error(path, "fsync directory"))?;
    }
    Ok(())
}

/// Length of an existing file, 0 if it does not exist.
pub(crate) fn existing_len(path: &Path) -> Result<u64, SinkError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error(path, "stat")(e)),
    }
}

/// Where a sink's file stands before it writes its first row: nothing for write mode (the
/// first row truncates), the content already there for append mode.
pub(crate) fn point_before_first_row(
    path: &Path,
    mode: WriteMode,
) -> Result<DurablePoint, SinkError> {
    match mode {
        WriteMode::Write => Ok(DurablePoint::empty()),
        WriteMode::Append => {
            let bytes = existing_len(path)?;
            let mut hasher = blake3::Hasher::new();
            hash_prefix(path, bytes, &mut hasher)?;
            Ok(DurablePoint {
                bytes,
                rows: 0,
                hash: *hasher.finalize().as_bytes(),
            })
        }
    }
}

/// The first step of every sink's resume when none of its own rows are durable yet
/// (`point.rows == 0`): in write mode the first row truncates anyway; in append mode the
/// file is checked against the content that was there before the run and cut back to it.
pub(crate) fn restore_before_run(
    path: &Path,
    mode: WriteMode,
    point: DurablePoint,
) -> Result<(), SinkError> {
    if mode == WriteMode::Append && (point.bytes > 0 || existing_len(path)? > 0) {
        drop(SinkFile::resume(path, point, &[])?);
    }
    Ok(())
}
