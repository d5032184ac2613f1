//! The gRPC seam against a real server on 127.0.0.1:0 over a real `ContentService`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use content::{ContentConfig, ContentService, JournalOptions};
use content_rpc::proto::content_tier_client::ContentTierClient;
use content_rpc::{
    CONNECT_TIMEOUT, REQUEST_TIMEOUT, RemoteContent, RemoteCredits, RemoteFeed, proto,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uaprof_api::{
    Accrual, ChangeSource, ContentResolver, CreditSource, FeedError, ProfileKey, ProfileType,
    ResolveError, ResolveRequest,
};

/// Upper bound for any call against a dead tier: connect timeout plus request deadline, and
/// slack for a loaded CI machine. Only guards against hangs; nothing asserts it is tight.
const DEAD_TIER_BOUND: Duration = Duration::from_secs(20);

struct Tier {
    svc: Arc<ContentService>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Tier {
    async fn start() -> Self {
        Self::start_with(ContentConfig::default()).await
    }

    async fn start_with(config: ContentConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = JournalOptions {
            fsync: false,
            ..JournalOptions::default()
        };
        let config = ContentConfig {
            public_base_url: "http://profiles.example.net/".into(),
            host_for_content_id: "profiles.example.net".into(),
            ..config
        };
        let svc = ContentService::open(dir.path(), config, opts).expect("open");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(content_rpc::serve(
            listener,
            Arc::clone(&svc),
            shutdown.clone(),
        ));
        Self {
            svc,
            addr,
            shutdown,
            server,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn remote(&self) -> RemoteContent {
        RemoteContent::new(&self.endpoint()).expect("client")
    }

    async fn raw(&self) -> ContentTierClient<tonic::transport::Channel> {
        ContentTierClient::connect(self.endpoint())
            .await
            .expect("connect")
    }

    async fn stop(self) -> Arc<ContentService> {
        self.shutdown.cancel();
        tokio::time::timeout(DEAD_TIER_BOUND, self.server)
            .await
            .expect("server stops in time")
            .expect("join")
            .expect("serve");
        self.svc
    }
}

/// Awaits a call against a dead tier, failing the test if the client's timeouts do not end it.
async fn bounded<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEAD_TIER_BOUND, call)
        .await
        .expect("bounded by the client's timeouts")
}

fn device() -> ProfileKey {
    ProfileKey::device("00:DF:1E:00:4C:D0").expect("key")
}

fn class() -> ProfileKey {
    ProfileKey::class("acme", "Z100").expect("key")
}

fn user() -> ProfileKey {
    ProfileKey::user("sip:alice@example.com").expect("key")
}

fn device_request(subject: ProfileKey) -> ResolveRequest {
    ResolveRequest {
        profile_type: ProfileType::Device,
        subject,
        vendor: Some("acme".into()),
        model: Some("Z100".into()),
        version: Some("1.0".into()),
    }
}

async fn put(svc: &ContentService, key: &ProfileKey, name: &str, body: &'static str) -> u64 {
    svc.put_document(
        key,
        name,
        "application/xml",
        Bytes::from_static(body.as_bytes()),
        Some(7),
    )
    .await
    .expect("put")
    .seq
    .expect("the journal backend numbers its changes")
}

/// Resolves remotely between two in-process resolves; when those agree (the wall clock did
/// not cross a second, which moves `expires_unix`), the remote answer must equal them.
async fn assert_same_resolution(
    svc: &ContentService,
    remote: &RemoteContent,
    req: &ResolveRequest,
) {
    for _ in 0..3 {
        let before = svc.resolve(req).await.expect("in-process");
        let over_grpc = remote.resolve(req).await.expect("remote");
        let after = svc.resolve(req).await.expect("in-process");
        if before == after {
            assert_eq!(over_grpc, before);
            return;
        }
    }
    panic!("the wall clock kept crossing seconds");
}

#[tokio::test]
async fn resolve_over_grpc_equals_in_process() {
    let tier = Tier::start().await;
    let svc = &tier.svc;
    put(svc, &device(), "device.xml", "<d/>").await;
    put(svc, &class(), "firmware.xml", "<f/>").await;
    put(svc, &user(), "user.xml", "<u/>").await;
    svc.set_default_user(&device(), Some("sip:alice@example.com"), None)
        .await
        .expect("attributes");
    let remote = tier.remote();

    let req = device_request(device());
    let res = remote.resolve(&req).await.expect("resolve");
    assert!(res.known);
    assert_eq!(res.depends_on, vec![device(), class(), user()]);
    let owners: Vec<_> = res.documents.iter().map(|d| d.owner.clone()).collect();
    assert_eq!(owners, vec![device(), user(), class()]);
    assert_same_resolution(svc, &remote, &req).await;

    // An unknown device, a request without vendor/model, a user and a mismatched subject.
    let unknown = ProfileKey::device("00:00:00:00:00:01").expect("key");
    let user_req = ResolveRequest {
        profile_type: ProfileType::User,
        subject: user(),
        vendor: None,
        model: None,
        version: None,
    };
    let mismatched = ResolveRequest {
        profile_type: ProfileType::LocalNetwork,
        ..device_request(device())
    };
    for req in [
        device_request(unknown),
        ResolveRequest {
            vendor: None,
            model: None,
            ..device_request(device())
        },
        user_req,
        mismatched,
    ] {
        assert_same_resolution(svc, &remote, &req).await;
    }
    tier.stop().await;
}

#[tokio::test]
async fn document_bytes_round_trip() {
    let tier = Tier::start().await;
    put(&tier.svc, &device(), "a.xml", "<a>bytes</a>").await;
    let remote = tier.remote();
    assert_eq!(
        remote.document_bytes(&device(), "a.xml").await,
        Ok(Some(b"<a>bytes</a>".to_vec()))
    );
    assert_eq!(remote.document_bytes(&device(), "b.xml").await, Ok(None));
    assert_eq!(remote.document_bytes(&class(), "a.xml").await, Ok(None));

    // An empty document is present, not absent.
    tier.svc
        .put_document(&device(), "empty.txt", "text/plain", Bytes::new(), None)
        .await
        .expect("put");
    assert_eq!(
        remote.document_bytes(&device(), "empty.txt").await,
        Ok(Some(Vec::new()))
    );
    tier.stop().await;
}

#[tokio::test]
async fn a_change_during_a_long_poll_ends_it() {
    let tier = Tier::start().await;
    let first = put(&tier.svc, &device(), "a.xml", "<a/>").await;
    let mut feed = RemoteFeed::new(tier.remote(), first);
    let waiter = tokio::spawn(async move {
        let batch = feed.next_batch(10, Duration::from_secs(20)).await;
        (feed, batch)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "the poll waits for a change");
    let seq = put(&tier.svc, &class(), "b.xml", "<b/>").await;
    let (mut feed, batch) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the change ends the poll well before its wait")
        .expect("join");
    let batch = batch.expect("batch");
    assert_eq!(batch.len(), 1);
    assert_eq!(
        (batch[0].seq, &batch[0].key, batch[0].effective_by),
        (seq, &class(), Some(7))
    );
    assert_eq!(
        batch[0].version,
        tier.svc.key_version(&class()).await.expect("version")
    );
    assert_eq!(feed.position(), seq);
    assert_eq!(feed.tier_last_seq(), seq);

    // Commit records the position; it does not move the read position back or forward.
    assert_eq!(feed.committed(), first);
    feed.commit(seq).await.expect("commit");
    feed.commit(first).await.expect("commit");
    assert_eq!((feed.committed(), feed.position()), (seq, seq));

    // Batches are bounded by max and continue where the last one ended.
    let mut seqs = Vec::new();
    for i in 0..3 {
        seqs.push(put(&tier.svc, &device(), &format!("n{i}.xml"), "<n/>").await);
    }
    let a = feed.next_batch(2, Duration::ZERO).await.expect("batch");
    let b = feed.next_batch(2, Duration::ZERO).await.expect("batch");
    assert_eq!(a.iter().map(|c| c.seq).collect::<Vec<_>>(), seqs[..2]);
    assert_eq!(b.iter().map(|c| c.seq).collect::<Vec<_>>(), seqs[2..]);
    tier.stop().await;
}

#[tokio::test]
async fn a_poll_with_nothing_new_returns_empty_after_its_wait() {
    let tier = Tier::start().await;
    let seq = put(&tier.svc, &device(), "a.xml", "<a/>").await;
    let mut feed = RemoteFeed::new(tier.remote(), seq);
    let started = Instant::now();
    let batch = feed
        .next_batch(10, Duration::from_millis(300))
        .await
        .expect("poll");
    assert!(batch.is_empty());
    // Loose: it did wait rather than return at once.
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!((feed.position(), feed.tier_last_seq()), (seq, seq));
    assert_eq!(
        feed.next_batch(0, Duration::from_secs(10)).await,
        Ok(vec![])
    );

    // The raw RPC: max 0 answers at once with the tier's position.
    let reply = tier
        .raw()
        .await
        .changes(proto::ChangesRequest {
            after: 0,
            max: 0,
            wait_ms: 10_000,
        })
        .await
        .expect("changes")
        .into_inner();
    assert!(reply.changes.is_empty() && reply.gap.is_none());
    assert_eq!(reply.last_seq, seq);
    tier.stop().await;
}

#[tokio::test]
async fn a_position_no_longer_retained_is_a_gap() {
    let tier = Tier::start_with(ContentConfig {
        change_log_retention: 2,
        ..ContentConfig::default()
    })
    .await;
    for _ in 0..5 {
        put(&tier.svc, &device(), "a.xml", "<a/>").await;
    }
    let mut feed = RemoteFeed::new(tier.remote(), 1);
    assert_eq!(
        feed.next_batch(10, Duration::from_secs(5)).await,
        Err(FeedError::Gap {
            after: 1,
            resume_after: 5
        })
    );
    // As in-process: the read position jumps past the gap, the commit does not.
    assert_eq!((feed.position(), feed.committed()), (5, 1));
    assert_eq!(feed.next_batch(10, Duration::ZERO).await, Ok(vec![]));
    let seq = put(&tier.svc, &device(), "a.xml", "<a/>").await;
    let batch = feed.next_batch(10, Duration::ZERO).await.expect("batch");
    assert_eq!(batch.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![seq]);

    // A position beyond the tier's newest (its store was replaced) is a gap too.
    let mut ahead = RemoteFeed::new(tier.remote(), 100);
    assert_eq!(
        ahead.next_batch(10, Duration::ZERO).await,
        Err(FeedError::Gap {
            after: 100,
            resume_after: seq
        })
    );
    assert_eq!(ahead.position(), seq);
    tier.stop().await;
}

#[tokio::test]
async fn prewarm_reaches_the_tier() {
    let tier = Tier::start().await;
    put(&tier.svc, &class(), "fw.xml", "<fw/>").await;
    // The journal backend serves from memory: nothing to load, and that is an answer.
    assert_eq!(tier.remote().prewarm(&[class(), device()]).await, Ok(0));
    tier.stop().await;
}

#[tokio::test]
async fn invalid_keys_from_the_wire_are_invalid_argument() {
    let tier = Tier::start().await;
    let mut raw = tier.raw().await;
    let resolve = |subject: &str, profile_type: proto::ProfileType| proto::ResolveRequest {
        profile_type: profile_type.into(),
        subject: subject.to_owned(),
        vendor: None,
        model: None,
        version: None,
    };
    let device_type = proto::ProfileType::Device;
    for (request, mentions) in [
        (resolve("device/nonsense", device_type), "invalid device id"),
        (resolve("mac:00df1e004cd0", device_type), "<kind>/<id>"),
        (resolve("printer/x", device_type), "unknown key kind"),
        (
            resolve("device/00:DF:1E:00:4C:D0", device_type),
            "canonical",
        ),
        (
            resolve("device/mac:00df1e004cd0", proto::ProfileType::Unspecified),
            "profile_type",
        ),
    ] {
        let status = raw.resolve(request).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(mentions), "{status:?}");
    }
    let status = raw
        .document_bytes(proto::DocumentRequest {
            owner: "user/no-at-sign".into(),
            name: "a.xml".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("owner: "), "{status:?}");
    let status = raw
        .prewarm(proto::PrewarmRequest {
            keys: vec!["class/acme:Z100".into(), "device/nonsense".into()],
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("keys: "), "{status:?}");

    // The server is unharmed.
    let ok = raw
        .resolve(resolve("device/mac:00df1e004cd0", device_type))
        .await
        .expect("valid request")
        .into_inner();
    assert_eq!(ok.depends_on, vec!["device/mac:00df1e004cd0".to_owned()]);
    tier.stop().await;
}

#[tokio::test]
async fn a_stopped_tier_is_unavailable_not_a_hang() {
    let tier = Tier::start().await;
    let seq = put(&tier.svc, &device(), "a.xml", "<a/>").await;
    let remote = tier.remote();
    let mut feed = RemoteFeed::new(remote.clone(), seq);
    // Connected and working first, so the failure below is a broken connection.
    remote
        .resolve(&device_request(device()))
        .await
        .expect("resolve");
    // A poll waiting when the tier shuts down ends at once, empty.
    let waiter = tokio::spawn(async move {
        let batch = feed.next_batch(10, Duration::from_secs(25)).await;
        (feed, batch)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    tier.stop().await;
    let (mut feed, batch) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("shutdown ends the poll")
        .expect("join");
    assert_eq!(batch, Ok(vec![]));

    let resolved = bounded(remote.resolve(&device_request(device()))).await;
    assert!(
        matches!(&resolved, Err(ResolveError::Unavailable(m)) if m.contains("Resolve")),
        "{resolved:?}"
    );
    let bytes = bounded(remote.document_bytes(&device(), "a.xml")).await;
    assert!(
        matches!(&bytes, Err(ResolveError::Unavailable(m)) if m.contains("DocumentBytes")),
        "{bytes:?}"
    );
    let polled = bounded(feed.next_batch(10, Duration::from_secs(1))).await;
    assert!(
        matches!(&polled, Err(FeedError::Unavailable(m)) if m.contains("Changes")),
        "{polled:?}"
    );
    assert_eq!(feed.position(), seq, "a failed poll does not move the feed");
}

#[tokio::test]
async fn a_tier_that_never_listened_is_unavailable() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let remote = RemoteContent::new(&format!("http://{addr}")).expect("client");
    let started = Instant::now();
    let resolved = remote.resolve(&device_request(device())).await;
    assert!(
        matches!(&resolved, Err(ResolveError::Unavailable(_))),
        "{resolved:?}"
    );
    let polled = RemoteFeed::new(remote, 0)
        .next_batch(1, Duration::from_secs(1))
        .await;
    assert!(
        matches!(polled, Err(FeedError::Unavailable(_))),
        "{polled:?}"
    );
    assert!(started.elapsed() < 2 * (CONNECT_TIMEOUT + REQUEST_TIMEOUT));
}

#[tokio::test]
async fn a_tier_that_accepts_but_never_answers_times_out() {
    // The kernel completes the handshake into the backlog; nobody ever reads.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let remote = RemoteContent::new(&endpoint).expect("client");
    let request = device_request(device());
    let mut feed = RemoteFeed::new(remote.clone(), 0);
    // Concurrently: each waits out its own deadline.
    let (resolved, polled) = tokio::join!(
        bounded(remote.resolve(&request)),
        bounded(feed.next_batch(1, Duration::from_millis(100))),
    );
    assert!(
        matches!(&resolved, Err(ResolveError::Unavailable(m)) if m.contains("Timeout")),
        "{resolved:?}"
    );
    assert!(
        matches!(polled, Err(FeedError::Unavailable(_))),
        "{polled:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn endpoints_are_checked() {
    for bad in [
        "127.0.0.1:50051",
        "https://127.0.0.1:50051",
        "http://127.0.0.1:50051/prefix",
        "http://",
        "not a uri",
    ] {
        let err = RemoteContent::new(bad).expect_err(bad);
        assert!(err.contains("endpoint"), "{err}");
    }
    let ok = RemoteContent::new("http://content.example.net:50051").expect("valid");
    assert_eq!(ok.endpoint(), "http://content.example.net:50051");
}

#[test]
fn creating_a_client_outside_a_runtime_is_an_error_not_a_panic() {
    let err = RemoteContent::new("http://127.0.0.1:50051").expect_err("no runtime");
    assert!(err.contains("Tokio runtime"), "{err}");
}

/// Polls `check` every 50 ms until it holds, failing after `DEAD_TIER_BOUND`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEAD_TIER_BOUND;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn credits_are_split_across_nodes_and_fall_back_to_the_static_rate_when_lost() {
    const FALLBACK: f64 = 7.0;
    let tier = Tier::start_with(ContentConfig {
        max_fetch_rate: Some(1000),
        ..ContentConfig::default()
    })
    .await;
    let stop = CancellationToken::new();
    let a = RemoteCredits::start(tier.remote(), "a".into(), FALLBACK, stop.clone());
    let b = RemoteCredits::start(tier.remote(), "b".into(), FALLBACK, stop.clone());
    a.demand(500);
    b.demand(500);
    let granted = |c: &RemoteCredits| c.rate().is_some_and(|r| r != FALLBACK);
    eventually("both nodes draw grants", || granted(&a) && granted(&b)).await;
    // Both report their demand every tick; once the broker has seen both, the shares are
    // even and together stay within what the ceiling grants.
    eventually("the grant is split evenly", || {
        let (ra, rb) = (a.rate().unwrap_or(0.0), b.rate().unwrap_or(0.0));
        ra > 0.0 && rb > 0.0 && (ra - rb).abs() <= 0.1 * (ra + rb)
    })
    .await;
    let total = a.rate().unwrap_or(0.0) + b.rate().unwrap_or(0.0);
    assert!(
        total <= 1000.0,
        "granted {total}/s against a ceiling of 1000/s"
    );
    // Credits arrive, not only a rate.
    let mut got = 0.0;
    eventually("credits accrue", || {
        if let Accrual::Credits(c) = a.accrue(Instant::now()) {
            got += c;
        }
        got >= 1.0
    })
    .await;

    // The tier goes away: each node falls back to its static budget and keeps going.
    tier.stop().await;
    eventually("the nodes fall back", || {
        a.rate() == Some(FALLBACK) && b.rate() == Some(FALLBACK)
    })
    .await;
    stop.cancel();
}
