//! The hash-chained JSON Lines log: a directory of segment files (`audit-000001.jsonl`, ...),
//! an anchor file (`audit.anchor`) and a lock file.
//!
//! Several processes (and several handles in one process) may write one log at once. A write
//! holds the lock file's exclusive lock (`flock`): the writer reads what others appended since
//! its last write (checking that it links to the head it knew), appends its batch after it,
//! syncs, and lets go. A busy handle keeps the lock between its writes for a short lease
//! ([`LogConfig::lock_lease`], 1 ms of idleness by default) and gives it up at once to a
//! writer that asks for it (a shared lock on `audit.want`, taken while waiting). Waiting for
//! the lock is bounded by [`LogConfig::lock_timeout`]; a wait that runs out fails that record
//! with [`LogError::LockTimeout`] and leaves the log usable. A writer killed while holding the
//! lock releases it with its death; a line it left half-written is found by the next writer,
//! kept, and described by a recovery record.
//!
//! Durability: with the default [`Durability::GroupCommit`], a record is acknowledged only
//! after an `fsync` (`fdatasync`) that covers it; concurrent writers share one `fsync`.
//! [`Durability::PerRecord`] writes and syncs each record alone. [`Durability::NoSync`]
//! acknowledges after `write(2)`: a process crash loses nothing, a power loss may; it must be
//! chosen explicitly.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::event::{AuditEvent, Timestamp};
use crate::key::{AuditKey, HashedField, IdentifierHasher};
use crate::record::{self, Hash, RecordType};
use crate::seal::{RecordSealer, SealedBody};
use crate::sink::{AuditSink, SinkError};
use crate::verify::{Anchor, Chain, Problem, ProblemKind, Stop};
use base64::Engine as _;

/// When a record counts as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Write and `fsync` each record on its own, under the log's lock (no batching).
    PerRecord,
    /// Group commit (the default): records from concurrent writers are written together and
    /// covered by one `fsync`; each is acknowledged only once synced. The syncing writer
    /// first waits up to `max_delay` for more records to join (zero: no wait; batches still
    /// form while a sync is running).
    GroupCommit {
        /// How long a batch may wait for company before it is synced.
        max_delay: Duration,
    },
    /// Acknowledge after `write(2)`, never `fsync`. Survives a process crash, not a power loss.
    NoSync,
}

impl Default for Durability {
    fn default() -> Self {
        Self::GroupCommit {
            max_delay: Duration::ZERO,
        }
    }
}

/// How a log is written.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LogConfig {
    /// When a record counts as written.
    pub durability: Durability,
    /// A checkpoint after this many events (default 1,000).
    pub checkpoint_every: u64,
    /// A checkpoint at least this often, written by a background thread even when no event
    /// arrives (default 60 s; `None`: no timer, checkpoints by count and on close only).
    pub checkpoint_interval: Option<Duration>,
    /// Start a new segment file once the current one reaches this size (default 64 MiB).
    pub max_segment_bytes: u64,
    /// Event fields stored as keyed hashes ([`IdentifierHasher`]) instead of plain text.
    pub hashed_fields: Vec<HashedField>,
    /// How long a write waits for another writer (another process, or another handle on the
    /// same directory) to release the log's lock (default 5 s).
    pub lock_timeout: Duration,
    /// Encrypts every event written from now on (`sealed` records); `None` (the default)
    /// writes events in the clear. Records already written are left as they are.
    pub sealer: Option<Arc<dyn RecordSealer>>,
    /// Keeps the log's lock between this handle's writes until it has been idle this long
    /// (default 1 ms), saving the two `flock` calls of each write. Another writer waiting
    /// for the lock gets it within about this time, as does a process that takes
    /// `audit.lock` directly once this one pauses. `None`: the lock is taken and released
    /// for every write.
    pub lock_lease: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            checkpoint_every: 1000,
            checkpoint_interval: Some(Duration::from_secs(60)),
            max_segment_bytes: 64 << 20,
            hashed_fields: Vec::new(),
            lock_timeout: Duration::from_secs(5),
            sealer: None,
            lock_lease: Some(Duration::from_millis(1)),
        }
    }
}

impl LogConfig {
    /// Sets the durability.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the checkpoint count interval (at least 1).
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.checkpoint_every = events.max(1);
        self
    }

    /// Sets the checkpoint timer.
    pub fn checkpoint_interval(mut self, interval: Option<Duration>) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Sets the segment size limit.
    pub fn max_segment_bytes(mut self, bytes: u64) -> Self {
        self.max_segment_bytes = bytes;
        self
    }

    /// Sets how long a write waits for the log's lock.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Sets the lease on the log's lock between writes ([`LogConfig::lock_lease`]; a zero
    /// duration is taken as `None`).
    pub fn lock_lease(mut self, idle: Option<Duration>) -> Self {
        self.lock_lease = idle.filter(|d| !d.is_zero());
        self
    }

    /// Encrypts every event written from now on with `sealer` ([`LogConfig::sealer`]).
    pub fn sealed_with(mut self, sealer: Arc<dyn RecordSealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// Sets the fields stored as keyed hashes.
    pub fn hashed_fields(mut self, fields: impl IntoIterator<Item = HashedField>) -> Self {
        self.hashed_fields = fields.into_iter().collect();
        self
    }
}

/// Errors of the log writer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file operation failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another writer held the log's lock for longer than [`LogConfig::lock_timeout`]; this
    /// record was not written (the log stays usable).
    #[error("audit log {path}: another writer held the lock for more than {} ms", .waited.as_millis())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long this writer waited.
        waited: Duration,
    },
    /// The existing log failed its checks on open; it is left untouched.
    #[error("audit log {path} refused: {problem}")]
    Corrupt {
        /// The segment or anchor.
        path: PathBuf,
        /// The problem.
        problem: Problem,
    },
    /// An earlier write failed; the log refuses every record until it is reopened (fail
    /// closed: the torn tail, if any, is then reported and skipped).
    #[error("audit log failed earlier and accepts no more records: {reason}")]
    Failed {
        /// The first failure.
        reason: String,
    },
    /// An event could not be serialized.
    #[error("audit event could not be serialized: {0}")]
    Serialize(String),
}

