//! [`InProcessFeed`]: the change feed of the embedded store, for the notifier in the same
//! process (the Kafka consumer is the clustered equivalent).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use uaprof_api::{ChangeSource, FeedError, ProfileChange};

use crate::service::ContentService;

/// Reads the retained change log after a position. The consumer persists its committed
/// offset in its own store (the notifier keeps it with the subscriptions) and passes it back
/// as `start_after` on restart, so this side keeps no durable state per consumer.
pub struct InProcessFeed {
    service: Arc<ContentService>,
    position: u64,
    committed: u64,
    changes: watch::Receiver<u64>,
}

impl InProcessFeed {
    /// A feed delivering changes with seq greater than `start_after` (the consumer's last
    /// committed seq, 0 for "from the beginning").
    pub fn new(service: Arc<ContentService>, start_after: u64) -> Self {
        let changes = service.subscribe_changes();
        Self {
            service,
            position: start_after,
            committed: start_after,
            changes,
        }
    }

    /// The highest seq committed so far.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Seq of the last change handed out (or skipped over by a gap).
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl std::fmt::Debug for InProcessFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessFeed")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ChangeSource for InProcessFeed {
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ProfileChange>, FeedError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Mark the current value seen before reading, so a write landing between the
            // read and the wait still wakes us.
            self.changes.borrow_and_update();
            match self.service.changes_after(self.position, max) {
                Ok(batch) => {
                    if let Some(last) = batch.last() {
                        self.position = last.seq;
                        return Ok(batch);
                    }
                }
                Err(FeedError::Gap {
                    after,
                    resume_after,
                }) => {
                    // The consumer reconciles against current content, which includes
                    // everything up to `resume_after`; continue after it.
                    self.position = resume_after;
                    return Err(FeedError::Gap {
                        after,
                        resume_after,
                    });
                }
                Err(e) => return Err(e),
            }
            match tokio::time::timeout_at(deadline, self.changes.changed()).await {
                Err(_elapsed) => return Ok(Vec::new()),
                Ok(Err(_closed)) => return Err(FeedError::Closed),
                Ok(Ok(())) => {}
            }
        }
    }

    async fn commit(&mut self, seq: u64) -> Result<(), FeedError> {
        self.committed = self.committed.max(seq);
        Ok(())
    }
}
