//! Store, resolver and feed tests against the Rust API. Everything that does not depend on
//! where documents live runs against both backends: the embedded journal and a real
//! `redis-server` (testkit).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use content::{
    ContentConfig, ContentError, ContentService, InProcessFeed, JournalOptions, RedisConfig,
    WriteStatus,
};
use testkit::RedisServer;
use uaprof_api::{
    Change, ChangeOp, ChangeSource, ContentResolver, FeedError, ProfileKey, ProfileType,
    ResolveRequest, Timing,
};

fn config() -> ContentConfig {
    ContentConfig {
        public_base_url: "http://profiles.example.net/".into(),
        max_document_bytes: 64,
        host_for_content_id: "profiles.example.net".into(),
        ..ContentConfig::default()
    }
}

fn open_with(dir: &Path, config: ContentConfig) -> Arc<ContentService> {
    let opts = JournalOptions {
        fsync: false,
        ..JournalOptions::default()
    };
    ContentService::open(dir, config, opts).expect("open")
}

fn open(dir: &Path) -> Arc<ContentService> {
    open_with(dir, config())
}

/// A service on `redis` under a key prefix of its own. (Each test starts its own Redis: one
/// shared through a `static` would never be dropped, and its server would outlive the test
/// binary.)
async fn open_redis(redis: &RedisServer) -> Arc<ContentService> {
    static N: AtomicU32 = AtomicU32::new(0);
    let rc = RedisConfig {
        urls: vec![redis.url()],
        prefix: format!("t{}", N.fetch_add(1, Ordering::Relaxed)),
        ..RedisConfig::default()
    };
    ContentService::open_redis(&rc, config())
        .await
        .expect("open redis backend")
}

/// Runs `check` against a fresh journal-backed service, then a fresh Redis-backed one.
async fn on_both<F, Fut>(check: F)
where
    F: Fn(Arc<ContentService>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    check(open(dir.path())).await;
    let redis = RedisServer::start();
    check(open_redis(&redis).await).await;
}

fn change(key: &ProfileKey, id: &str, version: Option<u64>, op: ChangeOp) -> Change {
    Change {
        change_id: id.into(),
        key: key.clone(),
        version,
        op,
        timing: Timing::default(),
        producer: "oss".into(),
        occurred_unix_ms: 1_700_000_000_000,
    }
}

fn put_op(name: &str, body: &'static str) -> ChangeOp {
    ChangeOp::PutDocument {
        name: name.into(),
        content_type: "application/xml".into(),
        bytes: xml(body),
    }
}

fn device() -> ProfileKey {
    ProfileKey::device("00:DF:1E:00:4C:D0").expect("key")
}

fn user() -> ProfileKey {
    ProfileKey::user("sip:alice@example.com").expect("key")
}

