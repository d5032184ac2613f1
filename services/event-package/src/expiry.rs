//! Reading `Expires` and granting a subscription duration (RFC 6665 §4.2.1.1).
//!
//! The notifier may shorten the requested `Expires` but never lengthen it; a request below
//! our minimum gets `423 Interval Too Brief` with `Min-Expires`; `Expires: 0` is a fetch (one
//! NOTIFY, then terminated) or an unsubscribe and is always granted as 0.

use serde::{Deserialize, Serialize};

/// Subscription durations in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryPolicy {
    /// Granted when the SUBSCRIBE has no `Expires`: one day, RFC 6080's default for this
    /// package (profiles change rarely).
    pub default: u32,
    /// Shortest subscription accepted. Each refresh costs a NOTIFY, so very short ones from a
    /// million phones would be a self-inflicted storm.
    pub min: u32,
    /// Longest subscription granted; longer requests are shortened. Bounds how long a
    /// subscription of a phone that vanished without unsubscribing keeps costing us.
    pub max: u32,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        Self {
            default: 86_400,
            min: 60,
            max: 7 * 86_400,
        }
    }
}

/// The requested duration is below [`ExpiryPolicy::min`]: answer 423 with
/// `Min-Expires: min_expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscription interval too brief (minimum {min_expires} s)")]
#[non_exhaustive]
pub struct TooBrief {
    pub min_expires: u32,
}

impl TooBrief {
    pub fn status(&self) -> u16 {
        423
    }
}

/// An inconsistent [`ExpiryPolicy`] (a configuration error, not a wire error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpiryConfigError {
    #[error("minimum expiry must be at least 1 s (0 is reserved for fetch/unsubscribe)")]
    ZeroMin,
    #[error("expiry bounds must satisfy min ({min}) <= default ({default}) <= max ({max})")]
    OutOfOrder { min: u32, default: u32, max: u32 },
}

impl ExpiryPolicy {
    /// Checks `1 <= min <= default <= max`.
    pub fn validate(&self) -> Result<(), ExpiryConfigError> {
        if self.min == 0 {
            return Err(ExpiryConfigError::ZeroMin);
        }
        if self.min <= self.default && self.default <= self.max {
            Ok(())
        } else {
            Err(ExpiryConfigError::OutOfOrder {
                min: self.min,
                default: self.default,
                max: self.max,
            })
        }
    }

    /// The duration to grant for a requested `Expires` (`None`: the header was absent).
    pub fn grant(&self, requested: Option<u32>) -> Result<u32, TooBrief> {
        match requested {
            None => Ok(self.default),
            Some(0) => Ok(0),
            Some(x) if x < self.min => Err(TooBrief {
                min_expires: self.min,
            }),
            Some(x) => Ok(x.min(self.max)),
        }
    }
}

/// Reads an `Expires` value: RFC 3261 delta-seconds (digits only); a value beyond 2³²−1 is
/// taken as 2³²−1 (§20.19 via §25.1's rule for Retry-After and Expires), not refused. `None`
/// is a malformed value (answer 400). Only SIP whitespace (SP, HTAB) may surround the digits.
pub fn parse_expires(v: &str) -> Option<u32> {
    // Not `str::trim`: it also drops VT, FF, NEL and other Unicode spaces, none of which is
    // whitespace in SIP (RFC 3261 §25.1 LWS).
    let v = v.trim_matches([' ', '\t']);
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u32>().unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_values() {
        assert_eq!(parse_expires("3600"), Some(3600));
        assert_eq!(parse_expires(" \t0 "), Some(0));
        assert_eq!(parse_expires("0042"), Some(42));
        assert_eq!(parse_expires("4294967296"), Some(u32::MAX));
        assert_eq!(parse_expires("99999999999999999999999"), Some(u32::MAX));
        for bad in ["", " ", "-1", "+1", "1.5", "3600;x", "1 2", "٣"] {
            assert_eq!(parse_expires(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn expires_whitespace_is_only_space_and_tab() {
        // Found by the `expires` fuzz target: `str::trim` took VT as whitespace.
        for bad in [
            "\u{b}1",
            "3600\u{c}",
            "3600\u{85}",
            "\u{a0}3600",
            "\u{2003}60",
        ] {
            assert_eq!(parse_expires(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grant_table() {
        let p = ExpiryPolicy::default();
        assert_eq!(p.validate(), Ok(()));
        let too_brief = Err(TooBrief { min_expires: 60 });
        let cases: [(Option<u32>, Result<u32, TooBrief>); 9] = [
            (None, Ok(86_400)),
            (Some(0), Ok(0)),
            (Some(1), too_brief),
            (Some(59), too_brief),
            (Some(60), Ok(60)),
            (Some(3600), Ok(3600)),
            (Some(604_800), Ok(604_800)),
            (Some(604_801), Ok(604_800)),
            (Some(u32::MAX), Ok(604_800)),
        ];
        for (requested, expected) in cases {
            assert_eq!(p.grant(requested), expected, "{requested:?}");
        }
        assert_eq!(TooBrief { min_expires: 60 }.status(), 423);
    }

    #[test]
    fn validation() {
        let p = |default, min, max| ExpiryPolicy { default, min, max };
        assert_eq!(p(60, 60, 60).validate(), Ok(()));
        assert_eq!(p(100, 0, 200).validate(), Err(ExpiryConfigError::ZeroMin));
        assert!(p(30, 60, 100).validate().is_err());
        assert!(p(300, 60, 100).validate().is_err());
        assert!(p(100, 200, 100).validate().is_err());
    }
}
