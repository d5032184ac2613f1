//! The writer thread: group commit, apply, snapshots.
//!
//! One thread owns the active log file. It takes every request queued while the previous
//! group was being fsynced, writes them as one record, fsyncs once, applies the ops to the
//! state under the write lock in record order, and only then replies. Replay applies records
//! in the same order, so the state after a restart is the state the committers saw.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, PoisonError, RwLock};

use crate::files::{self, SnapshotWriteError};
use crate::{JournalError, JournalOptions, Replay, Stats};

/// Most requests taken into one group: bounds the latency a single huge group adds to the
/// committers queued behind it.
const MAX_GROUP_REQUESTS: usize = 4096;
/// A record is flushed once its payload passes this size, so one group never buffers more
/// than about this much plus one commit (documents are at most a few MiB).
const MAX_RECORD_BYTES: usize = 16 << 20;

pub(crate) type CommitResult<S> = Result<Vec<<S as Replay>::Outcome>, JournalError>;

/// Where a reply goes: async committers wait on a oneshot, blocking ones on a std channel
/// (a oneshot's `blocking_recv` panics inside a runtime; the std channel never does).
pub(crate) enum Reply<T> {
    Async(tokio::sync::oneshot::Sender<T>),
    Blocking(std::sync::mpsc::SyncSender<T>),
}

impl<T> Reply<T> {
    fn send(self, value: T) {
        // A committer that stopped waiting (dropped future) does not cancel its commit; the
        // ops are durable and applied either way, so a failed send needs no handling.
        match self {
            Self::Async(tx) => {
                let _ = tx.send(value);
            }
            Self::Blocking(tx) => {
                let _ = tx.send(value);
            }
        }
    }
}

pub(crate) enum Request<S: Replay> {
    Commit {
        ops: Vec<S::Op>,
        reply: Reply<CommitResult<S>>,
    },
    Snapshot {
        reply: Reply<Result<(), JournalError>>,
    },
}

struct Pending<S: Replay> {
    ops: Vec<S::Op>,
    reply: Reply<CommitResult<S>>,
}

pub(crate) struct Writer<S: Replay> {
    pub dir: PathBuf,
    pub file: File,
    pub generation: u64,
    pub log_bytes: u64,
    pub records: u64,
    pub state: Arc<RwLock<S>>,
    pub stats: Arc<Stats>,
    pub opts: JournalOptions,
    pub poisoned: bool,
    /// Held for the writer's lifetime: the directory lock is released when the thread ends.
    pub _lock: File,
}

impl<S: Replay> Writer<S> {
    pub fn run(mut self, rx: Receiver<Request<S>>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_GROUP_REQUESTS {
                match rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            let mut group = Vec::new();
            for req in batch {
                match req {
                    Request::Commit { ops, reply } => group.push(Pending { ops, reply }),
                    Request::Snapshot { reply } => {
                        // Everything queued before the request is part of the snapshot.
                        self.commit_group(std::mem::take(&mut group));
                        reply.send(self.snapshot());
                    }
                }
            }
            self.commit_group(group);
            if !self.poisoned
                && self.log_bytes > self.opts.snapshot_after_bytes
                && let Err(e) = self.snapshot()
            {
                tracing::warn!(error = %e, dir = %self.dir.display(), "journal snapshot failed; log keeps growing");
            }
        }
        tracing::debug!(dir = %self.dir.display(), "journal writer stopped");
    }

    fn commit_group(&mut self, group: Vec<Pending<S>>) {
        let mut record: Vec<Pending<S>> = Vec::new();
        let mut payload = Vec::new();
        for pending in group {
            if self.poisoned {
                pending.reply.send(Err(JournalError::Poisoned));
                continue;
            }
            if pending.ops.is_empty() {
                pending.reply.send(Ok(Vec::new()));
                continue;
            }
            let encoded = match postcard::to_allocvec(&pending.ops) {
                Ok(e) => e,
                Err(e) => {
                    pending.reply.send(Err(JournalError::Encode(e.to_string())));
                    continue;
                }
            };
            if encoded.len() > u32::MAX as usize {
                pending
                    .reply
                    .send(Err(JournalError::TooLarge(encoded.len())));
                continue;
            }
            if payload.len() + encoded.len() > u32::MAX as usize {
                self.flush(std::mem::take(&mut record), std::mem::take(&mut payload));
            }
            payload.extend_from_slice(&encoded);
            record.push(pending);
            if payload.len() >= MAX_RECORD_BYTES {
                self.flush(std::mem::take(&mut record), std::mem::take(&mut payload));
            }
        }
        self.flush(record, payload);
    }