fn xml(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[tokio::test]
async fn rejected_writes_change_nothing() {
    on_both(rejected_writes_change_nothing_on).await;
}

async fn rejected_writes_change_nothing_on(svc: Arc<ContentService>) {
    let dev = device();
    let policy = "application/media-policy-dataset+xml";
    let cases: Vec<(Result<_, ContentError>, u16)> = vec![
        (
            svc.put_document(&dev, ".hidden", "application/xml", xml("<a/>"), None)
                .await,
            400,
        ),
        (
            svc.put_document(&dev, "a/b", "application/xml", xml("<a/>"), None)
                .await,
            400,
        ),
        (
            svc.put_document(&dev, "a.xml", "", xml("<a/>"), None).await,
            415,
        ),
        (
            svc.put_document(&dev, "a.xml", "xml", xml("<a/>"), None)
                .await,
            415,
        ),
        (
            svc.put_document(
                &dev,
                "a.xml",
                "text/plain",
                Bytes::from(vec![b'x'; 65]),
                None,
            )
            .await,
            413,
        ),
        (
            svc.put_document(&dev, "p.xml", policy, xml("<p/>"), None)
                .await,
            422,
        ),
        (
            svc.put_document(&user(), "p.xml", policy, xml("not xml"), None)
                .await,
            422,
        ),
        (
            svc.put_document(&user(), "p.xml", policy, xml("  "), None)
                .await,
            422,
        ),
        (
            svc.put_document(
                &ProfileKey::Device("MAC:00DF1E004CD0".into()),
                "a.xml",
                "text/plain",
                xml("x"),
                None,
            )
            .await,
            400,
        ),
        (
            svc.set_default_user(&dev, Some("not an aor"), None).await,
            400,
        ),
        (
            svc.set_default_user(&user(), Some("sip:bob@example.com"), None)
                .await,
            400,
        ),
        (svc.delete_document(&dev, "a.xml", None).await, 404),
        (svc.delete_key(&dev, None).await, 404),
    ];
    for (i, (result, status)) in cases.into_iter().enumerate() {
        match result {
            Err(e) => assert_eq!(e.http_status(), status, "case {i}: {e}"),
            Ok(r) => panic!("case {i} accepted: {r:?}"),
        }
    }
    assert_eq!(svc.last_seq(), 0);
    assert_eq!(svc.key_version(&dev).await.expect("version"), 0);
    assert!(svc.list_key(&dev).await.expect("list").is_none());
    assert!(svc.list_key(&user()).await.expect("list").is_none());
    if !svc.is_shared() {
        assert!(svc.changes_after(0, 10).expect("feed").is_empty());
    }
    // Policy documents are fine on user keys.
    let ok = svc
        .put_document(&user(), "p.xml", policy, xml("\u{feff}<policy/>"), None)
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test]
async fn reopen_keeps_documents_versions_and_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = device();
    {
        let svc = open(dir.path());
        let r = svc
            .put_document(&dev, "a.xml", "Application/XML", xml("<a/>"), Some(60))
            .await
            .expect("put");
        assert!(r.created);
        assert_eq!((r.seq, r.version), (Some(1), Some(1)));
        svc.put_document(&dev, "b.xml", "application/xml", xml("<b/>"), None)
            .await
            .expect("put");
        let r = svc
            .delete_document(&dev, "b.xml", None)
            .await
            .expect("delete");
        assert_eq!((r.seq, r.version), (Some(3), Some(3)));
    }
    let svc = open(dir.path());
    assert_eq!(svc.last_seq(), 3);
    assert_eq!(svc.key_version(&dev).await.expect("version"), 3);
    let doc = svc
        .get_document(&dev, "a.xml")
        .await
        .expect("read")
        .expect("doc");
    assert_eq!(doc.bytes, xml("<a/>"));
    assert_eq!(doc.content_type, "application/xml");
    assert_eq!(doc.version, 1);
    assert!(
        svc.get_document(&dev, "b.xml")
            .await
            .expect("read")
            .is_none()
    );
    let changes = svc.changes_after(0, 10).expect("feed");
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0].effective_by, Some(60));
    assert_eq!(changes[2].version, 3);
    let r = svc
        .put_document(&dev, "c.xml", "application/xml", xml("<c/>"), None)
        .await
        .expect("put");
    assert_eq!((r.seq, r.version), (Some(4), Some(4)));

    // A snapshot followed by a reopen keeps everything too.
    svc.snapshot().expect("snapshot");
    drop(svc);
    let svc = open(dir.path());
    assert_eq!(svc.last_seq(), 4);
    let listing = svc.list_key(&dev).await.expect("list").expect("listing");
    assert_eq!(listing.documents.len(), 2);
}

#[tokio::test]
async fn content_id_follows_bytes() {
    on_both(content_id_follows_bytes_on).await;
}

