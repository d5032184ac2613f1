//! The client side: [`RemoteContent`] and [`RemoteFeed`], the notifier's view of a content
//! tier in another process.
//!
//! Every failure is retryable from the notifier's point of view, so errors are mapped onto
//! the seams' retryable variants: `RESOURCE_EXHAUSTED` (the tier shedding load) becomes
//! [`ResolveError::Overloaded`]; `INVALID_ARGUMENT` and a reply that does not decode (the
//! same request fails the same way again) become [`ResolveError::Invalid`]; everything else
//! (connection refused or reset, deadline exceeded, `UNAVAILABLE`, ...) becomes
//! [`ResolveError::Unavailable`] or
//! [`FeedError::Unavailable`] with a message naming the method, the endpoint and the cause.
//! `UNAVAILABLE` is not treated as overload: it is what a refused connection looks like.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use uaprof_api::{
    ChangeSource, ContentResolver, FeedError, ProfileChange, ProfileKey, Resolution, ResolveError,
    ResolveRequest,
};

use crate::MAX_CHANGES_WAIT;
use crate::convert;
use crate::proto;
use crate::proto::content_tier_client::ContentTierClient;

/// Longest time to set up a connection to the content tier. A subscriber waits on it, so a
/// black-holed tier must fail fast (into a 5xx with Retry-After), not after TCP's minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of one `Resolve` or `DocumentBytes` call, sent as `grpc-timeout` and enforced
/// locally too: well above a healthy tier's milliseconds, well below a SIP transaction's 32 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// What a `Changes` call gets beyond the wait it asks for: a round trip plus a busy server.
const POLL_MARGIN: Duration = Duration::from_secs(5);
/// Largest reply accepted: a document of the largest size a tier can be configured to store,
/// plus framing (tonic's default of 4 MiB would refuse legitimate large documents).
const MAX_REPLY_BYTES: usize = content::MAX_DOCUMENT_BYTES_CEILING + (64 << 10);

/// A content tier reached over gRPC. Cheap to clone: clones share one HTTP/2 connection,
/// which is opened on first use and re-opened after a failure.
#[derive(Clone)]
pub struct RemoteContent {
    client: ContentTierClient<Channel>,
    endpoint: Arc<str>,
}

impl std::fmt::Debug for RemoteContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteContent")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RemoteContent {
    /// A client for the tier at `endpoint` (`http://host:port`; TLS is not supported yet).
    /// Does not connect: the first call does. Must be called within a Tokio runtime, which
    /// runs the connection.
    pub fn new(endpoint: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid content tier endpoint {endpoint:?}: {why}");
        let ep = Endpoint::from_shared(endpoint.to_owned()).map_err(|e| bad(&e.to_string()))?;
        let uri = ep.uri();
        if uri.scheme_str() != Some("http") {
            return Err(bad("expected http://host:port"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("a path or query is not allowed"));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(format!(
                "content tier client for {endpoint:?} must be created within a Tokio runtime"
            ));
        }
        let channel = ep.connect_timeout(CONNECT_TIMEOUT).connect_lazy();
        Ok(Self {
            client: ContentTierClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES),
            endpoint: endpoint.into(),
        })
    }

    /// The endpoint this client was created for.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// "`method` at `endpoint`: code: message: cause", for error messages.
    fn describe(&self, method: &str, status: &Status) -> String {
        let mut text = format!("{method} at {}: {:?}", self.endpoint, status.code());
        if !status.message().is_empty() {
            text.push_str(": ");
            text.push_str(status.message());
        }
        // Transport errors repeat themselves down the chain ("tcp connect error: tcp connect
        // error: ..."); keep each distinct cause once.
        let mut source = status.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }

    fn resolve_error(&self, method: &str, status: &Status) -> ResolveError {
        let text = self.describe(method, status);
        tracing::debug!(error = %text, "content tier call failed");
        match status.code() {
            Code::ResourceExhausted => ResolveError::Overloaded,
            Code::InvalidArgument => ResolveError::Invalid(text),
            _ => ResolveError::Unavailable(text),
        }
    }
}

fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

impl RemoteContent {
    /// Opens the `Credits` stream: `demand` goes up, grants come back.
    pub(crate) async fn credits(
        &self,
        demand: impl tokio_stream::Stream<Item = proto::CreditDemand> + Send + 'static,
    ) -> Result<tonic::Streaming<proto::CreditGrant>, Status> {
        self.client
            .clone()
            .credits(Request::new(demand))
            .await
            .map(tonic::Response::into_inner)
    }
}