/// What opening a log found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// Whether the log was created by this call.
    pub created: bool,
    /// Segment files present after opening.
    pub segments: u32,
    /// A torn tail found at the end of the last segment (a crash during a write), as
    /// (path, byte offset, length). It was left in place, terminated, and described by a
    /// recovery record; appending continues after it.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Sequence number of the last record after opening.
    pub last_seq: u64,
}

/// The acknowledgement of a durable record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The record's sequence number.
    pub seq: u64,
    /// The record's hash.
    pub hash: [u8; 32],
}

/// A submitted record that is not written yet; [`wait`](Ticket::wait) for it. A ticket
/// dropped without waiting still has its record written, with the next write of this handle
/// or when its last clone is dropped, but nobody learns whether that succeeded.
#[must_use = "a record is acknowledged only by waiting for its ticket"]
#[derive(Debug)]
pub struct Ticket {
    log: Arc<Inner>,
    ticket: u64,
    waited: bool,
}

impl Ticket {
    /// Blocks until the record is written and durable (by the log's [`Durability`]); its
    /// sequence number and hash are known only then, since other processes may append first.
    ///
    /// # Errors
    /// [`LogError::Failed`] if the write or sync covering it failed; [`LogError::LockTimeout`]
    /// if another writer held the lock too long (the record was not written).
    pub fn wait(mut self) -> Result<Receipt, LogError> {
        self.waited = true;
        self.log.wait_for(self.ticket)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.waited {
            self.log.abandon(self.ticket);
        }
    }
}

/// An append-only, hash-chained, checkpointed audit log. Cheap to clone (a shared handle);
/// safe to use from many threads, and from several processes at once (see the module docs).
#[derive(Clone, Debug)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

enum Item {
    /// A serialized event body.
    Event(Vec<u8>),
    /// A checkpoint; `forced: false` (the timer) skips it when nothing came since the last.
    Checkpoint { forced: bool },
}

struct Queued {
    ticket: u64,
    item: Item,
}

/// An event's body as written: its JSON, with the configured fields replaced by keyed hashes.
pub(crate) fn event_body(
    hashed_fields: &[HashedField],
    hasher: &IdentifierHasher,
    event: &AuditEvent,
) -> Result<Vec<u8>, LogError> {
    // Room for a typical record's body, so it is not grown three times.
    let mut out = Vec::with_capacity(512);
    let written = if hashed_fields.is_empty() {
        crate::json::write_event(&mut out, event)
    } else {
        let mut e = event.clone();
        for f in hashed_fields {
            let slot = match f {
                HashedField::Actor => {
                    e.actor = hasher.hash(&e.actor);
                    continue;
                }
                HashedField::SourceIp => &mut e.source_ip,
                HashedField::ClientHost => &mut e.client_host,
                HashedField::RequestId => &mut e.request_id,
            };
            if let Some(v) = slot.as_mut() {
                *v = hasher.hash(v);
            }
        }
        crate::json::write_event(&mut out, &e)
    };
    written
        .map(|()| out)
        .map_err(|e| LogError::Serialize(e.to_string()))
}

/// Appends the record of an event body at `seq` after `prev` to `buf`: an `event` record, or
/// a `sealed` one when there is a sealer. Returns its hash.
pub(crate) fn event_line(
    buf: &mut Vec<u8>,
    sealer: Option<&Arc<dyn RecordSealer>>,
    log_id: &str,
    seq: u64,
    prev: &Hash,
    body: &[u8],
) -> Result<Hash, String> {
    match sealer {
        None => {
            let start = record::begin_line(buf, seq, prev, RecordType::Event);
            buf.extend_from_slice(body);
            Ok(record::finish_line(buf, start))
        }
        Some(sealer) => {
            let sealed = sealer.seal(log_id, seq, body).map_err(|e| e.to_string())?;
            let body = SealedBody {
                sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
            };
            record::write_line(buf, seq, prev, RecordType::Sealed, &body).map_err(|e| e.to_string())
        }
    }
}

/// Appends a checkpoint record at `seq` covering the record before it (`seq - 1`, hash
/// `prev`) to `buf`; returns its hash and the anchor naming it.
pub(crate) fn checkpoint_line(
    buf: &mut Vec<u8>,
    key: &AuditKey,
    log_id: &str,
    seq: u64,
    prev: &Hash,
) -> Result<(Hash, Anchor), String> {
    let covers = seq - 1;
    let head = record::hex_string(prev);
    let time = Timestamp::now();
    let mac = key.sign(&record::checkpoint_mac_parts(
        log_id,
        &covers.to_string(),
        &head,
        &time.as_unix_millis().to_string(),
    ));
    let body = record::CheckpointBody {
        log: log_id.to_owned(),
        covers,
        head,
        time,
        mac: hex::encode(mac),
    };
    let hash = record::write_line(buf, seq, prev, RecordType::Checkpoint, &body)
        .map_err(|e| e.to_string())?;
    Ok((hash, Anchor::new(key, log_id, seq, &hash, time)))
}

/// Appends the genesis record of a new log `log_id` to `buf`; returns its hash.
pub(crate) fn genesis_line(buf: &mut Vec<u8>, log_id: &str) -> Result<Hash, LogError> {
    let genesis = record::GenesisBody {
        log: log_id.to_owned(),
        format: record::FORMAT.to_owned(),
        time: Timestamp::now(),
    };
    record::write_line(buf, 0, &record::ZERO_HASH, RecordType::Genesis, &genesis)
        .map_err(|e| LogError::Serialize(e.to_string()))
}

/// Appends the segment record that starts segment `segment` of log `log_id` at `seq`
/// after `prev` to `buf`; returns its hash.
pub(crate) fn segment_line(
    buf: &mut Vec<u8>,
    log_id: &str,
    segment: u32,
    seq: u64,
    prev: &Hash,
) -> Result<Hash, LogError> {
    let body = record::SegmentBody {
        log: log_id.to_owned(),
        segment,
        time: Timestamp::now(),
    };
    record::write_line(buf, seq, prev, RecordType::Segment, &body)
        .map_err(|e| LogError::Serialize(e.to_string()))
}

/// A new random log id (16 bytes, hex).
pub(crate) fn new_log_id() -> Result<String, LogError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| LogError::Failed {
        reason: format!("no randomness for a log id: {e}"),
    })?;
    Ok(hex::encode(id))
}