    /// Writes one record holding the ops of `record`'s commits, then applies and replies.
    fn flush(&mut self, record: Vec<Pending<S>>, payload: Vec<u8>) {
        if record.is_empty() {
            return;
        }
        if self.poisoned {
            for p in record {
                p.reply.send(Err(JournalError::Poisoned));
            }
            return;
        }
        let mut buf = Vec::with_capacity(files::HEADER_LEN + payload.len());
        let written = files::frame(&mut buf, &payload).and_then(|()| self.write(&buf));
        if let Err(e) = written {
            tracing::error!(error = %e, dir = %self.dir.display(), "journal write failed; journal stops accepting commits");
            self.poisoned = true;
            for p in record {
                p.reply.send(Err(e.clone()));
            }
            return;
        }
        self.log_bytes += buf.len() as u64;
        self.records += 1;
        self.stats
            .log_bytes
            .store(self.log_bytes, Ordering::Relaxed);
        self.stats.records.store(self.records, Ordering::Relaxed);

        let mut replies = Vec::with_capacity(record.len());
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for p in record {
                let outcomes: Vec<S::Outcome> =
                    p.ops.into_iter().map(|op| state.apply(op)).collect();
                replies.push((p.reply, outcomes));
            }
        }
        for (reply, outcomes) in replies {
            reply.send(Ok(outcomes));
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), JournalError> {
        let path = files::log_path(&self.dir, self.generation);
        self.file
            .write_all(buf)
            .map_err(|e| JournalError::io("append log", &path, e))?;
        if self.opts.fsync {
            self.file
                .sync_data()
                .map_err(|e| JournalError::io("fsync log", &path, e))?;
        }
        Ok(())
    }

    /// Writes the state as a snapshot covering every log up to the current generation, then
    /// switches to a fresh log.
    ///
    /// Crash safety, step by step: the new (empty) log is created first, so a snapshot naming
    /// it never points at a missing file; until the rename, the old snapshot plus the old logs
    /// rule (an extra empty log replays as nothing); after the rename, older logs are ignored
    /// and deleted. Snapshots are always fsynced, whatever `opts.fsync` says, because old
    /// logs are deleted on their strength.
    fn snapshot(&mut self) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        let next = self.generation + 1;
        let next_path = files::log_path(&self.dir, next);
        let new_file = File::create(&next_path)
            .and_then(|f| f.sync_all())
            .and_then(|()| OpenOptions::new().append(true).open(&next_path))
            .map_err(|e| JournalError::io("create log", &next_path, e))?;
        files::fsync_dir(&self.dir)?;

        let encoded = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            postcard::to_allocvec(&(files::SNAPSHOT_FORMAT, next, S::STATE_FORMAT, &*state))
        };
        let result = match encoded {
            Ok(payload) => files::write_snapshot(&self.dir, &payload),
            Err(e) => Err(SnapshotWriteError::BeforeRename(JournalError::Encode(
                e.to_string(),
            ))),
        };
        match result {
            Ok(()) => {}
            Err(SnapshotWriteError::BeforeRename(e)) => {
                // Best effort: a leftover empty log is harmless (it replays as nothing).
                let _ = fs::remove_file(&next_path);
                return Err(e);
            }
            Err(SnapshotWriteError::AfterRename(e)) => {
                self.poisoned = true;
                return Err(e);
            }
        }

        let old = self.generation;
        self.file = new_file;
        self.generation = next;
        self.log_bytes = 0;
        self.records = 0;
        self.stats.log_bytes.store(0, Ordering::Relaxed);
        self.stats.records.store(0, Ordering::Relaxed);
        self.stats.generation.store(next, Ordering::Relaxed);
        self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        for generation in files::list_logs(&self.dir).unwrap_or_default() {
            if generation <= old {
                let path = files::log_path(&self.dir, generation);
                if let Err(e) = fs::remove_file(&path) {
                    // Harmless: the snapshot says this log is covered, open ignores it.
                    tracing::warn!(error = %e, path = %path.display(), "could not delete covered log");
                }
            }
        }
        tracing::info!(dir = %self.dir.display(), generation = next, "journal snapshot written");
        Ok(())
    }
}
