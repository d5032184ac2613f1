//! The server side: [`ContentTierService`] answers `uaprof.content.v1` from the
//! [`ContentService`] in this process; [`serve`] runs it on a listener.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use content::ContentService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};
use uaprof_api::FeedError;

use crate::MAX_CHANGES_WAIT;
use crate::convert::{self, WireError};
use crate::credits::Broker;
use crate::proto;
use crate::proto::content_tier_server::{ContentTier, ContentTierServer};
use crate::telemetry::{self as m, count};

/// Most changes in one `Changes` reply: keys are at most a few hundred bytes, so a full reply
/// stays around 1 MiB, well under the 4 MiB a default gRPC client accepts.
const MAX_CHANGES_PER_REPLY: usize = 4096;
/// Long-polls allowed to wait at once. Each notifier node keeps one; this many means a
/// misbehaving client, and each waiter holds a task and a watch receiver, so further polls
/// are refused (`RESOURCE_EXHAUSTED`) rather than queued.
const MAX_WAITING_POLLS: usize = 1024;
/// Concurrent streams per HTTP/2 connection. Resolves finish in microseconds, so this only
/// bounds a client that floods one connection; it waits for stream credit, it is not failed.
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// HTTP/2 pings on idle connections find notifier nodes that vanished without a FIN, so their
/// connections (and any waiting long-poll) do not linger.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`serve`] waits for open requests after shutdown is signalled. Long-polls end at
/// once on shutdown and the other calls are short, so this only cuts off a stuck client.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Pause after an accept error (typically EMFILE) so the accept loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The `ContentTier` gRPC service over one [`ContentService`]. Cheap to clone.
#[derive(Clone)]
pub struct ContentTierService {
    content: Arc<ContentService>,
    /// Ends waiting long-polls (with an empty reply) so a shutdown need not wait for them.
    shutdown: CancellationToken,
    waiting_polls: Arc<Semaphore>,
    credits: Arc<Broker>,
}

impl std::fmt::Debug for ContentTierService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentTierService")
            .field(
                "waiting_polls",
                &(MAX_WAITING_POLLS - self.waiting_polls.available_permits()),
            )
            .finish_non_exhaustive()
    }
}

/// The service, ready to add to a tonic [`Server`]. Its long-polls end only when their wait
/// does (at most [`MAX_CHANGES_WAIT`]); use [`service_with_shutdown`] to end them at once on
/// shutdown.
pub fn service(content: Arc<ContentService>) -> ContentTierServer<ContentTierService> {
    service_with_shutdown(content, CancellationToken::new())
}

/// Like [`service`], but waiting long-polls return an empty batch as soon as `shutdown` is
/// cancelled, so a graceful server shutdown is not held up by them.
pub fn service_with_shutdown(
    content: Arc<ContentService>,
    shutdown: CancellationToken,
) -> ContentTierServer<ContentTierService> {
    let credits = Broker::start(Arc::clone(content.admission()), shutdown.clone());
    ContentTierServer::new(ContentTierService {
        content,
        shutdown,
        waiting_polls: Arc::new(Semaphore::new(MAX_WAITING_POLLS)),
        credits,
    })
}