/// Why a batch was not written.
#[derive(Clone)]
enum Failure {
    /// The lock was not free in time; nothing was written, the log stays usable.
    Timeout(Duration),
    /// A write, a sync or a check failed; the log refuses everything from now on.
    Failed(String),
}

impl Failure {
    /// The error a caller sees, naming the lock file `lock_path` on a timeout.
    fn into_error(self, lock_path: &Path) -> LogError {
        match self {
            Self::Timeout(waited) => LogError::LockTimeout {
                path: lock_path.to_path_buf(),
                waited,
            },
            Self::Failed(reason) => LogError::Failed { reason },
        }
    }
}

/// The log as this handle last saw it on disk; valid while the file lock is held, brought up
/// to date ([`Inner::refresh`]) each time it is taken.
struct Disk {
    /// The last segment, opened for reading and appending.
    file: File,
    segment: u32,
    /// Bytes of `segment` read or written so far (whole lines only).
    len: u64,
    next_seq: u64,
    head: Hash,
    since_checkpoint: u64,
    /// Reused line buffer.
    buf: Vec<u8>,
}

struct State {
    queue: Vec<Queued>,
    next_ticket: u64,
    outcomes: HashMap<u64, Result<Receipt, Failure>>,
    abandoned: HashSet<u64>,
    /// `None` while the writing thread has it.
    disk: Option<Disk>,
    writing: bool,
    /// Threads blocked on the condition variable (a notification costs a system call; none is
    /// sent when nobody waits).
    waiters: usize,
    failed: Option<String>,
    last_checkpoint: Instant,
}

struct Inner {
    dir: PathBuf,
    key: AuditKey,
    log_id: String,
    config: LogConfig,
    hasher: IdentifierHasher,
    state: Mutex<State>,
    cond: Condvar,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// Test hook: writes fail (after this many more bytes) as a full disk would.
    fault: Mutex<Option<u64>>,
    lock_path: PathBuf,
    locks: Arc<Locks>,
}

/// The log's lock files, and the lease on the lock shared with the thread that ends it.
struct Locks {
    /// `audit.lock`: held exclusively by the one writing handle.
    lock: File,
    /// `audit.want`: held shared by every handle waiting for `lock`.
    want: File,
    lease: Mutex<Lease>,
    /// Wakes the lease keeper: a lease began, or the log was dropped.
    wake: Condvar,
}

/// Whether a handle keeps `audit.lock` between its writes.
#[derive(Default)]
struct Lease {
    /// The lock is held although no write is in progress.
    held: bool,
    /// A write is in progress under the lease (the keeper must not let go of the lock).
    busy: bool,
    /// When the last write under the lease ended.
    last_write: Option<Instant>,
    /// The keeper let go because another writer asked: no new lease while anyone still asks.
    yielding: bool,
    /// The log was dropped, or the keeper could not be started: no more leases.
    closed: bool,
}

impl Locks {
    fn lease(&self) -> MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another handle waits for the lock (holds `audit.want` shared). Costs two
    /// system calls when nobody does.
    fn wanted(&self) -> bool {
        match self.want.try_lock() {
            Ok(()) => {
                let _ = self.want.unlock();
                false
            }
            Err(_) => true,
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("log_id", &self.log_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Records whose tickets were dropped unwaited are still written.
        let mut st = self.state();
        while !st.queue.is_empty() && st.failed.is_none() && st.disk.is_some() {
            st = self.write_next(st);
        }
        drop(st);
        let (flag, cond) = &*self.stop;
        if let Ok(mut stopped) = flag.lock() {
            *stopped = true;
        }
        cond.notify_all();
        // The keeper lets go of a lease still held, and ends.
        self.locks.lease().closed = true;
        self.locks.wake.notify_all();
    }
}

/// The path of segment `n` in `dir`.
pub fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("audit-{n:06}.jsonl"))
}

/// The anchor file of the log in `dir`.
pub fn anchor_path(dir: &Path) -> PathBuf {
    dir.join("audit.anchor")
}

/// The segment files of the log in `dir`, in order.
///
/// # Errors
/// The directory cannot be read.
pub fn segment_paths(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(segment_numbers(dir)?
        .into_iter()
        .map(|n| segment_path(dir, n))
        .collect())
}

fn segment_numbers(dir: &Path) -> io::Result<Vec<u32>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("audit-")
            .and_then(|s| s.strip_suffix(".jsonl"))
            .filter(|s| s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Holds the lock file's exclusive lock until dropped (or [kept](FileLock::keep)).
struct FileLock<'a>(&'a File);

impl FileLock<'_> {
    /// Leaves the lock held after this guard is gone (a lease).
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the file or ending the process releases it too.
        let _ = self.0.unlock();
    }
}

/// Takes the exclusive lock on `file`, polling (with growing pauses, at most 4 ms) until
/// `timeout` has passed. While it waits it holds `want` shared, which asks a handle keeping
/// the lock between writes to let go.
fn acquire<'f>(
    file: &'f File,
    want: Option<&File>,
    timeout: Duration,
) -> Result<FileLock<'f>, Failure> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    let mut asking = false;
    let result = loop {
        match file.try_lock() {
            Ok(()) => break Ok(FileLock(file)),
            Err(fs::TryLockError::WouldBlock) => {
                if let (Some(w), false) = (want, asking) {
                    // Fails only while a holder is checking for askers; tried again below.
                    asking = w.try_lock_shared().is_ok();
                }
                let waited = start.elapsed();
                if waited >= timeout {
                    break Err(Failure::Timeout(waited));
                }
                std::thread::sleep(pause.min(timeout - waited));
                pause = (pause * 2).min(Duration::from_millis(4));
            }
            Err(fs::TryLockError::Error(e)) => break Err(Failure::Failed(format!("lock: {e}"))),
        }
    };
    if let (Some(w), true) = (want, asking) {
        let _ = w.unlock();
    }
    result
}

/// The exclusive lock of the log in a directory, taken from outside a log handle (to copy
/// the log whole, say), until dropped.
///
/// Waits like a writer: it asks a handle that keeps the lock between writes to let go
/// ([`LogConfig::lock_lease`]).
#[derive(Debug)]
pub struct LogLock {
    file: File,
}

