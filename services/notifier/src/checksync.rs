//! Check-sync records: the phones that never hold a subscription but are told to re-fetch
//! their configuration when it changes ([`PackageName::CheckSync`]).
//!
//! A record comes from one of two places:
//! * a plug-and-play SUBSCRIBE (`Expires: 0`, [`remember`]): the phone's Contact, source
//!   and vendor, for `notifier.pnp_remember`;
//! * the operator's resync target on the device (`resync` in the provisioning API,
//!   `SetResync` on Kafka, [`sync_target`]): the record names the device and has no source
//!   (its `source` is the unspecified address), and is kept while the target is set.
//!
//! Either way the device's resolution carries the operator's target when there is one, and
//! the NOTIFY goes there ([`for_target`]): a target the operator set wins over what a
//! plug-and-play SUBSCRIBE remembered.

use std::net::{Ipv4Addr, SocketAddr};

use metrics::counter;
use rand::RngExt;
use sip_core::dialog::Dialog;
use sip_core::transport::Transport;
use tracing::warn;
use uaprof_api::{ProfileKey, ProfileType, ResolveError, ResolveRequest, ResyncTarget};

use crate::Ctx;
use crate::store::{PackageName, StoreError, Subscription};

/// How long an operator-made record lasts: until the target is cleared, in practice.
const OPERATOR_RECORD_MS: u64 = 100 * 365 * 86_400_000;

/// The `+sip.instance` of a device's check-sync record: one record per device, each new one
/// replacing the last.
fn instance(device: &ProfileKey) -> String {
    format!("check-sync:{device}")
}

/// Whether a check-sync record was made from an operator's target (it has no source).
pub fn is_operator_made(rec: &Subscription) -> bool {
    rec.source.ip().is_unspecified()
}

/// Remembers a device that fetched its profile with a plug-and-play SUBSCRIBE as a
/// check-sync target for `notifier.pnp_remember`: a later change to what it fetched (`etag`)
/// sends it one out-of-dialog resync NOTIFY. Its next plug-and-play SUBSCRIBE replaces the
/// record. The fetch was answered already, so a store failure here costs only the reminder,
/// and is logged and counted.
pub async fn remember(ctx: &Ctx, fetch: &Subscription, etag: String) {
    let keep = ctx.config.pnp_remember;
    if keep.is_zero() || fetch.profile_type != ProfileType::Device {
        return;
    }
    let mut rec = fetch.clone();
    rec.package = PackageName::CheckSync;
    rec.instance = Some(instance(&rec.subject));
    rec.dialog.route_set.clear();
    rec.event_id = None;
    rec.confirmed_etag = Some(etag);
    let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
    rec.expires_at_ms = ctx.clock.now_ms().saturating_add(keep_ms);
    match insert(ctx, rec).await {
        Ok(()) => counter!("check_sync_remembered_total").increment(1),
        Err(e) => {
            counter!("store_errors_total", "op" => "check_sync_remember").increment(1);
            warn!(%e, device = %fetch.subject, "plug-and-play phone not remembered for check-sync");
        }
    }
}

