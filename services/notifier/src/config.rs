//! Notifier configuration (the `[notifier]` table of the config file).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use profile_event::expiry::ExpiryPolicy;
use serde::{Deserialize, Serialize};
use sip_core::transaction::Timers;
use uaprof_api::ProfileType;

/// What to do with a SUBSCRIBE for a device or user the content tier does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownSubscriberPolicy {
    /// Accept and send an empty NOTIFY; the real one follows when it is provisioned
    /// (RFC 6080 §5.1.1 behaviour, and what a phone booting before provisioning needs).
    Accept,
    /// Answer `403 Forbidden`.
    Reject,
}

/// The `[notifier.tls]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipTlsConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key_file: std::path::PathBuf,
}

impl SipTlsConfig {
    /// The rustls server configuration (ring); the error names the file.
    pub fn server_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&self.cert_file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("notifier.tls cert_file {}: {e}", self.cert_file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "notifier.tls cert_file {}: no certificate in it",
                self.cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| format!("notifier.tls key_file {}: {e}", self.key_file.display()))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("notifier.tls: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("notifier.tls: {e}"))?;
        Ok(std::sync::Arc::new(config))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifierConfig {
    /// UDP listen address for SIP; omit to disable UDP.
    pub udp: Option<SocketAddr>,
    /// TCP listen address for SIP; omit to disable TCP.
    pub tcp: Option<SocketAddr>,
    /// SIP over TLS (RFC 3261 §26, usually port 5061): listen address and certificate.
    /// NOTIFYs of a TLS dialog go back over the phone's connection.
    pub tls: Option<SipTlsConfig>,
    /// Digest authentication of SUBSCRIBE (RFC 8760 SHA-256); off when unset.
    pub digest: Option<crate::digest::DigestConfig>,
    /// Listen for SIP plug-and-play SUBSCRIBEs sent to a multicast group on the phones' LAN
    /// (RFC 6080 §4.1.4: 224.0.1.75, `sip.mcast.net`); they are answered by unicast, like
    /// any other. Needs `udp` on the unspecified address (`0.0.0.0:<port>`), whose socket
    /// joins the group. Off when unset.
    pub pnp_multicast: Option<PnpMulticastConfig>,
    /// How long a phone that sent a plug-and-play SUBSCRIBE (`Expires: 0`) is remembered as
    /// a check-sync target: while it is, a change to its documents sends it one out-of-dialog
    /// NOTIFY with its vendor's resync Event. Each plug-and-play SUBSCRIBE starts it again;
    /// zero: not remembered.
    #[serde(with = "humantime_serde")]
    pub pnp_remember: Duration,
    /// Per-vendor plug-and-play behaviour, over the built-in table
    /// ([`crate::dialect`]): whether a notified URL is a file or a folder.
    pub dialects: Vec<crate::dialect::DialectConfig>,
    /// Kernel send/receive buffer of the UDP socket, in bytes (absorbs power-up bursts;
    /// capped by the kernel's net.core.rmem_max / wmem_max).
    pub udp_buffer_bytes: usize,
    /// Host (or host:port) this node puts in Via and Contact; default: the bound address.
    /// Set it to the address phones (or the edge proxy) can reach.
    pub advertise: Option<String>,
    /// Subscription duration when the SUBSCRIBE has no Expires (RFC 6080: 86400 s).
    pub expires_default: u32,
    /// Shortest subscription accepted; shorter requests get 423 with Min-Expires.
    pub expires_min: u32,
    /// Longest subscription granted; longer requests are shortened to this.
    pub expires_max: u32,
    /// Profile types this server answers; others get 404.
    pub profile_types: Vec<ProfileType>,
    /// Policy for subjects the content tier does not know.
    pub unknown_subscriber: UnknownSubscriberPolicy,
    /// SUBSCRIBEs being handled at once; beyond this, 503 with a randomised Retry-After.
    pub max_pending_requests: usize,
    /// Queueing delay of SUBSCRIBE handling that, standing for a while, makes new SUBSCRIBEs
    /// get 503 with Retry-After at once (well under T1, so the ones taken are answered before
    /// the phones retransmit).
    #[serde(with = "humantime_serde")]
    pub shed_delay: Duration,
    /// Concurrent TCP connections (inbound and outbound each).
    pub max_tcp_connections: usize,
    /// NOTIFYs being prepared (resolved and built) at once by the pipeline.
    pub fanout_concurrency: usize,
    /// Fetch credits per second a node uses while it cannot reach the content tier's grants
    /// (role `notifier`): a static budget that keeps phones provisioned at a modest pace.
    pub credit_fallback_rate: f64,
    /// Send URL-bearing NOTIFYs only against the content tier's fetch credits. Off, they
    /// leave as fast as the node can send and the content tier's ceiling answers the excess
    /// with 503 (for comparison runs; a carrier leaves it on).
    pub pace_fetches: bool,
    /// Memory for NOTIFYs in flight (sent, transaction not ended), in bytes. A NOTIFY to a
    /// phone that is gone holds its share until Timer F (32 s); the budget, not a count,
    /// bounds that, so silent phones do not stop the NOTIFYs to live ones.
    pub max_inflight_bytes: usize,
    /// Subscriptions read from the index per page during fan-out.
    pub fanout_page: usize,
    /// Send NOTIFYs to private, loopback and link-local addresses other than the
    /// subscriber's own host (a proxy in the Record-Route on a private LAN). Off, only the
    /// source host of the SUBSCRIBE and public addresses are sent to, so a forged SUBSCRIBE
    /// cannot aim NOTIFYs into the operator's own network.
    pub allow_private_targets: bool,
    /// The largest NOTIFY sent over UDP, in bytes (RFC 3261 §18.1.1 says 1300). A larger one
    /// points at its documents instead of inlining them when the subscriber accepts
    /// `message/external-body`, and otherwise goes over TCP to the subscriber's host (every
    /// RFC 3261 UA implements TCP). `0` sends every size over UDP, for UDP-only fleets on
    /// networks that pass fragments.
    pub udp_max_notify_bytes: usize,
    /// New SUBSCRIBEs per second admitted from one source host (beyond it: 503 with
    /// Retry-After); `0` admits all. Size it for the largest group of phones behind one
    /// address, or list such addresses in `source_exempt`.
    pub source_rate: f64,
    /// Burst of new SUBSCRIBEs one source host may send at once.
    pub source_burst: f64,
    /// Addresses or prefixes (`10.0.0.0/8`, `2001:db8::/32`) the per-source rate and the
    /// per-source subscription cap do not apply to: the carrier's SBCs and NATs.
    pub source_exempt: Vec<String>,
    /// Live subscriptions one source host may hold across the tier (counted in the store);
    /// a new SUBSCRIBE beyond it gets 403. `0`: no cap.
    pub max_subscriptions_per_source: u32,
    /// Server transactions held at once (each lives Timer J, 32 s over UDP, after its
    /// answer); beyond this, new requests get 503 without state.
    pub max_server_transactions: usize,
    /// RFC 3261 T1 (round-trip estimate).
    #[serde(with = "humantime_serde")]
    pub t1: Duration,
    /// RFC 3261 T2 (maximum retransmit interval for non-INVITE).
    #[serde(with = "humantime_serde")]
    pub t2: Duration,
    /// RFC 3261 T4 (maximum time a message stays in the network).
    #[serde(with = "humantime_serde")]
    pub t4: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        let t = Timers::default();
        Self {
            udp: Some(([127, 0, 0, 1], 5060).into()),
            tcp: Some(([127, 0, 0, 1], 5060).into()),
            tls: None,
            digest: None,
            dialects: Vec::new(),
            pnp_multicast: None,
            pnp_remember: Duration::from_secs(90 * 86_400),
            advertise: None,
            // 4 MiB holds ~8000 SUBSCRIBEs: a building's worth of phones booting at once.
            udp_buffer_bytes: 4 << 20,
            expires_default: 86_400,
            expires_min: 60,
            expires_max: 7 * 86_400,
            profile_types: ProfileType::ALL.to_vec(),
            unknown_subscriber: UnknownSubscriberPolicy::Accept,
            max_pending_requests: 4096,
            // Below T1 (500 ms) with room for the time a request spends in socket buffers
            // before the engine sees it.
            shed_delay: Duration::from_millis(200),
            max_tcp_connections: 10_000,
            // Preparing a NOTIFY is a few store and content-tier round trips; this many at
            // once keeps both busy without a task per subscription.
            fanout_concurrency: 1024,
            // 128 MiB: about 80k NOTIFYs of 1.5 KiB, or 2.5k/s of them to silent phones.
            max_inflight_bytes: 128 << 20,
            // A small content node serves hundreds of fetches per second; a node cut off
            // from the grants should neither stop nor flood it.
            credit_fallback_rate: 200.0,
            pace_fetches: true,
            fanout_page: 1000,
            allow_private_targets: false,
            // Off until the test phones and SIPp scenarios listen on TCP too (issue 12): a
            // carrier whose phones take TCP sets 1300, RFC 3261 §18.1.1's figure.
            udp_max_notify_bytes: 1300,
            // A building of 2,000 phones behind one NAT powering up within a minute.
            source_rate: 50.0,
            source_burst: 500.0,
            // Loopback sources are this host's own processes (a co-located SBC, tools): the
            // kernel drops loopback-sourced packets arriving from outside.
            source_exempt: vec!["127.0.0.0/8".into(), "::1".into()],
            // Five times the building behind one NAT that `source_rate` is sized for (each
            // phone holds a subscription per profile type): far above a real site, far below
            // what a single host needs to fill the store.
            max_subscriptions_per_source: 10_000,
            // 20k requests/s for Timer J's 32 s, with room.
            max_server_transactions: 1_000_000,
            t1: t.t1,
            t2: t.t2,
            t4: t.t4,
        }
    }
}

impl NotifierConfig {
    pub fn expiry(&self) -> ExpiryPolicy {
        ExpiryPolicy {
            default: self.expires_default,
            min: self.expires_min,
            max: self.expires_max,
        }
    }

