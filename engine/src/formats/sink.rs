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

/// A state of a sink's file that is on disk: its length and the rows it holds. Resuming
/// from it truncates the file to `bytes` and continues with row `rows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DurablePoint {
    pub bytes: u64,
    pub rows: u64,
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

/// An output file that knows its length and can be made durable.
pub(crate) struct SinkFile {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    /// A newly created file's directory entry must be synced once, or a crash can lose the
    /// file even though its bytes were synced.
    dir_needs_sync: bool,
}

impl SinkFile {
    /// Create or truncate.
    pub(crate) fn create(path: &Path) -> Result<SinkFile, SinkError> {
        let file = File::create(path).map_err(io_error(path, "create"))?;
        Ok(SinkFile::wrap(path, file, 0, true))
    }

    /// Open for appending (creating it if missing), positioned at the end.
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
        Ok(SinkFile::wrap(path, file, len, !existed))
    }

    /// Open an existing file, cut it to `len` and position at the end.
    pub(crate) fn resume(path: &Path, len: u64) -> Result<SinkFile, SinkError> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error(path, "open for resume"))?;
        let actual = file.metadata().map_err(io_error(path, "stat"))?.len();
        if actual < len {
            return Err(SinkError::Resume {
                path: path.to_path_buf(),
                message: format!(
                    "the file has {actual} bytes but {len} were recorded as durable; it was changed outside attest"
                ),
            });
        }
        file.set_len(len).map_err(io_error(path, "truncate"))?;
        file.seek(SeekFrom::Start(len))
            .map_err(io_error(path, "seek"))?;
        file.sync_all().map_err(io_error(path, "fsync"))?;
        Ok(SinkFile::wrap(path, file, len, false))
    }

    fn wrap(path: &Path, file: File, len: u64, dir_needs_sync: bool) -> SinkFile {
        SinkFile {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(64 * 1024, file),
            len,
            dir_needs_sync,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.out
            .write_all(bytes)
            .map_err(io_error(&self.path, "write"))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Cut the file back to `len` (which must not exceed the current length).
    pub(crate) fn truncate(&mut self, len: u64) -> Result<(), SinkError> {
        self.out.flush().map_err(io_error(&self.path, "flush"))?;
        let file = self.out.get_mut();
        file.set_len(len)
            .map_err(io_error(&self.path, "truncate"))?;
        file.seek(SeekFrom::Start(len))
            .map_err(io_error(&self.path, "seek"))?;
        self.len = len;
        Ok(())
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

    /// Sync, then hash the file's bytes.
    pub(crate) fn finish(mut self, rows: u64) -> Result<ArtifactInfo, SinkError> {
        self.sync()?;
        let (size, content_hash) = hash_file(&self.path)?;
        Ok(ArtifactInfo {
            path: self.path,
            size,
            content_hash,
            rows,
        })
    }
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

/// Size and blake3 of a file, streamed.
pub(crate) fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), SinkError> {
    let mut file = File::open(path).map_err(io_error(path, "open for hashing"))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(path, "read for hashing")(e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, *hasher.finalize().as_bytes()))
}

/// Length of an existing file, 0 if it does not exist.
pub(crate) fn existing_len(path: &Path) -> Result<u64, SinkError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error(path, "stat")(e)),
    }
}

/// The first step of every sink's resume when none of its own rows are durable yet
/// (`point.rows == 0`): in write mode the first row truncates anyway; in append mode the
/// file is cut back to what it was before this run touched it.
pub(crate) fn restore_before_run(
    path: &Path,
    mode: WriteMode,
    point: DurablePoint,
) -> Result<(), SinkError> {
    if mode == WriteMode::Append && existing_len(path)? > point.bytes {
        drop(SinkFile::resume(path, point.bytes)?);
    }
    Ok(())
}
