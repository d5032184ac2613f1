//! `uaprof-storm`: plays thousands to millions of RFC 6080 phones against a running
//! deployment and reports what happened (issue 4).
//!
//! Module map:
//!
//! * [`config`] — the scenario and every knob ([`Config`]), validated bounds.
//! * [`run`] — the controller: provisioning, shards, phases, progress, the [`RunResult`].
//! * [`engine`] — one shard: phone state machines, sockets, timers, HTTP fetch pool.
//! * [`sip`] — the small allocation-free SIP reader/writer used on the hot path.
//! * [`body`] — NOTIFY bodies: external-body, multipart/mixed, inline.
//! * [`http`] — a keep-alive HTTP/1.1 client and its sans-IO response parser.
//! * [`fetch`] — fetches by protocol: that client, HTTPS (HTTP/1.1, HTTP/2), HTTP/3.
//! * [`timers`] — RFC 3261 transaction timers, RFC 6080 back-off, the timer queue, RNG.
//! * [`stats`] — counters, HDR-style histograms, the timeline.
//! * [`report`] — summary table, JSON, HTML with SVG plots, PNG.
//! * [`raster`] — the PNG's canvas and its built-in 5×8 bitmap font.

pub mod body;
pub mod config;
pub mod engine;
pub mod fetch;
pub mod http;
pub mod raster;
pub mod report;
pub mod run;
pub mod sip;
pub mod stats;
pub mod timers;

pub use config::{ChangeVia, Config, ProfileKind, Scenario, Transport};
pub use run::{RunResult, run};
