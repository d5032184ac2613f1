//! On-disk layout: record framing, log scanning, snapshot files and directory fsync.
//!
//! ```text
//! <dir>/LOCK                      advisory lock: one journal per directory
//! <dir>/snapshot                  MAGIC + one record: (FORMAT, next_generation, state)
//! <dir>/snapshot.tmp              a snapshot being written (removed on open)
//! <dir>/log.<generation, 20 digits> records appended since the snapshot of that generation
//! record := len: u32 LE | crc32(payload): u32 LE | payload (len bytes)
//! ```
//!
//! A snapshot names the first log generation it does *not* cover, so every crash point of the
//! snapshot sequence leaves either the old snapshot with all its logs or the new snapshot with
//! (possibly stale, then ignored) older logs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::crc::crc32;
use crate::error::JournalError;

pub(crate) const HEADER_LEN: usize = 8;
const SNAPSHOT_MAGIC: &[u8; 8] = b"UAPJSNAP";
/// Bumped when the snapshot payload layout changes, so an old binary refuses a new snapshot
/// instead of misreading it. Format 1 was `(1, next generation, state)`; format 2 is
/// `(2, next generation, state format, state)`, so a state can change its own layout
/// ([`crate::Replay::STATE_FORMAT`]) and still read its older snapshots.
pub(crate) const SNAPSHOT_FORMAT: u32 = 2;

/// Reads a snapshot payload's header: the next log generation, the state's layout, and the
/// encoded state that follows. A format-1 snapshot predates state layouts: its state is
/// layout 1.
pub(crate) fn decode_snapshot_header(payload: &[u8]) -> Result<(u64, u32, &[u8]), String> {
    let (format, rest) = postcard::take_from_bytes::<u32>(payload).map_err(|e| e.to_string())?;
    let (next_gen, rest) = postcard::take_from_bytes::<u64>(rest).map_err(|e| e.to_string())?;
    match format {
        1 => Ok((next_gen, 1, rest)),
        SNAPSHOT_FORMAT => {
            let (state_format, rest) =
                postcard::take_from_bytes::<u32>(rest).map_err(|e| e.to_string())?;
            Ok((next_gen, state_format, rest))
        }
        other => Err(format!("unknown snapshot format {other}")),
    }
}

pub(crate) fn lock_path(dir: &Path) -> PathBuf {
    dir.join("LOCK")
}

pub(crate) fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot")
}

pub(crate) fn snapshot_tmp_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.tmp")
}

pub(crate) fn log_path(dir: &Path, generation: u64) -> PathBuf {
    // Zero-padded so a directory listing sorts in replay order.
    dir.join(format!("log.{generation:020}"))
}

/// Log generations present in `dir`, ascending.
pub(crate) fn list_logs(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let entries = fs::read_dir(dir).map_err(|e| JournalError::io("list", dir, e))?;
    let mut gens = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(generation) = name
            .strip_prefix("log.")
            .and_then(|g| g.parse::<u64>().ok())
        {
            gens.push(generation);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

/// Makes a rename or file creation in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), JournalError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| JournalError::io("fsync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened for syncing here; NTFS journals metadata itself.
        let _ = dir;
    }
    Ok(())
}

