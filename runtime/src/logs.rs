//! Container logs in Docker's `json-file` format, size-capped and rotated.
//!
//! Each container directory holds `container.log` (the live file) and up to
//! `max_files - 1` older files `container.log.1` (newest) … `container.log.N` (oldest).
//! Every line is one record, byte-for-byte the shape Docker writes:
//! `{"log":"hello\n","stream":"stdout","time":"2026-11-25T21:30:00.123456789Z"}`.
//!
//! The writer ([`LogWriter`]) lives in the single-threaded per-container helper and uses
//! plain blocking I/O: one `write` per batch of records, no fsync, no userspace buffering
//! (output must show up at once for `logs -f`). Edge flash is small, so files rotate at
//! `max_size` and only `max_files` are kept.
//!
//! The readers run in the tokio daemon: [`read`] returns what is on disk, [`follow`] then
//! keeps streaming new records across rotations. Readers track files by (device, inode):
//! a renamed file is read to its end before moving on to its successor, so rotation
//! neither loses nor repeats records. A last line without its `'\n'` is a record still
//! being written: [`read`] skips it and [`follow`] waits for the rest.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::{FutureExt as _, StreamExt as _};
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};
use serde::{Deserialize, Serialize};

/// Name of the live log file inside a container's log directory.
const LOG_NAME: &str = "container.log";
/// Default size at which the live file is rotated (Docker has no default; 10 MiB is
/// what most installations configure).
const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Default number of files kept, the live one included.
const DEFAULT_MAX_FILES: u32 = 3;
/// Followers re-check the files this often even without an inotify event, so a missed
/// event (or an exhausted inotify instance limit) delays output but never hangs it.
const FALLBACK_TICK: Duration = Duration::from_millis(250);
/// Readers read files in chunks of this size (bounded memory, cooperative follower).
const READ_CHUNK: usize = 64 * 1024;
/// How often a reader retries listing and opening the files when a rotation races it.
const SNAPSHOT_ATTEMPTS: usize = 5;
/// Mode of log files: owner read/write, group read (as Docker).
const LOG_FILE_MODE: u32 = 0o640;

/// Errors of the log writer and readers.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The configuration cannot work (a zero size or file count).
    #[error(
        "invalid log config (max_size {max_size}, max_files {max_files}): both must be at least 1"
    )]
    InvalidConfig {
        /// Configured maximum file size.
        max_size: u64,
        /// Configured number of files.
        max_files: u32,
    },
    /// The log directory could not be created.
    #[error("cannot create log directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The log directory could not be listed.
    #[error("cannot list log directory {}: {source}", path.display())]
    ListDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A log file could not be opened or examined.
    #[error("cannot open log file {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A log file could not be read.
    #[error("cannot read log file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A log file could not be written.
    #[error("cannot write log file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Rotation could not rename a log file.
    #[error("cannot rotate log file {} to {}: {source}", from.display(), to.display())]
    Rotate {
        /// The file being renamed.
        from: PathBuf,
        /// Its new name.
        to: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An old log file could not be removed.
    #[error("cannot remove log file {}: {source}", path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The blocking task reading a follower's backlog failed (panicked or was cancelled).
    #[error("log reader for {} stopped: {source}", path.display())]
    Reader {
        /// The log directory.
        path: PathBuf,
        /// The underlying error.
        source: tokio::task::JoinError,
    },
}

/// Size cap and rotation of one container's logs (`--log-opt max-size/max-file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// The live file is rotated before a record would take it past this many bytes.
    pub max_size: u64,
    /// Files kept in all, the live one included; at least 1 (then the file is simply
    /// started afresh when full).
    pub max_files: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// Which output stream of the container a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The container's standard output.
    Stdout,
    /// The container's standard error.
    Stderr,
}

impl Stream {
    /// The name used in the log file (`"stdout"` / `"stderr"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One log record: a line (with its `'\n'`) or a fragment of output without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Where the output came from.
    pub stream: Stream,
    /// When the helper wrote it.
    pub time: DateTime<Utc>,
    /// The bytes (non-UTF-8 input comes back with U+FFFD replacements, as in Docker).
    pub line: Vec<u8>,
}

/// Which records [`read`] and [`follow`] return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// Keep only the last N records of what is on disk (for [`follow`]: of the backlog).
    pub tail: Option<usize>,
    /// Only records written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records written at or before this time. A follower ends once this time has
    /// passed, as nothing written later can match.
    pub until: Option<DateTime<Utc>>,
    /// Include standard output.
    pub stdout: bool,
    /// Include standard error.
    pub stderr: bool,
}

