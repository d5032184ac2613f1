//! What producers ask the NOTIFY pipeline for: a [`Want`] (a NOTIFY for a subscription,
//! whatever its state is when it leaves), at a [`Priority`], with a [`Token`] when a fan-out
//! walk waits for it. Plain data, shared by the producers (SUBSCRIBE, fan-out, the engine's
//! outcomes) and the pipeline, so none of them needs the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::SubId;

/// Queues in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// The URL-bearing first NOTIFY of a new subscription (its bodiless one already left).
    First = 0,
    /// Change fan-out (and check-sync, later).
    Change = 1,
    /// Refreshes' deferred NOTIFYs and re-sends after a failure.
    Background = 2,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Self::First, Self::Change, Self::Background];

    pub fn label(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Change => "change",
            Self::Background => "background",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Why a NOTIFY is wanted (a metrics label; priority is chosen by the producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The URL-bearing NOTIFY after a bodiless first one.
    FollowUp,
    /// A change fan-out walk.
    Change,
    /// A NOTIFY was wanted while another was in flight in the dialog.
    Wanted,
    /// A NOTIFY failed in a way worth repeating (5xx, 408, 486).
    Retry,
}

impl Why {
    pub fn label(self) -> &'static str {
        match self {
            Self::FollowUp => "follow_up",
            Self::Change => "change",
            Self::Wanted => "wanted",
            Self::Retry => "retry",
        }
    }
}

/// NOTIFYs of one walk that get a span of their own under the walk's: enough to see in a
/// change's trace how its NOTIFYs went, without a million spans for a million phones.
pub const TRACED_NOTIFIES_PER_WALK: u32 = 32;

/// Completion of a fan-out walk: how many of its wants have not ended yet.
#[derive(Debug)]
pub struct Progress {
    outstanding: AtomicU64,
    zero: Notify,
    /// The walk's span, parent of its first [`TRACED_NOTIFIES_PER_WALK`] NOTIFYs' spans.
    span: tracing::Span,
    traced: AtomicU32,
}

impl Default for Progress {
    fn default() -> Self {
        Self::traced(tracing::Span::none())
    }
}

impl Progress {
    /// The progress of a walk running in `span`.
    pub fn traced(span: tracing::Span) -> Self {
        Self {
            outstanding: AtomicU64::new(0),
            zero: Notify::new(),
            span,
            traced: AtomicU32::new(0),
        }
    }

    /// A span for one more NOTIFY of the walk, under the walk's span, while fewer than
    /// [`TRACED_NOTIFIES_PER_WALK`] have had one.
    pub fn notify_span(&self) -> Option<tracing::Span> {
        if self.span.is_disabled()
            || self.traced.fetch_add(1, Ordering::Relaxed) >= TRACED_NOTIFIES_PER_WALK
        {
            return None;
        }
        Some(tracing::info_span!(parent: &self.span, "fanout.notify"))
    }

    /// A token for one more want; the want ends when the token is dropped.
    pub fn token(self: &Arc<Self>) -> Token {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        Token(Arc::clone(self))
    }

    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Resolves when no want is outstanding, or after `max`.
    pub async fn settled(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.zero.notified();
            if self.outstanding() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.outstanding() == 0;
            }
        }
    }
}

/// One want's share of a [`Progress`]. Dropping it (the want reached an end, whatever it
/// was) counts the want done; a want that is queued again carries its token along.
#[derive(Debug)]
pub struct Token(Arc<Progress>);

impl Token {
    /// The walk this want belongs to.
    pub fn progress(&self) -> &Progress {
        &self.0
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if self.0.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

/// One NOTIFY to send, with whatever state the subscription has when it leaves.
#[derive(Debug)]
pub struct Want {
    pub sub: SubId,
    pub why: Why,
    pub effective_by: Option<u32>,
    /// Failed attempts so far: retries back off, and give up after [`MAX_ATTEMPTS`].
    pub attempt: u8,
    /// The fan-out walk waiting for this want, if any.
    pub token: Option<Token>,
}

impl Want {
    pub fn new(sub: SubId, why: Why) -> Self {
        Self {
            sub,
            why,
            effective_by: None,
            attempt: 0,
            token: None,
        }
    }
}

/// Attempts at a NOTIFY answered 5xx/408/486 (or unresolvable for a while) before giving
/// up; the subscription stays, and its next change or refresh tries again.
pub const MAX_ATTEMPTS: u8 = 6;