    pub fn timers(&self) -> Timers {
        Timers {
            t1: self.t1,
            t2: self.t2,
            t4: self.t4,
        }
    }

    /// `source_exempt`, parsed.
    pub fn source_exempt_prefixes(&self) -> Result<Vec<(std::net::IpAddr, u8)>, String> {
        self.source_exempt
            .iter()
            .map(|p| {
                crate::limits::parse_prefix(p).map_err(|e| format!("notifier: source_exempt: {e}"))
            })
            .collect()
    }

    /// Checks the values a file or flag can get wrong; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.tls {
            t.server_config()?;
        }
        if let Some(d) = &self.digest {
            crate::digest::DigestAuth::load(d)?;
        }
        if !(self.expires_min <= self.expires_default && self.expires_default <= self.expires_max) {
            return Err(format!(
                "notifier: need expires_min ({}) <= expires_default ({}) <= expires_max ({})",
                self.expires_min, self.expires_default, self.expires_max
            ));
        }
        if self.expires_min == 0 {
            return Err("notifier: expires_min must be at least 1 s".into());
        }
        if self.udp.is_none() && self.tcp.is_none() {
            return Err("notifier: enable at least one of udp, tcp".into());
        }
        if let Some(m) = &self.pnp_multicast {
            if !m.group.is_multicast() {
                return Err(format!(
                    "notifier.pnp_multicast.group {} is not a multicast address",
                    m.group
                ));
            }
            match self.udp {
                Some(SocketAddr::V4(a)) if a.ip().is_unspecified() => {}
                other => {
                    return Err(format!(
                        "notifier.pnp_multicast needs notifier.udp on 0.0.0.0:<port> (its \
                         socket joins the group; it is {other:?})"
                    ));
                }
            }
        }
        if !(self.credit_fallback_rate.is_finite() && self.credit_fallback_rate > 0.0) {
            return Err("notifier: credit_fallback_rate must be a positive number".into());
        }
        if !(self.source_rate.is_finite() && self.source_rate >= 0.0) {
            return Err("notifier: source_rate must be 0 (off) or a positive number".into());
        }
        if !(self.source_burst.is_finite() && self.source_burst >= 1.0) {
            return Err("notifier: source_burst must be at least 1".into());
        }
        self.source_exempt_prefixes()?;
        if self.shed_delay.is_zero() {
            return Err("notifier: shed_delay must be positive".into());
        }
        if self.profile_types.is_empty() {
            return Err("notifier: profile_types is empty".into());
        }
        if self.t1.is_zero() || self.t2 < self.t1 || self.t4.is_zero() {
            return Err("notifier: need 0 < t1 <= t2 and t4 > 0".into());
        }
        for (name, v) in [
            ("max_pending_requests", self.max_pending_requests),
            ("max_tcp_connections", self.max_tcp_connections),
            ("fanout_concurrency", self.fanout_concurrency),
            ("fanout_page", self.fanout_page),
            ("max_inflight_bytes / 1024", self.max_inflight_bytes / 1024),
            ("max_server_transactions", self.max_server_transactions),
        ] {
            if v == 0 {
                return Err(format!("notifier: {name} must be positive"));
            }
        }
        Ok(())
    }
}

/// `[notifier.pnp_multicast]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PnpMulticastConfig {
    /// The group phones send to.
    #[serde(default = "default_pnp_group")]
    pub group: Ipv4Addr,
    /// The address of the local interface on the phones' LAN (the group is joined there).
    pub interface: Ipv4Addr,
}

fn default_pnp_group() -> Ipv4Addr {
    Ipv4Addr::new(224, 0, 1, 75)
}