async fn content_id_follows_bytes_on(svc: Arc<ContentService>) {
    let dev = device();
    let put = |b: &'static str| svc.put_document(&dev, "a.xml", "application/xml", xml(b), None);
    let first = put("<a/>").await.expect("put");
    let same = put("<a/>").await.expect("put");
    assert!(!same.created);
    assert_eq!(first.content_id, same.content_id);
    assert!(
        same.version > first.version,
        "every write bumps the version"
    );
    let changed = put("<b/>").await.expect("put");
    assert_ne!(changed.content_id, first.content_id);
    let cid = changed.content_id.expect("cid");
    assert!(cid.ends_with("@profiles.example.net"), "{cid}");
    // Identical bytes under another name get their own Content-ID (one multipart NOTIFY may
    // carry both).
    let other = svc
        .put_document(&dev, "b.xml", "application/xml", xml("<b/>"), None)
        .await
        .expect("put");
    assert_ne!(other.content_id.as_deref(), Some(cid.as_str()));
}

#[tokio::test]
async fn device_resolution_composes_device_class_and_default_user() {
    on_both(device_resolution_on).await;
}

async fn device_resolution_on(svc: Arc<ContentService>) {
    let dev = device();
    let class = ProfileKey::class("acme", "Z100").expect("key");
    let ct = "application/xml";
    svc.put_document(&dev, "device.xml", ct, xml("<d/>"), None)
        .await
        .expect("put");
    svc.put_document(&class, "firmware.xml", ct, xml("<f/>"), None)
        .await
        .expect("put");
    svc.put_document(&user(), "user.xml", ct, xml("<u/>"), None)
        .await
        .expect("put");
    svc.put_document(&user(), "contacts.xml", ct, xml("<c/>"), None)
        .await
        .expect("put");
    let r = svc
        .set_default_user(&dev, Some("sip:alice@EXAMPLE.com;transport=tcp"), None)
        .await
        .expect("attrs");
    assert_eq!(r.version, Some(2));

    let req = ResolveRequest {
        profile_type: ProfileType::Device,
        subject: dev.clone(),
        vendor: Some("acme".into()),
        model: Some("Z100".into()),
        version: None,
    };
    let res = svc.resolve_at(&req, 1_000).await.expect("resolve");
    assert!(res.known);
    assert_eq!(res.depends_on, vec![dev.clone(), class.clone(), user()]);
    let names: Vec<(&str, &str)> = res
        .documents
        .iter()
        .map(|d| (d.owner.kind(), d.name.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("device", "device.xml"),
            ("user", "contacts.xml"),
            ("user", "user.xml"),
            ("class", "firmware.xml"),
        ]
    );
    let d = &res.documents[0];
    assert_eq!(
        d.url,
        "http://profiles.example.net/profiles/device/mac%3A00df1e004cd0/device.xml"
    );
    assert_eq!(d.expires_unix, 1_000 + 7 * 24 * 3600);
    assert_eq!(d.size, 4);
    assert_eq!(d.sha1_hex.len(), 40);
    assert_eq!(
        res.documents[3].url,
        "http://profiles.example.net/profiles/class/acme%3AZ100/firmware.xml"
    );

    // Through the trait, and without vendor/model: no class.
    let no_class = ResolveRequest {
        vendor: None,
        model: None,
        ..req.clone()
    };
    let res = svc.resolve(&no_class).await.expect("resolve");
    assert_eq!(res.depends_on, vec![dev.clone(), user()]);
    assert_eq!(res.documents.len(), 3);

    // User subscriptions depend on the user only.
    let res = svc
        .resolve_at(
            &ResolveRequest {
                profile_type: ProfileType::User,
                subject: user(),
                vendor: None,
                model: None,
                version: None,
            },
            0,
        )
        .await
        .expect("resolve");
    assert_eq!(res.depends_on, vec![user()]);
    assert_eq!(res.documents.len(), 2);

    // An unknown device is not known, has no documents, still depends on its class.
    let unknown = ProfileKey::device("00df1e004cd1").expect("key");
    let res = svc
        .resolve_at(
            &ResolveRequest {
                subject: unknown.clone(),
                ..req
            },
            0,
        )
        .await
        .expect("resolve");
    assert!(!res.known);
    assert_eq!(res.depends_on, vec![unknown, class]);
    assert_eq!(res.documents.len(), 1, "class documents still apply");

    // Clearing the default user drops the user's documents from the device's profile.
    svc.set_default_user(&dev, None, None).await.expect("attrs");
    assert_eq!(
        svc.resolve(&no_class)
            .await
            .expect("resolve")
            .documents
            .len(),
        1
    );
}

