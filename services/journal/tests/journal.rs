//! Durability tests: reopen, torn tails, corruption, concurrency, snapshots.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use journal::{Journal, JournalError, JournalOptions, Replay};
use serde::{Deserialize, Serialize};

/// Records every value in apply order; the outcome is the value's position.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seq {
    values: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Push(u64),
}

impl Replay for Seq {
    type Op = Op;
    type Outcome = usize;
    fn apply(&mut self, op: Op) -> usize {
        match op {
            Op::Push(v) => {
                self.values.push(v);
                self.values.len() - 1
            }
        }
    }
}

fn opts() -> JournalOptions {
    JournalOptions::default()
}

fn open(dir: &Path) -> Journal<Seq> {
    Journal::open(dir, opts()).expect("open")
}

fn values(j: &Journal<Seq>) -> Vec<u64> {
    j.read(|s| s.values.clone())
}

fn active_log(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("log."))
        })
        .collect();
    logs.sort();
    logs.pop().expect("a log")
}

#[test]
fn reopen_restores_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let j = open(dir.path());
        assert_eq!(
            j.commit_blocking(vec![Op::Push(1), Op::Push(2)])
                .expect("commit"),
            vec![0, 1]
        );
        assert_eq!(
            j.commit_blocking(vec![Op::Push(3)]).expect("commit"),
            vec![2]
        );
        assert_eq!(
            j.commit_blocking(vec![]).expect("empty commit"),
            Vec::<usize>::new()
        );
        assert_eq!(j.stats().records, 2);
    }
    let j = open(dir.path());
    assert_eq!(values(&j), vec![1, 2, 3]);
    assert_eq!(j.stats().records, 2);
}

#[test]
fn second_open_of_same_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _j = open(dir.path());
    assert!(matches!(
        Journal::<Seq>::open(dir.path(), opts()),
        Err(JournalError::Locked(_))
    ));
}

#[test]
fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let j = open(dir.path());
        for v in 0..5 {
            j.commit_blocking(vec![Op::Push(v)]).expect("commit");
        }
    }
    let log = active_log(dir.path());
    let good_len = fs::metadata(&log).expect("stat").len();
    // A record header promising 100 bytes, followed by only 10: a crash mid-write.
    let mut f = OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open log");
    f.write_all(&100u32.to_le_bytes()).expect("write");
    f.write_all(&[0xAB; 14]).expect("write");
    drop(f);
    {
        let j = open(dir.path());
        assert_eq!(values(&j), vec![0, 1, 2, 3, 4]);
        assert_eq!(fs::metadata(&log).expect("stat").len(), good_len);
        j.commit_blocking(vec![Op::Push(5)])
            .expect("commit after recovery");
    }
    assert_eq!(values(&open(dir.path())), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn half_written_last_record_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let j = open(dir.path());
        j.commit_blocking(vec![Op::Push(7)]).expect("commit");
        j.commit_blocking(vec![Op::Push(8), Op::Push(9)])
            .expect("commit");
    }
    let log = active_log(dir.path());
    let len = fs::metadata(&log).expect("stat").len();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(len - 1))
        .expect("truncate");
    assert_eq!(values(&open(dir.path())), vec![7]);
}

#[test]
fn zero_filled_tail_is_tolerated() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let j = open(dir.path());
        j.commit_blocking(vec![Op::Push(1)]).expect("commit");
    }
    let log = active_log(dir.path());
    let mut f = OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open log");
    f.write_all(&[0u8; 4096]).expect("write");
    drop(f);
    assert_eq!(values(&open(dir.path())), vec![1]);
}