/// Appends the frame header for `payload` to `out`, then the payload.
pub(crate) fn frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), JournalError> {
    let len = u32::try_from(payload.len()).map_err(|_| JournalError::TooLarge(payload.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// What a log scan found.
pub(crate) struct Scan {
    /// Bytes of intact records from the start of the file.
    pub valid_len: u64,
    pub records: u64,
    /// Set when the file ends in a damaged record that was tolerated as a torn tail.
    pub torn: Option<String>,
}

/// Reads every record of a log file, handing each intact payload to `on_record`.
///
/// A damaged record is a torn tail (tolerated, when `tail` is set) only if it is the last
/// thing in the file: its header or body runs to the end of the file, or everything from it on
/// is zero bytes (file systems may extend a file with zeros on crash). Damage followed by more
/// data is corruption, as is any damage in a log that is not the tail.
pub(crate) fn scan_log(
    path: &Path,
    tail: bool,
    mut on_record: impl FnMut(&[u8], u64) -> Result<(), JournalError>,
) -> Result<Scan, JournalError> {
    let file = File::open(path).map_err(|e| JournalError::io("open log", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| JournalError::io("stat log", path, e))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut offset = 0u64;
    let mut records = 0u64;
    let mut payload = Vec::new();
    let read_err = |e: io::Error| JournalError::io("read log", path, e);
    let damaged =
        |offset: u64, records: u64, reason: String, at_end: bool| -> Result<Scan, JournalError> {
            if tail && at_end {
                Ok(Scan {
                    valid_len: offset,
                    records,
                    torn: Some(reason),
                })
            } else {
                Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    offset,
                    reason,
                })
            }
        };
    loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            return Ok(Scan {
                valid_len: offset,
                records,
                torn: None,
            });
        }
        if remaining < HEADER_LEN as u64 {
            return damaged(offset, records, "truncated record header".into(), true);
        }
        let mut header = [0u8; HEADER_LEN];
        reader.read_exact(&mut header).map_err(read_err)?;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
        let len = u64::from(u32::from_le_bytes([l0, l1, l2, l3]));
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        let body_remaining = remaining - HEADER_LEN as u64;
        if len > body_remaining {
            return damaged(offset, records, "record runs past end of file".into(), true);
        }
        // `len` fits in memory: it is bounded by the file's size just checked.
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload).map_err(read_err)?;
        let end = offset + HEADER_LEN as u64 + len;
        if len == 0 || crc32(&payload) != crc {
            // The writer never emits an empty record (postcard's op list is at least one byte).
            let reason = if len == 0 {
                "empty record"
            } else {
                "checksum mismatch"
            };
            let at_end =
                end == file_len || (header == [0; HEADER_LEN] && rest_is_zero(&mut reader)?);
            return damaged(offset, records, reason.into(), at_end);
        }
        on_record(&payload, offset)?;
        records += 1;
        offset = end;
    }
}

fn rest_is_zero(reader: &mut impl Read) -> Result<bool, JournalError> {
    let mut buf = [0u8; 8192];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| JournalError::io("read log", "<tail>", e))?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

/// Cuts a torn tail off the active log so new records follow the last intact one.
pub(crate) fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| JournalError::io("open log", path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| JournalError::io("truncate log", path, e))
}

/// Reads the snapshot file, if any, returning its payload.
pub(crate) fn read_snapshot(dir: &Path) -> Result<Option<Vec<u8>>, JournalError> {
    let path = snapshot_path(dir);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io("read snapshot", path, e)),
    };
    let corrupt = |offset: u64, reason: &str| JournalError::Corrupt {
        path: path.clone(),
        offset,
        reason: reason.to_owned(),
    };
    let rest = data
        .strip_prefix(SNAPSHOT_MAGIC.as_slice())
        .ok_or_else(|| corrupt(0, "bad snapshot magic"))?;
    let (header, body) = rest
        .split_first_chunk::<HEADER_LEN>()
        .ok_or_else(|| corrupt(8, "truncated snapshot header"))?;
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if body.len() != len {
        return Err(corrupt(8, "snapshot length mismatch"));
    }
    if crc32(body) != u32::from_le_bytes([c0, c1, c2, c3]) {
        return Err(corrupt(8, "snapshot checksum mismatch"));
    }
    Ok(Some(body.to_vec()))
}

/// Writes `payload` as the new snapshot: temp file, fsync, rename, directory fsync.
///
/// The error says whether the failure happened before the rename (harmless: the old snapshot
/// still rules) or after it.
pub(crate) fn write_snapshot(dir: &Path, payload: &[u8]) -> Result<(), SnapshotWriteError> {
    let tmp = snapshot_tmp_path(dir);
    let mut buf = Vec::with_capacity(SNAPSHOT_MAGIC.len() + HEADER_LEN + payload.len());
    buf.extend_from_slice(SNAPSHOT_MAGIC);
    frame(&mut buf, payload).map_err(SnapshotWriteError::BeforeRename)?;
    let before = |op, e| SnapshotWriteError::BeforeRename(JournalError::io(op, &tmp, e));
    let mut file = File::create(&tmp).map_err(|e| before("create snapshot", e))?;
    file.write_all(&buf)
        .map_err(|e| before("write snapshot", e))?;
    file.sync_all().map_err(|e| before("fsync snapshot", e))?;
    drop(file);
    fs::rename(&tmp, snapshot_path(dir)).map_err(|e| before("rename snapshot", e))?;
    fsync_dir(dir).map_err(SnapshotWriteError::AfterRename)
}

pub(crate) enum SnapshotWriteError {
    /// Nothing changed on disk that matters; the old snapshot and logs still rule.
    BeforeRename(JournalError),
    /// The rename happened but may not be durable: neither the old nor the new layout can be
    /// trusted to be what a crash would leave, so the journal must stop.
    AfterRename(JournalError),
}