#[async_trait]
impl ContentResolver for RemoteContent {
    async fn resolve(&self, request: &ResolveRequest) -> Result<Resolution, ResolveError> {
        const METHOD: &str = "Resolve";
        let message = convert::resolve_request_to_wire(request);
        let reply = self
            .client
            .clone()
            .resolve(with_timeout(message, REQUEST_TIMEOUT))
            .await
            .map_err(|s| self.resolve_error(METHOD, &s))?;
        // A reply this build cannot use comes back the same on every retry.
        convert::resolution_from_wire(reply.into_inner()).map_err(|e| {
            ResolveError::Invalid(format!(
                "{METHOD} at {}: malformed reply: {e}",
                self.endpoint
            ))
        })
    }

    async fn document_bytes(
        &self,
        owner: &ProfileKey,
        name: &str,
    ) -> Result<Option<Vec<u8>>, ResolveError> {
        let message = proto::DocumentRequest {
            owner: owner.to_string(),
            name: name.to_owned(),
        };
        let reply = self
            .client
            .clone()
            .document_bytes(with_timeout(message, REQUEST_TIMEOUT))
            .await
            .map_err(|s| self.resolve_error("DocumentBytes", &s))?;
        Ok(reply.into_inner().content.map(Vec::from))
    }

    async fn prewarm(&self, keys: &[ProfileKey]) -> Result<usize, ResolveError> {
        let message = proto::PrewarmRequest {
            keys: keys.iter().map(ToString::to_string).collect(),
        };
        let reply = self
            .client
            .clone()
            .prewarm(with_timeout(message, REQUEST_TIMEOUT))
            .await
            .map_err(|s| self.resolve_error("Prewarm", &s))?;
        Ok(reply.into_inner().loaded as usize)
    }
}

/// The content tier's change feed over gRPC, as a long-poll from the consumer's position.
///
/// Like [`content::InProcessFeed`], it keeps no state on the tier: the consumer persists
/// its committed seq in its own store and passes it back as `start_after` after a restart.
/// [`ChangeSource::commit`] only records the committed seq here; the read position moves
/// with the batches handed out (and jumps to `resume_after` on a gap), not with commits.
#[derive(Debug)]
pub struct RemoteFeed {
    client: RemoteContent,
    position: u64,
    committed: u64,
    tier_last_seq: u64,
}

impl RemoteFeed {
    /// A feed delivering changes with seq greater than `start_after` (the consumer's last
    /// committed seq, 0 for "from the beginning").
    pub fn new(client: RemoteContent, start_after: u64) -> Self {
        Self {
            client,
            position: start_after,
            committed: start_after,
            tier_last_seq: 0,
        }
    }

    /// The highest seq committed so far.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Seq of the last change handed out (or skipped over by a gap).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The tier's newest seq as of the last successful poll (0 before the first); with
    /// [`Self::position`] it gives the consumer's lag.
    pub fn tier_last_seq(&self) -> u64 {
        self.tier_last_seq
    }

    fn unavailable(&self, status: &Status) -> FeedError {
        let text = self.client.describe("Changes", status);
        tracing::debug!(error = %text, "content tier poll failed");
        FeedError::Unavailable(text)
    }
}

#[async_trait]
impl ChangeSource for RemoteFeed {
    /// Long-polls the tier; `wait` is capped at [`MAX_CHANGES_WAIT`], and the call as a whole
    /// at that wait plus a margin, so a dead tier costs at most one bounded wait.
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ProfileChange>, FeedError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let wait = wait.min(MAX_CHANGES_WAIT);
        // The server never returns more than it was asked for, so capping here keeps the
        // reply check below exact.
        let max = max.min(u32::MAX as usize);
        let message = proto::ChangesRequest {
            after: self.position,
            max: u32::try_from(max).unwrap_or(u32::MAX),
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
        };
        let reply = self
            .client
            .client
            .clone()
            .changes(with_timeout(message, wait + POLL_MARGIN))
            .await
            .map_err(|s| self.unavailable(&s))?
            .into_inner();
        if let Some(gap) = reply.gap {
            // The consumer reconciles against current content, which covers everything up
            // to `resume_after`; continue after it (as `InProcessFeed` does).
            self.tier_last_seq = reply.last_seq;
            self.position = gap.resume_after;
            return Err(FeedError::Gap {
                after: gap.after,
                resume_after: gap.resume_after,
            });
        }
        let batch = convert::changes_from_wire(reply.changes, self.position, max).map_err(|e| {
            FeedError::Unavailable(format!(
                "Changes at {}: malformed reply: {e}",
                self.client.endpoint
            ))
        })?;
        self.tier_last_seq = reply.last_seq;
        if let Some(last) = batch.last() {
            self.position = last.seq;
        }
        Ok(batch)
    }

    async fn commit(&mut self, seq: u64) -> Result<(), FeedError> {
        self.committed = self.committed.max(seq);
        Ok(())
    }
}
