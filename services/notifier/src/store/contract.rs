//! The written contract of [`SubscriptionStore`], as a test suite any backend runs.
//!
//! A backend's tests call [`run_all`] with a factory that returns a fresh, empty store for
//! each case (the Redis store runs it against standalone Redis and a Redis Cluster).
//! Persistence across restarts is checked per backend, since only the backend knows how to
//! restart itself.

use std::future::Future;
use std::net::SocketAddr;

use sip_core::dialog::Dialog;
use sip_core::transport::Transport;
use uaprof_api::{ProfileKey, ProfileType};

use super::{
    FanoutJob, PackageName, StoreError, SubId, Subscription, SubscriptionStore, Turn, cseq_floor,
};
use crate::{Clock, SystemClock};

/// The id of [`sample`]`(n, ..)`: `n` times an odd constant (a bijection of `u64`), so the
/// samples' ids spread over the whole id space and a shared store, which places a
/// subscription by the high bits of its id, holds them in many partitions and buckets.
pub fn sample_id(n: u64) -> SubId {
    SubId(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// A plausible device subscription for tests: id [`sample_id`]`(n)`, device `device_id`,
/// class acme/Z100.
pub fn sample(n: u64, device_id: &str) -> Subscription {
    let source: SocketAddr = ([127, 0, 0, 1], 5070).into();
    let id = sample_id(n);
    Subscription {
        id,
        dialog: Dialog {
            call_id: format!("call-{n}"),
            local_tag: id.tag(),
            remote_tag: format!("rt{n}"),
            local_uri: format!("sip:{device_id}@example.com"),
            remote_uri: format!("sip:{device_id}@example.com"),
            remote_target: "sip:phone@127.0.0.1:5070".into(),
            route_set: Vec::new(),
            secure: false,
            remote_cseq: 1,
        },
        transport: Transport::Udp,
        source,
        package: PackageName::UaProfile,
        profile_type: ProfileType::Device,
        subject: ProfileKey::Device(device_id.into()),
        vendor: Some("acme".into()),
        model: Some("Z100".into()),
        version: None,
        instance: None,
        accept: None,
        event_id: None,
        // Live (2100-01-01): a shared store keeps a subscription's index hints until its
        // expiry, and tests that want one expired say so.
        expires_at_ms: 4_102_444_800_000 + n,
        local_cseq: 1,
        confirmed_etag: None,
        depends_on: vec![
            ProfileKey::Device(device_id.into()),
            ProfileKey::Class {
                vendor: "acme".into(),
                model: "Z100".into(),
            },
        ],
    }
}

fn class() -> ProfileKey {
    ProfileKey::Class {
        vendor: "acme".into(),
        model: "Z100".into(),
    }
}

/// Runs every contract case; panics (test failure) on the first violation.
pub async fn run_all<F, Fut, S>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<S, StoreError>>,
    S: SubscriptionStore,
{
    macro_rules! case {
        ($name:ident) => {
            $name(&fresh().await.expect("fresh store")).await;
        };
    }
    case!(insert_get_remove);
    case!(insert_rejects_existing_id);
    case!(instance_replaces_older_subscription);
    case!(instance_replacement_is_global);
    case!(check_sync_records_are_indexed_and_replaced_by_the_next);
    case!(index_pages_cover_every_member_once);
    case!(cseq_is_strictly_increasing_and_refresh_never_lowers_it);
    case!(cseqs_are_at_least_the_clock_floor);
    case!(subscriptions_per_source_are_capped);
    case!(one_notify_turn_per_dialog);
    case!(dependency_change_moves_index_entries);
    case!(take_due_is_exactly_once);
    case!(confirm_etag_and_feed_offset);
    case!(scan_visits_everything);
    case!(fanout_work_lands_where_subscribers_are_and_coalesces);
}

async fn insert_get_remove(store: &impl SubscriptionStore) {
    let sub = sample(1, "mac:000000000001");
    assert!(store.get(sub.id).await.expect("get").is_none());
    let up = store.insert(sub.clone()).await.expect("insert");
    assert!(up.replaced.is_empty());
    assert_eq!(store.get(sub.id).await.expect("get"), Some(sub.clone()));
    assert_eq!(store.count().await.expect("count"), 1);
    assert_eq!(
        store.remove(sub.id).await.expect("remove"),
        Some(sub.clone())
    );
    assert_eq!(store.remove(sub.id).await.expect("remove twice"), None);
    assert_eq!(store.count().await.expect("count"), 0);
    let page = store.by_key(&class(), None, 10).await.expect("by_key");
    assert!(
        page.ids.is_empty(),
        "removed subscription left in the index"
    );
    assert_eq!(store.next_expiry().await.expect("next_expiry"), None);
}

async fn insert_rejects_existing_id(store: &impl SubscriptionStore) {
    let sub = sample(2, "mac:000000000002");
    store.insert(sub.clone()).await.expect("insert");
    let err = store
        .insert(sub.clone())
        .await
        .expect_err("duplicate id accepted");
    assert!(
        matches!(err, StoreError::Conflict(id) if id == sub.id),
        "not a conflict: {err:?}"
    );
}

async fn instance_replaces_older_subscription(store: &impl SubscriptionStore) {
    let mut old = sample(3, "mac:000000000003");
    old.instance = Some("urn:uuid:aaaa".into());
    let mut other_type = sample(4, "mac:000000000003");
    other_type.instance = old.instance.clone();
    other_type.profile_type = ProfileType::User;
    other_type.depends_on = vec![ProfileKey::User("a@example.com".into())];
    store.insert(old.clone()).await.expect("insert old");
    store
        .insert(other_type.clone())
        .await
        .expect("insert other type");

    let mut new = sample(5, "mac:000000000003");
    new.instance = old.instance.clone();
    let up = store.insert(new.clone()).await.expect("insert new");
    assert_eq!(
        up.replaced,
        vec![old.clone()],
        "same instance+type must be replaced"
    );
    assert!(store.get(old.id).await.expect("get").is_none());
    assert!(store.get(other_type.id).await.expect("get").is_some());
    let page = store
        .by_key(&ProfileKey::Device("mac:000000000003".into()), None, 10)
        .await
        .expect("by_key");
    assert_eq!(page.ids, vec![new.id]);
}

/// A check-sync record (a remembered plug-and-play phone) lives beside the device's real
/// subscription: both in its key's index, and the next record of the device replaces it.
async fn check_sync_records_are_indexed_and_replaced_by_the_next(store: &impl SubscriptionStore) {
    let device = "mac:000000000009";
    let real = sample(90, device);
    let record = |n: u64| {
        let mut r = sample(n, device);
        r.package = PackageName::CheckSync;
        r.instance = Some(format!("check-sync:{device}"));
        r.confirmed_etag = Some("0123456789abcdef0123".into());
        r
    };
    store
        .insert(real.clone())
        .await
        .expect("insert subscription");
    let first = record(91);
    store.insert(first.clone()).await.expect("insert record");
    assert_eq!(store.get(first.id).await.expect("get"), Some(first.clone()));
    let second = record(92);
    let up = store.insert(second.clone()).await.expect("insert record");
    assert_eq!(up.replaced, vec![first.clone()]);
    let key = ProfileKey::Device(device.into());
    let mut ids = store.by_key(&key, None, 10).await.expect("by_key").ids;
    ids.sort();
    let mut want = vec![real.id, second.id];
    want.sort();
    assert_eq!(ids, want);
}

/// Replacement is by (instance, profile type) across the whole store: a phone that comes
/// back under another identity (another Request-URI, so another subject and, in a shared
/// store, another partition and bucket) still displaces its old subscription.
async fn instance_replacement_is_global(store: &impl SubscriptionStore) {
    let instance = Some("urn:uuid:bbbb".to_string());
    let placed = |n: u64, device: &str| {
        let mut sub = sample(n, device);
        sub.id = store.allocate_id(&sub.subject, sample_id(n).0);
        sub.dialog.local_tag = sub.id.tag();
        sub.instance = instance.clone();
        sub
    };
    let old = placed(30, "mac:00000000a030");
    let new = placed(31, "mac:00000000b031");
    store.insert(old.clone()).await.expect("insert old");
    let up = store.insert(new.clone()).await.expect("insert new");
    assert_eq!(up.replaced, vec![old.clone()], "replacement is global");
    assert!(store.get(old.id).await.expect("get").is_none());
    assert!(
        store
            .by_key(&old.subject, None, 10)
            .await
            .expect("by_key")
            .ids
            .is_empty(),
        "the replaced subscription left an index entry"
    );
    // With explicit, spread ids (no placement by subject) too.
    let mut spread = sample(32, "mac:00000000c032");
    spread.instance = instance.clone();
    let up = store.insert(spread.clone()).await.expect("insert spread");
    assert_eq!(up.replaced, vec![new.clone()]);
    // Once the holder of the instance is gone, nothing stale is replaced.
    store.remove(spread.id).await.expect("remove");
    let later = placed(33, "mac:00000000d033");
    let up = store.insert(later.clone()).await.expect("insert later");
    assert!(up.replaced.is_empty(), "{:?}", up.replaced);
    // An expired holder neither.
    let mut due = placed(34, "mac:00000000e034");
    due.instance = Some("urn:uuid:cccc".into());
    due.expires_at_ms = 500;
    store.insert(due.clone()).await.expect("insert due");
    let taken = store.take_due(1_000, 10).await.expect("take_due");
    assert_eq!(taken.iter().map(|s| s.id).collect::<Vec<_>>(), vec![due.id]);
    let mut after = placed(35, "mac:00000000f035");
    after.instance = due.instance.clone();
    let up = store.insert(after).await.expect("insert after");
    assert!(up.replaced.is_empty(), "{:?}", up.replaced);
    assert_eq!(store.count().await.expect("count"), 2);
}

async fn index_pages_cover_every_member_once(store: &impl SubscriptionStore) {
    let total = 250u64;
    for n in 0..total {
        store
            .insert(sample(100 + n, &format!("mac:{:012x}", n)))
            .await
            .expect("insert");
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.by_key(&class(), after, 64).await.expect("by_key");
        assert!(page.ids.len() <= 64);
        seen.extend(page.ids.iter().copied());
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "a page repeated a member");
    assert_eq!(seen.len() as u64, total);
    let one = store
        .by_key(&ProfileKey::Device(format!("mac:{:012x}", 7)), None, 64)
        .await
        .expect("by_key");
    assert_eq!(one.ids, vec![sample_id(107)]);
    assert!(one.next.is_none());
}

/// A granted CSeq (the turn is ended at once, as a transaction that ended would).
async fn granted(store: &impl SubscriptionStore, id: SubId) -> u32 {
    let turn = store.begin_notify(id, None).await.expect("begin_notify");
    let Turn::Granted(c) = turn else {
        panic!("no turn for {id}: {turn:?}");
    };
    store.end_notify(id, None).await.expect("end_notify");
    c
}

async fn cseq_is_strictly_increasing_and_refresh_never_lowers_it(store: &impl SubscriptionStore) {
    let sub = sample(6, "mac:000000000006");
    store.insert(sub.clone()).await.expect("insert");
    store
        .end_notify(sub.id, None)
        .await
        .expect("first NOTIFY ended");
    let mut last = sub.local_cseq;
    for _ in 0..5 {
        let c = granted(store, sub.id).await;
        assert!(c > last, "cseq went from {last} to {c}");
        last = c;
    }
    // A refresh built from an older copy must not move the CSeq backwards.
    let mut stale = sub.clone();
    stale.expires_at_ms += 1000;
    let Turn::Granted(c) = store.refresh(stale).await.expect("refresh") else {
        panic!("the turn was free");
    };
    assert!(c > last, "refresh reused cseq: {c} after {last}");
    store.end_notify(sub.id, None).await.expect("end");
    last = c;
    assert_eq!(
        store
            .get(sub.id)
            .await
            .expect("get")
            .expect("present")
            .expires_at_ms,
        sub.expires_at_ms + 1000
    );
    let c = granted(store, sub.id).await;
    assert!(
        c > last,
        "cseq went backwards after refresh: {c} after {last}"
    );
    assert_eq!(
        store.begin_notify(SubId(999), None).await.expect("begin"),
        Turn::Gone
    );
    let mut gone = sample(998, "mac:000000000998");
    gone.local_cseq = 5;
    assert_eq!(
        store.refresh(gone).await.expect("refresh of unknown"),
        Turn::Gone
    );
}

/// CSeqs that a failover's lost write cannot make the store hand out twice: each one is at
/// least the seconds since 2025 ([`cseq_floor`]), whatever the stored CSeq is. (The stores
/// here run on the system clock; each backend's own tests replay a lost write.)
async fn cseqs_are_at_least_the_clock_floor(store: &impl SubscriptionStore) {
    let sub = sample(10, "mac:000000000010");
    store.insert(sub.clone()).await.expect("insert");
    assert_eq!(
        store.get(sub.id).await.expect("get").map(|s| s.local_cseq),
        Some(1),
        "insert keeps the CSeq its caller chose"
    );
    store.end_notify(sub.id, None).await.expect("end first");
    let floor = cseq_floor(SystemClock.now_ms());
    let c = granted(store, sub.id).await;
    assert!(c >= floor, "begin_notify gave {c}, below the floor {floor}");
    let again = granted(store, sub.id).await;
    assert!(again > c, "{again} after {c}");
    let mut refreshed = sub.clone();
    refreshed.expires_at_ms += 1000;
    let Turn::Granted(r) = store.refresh(refreshed).await.expect("refresh") else {
        panic!("the turn was free");
    };
    assert!(r > again && r >= floor, "refresh gave {r} after {again}");
}

/// The per-source cap counts the live subscriptions of a source host across the store: an
/// insert over it stores nothing; removal, expiry and replacement of the host's own
/// subscription make room; other hosts and uncapped inserts are not affected.
async fn subscriptions_per_source_are_capped(store: &impl SubscriptionStore) {
    let now = SystemClock.now_ms();
    let (a, b) = ([192, 0, 2, 1], [192, 0, 2, 2]);
    let from = |n: u64, host: [u8; 4]| {
        let mut s = sample(n, &format!("mac:{:012x}", 0x500 + n));
        s.source = (host, 5060).into();
        s.expires_at_ms = now + 3_600_000;
        s
    };
    let mut own = from(401, a);
    own.instance = Some("urn:uuid:cap".into());
    for s in [from(400, a), own.clone(), from(402, a)] {
        store.insert_capped(s, 3).await.expect("under the cap");
    }
    let over = |n: u64| async move {
        let err = store
            .insert_capped(from(n, a), 3)
            .await
            .expect_err("over the cap");
        assert!(
            matches!(err, StoreError::SourceLimit(h) if h == std::net::IpAddr::from(a)),
            "{err:?}"
        );
        assert!(
            store.get(sample_id(n)).await.expect("get").is_none(),
            "a refused insert stored something"
        );
    };
    over(403).await;
    store
        .insert_capped(from(404, b), 3)
        .await
        .expect("another host has its own count");
    // A rebooted phone replacing its own subscription adds none.
    let mut again = from(405, a);
    again.instance = own.instance.clone();
    let up = store.insert_capped(again, 3).await.expect("a replacement");
    assert_eq!(
        up.replaced.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![own.id]
    );
    over(403).await;
    // A removal makes room.
    store.remove(sample_id(400)).await.expect("remove");
    store
        .insert_capped(from(406, a), 3)
        .await
        .expect("room after a removal");
    over(403).await;
    // So does an expiry, once the subscription is taken.
    let mut ending = from(402, a);
    ending.expires_at_ms = now - 1;
    store.refresh(ending).await.expect("refresh");
    let taken = store.take_due(now, 100).await.expect("take_due");
    assert_eq!(
        taken.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![sample_id(402)]
    );
    store
        .insert_capped(from(407, a), 3)
        .await
        .expect("room after an expiry");
    over(403).await;
    // Uncapped inserts are not refused.
    store.insert(from(408, a)).await.expect("no cap");
}

async fn one_notify_turn_per_dialog(store: &impl SubscriptionStore) {
    let sub = sample(7, "mac:000000000007");
    store.insert(sub.clone()).await.expect("insert");
    // The inserting node holds the turn of the first NOTIFY.
    assert_eq!(
        store.begin_notify(sub.id, None).await.expect("begin"),
        Turn::Busy,
        "a second NOTIFY while the first is in flight"
    );
    // A refresh meanwhile is stored, but its NOTIFY must wait too.
    let mut refreshed = sub.clone();
    refreshed.expires_at_ms += 5000;
    assert_eq!(store.refresh(refreshed).await.expect("refresh"), Turn::Busy);
    assert_eq!(
        store
            .get(sub.id)
            .await
            .expect("get")
            .expect("present")
            .expires_at_ms,
        sub.expires_at_ms + 5000
    );
    // Ending the first NOTIFY says that another one was wanted (by the refresh), and frees
    // the turn.
    assert!(
        store
            .end_notify(sub.id, Some("e1".into()))
            .await
            .expect("end")
    );
    let got = store.get(sub.id).await.expect("get").expect("present");
    assert_eq!(got.confirmed_etag.as_deref(), Some("e1"));
    let Turn::Granted(c) = store.begin_notify(sub.id, None).await.expect("begin") else {
        panic!("the turn is free again");
    };
    assert!(c > sub.local_cseq);
    // A pipeline want that finds the turn busy tries again by itself: it marks nothing.
    assert_eq!(
        store.begin_notify(sub.id, None).await.expect("begin"),
        Turn::Busy
    );
    assert!(
        !store.end_notify(sub.id, None).await.expect("end"),
        "nothing was wanted this time"
    );
    // Ending a turn not held changes nothing; a confirmation of an unknown dialog neither.
    assert!(!store.end_notify(sub.id, None).await.expect("end again"));
    assert!(
        !store
            .end_notify(SubId(12345), Some("x".into()))
            .await
            .expect("unknown")
    );
    // Removal frees the turn with the subscription.
    assert!(matches!(
        store.begin_notify(sub.id, None).await.expect("begin"),
        Turn::Granted(_)
    ));
    store.remove(sub.id).await.expect("remove");
    store.insert(sub.clone()).await.expect("insert again");
    store
        .end_notify(sub.id, None)
        .await
        .expect("end its first NOTIFY");
    assert!(matches!(
        store.begin_notify(sub.id, None).await.expect("begin"),
        Turn::Granted(_)
    ));
}

async fn dependency_change_moves_index_entries(store: &impl SubscriptionStore) {
    let sub = sample(8, "mac:000000000008");
    store.insert(sub.clone()).await.expect("insert");
    let user = ProfileKey::User("bob@example.com".into());
    let keys = vec![sub.depends_on[0].clone(), user.clone()];
    store.end_notify(sub.id, None).await.expect("end first");
    assert!(matches!(
        store
            .begin_notify(sub.id, Some(keys.clone()))
            .await
            .expect("begin_notify"),
        Turn::Granted(_)
    ));
    assert_eq!(
        store.by_key(&user, None, 10).await.expect("by_key").ids,
        vec![sub.id]
    );
    assert!(
        store
            .by_key(&class(), None, 10)
            .await
            .expect("by_key")
            .ids
            .is_empty()
    );
    assert_eq!(
        store
            .get(sub.id)
            .await
            .expect("get")
            .expect("present")
            .depends_on,
        keys
    );
}

async fn take_due_is_exactly_once(store: &impl SubscriptionStore) {
    for n in 0..10u64 {
        let mut s = sample(200 + n, &format!("mac:{:012x}", 200 + n));
        s.expires_at_ms = 10_000 + n * 1000;
        store.insert(s).await.expect("insert");
    }
    assert_eq!(store.next_expiry().await.expect("next"), Some(10_000));
    assert!(store.take_due(9_999, 100).await.expect("due").is_empty());
    // Which due subscriptions a limited sweep takes first is the backend's (a shared store
    // sweeps partition by partition): each due one is taken once, no other one ever.
    let first = store.take_due(14_000, 3).await.expect("due");
    assert_eq!(first.len(), 3, "{first:?}");
    let second = store.take_due(14_000, 100).await.expect("due");
    let mut taken: Vec<SubId> = first.iter().chain(&second).map(|s| s.id).collect();
    taken.sort_unstable();
    let mut due: Vec<SubId> = (200..205).map(sample_id).collect();
    due.sort_unstable();
    assert_eq!(taken, due, "each due subscription is taken exactly once");
    assert!(store.take_due(14_000, 100).await.expect("due").is_empty());
    assert_eq!(store.count().await.expect("count"), 5);
    assert_eq!(store.next_expiry().await.expect("next"), Some(15_000));
    // Expired subscriptions leave no index entries behind.
    assert!(
        store
            .by_key(&ProfileKey::Device(format!("mac:{:012x}", 200)), None, 10)
            .await
            .expect("by_key")
            .ids
            .is_empty()
    );
}

async fn confirm_etag_and_feed_offset(store: &impl SubscriptionStore) {
    let sub = sample(9, "mac:000000000009");
    store.insert(sub.clone()).await.expect("insert");
    store
        .end_notify(sub.id, Some("abc".into()))
        .await
        .expect("confirm");
    assert_eq!(
        store
            .get(sub.id)
            .await
            .expect("get")
            .expect("present")
            .confirmed_etag
            .as_deref(),
        Some("abc")
    );
    store
        .end_notify(SubId(12345), Some("x".into()))
        .await
        .expect("confirm unknown is a no-op");
    assert_eq!(store.feed_offset().await.expect("offset"), 0);
    store.set_feed_offset(10).await.expect("set");
    store.set_feed_offset(7).await.expect("set lower");
    assert_eq!(
        store.feed_offset().await.expect("offset"),
        10,
        "offset went backwards"
    );
}

async fn scan_visits_everything(store: &impl SubscriptionStore) {
    for n in 0..37u64 {
        store
            .insert(sample(300 + n, &format!("mac:{:012x}", 300 + n)))
            .await
            .expect("insert");
    }
    let mut seen = 0;
    let mut after = None;
    loop {
        let page = store.scan(after, 10).await.expect("scan");
        seen += page.ids.len();
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, 37);
}

/// Pending jobs by partition, read with `recheck` of every partition.
async fn pending(store: &impl SubscriptionStore) -> Vec<(u16, FanoutJob)> {
    let all: Vec<u16> = (0..super::redis::PARTITIONS).collect();
    store.pending_fanout(&all, 10_000).await.expect("pending")
}

async fn fanout_work_lands_where_subscribers_are_and_coalesces(store: &impl SubscriptionStore) {
    // Subscriptions placed as a node would place them (a shared store spreads them).
    let mut ids = Vec::new();
    for n in 0..8u64 {
        let device = format!("mac:{:012x}", 0xf00 + n);
        let mut sub = sample(0, &device);
        sub.id = store.allocate_id(&sub.subject, 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(n + 1));
        sub.dialog.local_tag = sub.id.tag();
        store.insert(sub.clone()).await.expect("insert");
        ids.push(sub.id);
    }
    // Each job carries the trace it was recorded in, and comes back with it.
    let job = |target: Option<ProfileKey>, version: u64, effective_by: Option<u32>| FanoutJob {
        target,
        version,
        effective_by,
        rollout_window: effective_by.map(|e| e * 10),
        traceparent: Some(format!("00-{version:032x}-{version:016x}-01")),
    };
    store
        .enqueue_fanout(&[job(Some(class()), 3, Some(10))])
        .await
        .expect("enqueue");
    // A lower version does not replace pending work; it is already covered.
    store
        .enqueue_fanout(&[job(Some(class()), 2, None)])
        .await
        .expect("enqueue lower");
    let jobs = pending(store).await;
    assert!(!jobs.is_empty(), "the class change is pending somewhere");
    assert!(
        jobs.iter()
            .all(|(_, j)| *j == job(Some(class()), 3, Some(10))),
        "{jobs:?}"
    );
    // Walking the class in the partitions that hold the job finds every subscriber once.
    let mut found = Vec::new();
    for (p, _) in &jobs {
        let mut after = None;
        loop {
            let page = store.by_key_in(*p, &class(), after, 3).await.expect("page");
            found.extend(page.ids);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    found.sort_unstable();
    let mut expected = ids.clone();
    expected.sort_unstable();
    assert_eq!(
        found, expected,
        "work must be recorded where the subscribers are"
    );

    // A newer change while a walk of version 3 is in progress: finishing version 3 leaves
    // the job pending; finishing the newest removes it.
    store
        .enqueue_fanout(&[job(Some(class()), 5, None)])
        .await
        .expect("enqueue newer");
    for (p, old) in &jobs {
        assert!(
            !store.finish_fanout(*p, old).await.expect("finish"),
            "a superseded walk must not remove newer work"
        );
    }
    let newer = pending(store).await;
    assert!(newer.iter().all(|(_, j)| j.version == 5), "{newer:?}");
    for (p, j) in &newer {
        assert!(store.finish_fanout(*p, j).await.expect("finish"));
    }
    assert!(pending(store).await.is_empty(), "finished work is gone");

    // Work for every subscription (after a feed gap) reaches every partition a walk covers.
    store
        .enqueue_fanout(&[job(None, 42, None)])
        .await
        .expect("enqueue all");
    let all = pending(store).await;
    let mut covered = 0;
    for (p, j) in &all {
        assert_eq!(j.target, None);
        covered += store
            .scan_partition(*p, None, 100)
            .await
            .expect("scan")
            .ids
            .len();
        assert!(store.finish_fanout(*p, j).await.expect("finish"));
    }
    assert_eq!(covered, ids.len());
}