/// Serves `uaprof.content.v1` (HTTP/2, no TLS) on `listener` until `shutdown` is cancelled,
/// then stops accepting, ends waiting long-polls and lets open requests finish (for at most
/// 10 s).
pub async fn serve(
    listener: TcpListener,
    content: Arc<ContentService>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "content gRPC listening");
    }
    let incoming = TcpListenerStream::new(listener).then(|accepted| async move {
        match &accepted {
            Ok(stream) => {
                // Small request/response pairs: Nagle would add a delayed-ACK stall to each.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "gRPC accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
        accepted
    });
    let server = Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(service_with_shutdown(content, shutdown.clone()))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let mut server = std::pin::pin!(server);
    tokio::select! {
        r = server.as_mut() => return r.map_err(io::Error::other),
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(DRAIN_GRACE, server).await {
        Ok(r) => r.map_err(io::Error::other),
        Err(_elapsed) => {
            tracing::warn!("gRPC requests still open after the drain grace period");
            Ok(())
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn invalid(method: &'static str, e: &WireError) -> Status {
    count(method, m::OUTCOME_INVALID_ARGUMENT);
    tracing::debug!(method, error = %e, "gRPC request refused");
    Status::invalid_argument(e.to_string())
}

fn unavailable(method: &'static str, e: &content::ContentError) -> Status {
    count(method, m::OUTCOME_ERROR);
    tracing::warn!(method, error = %e, "content store failed");
    Status::unavailable(e.to_string())
}

/// Counts a waiting long-poll in the gauge for as long as it holds its permit.
struct Waiting {
    _permit: OwnedSemaphorePermit,
}

impl Waiting {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(m::RPC_CHANGES_WAITING).increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!(m::RPC_CHANGES_WAITING).decrement(1.0);
    }
}

impl ContentTierService {
    fn changes_reply(
        &self,
        changes: &[uaprof_api::ProfileChange],
        gap: Option<proto::Gap>,
        newest: u64,
    ) -> Response<proto::ChangesReply> {
        let outcome = match (&gap, changes.is_empty()) {
            (Some(_), _) => m::OUTCOME_GAP,
            (None, true) => m::OUTCOME_EMPTY,
            (None, false) => m::OUTCOME_OK,
        };
        count(m::METHOD_CHANGES, outcome);
        // The store applies a write before the watch announces it, so a batch may run ahead
        // of the watch by a moment; never report a last_seq below what the reply contains.
        let last_seq = self.content.last_seq().max(newest);
        Response::new(proto::ChangesReply {
            changes: changes.iter().map(convert::change_to_wire).collect(),
            gap,
            last_seq,
        })
    }
}

#[tonic::async_trait]
impl ContentTier for ContentTierService {
    type CreditsStream = ReceiverStream<Result<proto::CreditGrant, Status>>;

    async fn credits(
        &self,
        request: Request<Streaming<proto::CreditDemand>>,
    ) -> Result<Response<Self::CreditsStream>, Status> {
        count(m::METHOD_CREDITS, m::OUTCOME_OK);
        Ok(Response::new(ReceiverStream::new(
            self.credits.attach(request.into_inner()),
        )))
    }

    async fn resolve(
        &self,
        request: Request<proto::ResolveRequest>,
    ) -> Result<Response<proto::Resolution>, Status> {
        let request = convert::resolve_request_from_wire(request.into_inner())
            .map_err(|e| invalid(m::METHOD_RESOLVE, &e))?;
        // As the in-process `ContentResolver` impl does: the wall clock of the content tier.
        let resolution = self
            .content
            .resolve_at(&request, unix_now())
            .await
            .map_err(|e| unavailable(m::METHOD_RESOLVE, &e))?;
        count(m::METHOD_RESOLVE, m::OUTCOME_OK);
        Ok(Response::new(convert::resolution_to_wire(&resolution)))
    }

    async fn document_bytes(
        &self,
        request: Request<proto::DocumentRequest>,
    ) -> Result<Response<proto::DocumentReply>, Status> {
        let request = request.into_inner();
        let owner = convert::parse_key("owner", &request.owner)
            .map_err(|e| invalid(m::METHOD_DOCUMENT_BYTES, &e))?;
        let content = self
            .content
            .get_document(&owner, &request.name)
            .await
            .map_err(|e| unavailable(m::METHOD_DOCUMENT_BYTES, &e))?
            .map(|d| d.bytes);
        let outcome = if content.is_some() {
            m::OUTCOME_OK
        } else {
            m::OUTCOME_NOT_FOUND
        };
        count(m::METHOD_DOCUMENT_BYTES, outcome);
        Ok(Response::new(proto::DocumentReply { content }))
    }

    async fn prewarm(
        &self,
        request: Request<proto::PrewarmRequest>,
    ) -> Result<Response<proto::PrewarmReply>, Status> {
        let keys = request
            .into_inner()
            .keys
            .iter()
            .map(|k| convert::parse_key("keys", k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(m::METHOD_PREWARM, &e))?;
        let loaded = self
            .content
            .prewarm(&keys)
            .await
            .map_err(|e| unavailable(m::METHOD_PREWARM, &e))?;
        count(m::METHOD_PREWARM, m::OUTCOME_OK);
        Ok(Response::new(proto::PrewarmReply {
            loaded: u32::try_from(loaded).unwrap_or(u32::MAX),
        }))
    }

    async fn changes(
        &self,
        request: Request<proto::ChangesRequest>,
    ) -> Result<Response<proto::ChangesReply>, Status> {
        let request = request.into_inner();
        let after = request.after;
        let max = usize::try_from(request.max)
            .unwrap_or(usize::MAX)
            .min(MAX_CHANGES_PER_REPLY);
        let wait = Duration::from_millis(request.wait_ms.into()).min(MAX_CHANGES_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.content.subscribe_changes();
        let mut waiting = None;
        loop {
            // Mark the current value seen before reading, so a write landing between the
            // read and the wait still wakes us (as `InProcessFeed` does).
            changes.borrow_and_update();
            match self.content.changes_after(after, max) {
                Ok(batch) => {
                    if let Some(last) = batch.last() {
                        return Ok(self.changes_reply(&batch, None, last.seq));
                    }
                    if max == 0 {
                        return Ok(self.changes_reply(&[], None, 0));
                    }
                }
                Err(FeedError::Gap {
                    after,
                    resume_after,
                }) => {
                    let gap = proto::Gap {
                        after,
                        resume_after,
                    };
                    return Ok(self.changes_reply(&[], Some(gap), resume_after));
                }
                Err(e) => {
                    count(m::METHOD_CHANGES, m::OUTCOME_ERROR);
                    return Err(Status::unavailable(e.to_string()));
                }
            }
            if waiting.is_none() {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(self.changes_reply(&[], None, 0));
                }
                match Arc::clone(&self.waiting_polls).try_acquire_owned() {
                    Ok(permit) => waiting = Some(Waiting::new(permit)),
                    Err(_) => {
                        count(m::METHOD_CHANGES, m::OUTCOME_OVERLOADED);
                        return Err(Status::resource_exhausted(format!(
                            "content tier overloaded: {MAX_WAITING_POLLS} change polls already \
                             waiting"
                        )));
                    }
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(self.changes_reply(&[], None, 0)),
                woke = tokio::time::timeout_at(deadline, changes.changed()) => match woke {
                    Err(_elapsed) => return Ok(self.changes_reply(&[], None, 0)),
                    Ok(Err(_closed)) => {
                        count(m::METHOD_CHANGES, m::OUTCOME_ERROR);
                        return Err(Status::unavailable("content service closed"));
                    }
                    Ok(Ok(())) => {}
                },
            }
        }
    }
}