impl Default for ReadOptions {
    /// Everything: both streams, no time bounds, no tail.
    fn default() -> Self {
        ReadOptions {
            tail: None,
            since: None,
            until: None,
            stdout: true,
            stderr: true,
        }
    }
}

impl ReadOptions {
    fn wants(&self, record: &LogRecord) -> bool {
        let stream_ok = match record.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        stream_ok
            && self.since.is_none_or(|since| record.time >= since)
            && self.until.is_none_or(|until| record.time <= until)
    }
}

/// The live log file of a log directory (inspect's `LogPath`).
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_NAME)
}

fn numbered_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{LOG_NAME}.{n}"))
}

/// The numbers N of the `container.log.N` files present in `dir`, unsorted. A missing
/// directory has none.
fn list_numbered(dir: &Path) -> io::Result<Vec<u32>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut numbers = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(n) = name.to_str().and_then(parse_rotated_name) {
            numbers.push(n);
        }
    }
    Ok(numbers)
}

/// `container.log.N` → N (N ≥ 1, plain decimal digits without leading zero).
fn parse_rotated_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(LOG_NAME)?.strip_prefix('.')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Identity of a file that survives renames: (device, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The identity of whatever is at `path` now, `None` if nothing is.
fn id_at(path: &Path) -> Result<Option<FileId>, LogError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(FileId::of(&meta))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LogError::Open {
            path: path.to_owned(),
            source,
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

/// Appends one record as a json-file line (with its final `'\n'`) to `out`.
fn encode_record(out: &mut Vec<u8>, stream: Stream, time: &str, line: &[u8]) {
    out.extend_from_slice(b"{\"log\":\"");
    escape_json(out, line);
    out.extend_from_slice(b"\",\"stream\":\"");
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(b"\",\"time\":\"");
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// Escapes `data` as the inside of a JSON string the way Docker's json-file driver does:
/// `\"`, `\\`, `\n`, `\r`; other control bytes and `<`, `>`, `&` as `\u00XX`;
/// U+2028/U+2029 as `\u2028`/`\u2029`; every byte of invalid UTF-8 as `\ufffd`.
fn escape_json(out: &mut Vec<u8>, data: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for chunk in data.utf8_chunks() {
        let s = chunk.valid().as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < s.len() {
            let b = s[i];
            if b < 0x80 {
                if b >= 0x20 && !matches!(b, b'\\' | b'"' | b'<' | b'>' | b'&') {
                    i += 1;
                    continue;
                }
                out.extend_from_slice(&s[start..i]);
                match b {
                    b'\\' | b'"' => out.extend_from_slice(&[b'\\', b]),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    _ => out.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ]),
                }
                i += 1;
                start = i;
            } else if b == 0xe2
                && s.get(i + 1) == Some(&0x80)
                && matches!(s.get(i + 2), Some(0xa8 | 0xa9))
            {
                // U+2028 LINE SEPARATOR / U+2029 PARAGRAPH SEPARATOR (E2 80 A8 / A9):
                // valid JSON, but escaped by Docker (they end lines in JavaScript).
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(b"\\u202");
                out.push(HEX[usize::from(s[i + 2] & 0xf)]);
                i += 3;
                start = i;
            } else {
                i += 1;
            }
        }
        out.extend_from_slice(&s[start..]);
        for _ in chunk.invalid() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
}

/// One json-file line as stored. Docker omits an empty `log`; unknown keys (`attrs`)
/// are ignored.
#[derive(Deserialize)]
struct StoredLine {
    #[serde(default)]
    log: String,
    stream: Stream,
    time: DateTime<Utc>,
}

/// Parses one complete line (without its `'\n'`). Malformed lines (e.g. the remains of
/// a write cut short by a crash) are skipped with a warning.
fn parse_line(line: &[u8], path: &Path) -> Option<LogRecord> {
    if line.is_empty() {
        return None;
    }
    match serde_json::from_slice::<StoredLine>(line) {
        Ok(stored) => Some(LogRecord {
            stream: stored.stream,
            time: stored.time,
            line: stored.log.into_bytes(),
        }),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "skipping malformed log line");
            None
        }
    }
}

/// Parses every complete line at the start of `partial` and removes it, leaving only a
/// trailing fragment without `'\n'` (a record still being written).
fn drain_lines(partial: &mut Vec<u8>, path: &Path, mut sink: impl FnMut(LogRecord)) {
    let Some(last_nl) = partial.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    for line in partial[..last_nl].split(|&b| b == b'\n') {
        if let Some(record) = parse_line(line, path) {
            sink(record);
        }
    }
    partial.drain(..=last_nl);
}

// ---------------------------------------------------------------------------------------
// Writer

