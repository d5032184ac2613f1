//! One shard: a slice of the phone population on one current-thread runtime.
//!
//! Phones are plain structs in a `Vec`; each of a phone's subscriptions (device, user,
//! local-network) is a [`Dialog`] whose index is the first field of its Call-ID, so an
//! arriving message finds its state without a map lookup. Timers (retransmissions,
//! refreshes, back-off, the 32 s wait for a first NOTIFY) live in one [`TimerQueue`] and are
//! cancelled lazily by generation. Sockets are owned by small recv tasks that hand each
//! datagram to [`Shard::on_message`]; document fetches go through a bounded pool of
//! keep-alive HTTP workers.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};

use crate::body::parse_body;
use crate::config::{Config, ProfileKind, Scenario, Transport};
use crate::fetch::{FetchProtocol, Fetcher, TlsClient};
use crate::http::url_path;
use crate::sip::{self, SipMsg, Subscribe, param};
use crate::stats::{Counters, Latencies, Timeline};
use crate::timers::{ClientTx, MS, Rng, SEC, SipTimers, TimerQueue, TxAction, backoff};

/// Wait for the first NOTIFY after a 2xx (RFC 6665 §4.1.2.4: 64×T1).
const FIRST_NOTIFY_WAIT: u64 = 32 * SEC;
/// Document fetch attempts (the first plus retries) before the phone gives up.
const FETCH_ATTEMPTS: u8 = 3;
/// Datagram buffer: a NOTIFY with a few external-body parts is ~2 KB; 64 KB is the UDP max.
const DGRAM_MAX: usize = 65_535;
/// Frames queued per TCP connection before sends are counted as errors.
const TCP_QUEUE: usize = 4096;
/// The timer loop wakes at least this often to look at the controller's flags.
const TICK: Duration = Duration::from_millis(5);
/// Refreshes sent per tick in a refresh storm; spreads a million sends over a few ticks
/// rather than starving the receive loops.
const REFRESH_BURST: usize = 20_000;

/// Runs started by this process: part of every Call-ID, so two runs never collide.
static RUNS: AtomicU32 = AtomicU32::new(0);

/// State shared between the controller and every shard.
pub struct Shared {
    pub start: Instant,
    pub booted: AtomicU64,
    pub provisioned: AtomicU64,
    pub failed: AtomicU64,
    pub changed: AtomicU64,
    pub refreshed: AtomicU64,
    pub done: AtomicU64,
    pub msgs: AtomicU64,
    pub stop: AtomicBool,
    /// Target hash of a change storm and when it was published (µs since start).
    pub change: Mutex<Option<([u8; 20], u64)>>,
    pub change_gen: AtomicU32,
    pub refresh_go: AtomicBool,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            booted: AtomicU64::new(0),
            provisioned: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            changed: AtomicU64::new(0),
            refreshed: AtomicU64::new(0),
            done: AtomicU64::new(0),
            msgs: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            change: Mutex::new(None),
            change_gen: AtomicU32::new(0),
            refresh_go: AtomicBool::new(false),
        }
    }

    pub fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// What a shard hands back when it stops.
