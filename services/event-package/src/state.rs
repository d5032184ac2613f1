//! The `Subscription-State` header (RFC 6665 §8.2.3) and the NOTIFY failures that end a
//! subscription (RFC 6665 §4.2.2).

use serde::{Deserialize, Serialize};

use crate::wire::push_u64;

/// Why a subscription ended (RFC 6665 §4.1.3 reason codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TerminationReason {
    /// We ended it (node drain, policy); the subscriber may re-subscribe at once.
    Deactivated,
    /// Ended, re-subscribing later is fine (use with `retry-after`, e.g. overload).
    Probation,
    /// Authorization refused.
    Rejected,
    /// It expired without a refresh.
    Timeout,
    /// We gave up waiting for authorization.
    Giveup,
    /// The resource no longer exists.
    Noresource,
    /// The state cannot change, so there is nothing to subscribe to.
    Invariant,
}

impl TerminationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deactivated => "deactivated",
            Self::Probation => "probation",
            Self::Rejected => "rejected",
            Self::Timeout => "timeout",
            Self::Giveup => "giveup",
            Self::Noresource => "noresource",
            Self::Invariant => "invariant",
        }
    }
}

/// A subscription's state as told to the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubState {
    /// `expires` is the remaining duration in seconds at the time of the NOTIFY.
    Active {
        expires: u32,
    },
    Pending {
        expires: u32,
    },
    Terminated {
        reason: TerminationReason,
        /// Seconds before the subscriber should try again.
        retry_after: Option<u32>,
    },
}

impl SubState {
    pub fn is_terminated(&self) -> bool {
        matches!(self, Self::Terminated { .. })
    }

    /// The header value, e.g. `active;expires=3600`, `terminated;reason=timeout`,
    /// `terminated;reason=probation;retry-after=30`.
    pub fn header_value(&self) -> String {
        let mut out = Vec::with_capacity(48);
        self.write_value(&mut out);
        // Everything written above is ASCII.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Appends the header value to a wire buffer.
    pub fn write_value(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Active { expires } => {
                out.extend_from_slice(b"active;expires=");
                push_u64(out, expires.into());
            }
            Self::Pending { expires } => {
                out.extend_from_slice(b"pending;expires=");
                push_u64(out, expires.into());
            }
            Self::Terminated {
                reason,
                retry_after,
            } => {
                out.extend_from_slice(b"terminated;reason=");
                out.extend_from_slice(reason.as_str().as_bytes());
                if let Some(secs) = retry_after {
                    out.extend_from_slice(b";retry-after=");
                    push_u64(out, secs.into());
                }
            }
        }
    }
}

/// Whether a final response to our NOTIFY means the subscription is gone (RFC 6665 §4.2.2:
/// 404, 405, 410, 416, 480–485, 489, 501, 604). A transaction timeout also removes it; that
/// is the caller's to detect, there is no status for it.
pub fn removes_subscription(status: u16) -> bool {
    matches!(status, 404 | 405 | 410 | 416 | 480..=485 | 489 | 501 | 604)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        let cases = [
            (SubState::Active { expires: 3600 }, "active;expires=3600"),
            (SubState::Pending { expires: 0 }, "pending;expires=0"),
            (
                SubState::Terminated {
                    reason: TerminationReason::Timeout,
                    retry_after: None,
                },
                "terminated;reason=timeout",
            ),
            (
                SubState::Terminated {
                    reason: TerminationReason::Probation,
                    retry_after: Some(30),
                },
                "terminated;reason=probation;retry-after=30",
            ),
            (
                SubState::Terminated {
                    reason: TerminationReason::Noresource,
                    retry_after: None,
                },
                "terminated;reason=noresource",
            ),
        ];
        for (state, expected) in cases {
            assert_eq!(state.header_value(), expected);
        }
        assert!(
            SubState::Terminated {
                reason: TerminationReason::Invariant,
                retry_after: None
            }
            .is_terminated()
        );
        assert!(!SubState::Active { expires: 1 }.is_terminated());
    }

    #[test]
    fn reason_tokens() {
        use TerminationReason::*;
        let all = [
            Deactivated,
            Probation,
            Rejected,
            Timeout,
            Giveup,
            Noresource,
            Invariant,
        ];
        let tokens: Vec<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            tokens,
            [
                "deactivated",
                "probation",
                "rejected",
                "timeout",
                "giveup",
                "noresource",
                "invariant"
            ]
        );
    }

    #[test]
    fn removal_statuses() {
        let removing: Vec<u16> = (100..700).filter(|&s| removes_subscription(s)).collect();
        assert_eq!(
            removing,
            [
                404, 405, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604
            ]
        );
    }
}