#[tokio::test]
async fn delete_key_is_one_change_and_keeps_counting() {
    on_both(delete_key_on).await;
}

async fn delete_key_on(svc: Arc<ContentService>) {
    let u = user();
    for name in ["a.xml", "b.xml", "c.xml"] {
        svc.put_document(&u, name, "text/plain", xml("x"), None)
            .await
            .expect("put");
    }
    let r = svc.delete_key(&u, Some(30)).await.expect("delete key");
    assert_eq!(r.version, Some(4));
    assert_eq!(r.effective_by, Some(30));
    assert!(svc.list_key(&u).await.expect("list").is_none());
    assert!(svc.get_document(&u, "a.xml").await.expect("read").is_none());
    let r = svc
        .put_document(&u, "a.xml", "text/plain", xml("y"), None)
        .await
        .expect("put");
    assert_eq!(
        r.version,
        Some(5),
        "a re-provisioned key continues its version"
    );
    assert!(r.created);
}

#[tokio::test]
async fn feed_resumes_after_commit_and_waits_for_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(dir.path());
    let dev = device();
    for name in ["a.xml", "b.xml", "c.xml"] {
        svc.put_document(&dev, name, "text/plain", xml("x"), None)
            .await
            .expect("put");
    }
    let mut feed = InProcessFeed::new(Arc::clone(&svc), 0);
    let batch = feed.next_batch(2, Duration::ZERO).await.expect("batch");
    assert_eq!(batch.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(batch[1].key, dev);
    assert_eq!(batch[1].version, 2);
    feed.commit(2).await.expect("commit");
    let committed = feed.committed();
    assert_eq!(committed, 2);
    drop(feed);

    // A restarted consumer resumes after its committed offset.
    let mut feed = InProcessFeed::new(Arc::clone(&svc), committed);
    let batch = feed.next_batch(10, Duration::ZERO).await.expect("batch");
    assert_eq!(batch.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![3]);
    assert!(
        feed.next_batch(10, Duration::from_millis(20))
            .await
            .expect("empty")
            .is_empty()
    );

    // A waiting consumer wakes up on a write.
    let writer = Arc::clone(&svc);
    let waiter = tokio::spawn(async move {
        let batch = feed.next_batch(10, Duration::from_secs(10)).await;
        (feed, batch)
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    writer
        .put_document(&dev, "d.xml", "text/plain", xml("x"), Some(5))
        .await
        .expect("put");
    let (_feed, batch) = waiter.await.expect("join");
    let batch = batch.expect("batch");
    assert_eq!(batch.len(), 1);
    assert_eq!((batch[0].seq, batch[0].effective_by), (4, Some(5)));
}

#[tokio::test]
async fn feed_reports_gap_beyond_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = ContentConfig {
        change_log_retention: 2,
        ..config()
    };
    let svc = open_with(dir.path(), small);
    let dev = device();
    for _ in 0..5 {
        svc.put_document(&dev, "a.xml", "text/plain", xml("x"), None)
            .await
            .expect("put");
    }
    let mut feed = InProcessFeed::new(Arc::clone(&svc), 1);
    assert_eq!(
        feed.next_batch(10, Duration::ZERO).await,
        Err(FeedError::Gap {
            after: 1,
            resume_after: 5
        })
    );
    // After reconciling, the consumer continues after `resume_after`.
    feed.commit(5).await.expect("commit");
    assert!(
        feed.next_batch(10, Duration::ZERO)
            .await
            .expect("batch")
            .is_empty()
    );
    svc.put_document(&dev, "a.xml", "text/plain", xml("y"), None)
        .await
        .expect("put");
    let batch = feed.next_batch(10, Duration::ZERO).await.expect("batch");
    assert_eq!(batch.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![6]);
    assert_eq!(feed.committed(), 5);

    drop(feed);
    // Still-retained positions are fine.
    let mut feed = InProcessFeed::new(Arc::clone(&svc), 4);
    assert_eq!(
        feed.next_batch(10, Duration::ZERO)
            .await
            .expect("batch")
            .len(),
        2
    );
    // A retention change survives reopen through the journal.
    drop(feed);
    drop(svc);
    let svc = open_with(
        dir.path(),
        ContentConfig {
            change_log_retention: 2,
            ..config()
        },
    );
    assert!(svc.changes_after(3, 10).is_err());
    assert_eq!(svc.changes_after(4, 10).expect("retained").len(), 2);
}

#[tokio::test]
async fn changes_are_idempotent_by_id_and_versions_only_go_up() {
    on_both(idempotency_on).await;
}

async fn idempotency_on(svc: Arc<ContentService>) {
    let class = ProfileKey::class("acme", "Z100").expect("class");
    let first = svc
        .apply(&change(&class, "c1", Some(10), put_op("a.xml", "<v10/>")))
        .await
        .expect("apply");
    assert_eq!(first.status, WriteStatus::Applied);
    assert_eq!(first.version, Some(10));

    // A redelivery (same id) changes nothing and reports the version it produced.
    let again = svc
        .apply(&change(&class, "c1", Some(10), put_op("a.xml", "<v10/>")))
        .await
        .expect("apply");
    assert_eq!(again.status, WriteStatus::Duplicate);
    assert_eq!(again.version, Some(10));

    // A new change that does not raise the version is refused, and nothing is stored.
    for v in [10, 3] {
        let stale = svc
            .apply(&change(
                &class,
                &format!("old{v}"),
                Some(v),
                put_op("a.xml", "<old/>"),
            ))
            .await;
        match stale {
            Err(e @ ContentError::Stale { .. }) => assert_eq!(e.http_status(), 409),
            other => panic!("stale version {v} accepted: {other:?}"),
        }
    }
    let doc = svc
        .get_document(&class, "a.xml")
        .await
        .expect("read")
        .expect("doc");
    assert_eq!(doc.bytes, xml("<v10/>"));
    assert_eq!(doc.version, 10);
    // The producer's time is the document's last-modified.
    assert_eq!(doc.updated_unix, 1_700_000_000);

    // Version 0 on the wire (None here): the next one.
    let next = svc
        .apply(&change(&class, "c2", None, put_op("a.xml", "<v11/>")))
        .await
        .expect("apply");
    assert_eq!(next.version, Some(11));
    let del = svc
        .apply(&change(
            &class,
            "c3",
            None,
            ChangeOp::DeleteDocument {
                name: "zz.xml".into(),
            },
        ))
        .await;
    assert!(matches!(del, Err(ContentError::NotFound)), "{del:?}");
    assert_eq!(svc.key_version(&class).await.expect("version"), 11);
}

#[test]
fn config_parses_with_humantime_and_rejects_unknown_fields() {
    let cfg: ContentConfig = serde_json::from_str(
        r#"{"public_base_url": "https://p.example.net", "url_lifetime": "2days", "max_connections": 10}"#,
    )
    .expect("parse");
    assert_eq!(cfg.url_lifetime, Duration::from_secs(2 * 86400));
    assert_eq!(cfg.max_document_bytes, 1 << 20);
    assert!(serde_json::from_str::<ContentConfig>(r#"{"bogus": 1}"#).is_err());
    assert!(cfg.validate().is_ok());
    let bad = ContentConfig {
        public_base_url: "ftp://x".into(),
        ..ContentConfig::default()
    };
    assert!(bad.validate().is_err());
}

/// Two content nodes sharing one Redis: one prewarms and serves from its cache, the other
/// changes the document; the first never serves the old bytes after that.
#[tokio::test]
async fn prewarm_fills_the_cache_and_a_change_elsewhere_is_never_served_stale() {
    let redis = RedisServer::start();
    let rc = RedisConfig {
        urls: vec![redis.url()],
        ..RedisConfig::default()
    };
    let serving = ContentService::open_redis(&rc, config())
        .await
        .expect("open");
    let writer = ContentService::open_redis(&rc, config())
        .await
        .expect("open");
    let class = ProfileKey::class("acme", "Z100").expect("key");
    writer
        .put_document(&class, "fw.xml", "application/xml", xml("<v1/>"), None)
        .await
        .expect("put v1");
    let keys = [class.clone(), device()];
    assert_eq!(serving.prewarm(&keys).await.expect("prewarm"), 1);
    assert_eq!(
        serving.prewarm(&keys).await.expect("prewarm"),
        0,
        "already cached"
    );
    let doc = serving.get_document(&class, "fw.xml").await.expect("get");
    assert_eq!(doc.expect("exists").bytes, xml("<v1/>"));

    writer
        .put_document(&class, "fw.xml", "application/xml", xml("<v2/>"), None)
        .await
        .expect("put v2");
    let doc = serving.get_document(&class, "fw.xml").await.expect("get");
    assert_eq!(
        doc.expect("exists").bytes,
        xml("<v2/>"),
        "not the cached v1"
    );
    writer
        .delete_document(&class, "fw.xml", None)
        .await
        .expect("delete");
    assert!(
        serving
            .get_document(&class, "fw.xml")
            .await
            .expect("get")
            .is_none(),
        "a deleted document is gone, cached or not"
    );
}

#[tokio::test]
async fn prewarm_on_the_journal_backend_loads_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(dir.path());
    let class = ProfileKey::class("acme", "Z100").expect("key");
    svc.put_document(&class, "fw.xml", "application/xml", xml("<v1/>"), None)
        .await
        .expect("put");
    assert_eq!(svc.prewarm(&[class]).await.expect("prewarm"), 0);
}

#[tokio::test]
async fn a_key_holds_at_most_max_documents_per_key() {
    let cfg = || ContentConfig {
        max_documents_per_key: 2,
        ..config()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    at_most_two_documents_on(open_with(dir.path(), cfg())).await;
    let redis = RedisServer::start();
    let rc = RedisConfig {
        urls: vec![redis.url()],
        prefix: "cap".into(),
        ..RedisConfig::default()
    };
    let svc = ContentService::open_redis(&rc, cfg()).await.expect("redis");
    at_most_two_documents_on(svc).await;
}

async fn at_most_two_documents_on(svc: Arc<ContentService>) {
    let dev = device();
    let put = |name: &'static str| {
        let svc = Arc::clone(&svc);
        let dev = dev.clone();
        async move {
            svc.put_document(&dev, name, "application/xml", xml("<a/>"), None)
                .await
        }
    };
    put("a.xml").await.expect("first");
    put("b.xml").await.expect("second");
    let err = put("c.xml").await.expect_err("a third document is refused");
    assert_eq!(err.http_status(), 409, "{err}");
    assert_eq!(err.reason(), "too_many_documents");
    let listing = svc.list_key(&dev).await.expect("list").expect("key");
    assert_eq!(listing.documents.len(), 2, "nothing was stored");
    // Replacing a document it holds is not one more; after a delete there is room again.
    put("a.xml").await.expect("replace");
    svc.delete_document(&dev, "b.xml", None)
        .await
        .expect("delete");
    put("c.xml").await.expect("room again");
}

/// A deleted key is remembered only so long (embedded: while its delete is among the
/// retained changes; Redis: `tombstone_ttl`), and a key provisioned after that still never
/// repeats a version it had.
#[tokio::test]
async fn tombstones_are_forgotten_and_versions_never_go_back() {
    let u = user();
    let dev = device();
    let put = |svc: &Arc<ContentService>, key: &ProfileKey, body: &'static str| {
        let (svc, key) = (Arc::clone(svc), key.clone());
        async move {
            svc.put_document(&key, "a.xml", "text/plain", xml(body), None)
                .await
                .expect("put")
                .version
                .expect("version")
        }
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ContentConfig {
        change_log_retention: 2,
        ..config()
    };
    let svc = open_with(dir.path(), cfg.clone());
    put(&svc, &u, "1").await;
    put(&svc, &u, "2").await;
    assert_eq!(
        svc.delete_key(&u, None).await.expect("delete").version,
        Some(3)
    );
    assert_eq!(put(&svc, &dev, "1").await, 1, "nothing forgotten yet");
    let version = |svc: &Arc<ContentService>, key: &ProfileKey| {
        let (svc, key) = (Arc::clone(svc), key.clone());
        async move { svc.key_version(&key).await.expect("version") }
    };
    assert_eq!(version(&svc, &u).await, 3, "the tombstone is remembered");
    put(&svc, &dev, "2").await;
    assert_eq!(version(&svc, &u).await, 0, "and forgotten with its delete");
    drop(svc);
    // Reopened (replay), the tombstone is still gone and the floor still holds.
    let svc = open_with(dir.path(), cfg);
    assert_eq!(version(&svc, &u).await, 0, "still forgotten after replay");
    assert_eq!(
        put(&svc, &u, "3").await,
        4,
        "continues above the forgotten version 3"
    );

    let redis = RedisServer::start();
    let rc = RedisConfig {
        urls: vec![redis.url()],
        prefix: "tomb".into(),
        ..RedisConfig::default()
    };
    let cfg = ContentConfig {
        tombstone_ttl: Duration::from_secs(1),
        ..config()
    };
    let svc = ContentService::open_redis(&rc, cfg).await.expect("redis");
    let hash = format!("tomb:c:{{{u}}}");
    put(&svc, &u, "1").await;
    put(&svc, &u, "2").await;
    assert_eq!(
        redis.cli(&["TTL", &hash]).trim(),
        "-1",
        "a live key never expires"
    );
    svc.delete_key(&u, None).await.expect("delete");
    let ttl: i64 = redis.cli(&["TTL", &hash]).trim().parse().expect("ttl");
    assert!((0..=1).contains(&ttl), "the tombstone expires: {ttl}");
    assert_eq!(redis.cli(&["GET", "tomb:c-floor"]).trim(), "3");
    let mut waited = 0;
    while redis.cli(&["EXISTS", &hash]).trim() != "0" {
        assert!(waited < 100, "the tombstone did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(version(&svc, &u).await, 0, "forgotten once expired");
    assert_eq!(
        put(&svc, &u, "3").await,
        4,
        "continues above the expired version 3"
    );
    assert_eq!(
        redis.cli(&["TTL", &hash]).trim(),
        "-1",
        "live again: no expiry"
    );
    // Emptying one key and re-provisioning it before its tombstone expires keeps counting.
    svc.delete_key(&u, None).await.expect("delete");
    assert_eq!(put(&svc, &u, "4").await, 6);
    assert_eq!(redis.cli(&["TTL", &hash]).trim(), "-1");
}

/// The embedded store holds at most `max_keys` keys and `max_stored_bytes` of documents; a
/// write past either is refused with 507 and changes nothing.
#[tokio::test]
async fn the_embedded_store_is_bounded_in_keys_and_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open_with(
        dir.path(),
        ContentConfig {
            max_keys: 2,
            max_stored_bytes: 20,
            ..config()
        },
    );
    let put = |key: ProfileKey, name: &'static str, body: &'static str| {
        let svc = Arc::clone(&svc);
        async move {
            svc.put_document(&key, name, "text/plain", xml(body), None)
                .await
        }
    };
    let class = ProfileKey::class("acme", "Z100").expect("class");
    put(device(), "a.xml", "12345678").await.expect("first key");
    put(user(), "a.xml", "12345678").await.expect("second key");
    let err = put(class.clone(), "a.xml", "1")
        .await
        .expect_err("a third key");
    assert_eq!(
        (err.http_status(), err.reason()),
        (507, "store_full"),
        "{err}"
    );
    assert!(
        svc.list_key(&class).await.expect("list").is_none(),
        "nothing stored"
    );
    let other = ProfileKey::device("00df1e00aaaa").expect("key");
    let err = svc
        .set_default_user(&other, Some("sip:bob@example.com"), None)
        .await
        .expect_err("a default user makes a key too");
    assert_eq!(err.http_status(), 507, "{err}");

    let err = put(device(), "b.xml", "12345")
        .await
        .expect_err("past 20 bytes");
    assert_eq!(err.http_status(), 507, "{err}");
    assert!(err.to_string().contains("max_stored_bytes"), "{err}");
    put(device(), "a.xml", "123456789012")
        .await
        .expect("a replacement counts its growth only");
    put(device(), "b.xml", "1").await.expect_err("full again");

    svc.delete_key(&user(), None).await.expect("delete");
    put(class, "a.xml", "1")
        .await
        .expect("room for a key and its bytes again");
}

/// A Redis at `maxmemory` refuses the write; the tier answers 507 and nothing changed.
#[tokio::test]
async fn redis_out_of_memory_is_store_full_and_changes_nothing() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let rc = RedisConfig {
        urls: vec![redis.url()],
        prefix: "oom".into(),
        ..RedisConfig::default()
    };
    let cfg = ContentConfig {
        max_document_bytes: 1 << 20,
        ..config()
    };
    let svc = ContentService::open_redis(&rc, cfg).await.expect("redis");
    let body = Bytes::from(vec![b'x'; 512 << 10]);
    let mut refused = None;
    for i in 0..64u32 {
        let key = ProfileKey::device(&format!("00df1e00{i:04x}")).expect("key");
        match svc
            .put_document(&key, "big.xml", "text/plain", body.clone(), None)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                refused = Some((key, e));
                break;
            }
        }
    }
    let (key, err) = refused.expect("Redis refused a write within 32 MiB");
    assert_eq!(
        (err.http_status(), err.reason()),
        (507, "store_full"),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(
        svc.list_key(&key).await.expect("list").is_none(),
        "nothing stored"
    );
}

/// With signing keys, a resolve's URLs are signed until the RFC 4483 `expiration` it
/// carries, and the entity tag does not change with them.
#[tokio::test]
async fn resolved_urls_are_signed_until_their_expiration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("url-key");
    std::fs::write(&key, "a-secret-of-at-least-thirty-two-bytes\n").expect("write");
    let svc = open_with(
        &dir.path().join("data"),
        ContentConfig {
            url_signing_key_files: vec![key],
            url_lifetime: Duration::from_secs(600),
            ..config()
        },
    );
    let dev = device();
    svc.put_document(&dev, "a.xml", "application/xml", xml("<a/>"), None)
        .await
        .expect("put");
    let req = ResolveRequest {
        profile_type: ProfileType::Device,
        subject: dev.clone(),
        vendor: None,
        model: None,
        version: None,
    };
    let at_1000 = svc.resolve_at(&req, 1_000).await.expect("resolve");
    let at_2000 = svc.resolve_at(&req, 2_000).await.expect("resolve");
    let doc = &at_1000.documents[0];
    assert_eq!(doc.expires_unix, 1_600);
    assert!(
        doc.url.contains("?exp=1600&kid=") && doc.url.contains("&sig="),
        "{}",
        doc.url
    );
    assert_ne!(
        doc.url, at_2000.documents[0].url,
        "re-signed for the later expiry"
    );
    assert_eq!(at_1000.entity_tag(), at_2000.entity_tag());

    // A key file too short to be a secret is refused when the service opens.
    let short = dir.path().join("short");
    std::fs::write(&short, "short").expect("write");
    let err = ContentService::open(
        &dir.path().join("other"),
        ContentConfig {
            url_signing_key_files: vec![short],
            ..config()
        },
        JournalOptions::default(),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("at least 32"), "{err}");
}