pub struct ShardResult {
    pub counters: Counters,
    pub latencies: Latencies,
    pub timeline: Timeline,
    pub cpu: Duration,
    /// When this shard's last phone became provisioned / fetched the change (µs).
    pub last_provisioned_us: u64,
    pub last_changed_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DState {
    Idle,
    Subscribing,
    Active,
    Waiting,
    Dead,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxKind {
    Initial,
    Refresh,
    Unsubscribe,
}

struct Dialog {
    state: DState,
    /// Incarnation: a new Call-ID for each fresh subscription attempt.
    inc: u32,
    cseq: u32,
    branch: u32,
    to_tag: Option<Box<str>>,
    etag: Option<Box<str>>,
    remote_cseq: u32,
    tx: Option<ClientTx>,
    tx_kind: TxKind,
    tx_sent: u64,
    tx_gen: u32,
    /// Generation of refresh / retry / first-NOTIFY timers.
    epoch: u32,
    t_200: u64,
    got_notify: bool,
    attempts: u32,
    failures: u32,
    notify_seq: u32,
    pending: u16,
    fetch_bad: bool,
    notify_at: u64,
    provisioned: bool,
    /// Refresh-storm: the storm refresh is outstanding (0 no, 1 awaiting response,
    /// 2 awaiting the NOTIFY a non-suppressed refresh triggers).
    storm: u8,
}

impl Dialog {
    fn new() -> Self {
        Self {
            state: DState::Idle,
            inc: 0,
            cseq: 0,
            branch: 0,
            to_tag: None,
            etag: None,
            remote_cseq: 0,
            tx: None,
            tx_kind: TxKind::Initial,
            tx_sent: 0,
            tx_gen: 0,
            epoch: 0,
            t_200: 0,
            got_notify: false,
            attempts: 0,
            failures: 0,
            notify_seq: 0,
            pending: 0,
            fetch_bad: false,
            notify_at: 0,
            provisioned: false,
            storm: 0,
        }
    }
}

#[derive(Default)]
struct Phone {
    boot_at: u64,
    booted: bool,
    /// Goes silent once provisioned (unplugged without unsubscribing): answers nothing.
    ghost: bool,
    silent: bool,
    prov_dialogs: u8,
    provisioned: bool,
    failed: bool,
    changed: bool,
    done: bool,
    /// steady: 0 waiting, 1 refreshed, 2 unsubscribed.
    stage: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Tx,
    Refresh,
    Retry,
    FirstNotify,
    Steady,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FetchJob {
    dialog: u32,
    seq: u32,
    attempt: u8,
    path: String,
    size: Option<u64>,
    hash: Option<[u8; 20]>,
}

enum Link {
    /// Sends go through a plain non-blocking std socket sharing the tokio socket's fd:
    /// no readiness bookkeeping on the hot path, and no spurious WouldBlock before the
    /// reactor has seen the socket.
    Udp(Vec<std::net::UdpSocket>),
    Tcp(Vec<mpsc::Sender<Vec<u8>>>),
}

/// The shard's state; tasks share it as `Rc<RefCell<Shard>>` and never hold the borrow
/// across an await.
pub struct Shard {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    index: usize,
    nshards: usize,
    run_tag: String,
    timers: SipTimers,
    phones: Vec<Phone>,
    dialogs: Vec<Dialog>,
    events: Vec<String>,
    link: Link,
    locals: Vec<String>,
    tq: TimerQueue<(TimerKind, u32, u32)>,
    delayed: TimerQueue<FetchJob>,
    ready: VecDeque<FetchJob>,
    ready_notify: Rc<Notify>,
    next_boot: usize,
    rng: Rng,
    out: Vec<u8>,
    change_gen: u32,
    change: Option<([u8; 20], u64)>,
    refresh_cursor: Option<usize>,
    last_provisioned: u64,
    last_changed: u64,
    pub counters: Counters,
    pub lat: Latencies,
    pub timeline: Timeline,
}

impl Shard {
    fn nprof(&self) -> usize {
        self.cfg.profiles.len()
    }

    fn global_id(&self, local: usize) -> u64 {
        self.cfg.id_offset + (local * self.nshards + self.index) as u64
    }

    fn mac(&self, local: usize) -> String {
        format!("{:02x}{:010x}", self.cfg.mac_prefix, self.global_id(local))
    }

    fn scaled(&self, us: u64) -> u64 {
        (us as f64 * self.cfg.time_scale) as u64
    }

    fn link_index(&self, phone: usize) -> usize {
        match &self.link {
            Link::Udp(s) => phone % s.len(),
            Link::Tcp(c) => phone % c.len(),
        }
    }

    fn send(&mut self, link: usize, to: Option<SocketAddr>, now: u64) {
        self.counters.msgs_sent += 1;
        self.timeline.at(now).msgs += 1;
        let ok = match &self.link {
            Link::Udp(socks) => socks[link]
                .send_to(&self.out, to.unwrap_or(self.cfg.server))
                .is_ok(),
            Link::Tcp(conns) => conns[link].try_send(self.out.clone()).is_ok(),
        };
        if !ok {
            self.counters.send_errors += 1;
        }
    }

    fn send_subscribe(&mut self, d: usize, now: u64, kind: TxKind) {
        let phone = d / self.nprof();
        let pk = self.cfg.profiles[d % self.nprof()];
        let link = self.link_index(phone);
        let mac = self.mac(phone);
        let dom = &self.cfg.domain;
        let (ruri, aor) = match pk {
            ProfileKind::Device => {
                let a = format!("sip:MAC%3a{mac}@{dom}");
                (a.clone(), a)
            }
            ProfileKind::User => {
                let a = format!("sip:u{mac}@{dom}");
                (a.clone(), a)
            }
            ProfileKind::LocalNetwork => (format!("sip:{dom}"), format!("sip:u{mac}@{dom}")),
        };
        let ev = d % self.nprof();
        let dl = &mut self.dialogs[d];
        let call_id = format!("{d}.{}.{}.{}", dl.inc, self.index, self.run_tag);
        let from_tag = format!("f{d}x{}", dl.inc);
        let branch = format!("z9hG4bK{d}x{}x{}", dl.inc, dl.branch);
        let expires = if kind == TxKind::Unsubscribe {
            0
        } else {
            self.cfg.expires
        };
        let suppress = match (kind, &self.cfg.scenario) {
            (
                TxKind::Refresh,
                Scenario::RefreshStorm {
                    suppress: false, ..
                },
            ) => None,
            (TxKind::Refresh, _) => dl.etag.as_deref(),
            _ => None,
        };
        let instance = format!("urn:uuid:00000000-0000-4000-8000-{mac}");
        let contact_user = format!("p{mac}");
        let transport = self.cfg.transport.via();
        sip::write_subscribe(
            &mut self.out,
            &Subscribe {
                transport,
                local: &self.locals[link],
                request_uri: &ruri,
                aor: &aor,
                from_tag: &from_tag,
                to_tag: dl.to_tag.as_deref(),
                call_id: &call_id,
                cseq: dl.cseq,
                branch: &branch,
                contact_user: &contact_user,
                instance: &instance,
                event: &self.events[ev],
                expires,
                suppress_if_match: suppress,
            },
        );
        self.send(link, None, now);
    }

    /// Starts a transaction of `kind` for dialog `d` (a fresh Call-ID for `Initial`).
    fn start_tx(&mut self, d: usize, now: u64, kind: TxKind) {
        let reliable = self.cfg.transport.reliable();
        {
            let dl = &mut self.dialogs[d];
            if kind == TxKind::Initial {
                dl.inc += 1;
                dl.cseq = 1;
                dl.to_tag = None;
                dl.etag = None;
                dl.remote_cseq = 0;
                dl.got_notify = false;
                dl.t_200 = 0;
                dl.state = DState::Subscribing;
                dl.attempts += 1;
            } else {
                dl.cseq += 1;
            }
            dl.tx_kind = kind;
            dl.tx_sent = now;
            dl.tx_gen += 1;
            // A new transaction, a new branch; retransmissions keep it (RFC 3261 §17.1.1.3).
            dl.branch += 1;
            let tx = ClientTx::start(now, self.timers, reliable);
            dl.tx = Some(tx);
            self.tq.push(tx.next, (TimerKind::Tx, d as u32, dl.tx_gen));
        }
        match kind {
            TxKind::Initial => {
                self.counters.subscribes_sent += 1;
                self.timeline.at(now).subscribes += 1;
            }
            TxKind::Refresh => self.counters.refreshes_sent += 1,
            TxKind::Unsubscribe => self.counters.unsubscribes_sent += 1,
        }
        self.send_subscribe(d, now, kind);
    }

    fn boot(&mut self, phone: usize, now: u64) {
        self.phones[phone].booted = true;
        self.phones[phone].boot_at = now;
        self.counters.phones_booted += 1;
        self.shared.booted.fetch_add(1, Relaxed);
        for p in 0..self.nprof() {
            self.start_tx(phone * self.nprof() + p, now, TxKind::Initial);
        }
    }

    fn phone_failed(&mut self, phone: usize, now: u64) {
        let steady = matches!(self.cfg.scenario, Scenario::Steady { .. });
        let ph = &mut self.phones[phone];
        if ph.failed {
            return;
        }
        if ph.provisioned {
            // A later failure of a provisioned phone is counted by kind, not as a phone.
            if steady && !ph.done {
                ph.done = true;
                self.shared.done.fetch_add(1, Relaxed);
            }
            return;
        }
        ph.failed = true;
        self.counters.phones_failed += 1;
        self.shared.failed.fetch_add(1, Relaxed);
        self.timeline.at(now).failures += 1;
    }

    /// The subscription failed: back off and retry, or give the phone up.
    fn retry_later(&mut self, d: usize, now: u64, retry_after: Option<u32>) {
        let phone = d / self.nprof();
        let max_attempts = self.cfg.max_attempts;
        let unit = self.rng.unit();
        let dl = &mut self.dialogs[d];
        dl.tx = None;
        dl.tx_gen += 1;
        dl.epoch += 1;
        if dl.attempts >= max_attempts {
            dl.state = DState::Dead;
            self.phone_failed(phone, now);
            return;
        }
        dl.failures += 1;
        dl.state = DState::Waiting;
        let base = (self.cfg.backoff_base.as_micros() as f64 * self.cfg.time_scale) as u64;
        let max = (self.cfg.backoff_max.as_micros() as f64 * self.cfg.time_scale) as u64;
        let ra = retry_after.map(|s| (f64::from(s) * SEC as f64 * self.cfg.time_scale) as u64);
        let wait = backoff(dl.failures, base, max, self.cfg.jitter, unit, ra);
        let epoch = dl.epoch;
        self.counters.subscription_retries += 1;
        self.tq
            .push(now + wait, (TimerKind::Retry, d as u32, epoch));
    }

    fn schedule_refresh(&mut self, d: usize, now: u64, granted: u32) {
        // Refresh at 90 % of the granted time, scaled; never sooner than a second.
        let at = now + self.scaled(u64::from(granted) * SEC * 9 / 10).max(SEC);
        let dl = &mut self.dialogs[d];
        dl.epoch += 1;
        let g = dl.epoch;
        self.tq.push(at, (TimerKind::Refresh, d as u32, g));
    }

    fn dialog_of(&self, call_id: &str) -> Option<usize> {
        let mut it = call_id.split('.');
        let d: usize = it.next()?.parse().ok()?;
        let inc: u32 = it.next()?.parse().ok()?;
        let shard: usize = it.next()?.parse().ok()?;
        (shard == self.index
            && it.next() == Some(self.run_tag.as_str())
            && self.dialogs.get(d).is_some_and(|dl| dl.inc == inc))
        .then_some(d)
    }

    /// One datagram or stream frame from the server.
    pub fn on_message(&mut self, buf: &[u8], from: SocketAddr, link: usize, now: u64) {
        self.counters.msgs_received += 1;
        self.timeline.at(now).msgs += 1;
        let Some(m) = sip::parse(buf) else {
            self.counters.malformed_received += 1;
            return;
        };
        if m.status.is_some() {
            self.on_response(&m, now);
        } else if m.method == Some("NOTIFY") {
            self.on_notify(&m, from, link, now);
        } else {
            sip::write_response(&mut self.out, &m, 501, "Not Implemented");
            self.send(link, Some(from), now);
        }
    }

    fn on_response(&mut self, m: &SipMsg<'_>, now: u64) {
        let status = m.status.unwrap_or(0);
        let Some(d) = self.dialog_of(m.call_id) else {
            self.counters.stray_responses += 1;
            return;
        };
        let phone = d / self.nprof();
        let dl = &mut self.dialogs[d];
        let Some(tx) = dl.tx.as_mut() else {
            self.counters.stray_responses += 1;
            return;
        };
        if m.cseq != dl.cseq || m.cseq_method != "SUBSCRIBE" {
            self.counters.stray_responses += 1;
            return;
        }
        if status < 200 {
            tx.provisional(now);
            let (next, g) = (tx.next, dl.tx_gen);
            self.tq.push(next, (TimerKind::Tx, d as u32, g));
            return;
        }
        let kind = dl.tx_kind;
        let elapsed = now - dl.tx_sent;
        dl.tx = None;
        dl.tx_gen += 1;
        if kind != TxKind::Initial {
            self.lat.refresh_to_response.record(elapsed);
        }
        match status {
            200..=299 => {
                self.counters.responses_2xx += 1;
                self.timeline.at(now).ok += 1;
                if status == 204 {
                    self.counters.responses_204_suppressed += 1;
                }
                if dl.to_tag.is_none() {
                    dl.to_tag = m.to_tag.map(Into::into);
                }
                let granted = m.expires.unwrap_or(self.cfg.expires);
                match kind {
                    TxKind::Initial => {
                        self.lat.subscribe_to_200.record(elapsed);
                        let slot = self.timeline.at(now);
                        slot.sub_lat_sum_us += elapsed;
                        slot.sub_lat_n += 1;
                        slot.sub_lat_max_us = slot.sub_lat_max_us.max(elapsed);
                        let dl = &mut self.dialogs[d];
                        dl.state = DState::Active;
                        dl.failures = 0;
                        if !dl.got_notify {
                            dl.t_200 = now;
                            dl.epoch += 1;
                            let g = dl.epoch;
                            self.tq.push(
                                now + FIRST_NOTIFY_WAIT,
                                (TimerKind::FirstNotify, d as u32, g),
                            );
                        } else {
                            self.schedule_refresh(d, now, granted);
                        }
                    }
                    TxKind::Refresh => {
                        self.schedule_refresh(d, now, granted);
                        let dl = &mut self.dialogs[d];
                        if dl.storm == 1 {
                            if status == 204 {
                                dl.storm = 0;
                                self.shared.refreshed.fetch_add(1, Relaxed);
                            } else {
                                dl.storm = 2;
                            }
                        }
                        self.steady_step(phone, now);
                    }
                    TxKind::Unsubscribe => {
                        self.dialogs[d].state = DState::Closed;
                        self.dialogs[d].epoch += 1;
                        self.steady_step(phone, now);
                    }
                }
            }
            _ => {
                if status >= 500 {
                    self.counters.responses_5xx += 1;
                } else if status >= 400 {
                    self.counters.responses_4xx += 1;
                } else {
                    self.counters.responses_other += 1;
                }
                if status == 503 {
                    self.counters.responses_503 += 1;
                }
                let dl = &mut self.dialogs[d];
                if dl.storm != 0 {
                    dl.storm = 0;
                    self.shared.refreshed.fetch_add(1, Relaxed);
                }
                if status == 481 {
                    // The server lost (or expired) the subscription: start a new one.
                    self.counters.responses_481 += 1;
                    self.start_tx(d, now, TxKind::Initial);
                } else if (400..500).contains(&status) || status >= 600 {
                    self.dialogs[d].state = DState::Dead;
                    self.dialogs[d].epoch += 1;
                    self.phone_failed(phone, now);
                } else {
                    self.retry_later(d, now, m.retry_after);
                }
            }
        }
    }

    fn on_notify(&mut self, m: &SipMsg<'_>, from: SocketAddr, link: usize, now: u64) {
        self.counters.notifies_received += 1;
        self.timeline.at(now).notifies += 1;
        let Some(d) = self.dialog_of(m.call_id) else {
            self.counters.notifies_unknown_dialog += 1;
            sip::write_response(&mut self.out, m, 481, "Subscription Does Not Exist");
            self.send(link, Some(from), now);
            return;
        };
        let phone = d / self.nprof();
        if self.phones[phone].silent {
            self.counters.ghost_drops += 1;
            return;
        }
        sip::write_response(&mut self.out, m, 200, "OK");
        self.send(link, Some(from), now);
        let dl = &mut self.dialogs[d];
        if dl.remote_cseq != 0 && m.cseq <= dl.remote_cseq {
            self.counters.notifies_retransmitted_by_server += 1;
            return;
        }
        dl.remote_cseq = m.cseq;
        if dl.to_tag.is_none() {
            // The NOTIFY overtook the 2xx: it fixes the dialog (RFC 6665 §4.1.2.4).
            dl.to_tag = m.from_tag.map(Into::into);
        }
        if let Some(e) = m.etag {
            dl.etag = Some(e.into());
        }
        if dl.storm == 2 {
            dl.storm = 0;
            self.counters.notifies_after_refresh += 1;
            self.shared.refreshed.fetch_add(1, Relaxed);
        }
        if !dl.got_notify {
            dl.got_notify = true;
            let lat = if dl.t_200 > 0 { now - dl.t_200 } else { 0 };
            let was_active = dl.state == DState::Active;
            self.lat.ok_to_first_notify.record(lat);
            if was_active {
                let granted = m
                    .sub_state
                    .and_then(|s| param(s, "expires"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(self.cfg.expires);
                self.schedule_refresh(d, now, granted);
            }
        }
        let state = m.sub_state.unwrap_or("active");
        if state
            .get(..10)
            .is_some_and(|s| s.eq_ignore_ascii_case("terminated"))
        {
            self.counters.notifies_terminated += 1;
            let dl = &mut self.dialogs[d];
            if dl.state == DState::Closed || dl.tx_kind == TxKind::Unsubscribe {
                return;
            }
            dl.epoch += 1;
            let reason = param(state, "reason").unwrap_or_default();
            let retry_after = param(state, "retry-after").and_then(|v| v.parse().ok());
            match reason.as_str() {
                "rejected" | "noresource" | "invariant" => {
                    dl.state = DState::Dead;
                    self.phone_failed(phone, now);
                }
                "deactivated" | "timeout" if retry_after.is_none() => {
                    // RFC 6665 §4.1.3: re-subscribe at once.
                    if dl.tx.is_none() {
                        self.start_tx(d, now, TxKind::Initial);
                    }
                }
                _ => self.retry_later(d, now, retry_after),
            }
            return;
        }
        let docs = match parse_body(m.content_type, m.body) {
            Ok(docs) => docs,
            Err(_) => {
                self.counters.bad_bodies += 1;
                return;
            }
        };
        let require_docs = self.cfg.profiles[d % self.nprof()] == ProfileKind::Device;
        if docs.is_empty() {
            self.counters.notifies_empty += 1;
            if !require_docs {
                self.dialog_provisioned(d, now);
            }
            return;
        }
        self.counters.notifies_with_documents += 1;
        let spread = m
            .event
            .and_then(|e| param(e, "effective-by"))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |s| self.scaled(s * SEC));
        let dl = &mut self.dialogs[d];
        dl.notify_seq += 1;
        dl.notify_at = now;
        dl.fetch_bad = false;
        dl.pending = 0;
        let seq = dl.notify_seq;
        let mut unsupported = 0;
        let mut inline = 0;
        for doc in docs {
            if doc.inline {
                inline += 1;
                continue;
            }
            let Some(path) = url_path(&doc.url) else {
                unsupported += 1;
                continue;
            };
            let job = FetchJob {
                dialog: d as u32,
                seq,
                attempt: 0,
                path: path.to_owned(),
                size: doc.size,
                hash: doc.hash,
            };
            self.dialogs[d].pending += 1;
            if spread > 0 {
                let at = now + self.rng.upto(spread);
                self.delayed.push(at, job);
            } else {
                self.ready.push_back(job);
                self.ready_notify.notify_one();
            }
        }
        self.counters.documents_inline += inline;
        self.counters.unsupported_urls += unsupported;
        if unsupported > 0 {
            self.dialogs[d].fetch_bad = true;
        }
        if self.dialogs[d].pending == 0 {
            self.notify_complete(d, now);
        }
    }

    fn notify_complete(&mut self, d: usize, now: u64) {
        let dl = &self.dialogs[d];
        let lat = now - dl.notify_at;
        if dl.fetch_bad {
            let phone = d / self.nprof();
            if !dl.provisioned {
                self.phone_failed(phone, now);
            }
            return;
        }
        self.lat.notify_to_fetched.record(lat);
        let slot = self.timeline.at(now);
        slot.fetch_lat_sum_us += lat;
        slot.fetch_lat_n += 1;
        slot.fetch_lat_max_us = slot.fetch_lat_max_us.max(lat);
        self.dialog_provisioned(d, now);
    }

    fn dialog_provisioned(&mut self, d: usize, now: u64) {
        if self.dialogs[d].provisioned {
            return;
        }
        self.dialogs[d].provisioned = true;
        let phone = d / self.nprof();
        let nprof = self.nprof() as u8;
        let ph = &mut self.phones[phone];
        ph.prov_dialogs += 1;
        if ph.prov_dialogs == nprof && !ph.failed {
            ph.provisioned = true;
            ph.silent = ph.ghost;
            let boot_at = ph.boot_at;
            self.counters.phones_provisioned += 1;
            self.last_provisioned = now;
            self.shared.provisioned.fetch_add(1, Relaxed);
            self.timeline.at(now).provisioned += 1;
            self.lat.boot_to_provisioned.record(now - boot_at);
            if let Scenario::Steady { hold, .. } = self.cfg.scenario {
                let at = now + hold.as_micros() as u64;
                self.tq.push(at, (TimerKind::Steady, phone as u32, 0));
            }
        }
    }

    /// steady: provisioned → refresh → unsubscribe → done, `hold` apart.
    fn steady_step(&mut self, phone: usize, now: u64) {
        let Scenario::Steady { hold, .. } = self.cfg.scenario else {
            return;
        };
        let base = phone * self.nprof();
        let all_idle = (base..base + self.nprof()).all(|d| self.dialogs[d].tx.is_none());
        if !all_idle {
            return;
        }
        let ph = &mut self.phones[phone];
        match ph.stage {
            1 => {
                let at = now + hold.as_micros() as u64;
                self.tq.push(at, (TimerKind::Steady, phone as u32, 1));
            }
            2 if !ph.done => {
                ph.done = true;
                self.shared.done.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    fn on_steady_timer(&mut self, phone: usize, step: u32, now: u64) {
        let ph = &mut self.phones[phone];
        if ph.failed {
            return;
        }
        ph.stage = (step + 1) as u8;
        let kind = if step == 0 {
            TxKind::Refresh
        } else {
            TxKind::Unsubscribe
        };
        for p in 0..self.nprof() {
            let d = phone * self.nprof() + p;
            if self.dialogs[d].state == DState::Active && self.dialogs[d].tx.is_none() {
                self.dialogs[d].epoch += 1; // cancels the regular refresh
                self.start_tx(d, now, kind);
            }
        }
    }

    fn on_fetch_result(
        &mut self,
        job: FetchJob,
        res: std::io::Result<crate::http::Response>,
        took: u64,
        now: u64,
    ) {
        let d = job.dialog as usize;
        let retry_after = res.as_ref().ok().and_then(|r| r.retry_after);
        let retry = |s: &mut Self, job: FetchJob| {
            if job.attempt + 1 < FETCH_ATTEMPTS {
                s.counters.fetch_retries += 1;
                // A phone honours the server's Retry-After; one second when none is given.
                let wait = u64::from(retry_after.unwrap_or(1)) * SEC;
                let at = now + s.scaled(wait).max(100 * MS);
                s.delayed.push(
                    at,
                    FetchJob {
                        attempt: job.attempt + 1,
                        ..job
                    },
                );
                true
            } else {
                false
            }
        };
        let ok = match res {
            Err(_) => {
                self.counters.fetch_transport_errors += 1;
                if retry(self, job.clone()) {
                    return;
                }
                false
            }
            Ok(r) if r.status != 200 => {
                self.counters.fetch_http_errors += 1;
                if r.status >= 500 && retry(self, job.clone()) {
                    return;
                }
                false
            }
            Ok(r) => {
                self.lat.http_get.record(took);
                self.counters.fetches_ok += 1;
                self.timeline.at(now).fetches += 1;
                let got: [u8; 20] = Sha1::digest(&r.body).into();
                let mut ok = true;
                if job.size.is_some_and(|s| s != r.body.len() as u64) {
                    self.counters.size_mismatches += 1;
                    ok = false;
                }
                match job.hash {
                    Some(h) if h != got => {
                        self.counters.hash_mismatches += 1;
                        ok = false;
                    }
                    Some(_) => self.counters.hashes_verified += 1,
                    None => {}
                }
                if ok {
                    self.check_change(d / self.nprof(), &got, now);
                }
                ok
            }
        };
        let dl = &mut self.dialogs[d];
        if job.seq != dl.notify_seq {
            return; // a newer NOTIFY superseded this one
        }
        if !ok {
            dl.fetch_bad = true;
        }
        dl.pending = dl.pending.saturating_sub(1);
        if dl.pending == 0 {
            self.notify_complete(d, now);
        }
    }

    fn check_change(&mut self, phone: usize, got: &[u8; 20], now: u64) {
        let g = self.shared.change_gen.load(Relaxed);
        if g != self.change_gen {
            self.change_gen = g;
            self.change = self.shared.change.lock().map(|c| *c).unwrap_or(None);
        }
        if let Some((target, _)) = self.change
            && &target == got
            && self.phones[phone].changed
        {
            // A phone that had the change fetched it again: a duplicate change NOTIFY.
            self.counters.change_refetches += 1;
        }
        if let Some((target, t0)) = self.change
            && &target == got
            && !self.phones[phone].changed
        {
            self.phones[phone].changed = true;
            self.counters.phones_changed += 1;
            self.last_changed = now;
            self.shared.changed.fetch_add(1, Relaxed);
            self.lat.change_to_fetched.record(now.saturating_sub(t0));
        }
    }

    fn on_timer(&mut self, kind: TimerKind, d: usize, epoch: u32, at: u64, now: u64) {
        if kind == TimerKind::Steady {
            self.on_steady_timer(d, epoch, now);
            return;
        }
        if self.phones[d / self.nprof()].silent {
            return; // a ghost refreshes nothing and retries nothing
        }
        let dl = &mut self.dialogs[d];
        match kind {
            TimerKind::Tx => {
                if epoch != dl.tx_gen {
                    return;
                }
                let Some(tx) = dl.tx.as_mut() else { return };
                if at != tx.next {
                    return;
                }
                match tx.on_timer(now) {
                    TxAction::Retransmit { next } => {
                        let g = dl.tx_gen;
                        let k = dl.tx_kind;
                        self.tq.push(next, (TimerKind::Tx, d as u32, g));
                        self.counters.subscribe_retransmissions += 1;
                        self.timeline.at(now).retransmissions += 1;
                        self.send_subscribe(d, now, k);
                    }
                    TxAction::GiveUp => {
                        self.counters.timeouts_subscribe += 1;
                        if dl.storm != 0 {
                            dl.storm = 0;
                            self.shared.refreshed.fetch_add(1, Relaxed);
                        }
                        if dl.tx_kind == TxKind::Unsubscribe {
                            dl.tx = None;
                            dl.state = DState::Closed;
                            self.steady_step(d / self.nprof(), now);
                        } else {
                            self.retry_later(d, now, None);
                        }
                    }
                }
            }
            TimerKind::Refresh
                if epoch == dl.epoch && dl.state == DState::Active && dl.tx.is_none() =>
            {
                self.start_tx(d, now, TxKind::Refresh);
            }
            TimerKind::Retry if epoch == dl.epoch && dl.state == DState::Waiting => {
                self.start_tx(d, now, TxKind::Initial);
            }
            TimerKind::FirstNotify if epoch == dl.epoch && !dl.got_notify => {
                self.counters.timeouts_first_notify += 1;
                self.retry_later(d, now, None);
            }
            _ => {}
        }
    }

    /// Boots due phones, fires due timers, releases delayed fetches, follows the
    /// controller's flags. Returns the next deadline.
    fn tick(&mut self, now: u64) -> u64 {
        let n = self.phones.len();
        while self.next_boot < n && self.phones[self.next_boot].boot_at <= now {
            let p = self.next_boot;
            self.next_boot += 1;
            self.boot(p, now);
        }
        while let Some((at, (kind, d, epoch))) = self.tq.pop_due(now) {
            self.on_timer(kind, d as usize, epoch, at, now);
        }
        let mut released = false;
        while let Some((_, job)) = self.delayed.pop_due(now) {
            self.ready.push_back(job);
            released = true;
        }
        if released {
            self.ready_notify.notify_waiters();
            self.ready_notify.notify_one();
        }
        if self.refresh_cursor.is_none() && self.shared.refresh_go.load(Relaxed) {
            self.refresh_cursor = Some(0);
        }
        if let Some(c) = self.refresh_cursor {
            let end = (c + REFRESH_BURST).min(self.dialogs.len());
            for d in c..end {
                let dl = &mut self.dialogs[d];
                if dl.state == DState::Active && dl.tx.is_none() {
                    dl.storm = 1;
                    dl.epoch += 1;
                    self.start_tx(d, now, TxKind::Refresh);
                } else {
                    // Not refreshable (failed or busy): counted as done so the storm ends.
                    self.shared.refreshed.fetch_add(1, Relaxed);
                }
            }
            self.refresh_cursor = Some(end);
        }
        let mut next = now + TICK.as_micros() as u64;
        if self.next_boot < n {
            next = next.min(self.phones[self.next_boot].boot_at);
        }
        for q in [self.tq.next_deadline(), self.delayed.next_deadline()]
            .into_iter()
            .flatten()
        {
            next = next.min(q);
        }
        next.max(now)
    }
}

/// Source address `i` of shard `s`: 127.(10+s).(i/250).(i%250+1), all loopback.
fn source_ip(shard: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 10 + shard as u8, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Runs shard `index` of `nshards` until the controller sets `stop`.
/// A SIP connection: TCP, or TLS over it.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Stream for T {}

pub fn run_shard(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    index: usize,
    nshards: usize,
) -> anyhow::Result<ShardResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let cpu0 = thread_cpu();
    let res = local.block_on(&rt, shard_main(cfg, shared, index, nshards));
    let mut r = res?;
    r.cpu = thread_cpu().saturating_sub(cpu0);
    Ok(r)
}

/// CPU time of the calling thread (Linux `/proc/thread-self/schedstat`, ns resolution).
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

async fn shard_main(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    index: usize,
    nshards: usize,
) -> anyhow::Result<ShardResult> {
    let n_local = ((cfg.phones as usize).saturating_sub(index)).div_ceil(nshards);
    let nprof = cfg.profiles.len();
    let boot_over = cfg.scenario.boot_over().as_micros() as u64;
    let total = cfg.phones.max(1);
    let phones: Vec<Phone> = (0..n_local)
        .map(|l| {
            let g = (l * nshards + index) as u64;
            // Exactly `ghosts` phones, spread evenly over the population.
            let ghost = (g * cfg.ghosts) / total != ((g + 1) * cfg.ghosts) / total;
            Phone {
                boot_at: boot_over * g / total,
                ghost,
                ..Phone::default()
            }
        })
        .collect();
    let (link, locals, udp_socks, tcp_streams) = match cfg.transport {
        Transport::Udp => {
            let mut socks = Vec::new();
            let mut senders = Vec::new();
            let mut locals = Vec::new();
            for i in 0..cfg.source_ips {
                for _ in 0..cfg.ports_per_ip {
                    let s = std::net::UdpSocket::bind(SocketAddrV4::new(source_ip(index, i), 0))?;
                    s.set_nonblocking(true)?;
                    locals.push(s.local_addr()?.to_string());
                    senders.push(s.try_clone()?);
                    socks.push(UdpSocket::from_std(s)?);
                }
            }
            (Link::Udp(senders), locals, socks, Vec::new())
        }
        Transport::Tcp | Transport::Tls => {
            let n = cfg.tcp_conns.min(n_local.max(1));
            let tls = match (&cfg.ca_file, cfg.transport) {
                (Some(ca), Transport::Tls) => Some(TlsClient::new(ca, &cfg.tls_name, &[])?),
                _ => None,
            };
            let mut txs = Vec::new();
            let mut locals = Vec::new();
            let mut streams: Vec<(Box<dyn Stream>, _)> = Vec::new();
            for i in 0..n {
                let sock = tokio::net::TcpSocket::new_v4()?;
                sock.bind(SocketAddrV4::new(source_ip(index, i % cfg.source_ips), 0).into())?;
                let s = sock.connect(cfg.server).await?;
                s.set_nodelay(true)?;
                locals.push(s.local_addr()?.to_string());
                let (tx, rx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
                txs.push(tx);
                match &tls {
                    Some(t) => streams.push((Box::new(t.connect(s).await?), rx)),
                    None => streams.push((Box::new(s), rx)),
                }
            }
            (Link::Tcp(txs), locals, Vec::new(), streams)
        }
    };
    let events = cfg
        .profiles
        .iter()
        .map(|p| {
            format!(
                "ua-profile;profile-type={};vendor=\"{}\";model=\"{}\";version=\"1.0\"",
                p.token(),
                cfg.vendor,
                cfg.model
            )
        })
        .collect();
    let ready_notify = Rc::new(Notify::new());
    let shard = Rc::new(RefCell::new(Shard {
        timers: SipTimers::default(),
        dialogs: (0..n_local * nprof).map(|_| Dialog::new()).collect(),
        phones,
        events,
        link,
        locals,
        tq: TimerQueue::default(),
        delayed: TimerQueue::default(),
        ready: VecDeque::new(),
        ready_notify: ready_notify.clone(),
        next_boot: 0,
        rng: Rng::new(cfg.seed.wrapping_add(index as u64 * 0x1000_0001)),
        out: Vec::with_capacity(1024),
        change_gen: 0,
        change: None,
        refresh_cursor: None,
        last_provisioned: 0,
        last_changed: 0,
        counters: Counters::default(),
        lat: Latencies::default(),
        timeline: Timeline::new(cfg.max_time.as_micros() as u64 + 10 * SEC),
        run_tag: format!(
            "{:x}{:x}{:x}",
            cfg.seed,
            std::process::id(),
            RUNS.fetch_add(1, Relaxed)
        ),
        index,
        nshards,
        cfg: cfg.clone(),
        shared: shared.clone(),
    }));

    let mut tasks = Vec::new();
    for (i, sock) in udp_socks.into_iter().enumerate() {
        let shard = shard.clone();
        let shared = shared.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; DGRAM_MAX];
            loop {
                if sock.readable().await.is_err() {
                    return;
                }
                let mut sh = shard.borrow_mut();
                // Drain what is queued under one borrow: fewer wake-ups per message.
                for _ in 0..256 {
                    match sock.try_recv_from(&mut buf) {
                        Ok((n, from)) => sh.on_message(&buf[..n], from, i, shared.now()),
                        Err(_) => break,
                    }
                }
            }
        }));
    }
    for (i, (stream, mut rx)) in tcp_streams.into_iter().enumerate() {
        let (mut rd, mut wr) = tokio::io::split(stream);
        tasks.push(tokio::task::spawn_local(async move {
            while let Some(frame) = rx.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }));
        let shard = shard.clone();
        let shared = shared.clone();
        let server = cfg.server;
        tasks.push(tokio::task::spawn_local(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut sh = shard.borrow_mut();
                loop {
                    let now = shared.now();
                    let skip = buf
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    if skip > 0 {
                        buf.drain(..skip);
                    }
                    match sip::frame_len(&buf) {
                        Ok(Some(len)) => {
                            sh.on_message(&buf[..len], server, i, now);
                            buf.drain(..len);
                        }
                        Ok(None) => break,
                        Err(_) => {
                            sh.counters.malformed_received += 1;
                            return;
                        }
                    }
                }
            }
        }));
    }
    let http_workers = (cfg.http_conns / nshards).max(1);
    let tls = match &cfg.ca_file {
        Some(ca) if cfg.fetch.is_tls() => {
            let alpn: &[u8] = match cfg.fetch {
                FetchProtocol::H2 => b"h2",
                FetchProtocol::H3 => b"h3",
                _ => b"http/1.1",
            };
            Some(TlsClient::new(ca, &cfg.tls_name, &[alpn])?)
        }
        _ => None,
    };
    for _ in 0..http_workers {
        let shard = shard.clone();
        let shared = shared.clone();
        let notify = ready_notify.clone();
        let addr = match cfg.fetch {
            FetchProtocol::H3 => cfg.http3.unwrap_or(cfg.http),
            _ => cfg.http,
        };
        let mut conn = Fetcher::new(cfg.fetch, addr, tls.as_ref())?;
        tasks.push(tokio::task::spawn_local(async move {
            loop {
                let job = shard.borrow_mut().ready.pop_front();
                let Some(job) = job else {
                    notify.notified().await;
                    continue;
                };
                shard.borrow_mut().counters.fetches_started += 1;
                let t0 = shared.now();
                let res = conn.get(&job.path).await;
                let now = shared.now();
                shard.borrow_mut().on_fetch_result(job, res, now - t0, now);
            }
        }));
    }

    // The timer loop: the shard's heartbeat, and where it notices `stop`.
    loop {
        if shared.stop.load(Relaxed) {
            break;
        }
        let now = shared.now();
        let next = shard.borrow_mut().tick(now);
        let wait = Duration::from_micros(next.saturating_sub(shared.now()));
        if !wait.is_zero() {
            tokio::time::sleep(wait.min(TICK)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    for t in tasks {
        t.abort();
    }
    let end = shared.now();
    let sh = shard.borrow();
    let mut timeline = sh.timeline.clone();
    timeline.truncate(end);
    Ok(ShardResult {
        counters: sh.counters.clone(),
        latencies: sh.lat.clone(),
        timeline,
        cpu: Duration::ZERO,
        last_provisioned_us: sh.last_provisioned,
        last_changed_us: sh.last_changed,
    })
}