/// Stores a record under a fresh id and gives back the NOTIFY turn the insert took (no
/// NOTIFY goes out now).
async fn insert(ctx: &Ctx, mut rec: Subscription) -> Result<(), StoreError> {
    let mut last = None;
    for _ in 0..3 {
        rec.id = ctx.store.allocate_id(&rec.subject, rand::rng().random());
        rec.dialog.local_tag = rec.id.tag();
        match ctx.store.insert(rec.clone()).await {
            Ok(_) => {
                if let Err(e) = ctx.store.end_notify(rec.id, None).await {
                    warn!(%e, "check-sync record's turn not given back; it lapses");
                }
                return Ok(());
            }
            Err(e @ StoreError::Conflict(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| StoreError::Other("no free id".into())))
}

/// Why [`sync_target`] could not finish; worth trying again.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// Brings `device`'s check-sync record in line with the resync target the operator set on
/// it (a change that could change the target reached this node): a set target makes or
/// re-aims the record, keeping what the phone last fetched; a cleared one removes a record
/// aimed at a target (a plug-and-play record the operator never re-aimed stays: the phone's
/// own Contact is its target; the next plug-and-play SUBSCRIBE remembers it again).
/// Retryable failures are returned; a device the content tier cannot resolve is left as it
/// is.
pub async fn sync_target(ctx: &Ctx, device: &ProfileKey) -> Result<(), SyncError> {
    if !matches!(device, ProfileKey::Device(_)) {
        return Ok(());
    }
    let existing = find(ctx, device).await?;
    let request = ResolveRequest {
        profile_type: ProfileType::Device,
        subject: device.clone(),
        vendor: existing.as_ref().and_then(|r| r.vendor.clone()),
        model: existing.as_ref().and_then(|r| r.model.clone()),
        version: existing.as_ref().and_then(|r| r.version.clone()),
    };
    let resolution = match ctx.resolver.resolve(&request).await {
        Ok(r) => r,
        Err(ResolveError::Invalid(e)) => {
            warn!(%device, error = %e, "resync target not applied: the device does not resolve");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let Some(target) = resolution.resync.as_ref() else {
        if let Some(rec) = existing.filter(is_operator_made) {
            ctx.store.remove(rec.id).await?;
            counter!("check_sync_targets_total", "op" => "cleared").increment(1);
        }
        return Ok(());
    };
    if existing
        .as_ref()
        .is_some_and(|r| is_operator_made(r) && r.dialog.remote_target == target.contact)
    {
        // Only the event or the credentials changed: both are read at each NOTIFY.
        return Ok(());
    }
    let confirmed = existing
        .as_ref()
        .and_then(|r| r.confirmed_etag.clone())
        .unwrap_or_else(|| resolution.entity_tag());
    let mut rec = for_target(existing.unwrap_or_else(|| blank(ctx, device)), target);
    rec.confirmed_etag = Some(confirmed);
    rec.depends_on = resolution.depends_on;
    rec.expires_at_ms = ctx.clock.now_ms().saturating_add(OPERATOR_RECORD_MS);
    insert(ctx, rec).await?;
    counter!("check_sync_targets_total", "op" => "set").increment(1);
    Ok(())
}

/// The device's check-sync record, if it has one.
async fn find(ctx: &Ctx, device: &ProfileKey) -> Result<Option<Subscription>, StoreError> {
    let mut after = None;
    loop {
        let page = ctx.store.by_key(device, after, 64).await?;
        for id in &page.ids {
            if let Some(sub) = ctx.store.get(*id).await?
                && sub.package == PackageName::CheckSync
                && sub.subject == *device
            {
                return Ok(Some(sub));
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(None),
        }
    }
}

/// A record for a device nothing is known of but its id.
fn blank(ctx: &Ctx, device: &ProfileKey) -> Subscription {
    Subscription {
        id: crate::store::SubId(0),
        dialog: Dialog {
            call_id: String::new(),
            local_tag: String::new(),
            remote_tag: String::new(),
            local_uri: format!("sip:{}", ctx.local.sent_by(Transport::Udp)),
            remote_uri: String::new(),
            remote_target: String::new(),
            route_set: Vec::new(),
            secure: false,
            remote_cseq: 0,
        },
        transport: Transport::Udp,
        source: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        package: PackageName::CheckSync,
        profile_type: ProfileType::Device,
        subject: device.clone(),
        vendor: None,
        model: None,
        version: None,
        instance: Some(instance(device)),
        accept: None,
        event_id: None,
        expires_at_ms: 0,
        local_cseq: 1,
        confirmed_etag: None,
        depends_on: vec![device.clone()],
    }
}

/// `rec` aimed at the operator's `target`: its contact is the Request-URI, the To and where
/// the NOTIFY goes (resolved like a Route, not the flow of a SUBSCRIBE), so the record has
/// no source.
pub fn for_target(mut rec: Subscription, target: &ResyncTarget) -> Subscription {
    rec.dialog.remote_uri.clone_from(&target.contact);
    rec.dialog.remote_target.clone_from(&target.contact);
    rec.dialog.route_set.clear();
    rec.source = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
    rec.transport = Transport::Udp;
    rec.package = PackageName::CheckSync;
    rec
}