#[test]
fn corruption_before_the_tail_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let j = open(dir.path());
        for v in 0..3 {
            j.commit_blocking(vec![Op::Push(v)]).expect("commit");
        }
    }
    let log = active_log(dir.path());
    let mut bytes = fs::read(&log).expect("read");
    // First record's payload starts after the 8-byte header.
    bytes[9] ^= 0xFF;
    fs::write(&log, &bytes).expect("write");
    match Journal::<Seq>::open(dir.path(), opts()) {
        Err(JournalError::Corrupt { offset, .. }) => assert_eq!(offset, 0),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, opened fine"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_committers_are_durable_and_ordered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path());
    let mut tasks = Vec::new();
    for task in 0..64u64 {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..20u64 {
                let v = task * 1000 + i;
                let pos = j.commit(vec![Op::Push(v)]).await.expect("commit");
                seen.push((pos[0], v));
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    assert_eq!(all.len(), 64 * 20);
    let records = j.stats().records;
    assert!(records <= 64 * 20, "{records}");
    drop(j);

    let j = open(dir.path());
    let replayed = values(&j);
    assert_eq!(replayed.len(), all.len());
    for (pos, v) in all {
        // The position each committer was told is where replay puts its op.
        assert_eq!(replayed[pos], v);
    }
    // Each task's own ops stay in the order it committed them.
    for task in 0..64u64 {
        let mine: Vec<u64> = replayed
            .iter()
            .copied()
            .filter(|v| v / 1000 == task)
            .collect();
        assert_eq!(mine, (0..20).map(|i| task * 1000 + i).collect::<Vec<_>>());
    }
}

#[test]
fn automatic_snapshots_then_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = JournalOptions {
        fsync: false,
        snapshot_after_bytes: 256,
        ..JournalOptions::default()
    };
    {
        let j = Journal::<Seq>::open(dir.path(), small.clone()).expect("open");
        for v in 0..200 {
            j.commit_blocking(vec![Op::Push(v)]).expect("commit");
        }
        let stats = j.stats();
        assert!(stats.snapshots > 0, "{stats:?}");
        assert!(stats.log_bytes <= 256 + 64, "{stats:?}");
    }
    let logs = fs::read_dir(dir.path())
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("log."))
        })
        .count();
    assert_eq!(logs, 1, "covered logs are deleted");
    let j = Journal::<Seq>::open(dir.path(), small).expect("reopen");
    assert_eq!(values(&j), (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn snapshot_now_then_more_ops_then_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let j = open(dir.path());
        j.commit(vec![Op::Push(1), Op::Push(2)])
            .await
            .expect("commit");
        j.snapshot_now().expect("snapshot");
        assert_eq!(j.stats().snapshots, 1);
        assert_eq!(j.stats().log_bytes, 0);
        j.commit(vec![Op::Push(3)]).await.expect("commit");
    }
    {
        let j = open(dir.path());
        assert_eq!(values(&j), vec![1, 2, 3]);
        j.snapshot_now().expect("snapshot");
    }
    let j = open(dir.path());
    assert_eq!(values(&j), vec![1, 2, 3]);
}

#[test]
fn crash_between_snapshot_and_log_cleanup_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let j = open(dir.path());
        j.commit_blocking(vec![Op::Push(1)]).expect("commit");
    }
    let old_log = fs::read(active_log(dir.path())).expect("read");
    {
        let j = open(dir.path());
        j.snapshot_now().expect("snapshot");
        j.commit_blocking(vec![Op::Push(2)]).expect("commit");
    }
    // Resurrect the covered log, as if the crash came before its deletion: it must be ignored,
    // not replayed twice.
    fs::write(dir.path().join(format!("log.{:020}", 0)), old_log).expect("write");
    // And an empty next log, as if a later snapshot died before its rename.
    fs::write(dir.path().join(format!("log.{:020}", 2)), b"").expect("write");
    fs::write(dir.path().join("snapshot.tmp"), b"junk").expect("write");
    {
        let j = open(dir.path());
        assert_eq!(values(&j), vec![1, 2]);
        j.commit_blocking(vec![Op::Push(3)]).expect("commit");
    }
    assert_eq!(values(&open(dir.path())), vec![1, 2, 3]);
}

#[test]
fn corrupt_snapshot_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let j = open(dir.path());
        j.commit_blocking(vec![Op::Push(1)]).expect("commit");
        j.snapshot_now().expect("snapshot");
    }
    let path = dir.path().join("snapshot");
    let mut bytes = fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    fs::write(&path, bytes).expect("write");
    assert!(matches!(
        Journal::<Seq>::open(dir.path(), opts()),
        Err(JournalError::Corrupt { .. })
    ));
}

/// A log written by the journal before its CRC came from `crc32fast` (the byte-at-a-time
/// table of CRC-32/ISO-HDLC): two group commits, `[1, 2]` and `[0xdead_beef_cafe]`.
const OLD_LOG: &str = "0500000066af2e53020001000209000000c63990c40100fe95bff7dbd537";

#[test]
fn a_journal_written_by_the_old_crc_still_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes: Vec<u8> = (0..OLD_LOG.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&OLD_LOG[i..i + 2], 16).expect("hex"))
        .collect();
    fs::write(dir.path().join("log.00000000000000000000"), bytes).expect("write");
    let j = open(dir.path());
    assert_eq!(j.read(|s| s.values.clone()), vec![1, 2, 0xdead_beef_cafe]);
    // And what it appends now reads back with them.
    j.commit_blocking(vec![Op::Push(3)]).expect("commit");
    drop(j);
    let j = open(dir.path());
    assert_eq!(
        j.read(|s| s.values.clone()),
        vec![1, 2, 0xdead_beef_cafe, 3]
    );
}