impl LogLock {
    /// Takes the lock of the log in `dir` (which must exist), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LogError::LockTimeout`], or [`LogError::Io`] when the lock files cannot be opened.
    pub fn acquire(dir: &Path, timeout: Duration) -> Result<Self, LogError> {
        let (lock_path, file, want) = open_lock_files(dir)?;
        acquire(&file, Some(&want), timeout)
            .map_err(|f| f.into_error(&lock_path))?
            .keep();
        Ok(Self { file })
    }
}

impl Drop for LogLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Opens (creating them owner-only when missing) `audit.lock` and `audit.want` in `dir`.
fn open_lock_files(dir: &Path) -> Result<(PathBuf, File, File), LogError> {
    let open = |path: &Path| {
        private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path))
    };
    let lock_path = dir.join("audit.lock");
    let lock = open(&lock_path)?;
    let want = open(&dir.join("audit.want"))?;
    Ok((lock_path, lock, want))
}

/// Options that never follow a symlink at the final path component, and create files
/// owner-only (umask can only narrow the mode).
fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    o
}

/// Creates `dir` (and missing parents) owner-only from the start.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// An owner-only temporary file in `dir` with an unpredictable name, created `O_EXCL` (a
/// planted file or symlink is never opened), holding `bytes`.
fn private_temp(dir: &Path, bytes: &[u8], sync: bool) -> io::Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".audit-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if sync {
        tmp.as_file().sync_data()?;
    }
    Ok(tmp)
}

fn open_segment(path: &Path) -> Result<File, LogError> {
    private_options()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))
}