/// Appends records to `<dir>/container.log`, rotating to `.1`, `.2`, … (`max_files`
/// files in all). Blocking std I/O: made for the single-threaded container helper.
pub struct LogWriter {
    dir: PathBuf,
    path: PathBuf,
    cfg: LogConfig,
    file: File,
    /// Bytes in the live file (from its metadata at open, then counted).
    size: u64,
    /// Encoded records of the current `write` call, written with one syscall.
    buf: Vec<u8>,
    /// A write failed part-way: the file may end in a torn line that must be closed
    /// before the next record.
    damaged: bool,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("path", &self.path)
            .field("cfg", &self.cfg)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Opens (creating the directory and file if needed) the logs of `dir` for appending:
    /// a restarted helper continues the same files and keeps rotating by their real size.
    /// Rotated files beyond `max_files` (left by a larger earlier setting) are removed.
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<Self, LogError> {
        if cfg.max_size == 0 || cfg.max_files == 0 {
            return Err(LogError::InvalidConfig {
                max_size: cfg.max_size,
                max_files: cfg.max_files,
            });
        }
        fs::create_dir_all(dir).map_err(|source| LogError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let numbers = list_numbered(dir).map_err(|source| LogError::ListDir {
            path: dir.to_owned(),
            source,
        })?;
        for n in numbers.into_iter().filter(|&n| n >= cfg.max_files) {
            remove_if_exists(&numbered_path(dir, n))?;
        }
        let path = log_path(dir);
        let file = open_for_append(&path)?;
        let mut writer = LogWriter {
            dir: dir.to_owned(),
            path,
            cfg,
            file,
            size: 0,
            buf: Vec::with_capacity(4096),
            damaged: true,
        };
        writer.repair()?;
        Ok(writer)
    }

    /// The live log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `data` from `stream`, stamped with the current time. It is split on
    /// `'\n'` into records, each keeping its `'\n'`; a trailing fragment without one is
    /// written as its own record at once (no buffering). Empty data writes nothing.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> Result<(), LogError> {
        self.write_at(stream, data, Utc::now())
    }

    /// [`write`](Self::write) with an explicit timestamp (for replaying output captured
    /// earlier, and for tests of time filters).
    pub fn write_at(
        &mut self,
        stream: Stream,
        data: &[u8],
        time: DateTime<Utc>,
    ) -> Result<(), LogError> {
        if data.is_empty() {
            return Ok(());
        }
        if self.damaged {
            self.repair()?;
        }
        let time = time.to_rfc3339_opts(SecondsFormat::Nanos, true);
        self.buf.clear();
        for line in data.split_inclusive(|&b| b == b'\n') {
            let start = self.buf.len();
            encode_record(&mut self.buf, stream, &time, line);
            let before = self.size + start as u64;
            let record_len = (self.buf.len() - start) as u64;
            if before > 0 && before + record_len > self.cfg.max_size {
                // Finish the current file with the records that fit, then start a new one.
                let record = self.buf.split_off(start);
                self.write_buf()?;
                self.rotate()?;
                self.buf = record;
            }
        }
        self.write_buf()
    }

    /// Flushes buffered output. Records are written as they come, so this only exists
    /// for symmetry with other writers; it never fsyncs (flash wear, hot path).
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.file.flush().map_err(|source| LogError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn write_buf(&mut self) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.file.write_all(&self.buf) {
            self.damaged = true;
            self.buf.clear();
            return Err(LogError::Write {
                path: self.path.clone(),
                source,
            });
        }
        self.size += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Re-reads the file size and, if the file ends in a torn line (a crashed writer, a
    /// failed write), ends it with `'\n'` so the next record starts on a line of its
    /// own; readers then skip the torn line alone.
    fn repair(&mut self) -> Result<(), LogError> {
        let write_err = |source| LogError::Write {
            path: self.path.clone(),
            source,
        };
        let size = self.file.metadata().map_err(write_err)?.len();
        self.size = size;
        if size > 0 {
            let mut last = [0u8; 1];
            self.file
                .read_exact_at(&mut last, size - 1)
                .map_err(|source| LogError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            if last[0] != b'\n' {
                tracing::warn!(path = %self.path.display(), "log file ends in a torn line; closing it");
                self.file.write_all(b"\n").map_err(write_err)?;
                self.size += 1;
            }
        }
        self.damaged = false;
        Ok(())
    }

    /// Shifts `.k` → `.k+1` (the oldest is replaced), the live file → `.1`, and opens a
    /// fresh live file. With `max_files == 1` the live file is removed and recreated
    /// (rather than truncated in place, so a follower holding it still reads its end).
    fn rotate(&mut self) -> Result<(), LogError> {
        let keep = self.cfg.max_files;
        if keep == 1 {
            remove_if_exists(&self.path)?;
        } else {
            for k in (1..keep - 1).rev() {
                rename_if_exists(
                    &numbered_path(&self.dir, k),
                    &numbered_path(&self.dir, k + 1),
                )?;
            }
            rename_if_exists(&self.path, &numbered_path(&self.dir, 1))?;
        }
        self.file = open_for_append(&self.path)?;
        self.size = 0;
        tracing::debug!(path = %self.path.display(), "rotated container log");
        Ok(())
    }
}

fn open_for_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(LOG_FILE_MODE)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_owned(),
            source,
        })
}

fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> Result<(), LogError> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Rotate {
            from: from.to_owned(),
            to: to.to_owned(),
            source,
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Readers

/// An open log file and how far it has been read.
struct Cursor {
    path: PathBuf,
    file: File,
    id: FileId,
    /// Bytes read from the file so far.
    pos: u64,
    /// Bytes after the last `'\n'` read: a record still being written.
    partial: Vec<u8>,
    /// The file is no longer the live one: nothing more will be written to it.
    retired: bool,
}

impl Cursor {
    fn new(path: PathBuf, file: File, id: FileId) -> Self {
        Cursor {
            path,
            file,
            id,
            pos: 0,
            partial: Vec::new(),
            retired: false,
        }
    }

    /// Reads up to one chunk, passing complete records to `sink`. Returns the number of
    /// bytes read (0 at end of file).
    fn read_chunk(
        &mut self,
        chunk: &mut [u8],
        sink: impl FnMut(LogRecord),
    ) -> Result<usize, LogError> {
        let n = loop {
            match self.file.read(chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LogError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        };
        if n > 0 {
            self.pos += n as u64;
            self.partial.extend_from_slice(&chunk[..n]);
            drain_lines(&mut self.partial, &self.path, sink);
        }
        Ok(n)
    }

    /// Reads to the current end of the file.
    fn read_to_end(&mut self, mut sink: impl FnMut(LogRecord)) -> Result<(), LogError> {
        let mut chunk = vec![0u8; READ_CHUNK];
        while self.read_chunk(&mut chunk, &mut sink)? > 0 {}
        Ok(())
    }

    fn drop_torn_tail(&mut self) {
        if !self.partial.is_empty() {
            tracing::warn!(path = %self.path.display(), bytes = self.partial.len(),
                "dropping an incomplete last line of a finished log file");
            self.partial.clear();
        }
    }
}

/// Opens every log file of `dir`, oldest first (the live file last, if present), as one
/// consistent set: if a rotation renames files while they are being opened, it starts
/// again.
fn open_snapshot(dir: &Path) -> Result<Vec<Cursor>, LogError> {
    let live = log_path(dir);
    let mut last = Vec::new();
    for _ in 0..SNAPSHOT_ATTEMPTS {
        let mut numbers = list_numbered(dir).map_err(|source| LogError::ListDir {
            path: dir.to_owned(),
            source,
        })?;
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        let paths = numbers
            .iter()
            .map(|&n| numbered_path(dir, n))
            .chain(std::iter::once(live.clone()));
        let mut files = Vec::new();
        let mut raced = false;
        for path in paths {
            match File::open(&path) {
                Ok(file) => {
                    let meta = file.metadata().map_err(|source| LogError::Open {
                        path: path.clone(),
                        source,
                    })?;
                    files.push(Cursor::new(path, file, FileId::of(&meta)));
                }
                // The live file may legitimately be missing (nothing written yet, or a
                // rotation between its rename and re-creation); a rotated one moved.
                Err(e) if e.kind() == io::ErrorKind::NotFound => raced |= path != live,
                Err(source) => return Err(LogError::Open { path, source }),
            }
        }
        if !raced {
            let mut consistent = true;
            for cursor in &files {
                if id_at(&cursor.path)? != Some(cursor.id) {
                    consistent = false;
                    break;
                }
            }
            if consistent {
                return Ok(files);
            }
        }
        last = files;
    }
    tracing::warn!(dir = %dir.display(), "log files kept rotating while being opened; reading them as found");
    Ok(last)
}

/// Collects filtered records, keeping only the last `tail` if set.
struct Collector<'a> {
    opts: &'a ReadOptions,
    records: VecDeque<LogRecord>,
}

impl<'a> Collector<'a> {
    fn new(opts: &'a ReadOptions) -> Self {
        Collector {
            opts,
            records: VecDeque::new(),
        }
    }

    fn push(&mut self, record: LogRecord) {
        if !self.opts.wants(&record) {
            return;
        }
        if self.opts.tail == Some(0) {
            return;
        }
        self.records.push_back(record);
        if let Some(tail) = self.opts.tail
            && self.records.len() > tail
        {
            self.records.pop_front();
        }
    }
}

/// Reads every file on disk; returns the filtered records and the live file's cursor
/// (positioned after the last complete line) for a follower to continue from.
fn read_snapshot(
    dir: &Path,
    opts: &ReadOptions,
) -> Result<(VecDeque<LogRecord>, Option<Cursor>), LogError> {
    let mut files = open_snapshot(dir)?;
    let last = files.pop();
    let mut collector = Collector::new(opts);
    for mut cursor in files {
        cursor.read_to_end(|r| collector.push(r))?;
        cursor.drop_torn_tail();
    }
    let last = match last {
        Some(mut cursor) => {
            cursor.read_to_end(|r| collector.push(r))?;
            Some(cursor)
        }
        None => None,
    };
    Ok((collector.records, last))
}

/// All records currently on disk (oldest file first), filtered; `tail` keeps the last N
/// records. A last line still being written is skipped. A missing directory has none.
pub fn read(dir: &Path, opts: &ReadOptions) -> Result<Vec<LogRecord>, LogError> {
    let (records, _) = read_snapshot(dir, opts)?;
    Ok(records.into())
}

/// The records of [`read`], then every new record as it is written, across rotations,
/// until `done` resolves AND everything written before that has been yielded. Used for
/// `logs -f` and for streaming a foreground `run`'s output.
///
/// Waits for the directory and file if they do not exist yet. Wakes on inotify events on
/// the directory, with a periodic re-check as a fallback. `tail` applies to the records on
/// disk at the start; `since`, `until` and the stream choice to all. After an error the
/// stream ends. Must be polled inside a tokio runtime.
pub fn follow(
    dir: PathBuf,
    opts: ReadOptions,
    done: impl Future<Output = ()> + Send + 'static,
) -> impl futures_util::Stream<Item = Result<LogRecord, LogError>> + Send + Unpin + 'static {
    let follower = Follower {
        live: log_path(&dir),
        dir,
        opts,
        phase: Phase::Backlog,
        pending: VecDeque::new(),
        cur: None,
        watcher: Watcher::default(),
        done: Some(Box::pin(done)),
        finishing: false,
        chunk: vec![0u8; READ_CHUNK],
    };
    Box::pin(futures_util::stream::unfold(
        follower,
        |mut follower| async move {
            let item = follower.next_item().await?;
            Some((item, follower))
        },
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing read yet (with `tail`: the records on disk are read first, in a blocking
    /// task; without, they are streamed like new ones).
    Backlog,
    /// Streaming new records.
    Live,
    /// The stream has ended.
    Finished,
}

/// What woke a waiting follower.
enum Wake {
    Event,
    Tick,
    Done,
}

struct Follower {
    dir: PathBuf,
    live: PathBuf,
    opts: ReadOptions,
    phase: Phase,
    /// Records read but not yet yielded.
    pending: VecDeque<LogRecord>,
    /// The file being read; `None` until one exists.
    cur: Option<Cursor>,
    watcher: Watcher,
    /// `None` once it has resolved.
    done: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// `done` resolved (or `until` passed): drain what is on disk, then end.
    finishing: bool,
    chunk: Vec<u8>,
}

impl Follower {
    async fn next_item(&mut self) -> Option<Result<LogRecord, LogError>> {
        loop {
            if let Some(record) = self.pending.pop_front() {
                return Some(Ok(record));
            }
            match self.phase {
                Phase::Finished => return None,
                Phase::Backlog => {
                    // Watch first, so nothing written after the snapshot goes unnoticed.
                    self.watcher.ensure(&self.dir);
                    if self.opts.tail.is_none() {
                        // No tail to compute: stream the backlog chunk by chunk from the
                        // oldest file instead of holding it all in memory.
                        self.phase = Phase::Live;
                        continue;
                    }
                    let dir = self.dir.clone();
                    let opts = self.opts.clone();
                    let result =
                        tokio::task::spawn_blocking(move || read_snapshot(&dir, &opts)).await;
                    match result {
                        Ok(Ok((records, cursor))) => {
                            self.pending = records;
                            self.cur = cursor;
                            self.phase = Phase::Live;
                        }
                        Ok(Err(e)) => return Some(Err(self.fail(e))),
                        Err(source) => {
                            let e = LogError::Reader {
                                path: self.dir.clone(),
                                source,
                            };
                            return Some(Err(self.fail(e)));
                        }
                    }
                }
                Phase::Live => {
                    if !self.finishing {
                        self.watcher.ensure(&self.dir);
                    }
                    match self.step() {
                        Ok(true) => {
                            // Long runs of filtered-out records must not hog the worker.
                            tokio::task::consume_budget().await;
                            continue;
                        }
                        Ok(false) => {}
                        Err(e) => return Some(Err(self.fail(e))),
                    }
                    // Everything on disk has been read.
                    if self.finishing {
                        self.finish();
                        continue;
                    }
                    if self.opts.until.is_some_and(|until| Utc::now() > until) {
                        self.finishing = true;
                        continue;
                    }
                    if let Wake::Done = self.wait().await {
                        self.done = None;
                        self.finishing = true;
                    }
                }
            }
        }
    }

    fn fail(&mut self, e: LogError) -> LogError {
        self.phase = Phase::Finished;
        self.pending.clear();
        e
    }

    fn finish(&mut self) {
        if let Some(cur) = &mut self.cur {
            cur.drop_torn_tail();
        }
        self.phase = Phase::Finished;
    }

    async fn wait(&mut self) -> Wake {
        let done = &mut self.done;
        let watcher = &mut self.watcher;
        tokio::select! {
            () = watcher.next_relevant() => Wake::Event,
            () = tokio::time::sleep(FALLBACK_TICK) => Wake::Tick,
            () = async {
                match done {
                    Some(done) => done.as_mut().await,
                    None => std::future::pending().await,
                }
            } => Wake::Done,
        }
    }

    /// Makes one step of progress: reads a chunk, notices a rotation or moves to the next
    /// file. Returns whether anything happened (false: all on disk has been read).
    fn step(&mut self) -> Result<bool, LogError> {
        let Some(cur) = self.cur.as_mut() else {
            return self.open_first();
        };
        let opts = &self.opts;
        let pending = &mut self.pending;
        let n = cur.read_chunk(&mut self.chunk, |r| {
            if opts.wants(&r) {
                pending.push_back(r);
            }
        })?;
        if n > 0 {
            return Ok(true);
        }
        if cur.retired {
            // Read to the end after it stopped being the live file: it is complete.
            return self.switch_to_next();
        }
        let meta = cur.file.metadata().map_err(|source| LogError::Open {
            path: cur.path.clone(),
            source,
        })?;
        if meta.len() < cur.pos {
            tracing::warn!(path = %cur.path.display(), "log file was truncated; reading it from the start");
            cur.file.rewind().map_err(|source| LogError::Read {
                path: cur.path.clone(),
                source,
            })?;
            cur.pos = 0;
            cur.partial.clear();
            return Ok(true);
        }
        if id_at(&self.live)? == Some(cur.id) {
            return Ok(false);
        }
        // Renamed or removed: the writer has moved on, so once this file is read to its
        // end (again: it may have grown since the last read) it is complete.
        cur.retired = true;
        Ok(true)
    }

    /// No file yet: start with the oldest one present.
    fn open_first(&mut self) -> Result<bool, LogError> {
        let mut files = open_snapshot(&self.dir)?;
        if files.is_empty() {
            return Ok(false);
        }
        self.cur = Some(files.remove(0));
        Ok(true)
    }

    /// The current file is retired and fully read: open the file written after it.
    /// Returns false if that file does not exist yet.
    fn switch_to_next(&mut self) -> Result<bool, LogError> {
        let Some(cur) = self.cur.as_ref() else {
            return Ok(false);
        };
        let cur_id = cur.id;
        let removed = cur
            .file
            .metadata()
            .map_err(|source| LogError::Open {
                path: cur.path.clone(),
                source,
            })?
            .nlink()
            == 0;
        for attempt in 0..=SNAPSHOT_ATTEMPTS {
            let list = |dir: &Path| {
                list_numbered(dir).map_err(|source| LogError::ListDir {
                    path: dir.to_owned(),
                    source,
                })
            };
            let mut numbers = list(&self.dir)?;
            // Where is the current file now? Rotation only moves files to higher numbers,
            // so look from low to high to not miss it mid-rotation.
            numbers.sort_unstable();
            let mut found = None;
            if !removed && attempt < SNAPSHOT_ATTEMPTS {
                for &n in &numbers {
                    if id_at(&numbered_path(&self.dir, n))? == Some(cur_id) {
                        found = Some(n);
                        break;
                    }
                }
                if found.is_none() {
                    continue;
                }
            }
            // The successor is the next newer file: `.n-1`, or the live file after `.1`.
            // Should `.n-1` be missing (removed by hand), take the newest one below it.
            // If the current file was removed (dropped as the oldest, or max_files == 1),
            // its successor is the oldest file left.
            let candidates: Vec<PathBuf> = match found {
                Some(n) => (1..n)
                    .rev()
                    .map(|k| numbered_path(&self.dir, k))
                    .chain(std::iter::once(self.live.clone()))
                    .collect(),
                None => match numbers.last() {
                    Some(&oldest) => vec![numbered_path(&self.dir, oldest)],
                    None => vec![self.live.clone()],
                },
            };
            let verify = found.map(|n| numbered_path(&self.dir, n));
            let mut opened = None;
            for path in candidates {
                match File::open(&path) {
                    Ok(file) => {
                        opened = Some((path, file));
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(LogError::Open { path, source }),
                }
            }
            // Nothing newer exists yet (the writer is between its rename and creating
            // the new live file): wait.
            let Some((next, file)) = opened else {
                return Ok(false);
            };
            let meta = file.metadata().map_err(|source| LogError::Open {
                path: next.clone(),
                source,
            })?;
            let id = FileId::of(&meta);
            if id == cur_id {
                continue;
            }
            if let Some(verify) = verify
                && id_at(&verify)? != Some(cur_id)
            {
                // Another rotation moved things while we looked.
                continue;
            }
            if let Some(old) = self.cur.as_mut() {
                old.drop_torn_tail();
            }
            self.cur = Some(Cursor::new(next, file, id));
            return Ok(true);
        }
        Ok(false)
    }
}

/// inotify on the log directory (or, until it exists, on its nearest existing ancestor). Falls back to the
/// periodic tick alone if inotify is unavailable.
#[derive(Default)]
struct Watcher {
    stream: Option<EventStream<Vec<u8>>>,
    dir_wd: Option<WatchDescriptor>,
    ancestor_wd: Option<WatchDescriptor>,
    unavailable: bool,
}

impl Watcher {
    /// Sets up the watches that are missing (first call, directory created or removed).
    fn ensure(&mut self, dir: &Path) {
        if self.dir_wd.is_some() || self.unavailable {
            return;
        }
        if self.stream.is_none() {
            let stream =
                Inotify::init().and_then(|inotify| inotify.into_event_stream(vec![0u8; 4096]));
            match stream {
                Ok(stream) => self.stream = Some(stream),
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error,
                        "inotify unavailable; following logs by periodic checks");
                    self.unavailable = true;
                    return;
                }
            }
        }
        let Some(stream) = &self.stream else { return };
        let mut watches = stream.watches();
        let dir_mask = WatchMask::MODIFY
            | WatchMask::CREATE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR;
        if let Ok(wd) = watches.add(dir, dir_mask) {
            self.watching_dir(wd);
            return;
        }
        // The directory does not exist (yet): watch its nearest existing ancestor for
        // the next level being created, then look again (it may have appeared meanwhile).
        if let Some(old) = self.ancestor_wd.take() {
            // Best effort: a stale watch only causes spurious wake-ups.
            let _ = watches.remove(old);
        }
        let ancestor_mask = WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::ONLYDIR;
        self.ancestor_wd = dir
            .ancestors()
            .skip(1)
            .find_map(|ancestor| watches.add(ancestor, ancestor_mask).ok());
        if let Ok(wd) = watches.add(dir, dir_mask) {
            self.watching_dir(wd);
        }
    }

    fn watching_dir(&mut self, wd: WatchDescriptor) {
        self.dir_wd = Some(wd);
        if let (Some(old), Some(stream)) = (self.ancestor_wd.take(), &self.stream) {
            // Best effort: a stale watch only causes spurious wake-ups.
            let _ = stream.watches().remove(old);
        }
    }

    /// Resolves at the next event that may concern the logs (never, without inotify),
    /// after consuming any further events already queued.
    async fn next_relevant(&mut self) {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return std::future::pending().await;
            };
            let Some(first) = stream.next().await else {
                self.stream_failed(None);
                return;
            };
            let mut relevant = self.note(first);
            while let Some(Some(event)) = self.stream.as_mut().and_then(|s| s.next().now_or_never())
            {
                relevant |= self.note(event);
            }
            if relevant {
                return;
            }
        }
    }

    /// Books an event; returns whether it may concern the log files.
    fn note(&mut self, event: io::Result<inotify::EventOwned>) -> bool {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                self.stream_failed(Some(error));
                return true;
            }
        };
        if event.mask.contains(EventMask::Q_OVERFLOW) {
            return true;
        }
        if Some(&event.wd) == self.ancestor_wd.as_ref() {
            return true;
        }
        if Some(&event.wd) == self.dir_wd.as_ref() {
            if event.mask.contains(EventMask::IGNORED) {
                // The directory is gone; watch for it again.
                self.dir_wd = None;
                return true;
            }
            return match &event.name {
                Some(name) => name.as_encoded_bytes().starts_with(LOG_NAME.as_bytes()),
                None => true,
            };
        }
        false
    }

    fn stream_failed(&mut self, error: Option<io::Error>) {
        tracing::warn!(error = ?error, "inotify stream ended; following logs by periodic checks");
        self.stream = None;
        self.dir_wd = None;
        self.ancestor_wd = None;
        self.unavailable = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(data: &[u8]) -> String {
        let mut out = Vec::new();
        escape_json(&mut out, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_docker() {
        assert_eq!(escaped(b"hello\n"), "hello\\n");
        assert_eq!(escaped(b"a\"b\\c\r\t"), "a\\\"b\\\\c\\r\\u0009");
        assert_eq!(
            escaped(b"<a href=x>&</a>"),
            "\\u003ca href=x\\u003e\\u0026\\u003c/a\\u003e"
        );
        assert_eq!(escaped(b"\x00\x1f\x7f"), "\\u0000\\u001f\x7f");
        assert_eq!(escaped("é€😀".as_bytes()), "é€😀");
        assert_eq!(escaped("a\u{2028}b\u{2029}".as_bytes()), "a\\u2028b\\u2029");
        // Every invalid byte becomes one U+FFFD, as Go's utf8.DecodeRune sees it.
        assert_eq!(
            escaped(b"a\xffb\xe2\x80c\xed\xa0\x80"),
            "a\\ufffdb\\ufffd\\ufffdc\\ufffd\\ufffd\\ufffd"
        );
        assert_eq!(escaped(b""), "");
    }

    #[test]
    fn escaped_text_parses_back() {
        let input = "tab\there \"quoted\" <tag> & back\\slash \u{1} \u{2028} ünï\n";
        let mut out = Vec::new();
        encode_record(
            &mut out,
            Stream::Stderr,
            "2026-11-25T21:30:00.123456789Z",
            input.as_bytes(),
        );
        let record = parse_line(&out[..out.len() - 1], Path::new("x")).unwrap();
        assert_eq!(record.line, input.as_bytes());
        assert_eq!(record.stream, Stream::Stderr);
    }

    #[test]
    fn encodes_docker_line() {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            Stream::Stdout,
            "2026-11-25T21:30:00.123456789Z",
            b"hello\n",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"log\":\"hello\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-25T21:30:00.123456789Z\"}\n"
        );
    }

    #[test]
    fn parses_docker_lines() {
        // As written by dockerd, including the optional attrs and an omitted empty log.
        let line = br#"{"log":"hi\u003c\n","stream":"stderr","attrs":{"a":"b"},"time":"2019-03-12T13:38:06.14925412Z"}"#;
        let record = parse_line(line, Path::new("x")).unwrap();
        assert_eq!(record.line, b"hi<\n");
        assert_eq!(record.stream, Stream::Stderr);
        assert_eq!(
            record.time.to_rfc3339_opts(SecondsFormat::Nanos, true),
            "2019-03-12T13:38:06.149254120Z"
        );
        let empty = parse_line(
            br#"{"stream":"stdout","time":"2019-03-12T13:38:06Z"}"#,
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(empty.line, b"");
        assert_eq!(parse_line(br#"{"log":"torn"#, Path::new("x")), None);
    }

    #[test]
    fn rotated_names() {
        assert_eq!(parse_rotated_name("container.log.1"), Some(1));
        assert_eq!(parse_rotated_name("container.log.12"), Some(12));
        assert_eq!(parse_rotated_name("container.log"), None);
        assert_eq!(parse_rotated_name("container.log."), None);
        assert_eq!(parse_rotated_name("container.log.01"), None);
        assert_eq!(parse_rotated_name("container.log.+1"), None);
        assert_eq!(parse_rotated_name("container.log.1.gz"), None);
        assert_eq!(parse_rotated_name("other.log.1"), None);
    }

    #[test]
    fn drains_complete_lines_only() {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            Stream::Stdout,
            "2026-11-25T21:30:00.000000001Z",
            b"one\n",
        );
        encode_record(
            &mut out,
            Stream::Stdout,
            "2026-11-25T21:30:00.000000002Z",
            b"two",
        );
        let torn_at = out.len() - 10;
        let mut partial = out[..torn_at].to_vec();
        let mut got = Vec::new();
        drain_lines(&mut partial, Path::new("x"), |r| got.push(r.line));
        assert_eq!(got, vec![b"one\n".to_vec()]);
        partial.extend_from_slice(&out[torn_at..]);
        drain_lines(&mut partial, Path::new("x"), |r| got.push(r.line));
        assert_eq!(got, vec![b"one\n".to_vec(), b"two".to_vec()]);
        assert!(partial.is_empty());
    }
}