/// A writer that cannot keep up (here: it waits for the state lock, held by this test) makes
/// commits fail with `Busy` once `queue_capacity` of them wait; the queue does not grow, no
/// commit blocks, and every commit that was queued completes once the writer moves again.
#[tokio::test]
async fn a_full_queue_is_reported_not_grown() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    type Commit<'a> = Pin<Box<dyn Future<Output = Result<Vec<usize>, JournalError>> + Send + 'a>>;
    let dir = tempfile::tempdir().expect("tempdir");
    let capacity = 8;
    let j = Journal::<Seq>::open(
        dir.path(),
        JournalOptions {
            fsync: false,
            queue_capacity: capacity,
            ..JournalOptions::default()
        },
    )
    .expect("open");
    // More than the writer could take into its groups while stalled, plus the queue.
    let bound = 4096 + capacity + 1;
    let (queued, refused) = j.read(|_| {
        let mut cx = Context::from_waker(Waker::noop());
        let mut queued: Vec<Commit<'_>> = Vec::new();
        for v in 0..bound as u64 * 2 {
            let mut c: Commit<'_> = Box::pin(j.commit(vec![Op::Push(v)]));
            match c.as_mut().poll(&mut cx) {
                Poll::Pending => queued.push(c),
                Poll::Ready(Err(JournalError::Busy)) => return (queued, true),
                Poll::Ready(other) => {
                    panic!("a commit completed while the state was held: {other:?}")
                }
            }
        }
        (queued, false)
    });
    assert!(
        refused,
        "the queue took {} commits without refusing",
        queued.len()
    );
    assert!(
        queued.len() <= bound,
        "{} commits queued with a capacity of {capacity}",
        queued.len()
    );
    let n = queued.len();
    for c in queued {
        c.await.expect("a queued commit completes");
    }
    assert_eq!(
        values(&j).len(),
        n,
        "exactly the queued commits were applied"
    );
    j.commit(vec![Op::Push(u64::MAX)])
        .await
        .expect("the queue has room again");
}

/// A snapshot file around `payload`, framed as the journal frames it.
fn snapshot_file(payload: &[u8]) -> Vec<u8> {
    let mut file = b"UAPJSNAP".to_vec();
    file.extend_from_slice(&u32::try_from(payload.len()).expect("len").to_le_bytes());
    file.extend_from_slice(&journal::crc32(payload).to_le_bytes());
    file.extend_from_slice(payload);
    file
}

/// A snapshot written before states had their own layout number: `(1, next generation,
/// state)`, here `[7, 8]` with logs from generation 1 on.
#[test]
fn a_format_one_snapshot_still_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = [0x01, 0x01, 0x02, 0x07, 0x08];
    fs::write(dir.path().join("snapshot"), snapshot_file(&payload)).expect("write");
    let j = open(dir.path());
    assert_eq!(values(&j), vec![7, 8]);
    j.commit_blocking(vec![Op::Push(9)]).expect("commit");
    j.snapshot_now().expect("snapshot");
    drop(j);
    assert_eq!(values(&open(dir.path())), vec![7, 8, 9]);
}

/// [`Seq`] with a second layout: each value with its double. It migrates layout 1.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Pairs {
    values: Vec<(u64, u64)>,
}

impl Replay for Pairs {
    type Op = Op;
    type Outcome = ();
    const STATE_FORMAT: u32 = 2;
    fn apply(&mut self, op: Op) {
        let Op::Push(v) = op;
        self.values.push((v, v * 2));
    }
    fn decode_snapshot(format: u32, bytes: &[u8]) -> Result<Self, String> {
        match format {
            1 => {
                let old: Seq = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
                Ok(Self {
                    values: old.values.into_iter().map(|v| (v, v * 2)).collect(),
                })
            }
            2 => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
            other => Err(format!("unknown layout {other}")),
        }
    }
}

#[test]
fn a_state_migrates_its_older_layout_and_a_newer_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let j = open(dir.path());
        j.commit_blocking(vec![Op::Push(3)]).expect("commit");
        j.snapshot_now().expect("snapshot");
    }
    {
        let j = Journal::<Pairs>::open(dir.path(), opts()).expect("migrates layout 1");
        assert_eq!(j.read(|s| s.values.clone()), vec![(3, 6)]);
        j.commit_blocking(vec![Op::Push(4)]).expect("commit");
        j.snapshot_now().expect("snapshot");
    }
    let j = Journal::<Pairs>::open(dir.path(), opts()).expect("reads layout 2");
    assert_eq!(j.read(|s| s.values.clone()), vec![(3, 6), (4, 8)]);
    drop(j);
    // The old state type finds a layout it does not know and says so rather than misreading.
    match Journal::<Seq>::open(dir.path(), opts()) {
        Err(JournalError::Corrupt { reason, .. }) => {
            assert!(reason.contains("state format 2"), "{reason}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}
