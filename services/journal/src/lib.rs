//! Embedded persistence: an append-only journal of ops with snapshots and group commit.
//!
//! * [`lib`](crate) (this file): the [`Replay`] contract, [`Journal`] (open, read, commit,
//!   snapshot) and its options and stats.
//! * `writer`: the single writer thread: batches concurrent commits into one write + fsync,
//!   applies them in log order, writes snapshots and rotates logs.
//! * `files`: the on-disk layout, record framing, log scanning with torn-tail recovery, and
//!   the crash-safe snapshot sequence.
//! * `crc`: the CRC-32 that guards every record.
//! * `error`: [`JournalError`].
//!
//! The state lives in memory behind a `RwLock`; the disk holds a snapshot plus the ops since.
//! A commit returns only once its ops are in the log (fsynced, unless disabled) and applied,
//! so whatever a reader sees survives a crash.

mod crc;
mod error;
mod files;
mod writer;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

pub use crate::crc::crc32;
pub use crate::error::JournalError;
use crate::writer::{Reply, Request, Writer};

/// How long [`Journal::open`] waits for a directory lock held by someone else.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// A state machine rebuilt by replaying its ops.
pub trait Replay:
    Default + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static
{
    type Op: Serialize + serde::de::DeserializeOwned + Send + 'static;
    type Outcome: Send + 'static;
    /// The layout of this state's serialised form in a snapshot. Bump it when the layout
    /// changes, and teach [`Replay::decode_snapshot`] to read the formats before it.
    const STATE_FORMAT: u32 = 1;

    /// Must be deterministic: replaying the journal must rebuild the same state. Anything
    /// that varies (clock, configuration, random ids) belongs in the op, not in `apply`.
    fn apply(&mut self, op: Self::Op) -> Self::Outcome;

    /// Decodes a snapshot's state written in layout `format`. The default reads
    /// [`Replay::STATE_FORMAT`] only; a state that changed its layout overrides this to
    /// migrate the older ones, so an upgraded node starts on its predecessor's data.
    fn decode_snapshot(format: u32, bytes: &[u8]) -> Result<Self, String> {
        if format != Self::STATE_FORMAT {
            return Err(format!(
                "state format {format}, this build reads {}",
                Self::STATE_FORMAT
            ));
        }
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

/// How the journal trades durability for speed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalOptions {
    /// fsync the log after each group commit. Off only for tests and throwaway setups: a
    /// crash may then lose acknowledged commits (never the snapshot, which is always synced).
    pub fsync: bool,
    /// Write a snapshot and start a new log once the log passes this many bytes; bounds
    /// both replay time at start-up and disk use.
    pub snapshot_after_bytes: u64,
    /// Commits that may wait for the writer thread. A commit from async code that finds the
    /// queue full fails at once with [`JournalError::Busy`] (the caller sheds the request, a
    /// SUBSCRIBE gets 503) instead of growing the queue or blocking a runtime thread.
    pub queue_capacity: usize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            // 64 MiB replays in well under a second and is small next to any disk.
            snapshot_after_bytes: 64 << 20,
            // Four full groups (the writer takes up to 4096 commits per write): a disk that
            // stalls for a few fsyncs is absorbed; one that stalls for longer sheds load
            // while holding at most tens of MiB of queued ops.
            queue_capacity: 16_384,
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct JournalStats {
    /// Bytes in the active log (since the last snapshot).
    pub log_bytes: u64,
    /// Records in the active log; one record holds one group commit.
    pub records: u64,
    /// Snapshots written by this process.
    pub snapshots: u64,
    /// Generation of the active log (bumped by every snapshot).
    pub generation: u64,
}

#[derive(Default)]
pub(crate) struct Stats {
    log_bytes: AtomicU64,
    records: AtomicU64,
    snapshots: AtomicU64,
    generation: AtomicU64,
}

/// A journaled state `S`. Cheap to clone; all clones share one state and one writer thread.
pub struct Journal<S: Replay> {
    inner: Arc<Inner<S>>,
}

impl<S: Replay> Clone for Journal<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<S: Replay> {
    state: Arc<RwLock<S>>,
    stats: Arc<Stats>,
    // Option so Drop can close the channel before joining the writer.
    tx: Option<SyncSender<Request<S>>>,
    writer: Option<JoinHandle<()>>,
}

impl<S: Replay> Drop for Inner<S> {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(handle) = self.writer.take() {
            // Join so the directory lock is released (and the last group is written) before
            // the drop returns: reopening right after a drop must not find the lock held.
            let _ = handle.join();
        }
    }
}

impl<S: Replay> Journal<S> {
    /// Opens (creating if needed) the journal in `dir`: loads the snapshot, replays the logs
    /// after it, cuts off a torn tail record, and starts the writer thread.
    pub fn open(dir: &Path, opts: JournalOptions) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(|e| JournalError::io("create directory", dir, e))?;
        let lock_path = files::lock_path(dir);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| JournalError::io("open lock", &lock_path, e))?;
        // A lock held for a moment is not an owner: a process that forks (to start a helper,
        // say) shares the lock until its child execs and closes the descriptor. Only a lock
        // still held after LOCK_WAIT means another journal has the directory.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(JournalError::Locked(dir.to_owned()));
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(JournalError::io("lock", &lock_path, e));
                }
            }
        }

        let tmp = files::snapshot_tmp_path(dir);
        if tmp.exists() {
            // A snapshot that never got renamed: the old snapshot and logs still cover it.
            fs::remove_file(&tmp).map_err(|e| JournalError::io("remove", &tmp, e))?;
        }

        let (mut state, first_gen) = match files::read_snapshot(dir)? {
            None => (S::default(), 0),
            Some(payload) => {
                let path = files::snapshot_path(dir);
                let corrupt = |reason: String| JournalError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason,
                };
                let (next_gen, state_format, rest) = files::decode_snapshot_header(&payload)
                    .map_err(|e| corrupt(format!("snapshot header: {e}")))?;
                let state = S::decode_snapshot(state_format, rest)
                    .map_err(|e| corrupt(format!("snapshot does not decode: {e}")))?;
                (state, next_gen)
            }
        };

        let mut live = Vec::new();
        for generation in files::list_logs(dir)? {
            let path = files::log_path(dir, generation);
            if generation < first_gen {
                // Covered by the snapshot; left over from a crash right after the rename.
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(error = %e, path = %path.display(), "could not delete covered log");
                }
            } else {
                live.push(generation);
            }
        }
        // Only the last log that holds anything can end in a torn record: later ones are
        // empty logs created by a snapshot that never completed.
        let mut tail_gen = None;
        for &generation in &live {
            let len = fs::metadata(files::log_path(dir, generation))
                .map_err(|e| JournalError::io("stat log", files::log_path(dir, generation), e))?
                .len();
            if len > 0 {
                tail_gen = Some(generation);
            }
        }

        let (mut log_bytes, mut records) = (0, 0);
        for &generation in &live {
            let path = files::log_path(dir, generation);
            let scan = files::scan_log(&path, Some(generation) == tail_gen, |payload, offset| {
                replay_record(&mut state, payload).map_err(|reason| JournalError::Corrupt {
                    path: path.clone(),
                    offset,
                    reason,
                })
            })?;
            if let Some(reason) = &scan.torn {
                tracing::warn!(
                    path = %path.display(),
                    offset = scan.valid_len,
                    reason = %reason,
                    "journal ends in a torn record (crash during a write); truncating it"
                );
                files::truncate(&path, scan.valid_len)?;
            }
            log_bytes = scan.valid_len;
            records = scan.records;
        }

        let generation = live.last().copied().unwrap_or(first_gen);
        let log_path = files::log_path(dir, generation);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| JournalError::io("open log", &log_path, e))?;
        if live.is_empty() {
            files::fsync_dir(dir)?;
        }
        if live.last() != tail_gen.as_ref() {
            // Appending to an empty later log: the tail log's bytes no longer count.
            log_bytes = 0;
            records = 0;
        }

        let state = Arc::new(RwLock::new(state));
        let stats = Arc::new(Stats::default());
        stats.log_bytes.store(log_bytes, Ordering::Relaxed);
        stats.records.store(records, Ordering::Relaxed);
        stats.generation.store(generation, Ordering::Relaxed);
        let capacity = opts.queue_capacity.max(1);
        let writer = Writer {
            dir: dir.to_owned(),
            file,
            generation,
            log_bytes,
            records,
            state: Arc::clone(&state),
            stats: Arc::clone(&stats),
            opts,
            poisoned: false,
            _lock: lock,
        };
        let (tx, rx) = mpsc::sync_channel(capacity);
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| JournalError::io("spawn writer", PathBuf::from(dir), e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                state,
                stats,
                tx: Some(tx),
                writer: Some(handle),
            }),
        })
    }

    /// Runs `f` with shared access to the state. Keep it short: commits wait for it.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        // A panic inside `apply` poisons the lock; the state is still the best there is.
        let state = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f(&state)
    }

    /// Writes `ops` (batched with concurrent commits), then applies them in order and returns
    /// their outcomes. Dropping the future does not cancel the commit. When
    /// [`JournalOptions::queue_capacity`] commits are waiting already, fails at once with
    /// [`JournalError::Busy`] and changes nothing: it never blocks the runtime's thread.
    pub async fn commit(&self, ops: Vec<S::Op>) -> Result<Vec<S::Outcome>, JournalError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = Request::Commit {
            ops,
            reply: Reply::Async(tx),
        };
        match self
            .inner
            .tx
            .as_ref()
            .ok_or(JournalError::Closed)?
            .try_send(req)
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(JournalError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(JournalError::Closed),
        }
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// [`Self::commit`] for threads outside an async runtime (blocks the calling thread).
    pub fn commit_blocking(&self, ops: Vec<S::Op>) -> Result<Vec<S::Outcome>, JournalError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Request::Commit {
            ops,
            reply: Reply::Blocking(tx),
        })?;
        rx.recv().map_err(|_| JournalError::Closed)?
    }

    /// Writes a snapshot now and starts a new log (e.g. on clean shutdown, to make the next
    /// start-up fast). Blocks the calling thread until the snapshot is durable.
    pub fn snapshot_now(&self) -> Result<(), JournalError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Request::Snapshot {
            reply: Reply::Blocking(tx),
        })?;
        rx.recv().map_err(|_| JournalError::Closed)?
    }

    pub fn stats(&self) -> JournalStats {
        let s = &self.inner.stats;
        JournalStats {
            log_bytes: s.log_bytes.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            snapshots: s.snapshots.load(Ordering::Relaxed),
            generation: s.generation.load(Ordering::Relaxed),
        }
    }

    /// Queues a request from a thread that may block: waits while the queue is full.
    fn send(&self, req: Request<S>) -> Result<(), JournalError> {
        self.inner
            .tx
            .as_ref()
            .ok_or(JournalError::Closed)?
            .send(req)
            .map_err(|_| JournalError::Closed)
    }
}

/// Applies one record: a sequence of postcard-encoded `Vec<Op>`, one per commit.
fn replay_record<S: Replay>(state: &mut S, mut payload: &[u8]) -> Result<(), String> {
    while !payload.is_empty() {
        let (ops, rest) = postcard::take_from_bytes::<Vec<S::Op>>(payload)
            .map_err(|e| format!("record does not decode: {e}"))?;
        for op in ops {
            state.apply(op);
        }
        payload = rest;
    }
    Ok(())
}
