//! The journal's error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a journal operation failed.
///
/// `Clone` because one failed group write has to be reported to every committer in the group;
/// the I/O cause is shared behind an `Arc` for that reason.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A file-system operation failed. Retryable only after the operator fixed the cause.
    #[error("journal I/O error ({op}) on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// The files on disk are damaged somewhere other than a torn tail; opening refuses to
    /// guess which data to drop.
    #[error("journal corrupt: {path} at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An op could not be encoded; nothing of this commit was written.
    #[error("journal op could not be encoded: {0}")]
    Encode(String),
    /// A single commit is larger than one record can hold (4 GiB).
    #[error("journal commit of {0} bytes exceeds the record size limit")]
    TooLarge(usize),
    /// Another process (or another `Journal` in this one) has the directory open.
    #[error("journal directory {0} is in use by another journal")]
    Locked(PathBuf),
    /// An earlier write or fsync failed. After a failed fsync the kernel may have dropped the
    /// dirty pages, so the only safe continuation is to reopen (and replay) the journal.
    #[error("journal failed after an earlier write error; reopen to recover")]
    Poisoned,
    /// The writer's queue is full (the disk is slower than the commits arriving): nothing of
    /// this commit was queued; the caller sheds the work and may retry later.
    #[error("journal busy: too many commits waiting for the disk")]
    Busy,
    /// The writer thread is gone (the journal is shutting down).
    #[error("journal writer stopped")]
    Closed,
}

impl JournalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