impl AuditLog {
    /// Opens the log in `dir`, creating the directory and a new log if there is none.
    ///
    /// An existing log's last segment is checked (hashes, links, checkpoint MACs under `key`)
    /// and compared with the anchor; any problem other than a torn tail refuses the open and
    /// changes nothing. A torn tail is kept, terminated, and described by a recovery record.
    /// Other processes may have the same log open; opening waits for the lock like a write.
    ///
    /// # Errors
    /// [`LogError`]: I/O, the lock not free within the timeout, or the log failed its checks.
    pub fn open(
        dir: &Path,
        key: AuditKey,
        config: LogConfig,
    ) -> Result<(Self, OpenReport), LogError> {
        create_private_dir(dir).map_err(io_err(dir))?;
        let (lock_path, lock_file, want_file) = open_lock_files(dir)?;
        let sync = config.durability != Durability::NoSync;
        let (disk, log_id, report) = {
            let _held = acquire(&lock_file, Some(&want_file), config.lock_timeout)
                .map_err(|f| f.into_error(&lock_path))?;
            let numbers = segment_numbers(dir).map_err(io_err(dir))?;
            // A segment still under its temporary name never became part of the log (its
            // records were not acknowledged): remove it.
            let tmp =
                segment_path(dir, numbers.last().map_or(1, |n| n + 1)).with_extension("jsonl.tmp");
            if tmp.exists() {
                fs::remove_file(&tmp).map_err(io_err(&tmp))?;
            }
            match numbers.last() {
                None => Self::create(dir, &key, sync)?,
                Some(&last) => Self::resume(dir, &key, last, numbers.len(), sync)?,
            }
        };
        let hasher = IdentifierHasher::new(&key, &log_id);
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            key,
            log_id,
            config,
            hasher,
            state: Mutex::new(State {
                queue: Vec::new(),
                next_ticket: 0,
                outcomes: HashMap::new(),
                abandoned: HashSet::new(),
                disk: Some(disk),
                writing: false,
                waiters: 0,
                failed: None,
                last_checkpoint: Instant::now(),
            }),
            cond: Condvar::new(),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            fault: Mutex::new(None),
            lock_path,
            locks: Arc::new(Locks {
                lock: lock_file,
                want: want_file,
                lease: Mutex::new(Lease::default()),
                wake: Condvar::new(),
            }),
        });
        let log = Self { inner };
        match log.inner.config.lock_lease {
            Some(idle) => spawn_keeper(Arc::clone(&log.inner.locks), idle),
            None => log.inner.locks.lease().closed = true,
        }
        if let Some(interval) = log.inner.config.checkpoint_interval {
            spawn_ticker(
                Arc::downgrade(&log.inner),
                Arc::clone(&log.inner.stop),
                interval,
            );
        }
        Ok((log, report))
    }

    /// A new log: the genesis record and a checkpoint anchoring it, and the anchor, all
    /// written before the lock is released (another process opening the directory meanwhile
    /// never sees a segment without its anchor).
    fn create(
        dir: &Path,
        key: &AuditKey,
        sync: bool,
    ) -> Result<(Disk, String, OpenReport), LogError> {
        let log_id = new_log_id().map_err(|e| LogError::Io {
            path: dir.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        let mut line = Vec::new();
        let genesis = genesis_line(&mut line, &log_id)?;
        let (head, anchor) = checkpoint_line(&mut line, key, &log_id, 1, &genesis)
            .map_err(|reason| LogError::Failed { reason })?;
        let file = write_new_segment(dir, 1, &line, sync)?;
        write_anchor(dir, &anchor, sync).map_err(io_err(&anchor_path(dir)))?;
        let disk = Disk {
            file,
            segment: 1,
            len: line.len() as u64,
            next_seq: 2,
            head,
            since_checkpoint: 0,
            buf: Vec::new(),
        };
        Ok((
            disk,
            log_id,
            OpenReport {
                created: true,
                segments: 1,
                torn_tail: None,
                last_seq: 1,
            },
        ))
    }

    fn resume(
        dir: &Path,
        key: &AuditKey,
        last: u32,
        count: usize,
        sync: bool,
    ) -> Result<(Disk, String, OpenReport), LogError> {
        let path = segment_path(dir, last);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let anchor_file = anchor_path(dir);
        let anchor = match fs::read(&anchor_file) {
            Ok(b) => Some(Anchor::parse(&b).ok_or_else(|| LogError::Corrupt {
                path: anchor_file.clone(),
                problem: open_problem(ProblemKind::BadCheckpoint, "the anchor is malformed"),
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&anchor_file)(e)),
        };
        if let Some(a) = &anchor {
            if !a.authenticate(key) {
                return Err(LogError::Corrupt {
                    path: anchor_file,
                    problem: open_problem(
                        ProblemKind::BadCheckpoint,
                        "the anchor's MAC does not verify under this key",
                    ),
                });
            }
        }
        let mut chain = Chain::new(Some(key), anchor.as_ref(), true);
        let torn = match chain.segment(count - 1, &bytes, true) {
            Ok(()) => None,
            Err(Stop::Problem(p)) if p.kind == ProblemKind::TornTail => chain.torn,
            Err(Stop::Problem(problem)) => return Err(LogError::Corrupt { path, problem }),
            Err(Stop::Sequence(_)) => {
                return Err(LogError::Corrupt {
                    path,
                    problem: open_problem(
                        ProblemKind::Reordered,
                        "sequence numbers are out of order",
                    ),
                })
            }
        };
        let Some((next_seq, head)) = chain.head() else {
            return Err(LogError::Corrupt {
                path,
                problem: open_problem(
                    ProblemKind::Truncated,
                    "the last segment holds no intact record",
                ),
            });
        };
        let Some(log_id) = chain.report.log_id.clone() else {
            return Err(LogError::Corrupt {
                path,
                problem: open_problem(ProblemKind::Edited, "the last segment names no log"),
            });
        };
        if let Some(a) = &anchor {
            if a.log != log_id {
                return Err(LogError::Corrupt {
                    path,
                    problem: open_problem(
                        ProblemKind::Replaced,
                        "the log id differs from the anchor's",
                    ),
                });
            }
            if a.seq >= next_seq {
                return Err(LogError::Corrupt {
                    path,
                    problem: open_problem(
                        ProblemKind::Truncated,
                        "the log ends before the anchored checkpoint",
                    ),
                });
            }
        }
        let file = open_segment(&path)?;
        let mut disk = Disk {
            file,
            segment: last,
            len: bytes.len() as u64,
            next_seq,
            head,
            since_checkpoint: chain.since_checkpoint,
            buf: Vec::new(),
        };
        let mut torn_tail = None;
        if let Some((offset, torn_len)) = torn {
            disk.len = offset;
            write_recovery(&mut disk, &bytes[offset as usize..], sync).map_err(io_err(&path))?;
            torn_tail = Some((path.clone(), offset, torn_len));
        }
        let last_seq = disk.next_seq - 1;
        Ok((
            disk,
            log_id,
            OpenReport {
                created: false,
                segments: u32::try_from(count).unwrap_or(u32::MAX),
                torn_tail,
                last_seq,
            },
        ))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// [`AuditKey::head_tag`] of a head of this log, under the log's key.
    pub fn head_tag(&self, seq: u64, hash: &[u8; 32]) -> [u8; 32] {
        self.inner.key.head_tag(seq, hash)
    }

    /// The log id (from its genesis record).
    pub fn log_id(&self) -> &str {
        &self.inner.log_id
    }

    /// The hasher for this log's keyed identifiers, to look up records by a known value.
    pub fn identifier_hasher(&self) -> IdentifierHasher {
        IdentifierHasher::new(&self.inner.key, &self.inner.log_id)
    }

    /// Queues an event and returns at once with a [`Ticket`]; the record is written and
    /// acknowledged when the ticket's [`wait`](Ticket::wait) returns. Lets one writer keep
    /// several records in flight, all covered by one write and one sync.
    ///
    /// # Errors
    /// [`LogError::Failed`] after an earlier failure; [`LogError::Serialize`].
    pub fn submit(&self, event: &AuditEvent) -> Result<Ticket, LogError> {
        let body = self.inner.body(event)?;
        let mut st = self.inner.state();
        self.inner.refuse_if_failed(&st)?;
        let ticket = st.enqueue(Item::Event(body));
        drop(st);
        Ok(self.ticket(ticket))
    }

    fn ticket(&self, ticket: u64) -> Ticket {
        Ticket {
            log: Arc::clone(&self.inner),
            ticket,
            waited: false,
        }
    }

    /// Appends an event and waits until it is durable. If this returns an error, the caller
    /// must refuse the operation the event describes.
    ///
    /// # Errors
    /// See [`submit`](Self::submit) and [`Ticket::wait`].
    pub fn record(&self, event: &AuditEvent) -> Result<Receipt, LogError> {
        self.submit(event)?.wait()
    }

    /// Appends events as consecutive records (with [`Durability::GroupCommit`] no other
    /// writer's record comes between them) and waits once, for the last. Returns the last
    /// record's receipt, or `None` for no events.
    ///
    /// # Errors
    /// See [`record`](Self::record); on error none of the events may be taken as recorded.
    pub fn record_batch(&self, events: &[AuditEvent]) -> Result<Option<Receipt>, LogError> {
        let bodies = events
            .iter()
            .map(|e| self.inner.body(e))
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = self.inner.state();
        self.inner.refuse_if_failed(&st)?;
        let mut last = None;
        for b in bodies {
            last = Some(st.enqueue(Item::Event(b)));
        }
        drop(st);
        // Durability is in queue order: the last ticket covers the batch.
        let Some(last) = last else { return Ok(None) };
        self.ticket(last).wait().map(Some)
    }

    /// Writes a checkpoint now (and the anchor), and waits until it is durable.
    ///
    /// # Errors
    /// [`LogError::Failed`], [`LogError::LockTimeout`] or an I/O error.
    pub fn checkpoint(&self) -> Result<Receipt, LogError> {
        self.checkpoint_item(true)
    }

    fn checkpoint_item(&self, forced: bool) -> Result<Receipt, LogError> {
        let mut st = self.inner.state();
        self.inner.refuse_if_failed(&st)?;
        let ticket = st.enqueue(Item::Checkpoint { forced });
        drop(st);
        self.ticket(ticket).wait()
    }

    /// Test hook: after `bytes` more bytes, every write fails as on a full disk (the allowed
    /// prefix is written first, so a torn line is left behind).
    #[doc(hidden)]
    pub fn inject_write_failure_after(&self, bytes: u64) {
        *self.inner.fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
    }

    /// Writes a final checkpoint and releases this handle.
    ///
    /// # Errors
    /// As [`checkpoint`](Self::checkpoint).
    pub fn close(self) -> Result<(), LogError> {
        self.checkpoint().map(|_| ())
    }
}

impl AuditSink for AuditLog {
    fn record(&self, event: &AuditEvent) -> Result<(), SinkError> {
        AuditLog::record(self, event)
            .map(|_| ())
            .map_err(|e| SinkError::new("hash-chained log", e.to_string()))
    }

    fn is_durable(&self) -> bool {
        self.inner.config.durability != Durability::NoSync
    }
}

fn open_problem(kind: ProblemKind, detail: &'static str) -> Problem {
    Problem {
        kind,
        segment: 0,
        line: 0,
        offset: 0,
        seq: 0,
        detail,
    }
}

/// Writes a new segment file under a temporary name and renames it into place, so a crash
/// never leaves a segment without its first record.
fn write_new_segment(dir: &Path, n: u32, first: &[u8], sync: bool) -> Result<File, LogError> {
    let path = segment_path(dir, n);
    let tmp = private_temp(dir, first, sync).map_err(io_err(dir))?;
    // Never replaces an existing file (or a symlink planted at the segment's name).
    tmp.persist_noclobber(&path)
        .map_err(|e| io_err(&path)(e.error))?;
    if sync {
        sync_dir(dir).map_err(io_err(dir))?;
    }
    open_segment(&path)
}

fn write_anchor(dir: &Path, anchor: &Anchor, sync: bool) -> io::Result<()> {
    let path = anchor_path(dir);
    let tmp = private_temp(dir, &anchor.to_line(), sync)?;
    // A rename replaces a symlink at `path` itself; it never writes through it.
    tmp.persist(&path).map_err(|e| e.error)?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Keeps the torn bytes `fragment` (at `disk.len`) and appends a recovery record describing
/// them, after a newline that ends the fragment.
fn write_recovery(disk: &mut Disk, fragment: &[u8], sync: bool) -> io::Result<()> {
    let body = record::RecoveryBody {
        torn_offset: disk.len,
        torn_len: fragment.len() as u64,
        torn_sha256: record::hex_string(&record::sha256(fragment)),
        time: Timestamp::now(),
    };
    let mut line = vec![b'\n'];
    let head = record::write_line(
        &mut line,
        disk.next_seq,
        &disk.head,
        RecordType::Recovery,
        &body,
    )
    .map_err(|e| io::Error::other(e.to_string()))?;
    disk.file.write_all(&line)?;
    if sync {
        disk.file.sync_data()?;
    }
    disk.len += fragment.len() as u64 + line.len() as u64;
    disk.next_seq += 1;
    disk.head = head;
    Ok(())
}

impl State {
    fn enqueue(&mut self, item: Item) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queue.push(Queued { ticket, item });
        ticket
    }

    fn settle(&mut self, ticket: u64, outcome: Result<Receipt, Failure>) {
        if !self.abandoned.remove(&ticket) {
            self.outcomes.insert(ticket, outcome);
        }
    }
}

/// The result of writing a batch: a receipt per item, and whether a checkpoint was written.
type Written = (Vec<Receipt>, bool);

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A writer that panicked while holding the lock left the state consistent up to its
        // last complete step; the poisoned flag carries no extra information here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refuse_if_failed(&self, st: &State) -> Result<(), LogError> {
        match &st.failed {
            Some(reason) => Err(LogError::Failed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn body(&self, event: &AuditEvent) -> Result<Vec<u8>, LogError> {
        event_body(&self.config.hashed_fields, &self.hasher, event)
    }

    fn abandon(&self, ticket: u64) {
        let mut st = self.state();
        if st.outcomes.remove(&ticket).is_none() {
            st.abandoned.insert(ticket);
        }
    }

    /// Waits until `ticket` is written, writing the queue itself when no other thread is.
    fn wait_for(&self, ticket: u64) -> Result<Receipt, LogError> {
        let mut st = self.state();
        loop {
            if let Some(outcome) = st.outcomes.remove(&ticket) {
                return outcome.map_err(|f| f.into_error(&self.lock_path));
            }
            self.refuse_if_failed(&st)?;
            if st.writing || st.disk.is_none() {
                st.waiters += 1;
                st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                st.waiters -= 1;
                continue;
            }
            st = self.write_next(st);
        }
    }

    /// Becomes the writing thread: takes what is queued (one item for `PerRecord`), writes
    /// it under the file lock, and settles each item's outcome.
    fn write_next<'g>(&'g self, mut st: MutexGuard<'g, State>) -> MutexGuard<'g, State> {
        st.writing = true;
        if let Durability::GroupCommit { max_delay } = self.config.durability {
            if !max_delay.is_zero() {
                drop(st);
                std::thread::sleep(max_delay);
                st = self.state();
            }
        }
        let batch: Vec<Queued> = match self.config.durability {
            Durability::PerRecord => {
                let n = st.queue.len().min(1);
                st.queue.drain(..n).collect()
            }
            _ => std::mem::take(&mut st.queue),
        };
        let timer_due = self
            .config
            .checkpoint_interval
            .is_some_and(|i| st.last_checkpoint.elapsed() >= i);
        let mut disk = st.disk.take();
        drop(st);
        let result = match disk.as_mut() {
            Some(d) => self.write(&batch, d, timer_due),
            None => Err(Failure::Failed("the log's state was lost".to_owned())),
        };
        let mut st = self.state();
        st.disk = disk;
        st.writing = false;
        match result {
            Ok((receipts, checkpointed)) => {
                // Nothing since the last checkpoint (by any writer) counts as checkpointed.
                let current = st.disk.as_ref().is_some_and(|d| d.since_checkpoint == 0);
                if checkpointed || current {
                    st.last_checkpoint = Instant::now();
                }
                for (q, r) in batch.iter().zip(receipts) {
                    st.settle(q.ticket, Ok(r));
                }
            }
            Err(f) => {
                if let Failure::Failed(reason) = &f {
                    if st.failed.is_none() {
                        st.failed = Some(reason.clone());
                    }
                }
                for q in &batch {
                    st.settle(q.ticket, Err(f.clone()));
                }
            }
        }
        if st.waiters > 0 {
            self.cond.notify_all();
        }
        st
    }

    /// Writes `batch` after whatever other writers appended, under the file lock.
    ///
    /// Under a lease the lock is already held; otherwise it is taken here, and kept
    /// afterwards as a lease when leases are on and nobody is asking for it.
    fn write(
        &self,
        batch: &[Queued],
        disk: &mut Disk,
        timer_due: bool,
    ) -> Result<Written, Failure> {
        let locks = &*self.locks;
        let leased = {
            let mut lease = locks.lease();
            lease.busy = lease.held;
            lease.held
        };
        let held = if leased {
            // Only the write below ends the lease, or the keeper, which waits while busy.
            FileLock(&locks.lock)
        } else {
            acquire(&locks.lock, Some(&locks.want), self.config.lock_timeout)?
        };
        let sync = self.config.durability != Durability::NoSync;
        // Still checked under a lease: it costs one `lseek`, and an append made by someone
        // who ignored the lock fails the log closed at once.
        let result = self.refresh(disk, sync).and_then(|()| {
            let mut buf = std::mem::take(&mut disk.buf);
            buf.clear();
            let result = self.write_items(batch, disk, &mut buf, timer_due, sync);
            buf.clear();
            disk.buf = buf;
            result
        });
        let mut lease = locks.lease();
        lease.busy = false;
        let keep = result.is_ok()
            && !lease.closed
            && (leased || !lease.yielding || {
                lease.yielding = locks.wanted();
                !lease.yielding
            });
        if keep {
            lease.last_write = Some(Instant::now());
            held.keep();
            if !leased {
                lease.held = true;
                locks.wake.notify_all();
            }
        } else {
            lease.held = false;
            drop(held);
        }
        drop(lease);
        result.map_err(Failure::Failed)
    }

    fn write_items(
        &self,
        batch: &[Queued],
        disk: &mut Disk,
        buf: &mut Vec<u8>,
        timer_due: bool,
        sync: bool,
    ) -> Result<Written, String> {
        let mut receipts = Vec::with_capacity(batch.len());
        let mut anchor = None;
        for q in batch {
            match &q.item {
                Item::Event(body) => {
                    if disk.len + buf.len() as u64 >= self.config.max_segment_bytes {
                        anchor = Some(self.rotate(disk, buf, sync)?);
                    }
                    let hash = event_line(
                        buf,
                        self.config.sealer.as_ref(),
                        &self.log_id,
                        disk.next_seq,
                        &disk.head,
                        body,
                    )?;
                    receipts.push(Receipt {
                        seq: disk.next_seq,
                        hash,
                    });
                    disk.next_seq += 1;
                    disk.head = hash;
                    disk.since_checkpoint += 1;
                    if disk.since_checkpoint >= self.config.checkpoint_every {
                        anchor = Some(self.checkpoint_line(disk, buf)?);
                    }
                }
                Item::Checkpoint { forced } => {
                    if *forced || disk.since_checkpoint > 0 {
                        anchor = Some(self.checkpoint_line(disk, buf)?);
                    }
                    receipts.push(Receipt {
                        seq: disk.next_seq - 1,
                        hash: disk.head,
                    });
                }
            }
        }
        if timer_due && disk.since_checkpoint > 0 {
            anchor = Some(self.checkpoint_line(disk, buf)?);
        }
        self.write_out(disk, buf, sync)?;
        if let Some(a) = &anchor {
            write_anchor(&self.dir, a, sync).map_err(|e| format!("anchor: {e}"))?;
        }
        Ok((receipts, anchor.is_some()))
    }

    /// Appends the lines in `buf` to the current segment (and syncs).
    fn write_out(&self, disk: &mut Disk, buf: &mut Vec<u8>, sync: bool) -> Result<(), String> {
        let path = || segment_path(&self.dir, disk.segment).display().to_string();
        if !buf.is_empty() {
            self.injected_fault(Some(&mut disk.file), buf)?;
            disk.file
                .write_all(buf)
                .map_err(|e| format!("write {}: {e}", path()))?;
            disk.len += buf.len() as u64;
            buf.clear();
        }
        if sync {
            disk.file
                .sync_data()
                .map_err(|e| format!("sync {}: {e}", path()))?;
        }
        Ok(())
    }

    fn checkpoint_line(&self, disk: &mut Disk, buf: &mut Vec<u8>) -> Result<Anchor, String> {
        let seq = disk.next_seq;
        let (hash, anchor) = checkpoint_line(buf, &self.key, &self.log_id, seq, &disk.head)?;
        disk.next_seq += 1;
        disk.head = hash;
        disk.since_checkpoint = 0;
        Ok(anchor)
    }

    /// Ends the current segment with a checkpoint, writes and syncs it, and starts the next
    /// segment with a segment record. Returns the checkpoint's anchor.
    fn rotate(&self, disk: &mut Disk, buf: &mut Vec<u8>, sync: bool) -> Result<Anchor, String> {
        let anchor = self.checkpoint_line(disk, buf)?;
        // The previous segment is complete and synced before the next one exists.
        self.write_out(disk, buf, sync)?;
        let segment = disk.segment + 1;
        let mut first = Vec::new();
        let hash = segment_line(&mut first, &self.log_id, segment, disk.next_seq, &disk.head)
            .map_err(|e| e.to_string())?;
        self.injected_fault(None, &first)?;
        disk.file =
            write_new_segment(&self.dir, segment, &first, sync).map_err(|e| e.to_string())?;
        disk.segment = segment;
        disk.len = first.len() as u64;
        disk.next_seq += 1;
        disk.head = hash;
        Ok(anchor)
    }

    /// Brings `disk` up to date with what other writers appended since this handle last held
    /// the lock: each new line must link to the head known so far. A half-written line at the
    /// very end (a writer killed mid-write) is kept and described by a recovery record.
    fn refresh(&self, disk: &mut Disk, sync: bool) -> Result<(), String> {
        let mut moved = false;
        loop {
            let segment = disk.segment;
            let name = || segment_path(&self.dir, segment).display().to_string();
            // The size through `lseek`, not `fstat`: a `stat` marks the file's times as
            // observed, and the kernel (multigrain timestamps) then gives the next write a
            // fine-grained time, dirtying the inode on every write.
            let size = (&disk.file)
                .seek(SeekFrom::End(0))
                .map_err(|e| format!("size of {}: {e}", name()))?;
            if size < disk.len {
                return Err(format!(
                    "{} is shorter than when this writer last saw it: it was cut",
                    name()
                ));
            }
            if size == disk.len && !moved {
                // Nobody appended here, so nobody started a newer segment either: a rotation
                // always ends the current segment with a checkpoint first. (The common case:
                // one `fstat`.)
                return Ok(());
            }
            let mut bytes = Vec::new();
            if size > disk.len {
                disk.file
                    .seek(SeekFrom::Start(disk.len))
                    .and_then(|_| (&disk.file).read_to_end(&mut bytes))
                    .map_err(|e| format!("read {}: {e}", name()))?;
            }
            let next = segment_path(&self.dir, disk.segment + 1);
            let last = !next.exists();
            let first = moved && disk.len == 0;
            let torn = self.follow(disk, &bytes, first)?;
            if !torn.is_empty() {
                if !last {
                    return Err(format!("{} ends inside a record", name()));
                }
                write_recovery(disk, torn, sync).map_err(|e| format!("recover {}: {e}", name()))?;
            }
            if last {
                return Ok(());
            }
            disk.file = open_segment(&next).map_err(|e| e.to_string())?;
            disk.segment += 1;
            disk.len = 0;
            moved = true;
        }
    }

    /// Checks and takes in the whole lines of `bytes` (read at `disk.len`); returns the
    /// unterminated rest. `new_segment`: the bytes start a segment (its first line must be a
    /// segment record).
    fn follow<'b>(
        &self,
        disk: &mut Disk,
        bytes: &'b [u8],
        new_segment: bool,
    ) -> Result<&'b [u8], String> {
        let changed = |what: &str| {
            format!(
                "{} was changed by someone else: {what}",
                segment_path(&self.dir, disk.segment).display()
            )
        };
        let mut pos = 0;
        let mut first = new_segment;
        // A torn line left by a killed writer, awaiting the recovery record after it.
        let mut torn: Option<(u64, &[u8])> = None;
        while let Some(n) = memchr::memchr(b'\n', &bytes[pos..]) {
            let text = &bytes[pos..pos + n];
            let at = disk.len + pos as u64;
            pos += n + 1;
            let Some(line) = record::Line::parse(text) else {
                if torn.is_some() {
                    return Err(changed("two broken lines in a row"));
                }
                torn = Some((at, text));
                continue;
            };
            let Some(hash) = line.check_hash() else {
                return Err(changed("a record's hash does not match"));
            };
            if line.seq != disk.next_seq || line.prev_hex != record::hex64(&disk.head).as_slice() {
                return Err(changed("a record does not link to the chain"));
            }
            if let Some((off, t)) = torn.take() {
                if !crate::verify::recovery_describes(
                    &line,
                    usize::try_from(off).unwrap_or(usize::MAX),
                    t,
                ) {
                    return Err(changed("a broken line without its recovery record"));
                }
            }
            match line.ty {
                RecordType::Segment if first => {}
                RecordType::Segment | RecordType::Genesis => {
                    return Err(changed("a segment or genesis record in the middle"))
                }
                _ if first => return Err(changed("a segment that starts without its record")),
                RecordType::Event | RecordType::Sealed => disk.since_checkpoint += 1,
                RecordType::Checkpoint => disk.since_checkpoint = 0,
                RecordType::Recovery => {}
            }
            first = false;
            disk.next_seq += 1;
            disk.head = hash;
        }
        if torn.is_some() {
            return Err(changed("a broken line without its recovery record"));
        }
        disk.len += pos as u64;
        Ok(&bytes[pos..])
    }

    /// The test hook: writes the allowed prefix of `bytes` and fails, like a disk that fills.
    fn injected_fault(&self, file: Option<&mut File>, bytes: &[u8]) -> Result<(), String> {
        let mut fault = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        let Some(allowed) = fault.as_mut() else {
            return Ok(());
        };
        let n = usize::try_from(*allowed).unwrap_or(usize::MAX);
        if n >= bytes.len() {
            *allowed -= bytes.len() as u64;
            return Ok(());
        }
        if let Some(f) = file {
            let _ = f.write_all(&bytes[..n]);
        }
        *allowed = 0;
        Err("write: No space left on device (os error 28)".to_owned())
    }
}

/// Starts the thread that ends a handle's lease on the lock: once the handle has not written
/// for `idle`, or as soon as another writer asks for the lock. Without the thread there are
/// no leases.
fn spawn_keeper(locks: Arc<Locks>, idle: Duration) {
    let keeper = Arc::clone(&locks);
    let spawned = std::thread::Builder::new()
        .name("credvault-audit-lease".into())
        .spawn(move || {
            let locks = keeper;
            // How often a held lease checks whether anyone asks for the lock.
            let tick = idle.min(Duration::from_millis(1));
            let mut lease = locks.lease();
            loop {
                if !lease.held {
                    if lease.closed {
                        return;
                    }
                    lease = locks.wake.wait(lease).unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                if lease.busy {
                    // The write in progress ends with a fresh `last_write`.
                    lease = locks
                        .wake
                        .wait_timeout(lease, tick)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
                let since = lease.last_write.map_or(idle, |t| t.elapsed());
                let asked = since < idle && !lease.closed && locks.wanted();
                if since >= idle || asked || lease.closed {
                    lease.held = false;
                    lease.yielding = asked;
                    let _ = locks.lock.unlock();
                    continue;
                }
                lease = locks
                    .wake
                    .wait_timeout(lease, tick.min(idle.saturating_sub(since)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        });
    if spawned.is_err() {
        locks.lease().closed = true;
    }
}

fn spawn_ticker(log: Weak<Inner>, stop: Arc<(Mutex<bool>, Condvar)>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("credvault-audit-checkpoint".into())
        .spawn(move || {
            let (flag, cond) = &*stop;
            let tick = interval
                .min(Duration::from_secs(1))
                .max(Duration::from_millis(10));
            loop {
                {
                    // The flag's lock is released before the log is touched: dropping the
                    // last handle below sets the flag from this very thread.
                    let stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
                    if *stopped {
                        return;
                    }
                    let (stopped, _) = cond
                        .wait_timeout(stopped, tick)
                        .unwrap_or_else(|e| e.into_inner());
                    if *stopped {
                        return;
                    }
                }
                let Some(inner) = log.upgrade() else { return };
                let due = inner.state().last_checkpoint.elapsed() >= interval;
                if due {
                    // Skipped when nothing came since the last checkpoint (by any writer). A
                    // failure is recorded in the log's state and refuses later records; a
                    // lock timeout is simply retried on the next tick.
                    let _ = AuditLog { inner }.checkpoint_item(false);
                }
            }
        });
    // Without the thread, checkpoints still come by count and on close.
    drop(spawned);
}
