//! Transport protocols and the peer a message came from or goes to.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The SIP transports this server speaks (RFC 3261 §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Reliable transports carry retransmission themselves, which switches off Timer E and
    /// shortens Timers J and K to zero (RFC 3261 §17.1.2.2, §17.2.2).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Self::Udp)
    }

    /// The token used in a Via header's sent-protocol (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }

    /// Parses a Via or `transport=` URI parameter token; case-insensitive as RFC 3261 §7.1
    /// says for transport tokens.
    pub fn from_token(s: &str) -> Option<Self> {
        let s = s.trim();
        [Self::Udp, Self::Tcp, Self::Tls]
            .into_iter()
            .find(|t| t.via_token().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.via_token())
    }
}

/// The far end of one hop: where a message came from, or where a response must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Peer {
    pub fn new(transport: Transport, addr: SocketAddr) -> Self {
        Self { transport, addr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_case_insensitively() {
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            assert_eq!(Transport::from_token(t.via_token()), Some(t));
            assert_eq!(
                Transport::from_token(&t.via_token().to_ascii_lowercase()),
                Some(t)
            );
        }
        assert_eq!(Transport::from_token("sctp"), None);
        assert!(!Transport::Udp.is_reliable());
        assert!(Transport::Tcp.is_reliable());
        assert!(Transport::Tls.is_reliable());
    }
}
