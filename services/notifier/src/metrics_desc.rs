//! Metric names and descriptions: the names dashboards and alerts rely on
//! (`deploy/grafana/`, `deploy/prometheus/`; `services/server/tests/dashboards.rs` fails when
//! they use a name the server does not expose).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub fn describe() {
    describe_counter!(
        "sip_messages_received_total",
        "SIP datagrams/messages received, by transport"
    );
    describe_counter!(
        "sip_requests_total",
        "New SIP requests (retransmissions excluded), by method"
    );
    describe_counter!(
        "sip_responses_sent_total",
        "Final responses to SUBSCRIBE, by status code"
    );
    describe_counter!(
        "sip_malformed_total",
        "Messages that could not be parsed, by transport"
    );
    describe_counter!(
        "sip_retransmissions_absorbed_total",
        "Request retransmissions absorbed or answered from the transaction cache"
    );
    describe_counter!(
        "sip_shed_total",
        "Work refused by reason: a full queue, a delay above notifier.shed_delay, a source over its rate or subscription cap"
    );
    describe_counter!(
        "sip_send_errors_total",
        "Messages that could not be sent, by transport and reason"
    );
    describe_counter!(
        "sip_tcp_connections_total",
        "TCP connections opened (accepted or dialled)"
    );
    describe_gauge!(
        "sip_server_transactions",
        "Server transactions held (incl. completed, for retransmission replay)"
    );
    describe_counter!(
        "notify_sent_total",
        "NOTIFY transactions started, by kind (initial, refresh, change, terminate)"
    );
    describe_counter!(
        "notify_completed_total",
        "NOTIFY transactions ended, by kind and outcome (2xx, failure, timeout)"
    );
    describe_counter!(
        "notify_retransmissions_total",
        "NOTIFY retransmissions (Timer E)"
    );
    describe_counter!(
        "check_sync_remembered_total",
        "Plug-and-play phones remembered as check-sync targets (one per Expires: 0 SUBSCRIBE of a device)"
    );
    describe_counter!(
        "check_sync_notifies_total",
        "Out-of-dialog check-sync NOTIFYs that ended, by outcome (2xx, failure, timeout, auth_failed; unroutable: not sent)"
    );
    describe_counter!(
        "check_sync_targets_total",
        "Check-sync records aimed at (set) or removed for (cleared) a resync target the operator set on a device"
    );
    describe_counter!(
        "check_sync_challenges_answered_total",
        "Digest challenges (401/407) to check-sync NOTIFYs answered with the operator's credentials"
    );
    describe_counter!(
        "check_sync_auth_failed_total",
        "Digest challenges to check-sync NOTIFYs not answered, by reason (no_credentials, credentials_refused, no_challenge, unanswerable)"
    );
    describe_counter!(
        "check_sync_forgotten_total",
        "Check-sync targets forgotten after notifier.pnp_remember without a new plug-and-play SUBSCRIBE"
    );
    describe_counter!(
        "notify_coalesced_total",
        "NOTIFYs merged into one already queued or in flight for the same dialog"
    );
    describe_gauge!("notify_in_flight", "NOTIFY client transactions in flight");
    describe_histogram!(
        "notify_round_trip_seconds",
        Unit::Seconds,
        "NOTIFY sent to final response (or timeout)"
    );
    describe_histogram!(
        "subscribe_handling_seconds",
        Unit::Seconds,
        "SUBSCRIBE received to final response ready"
    );
    describe_counter!("subscriptions_created_total", "Subscriptions created");
    describe_counter!(
        "subscriptions_removed_total",
        "Subscriptions removed, by reason (unsubscribed, expired, replaced, notify_failed)"
    );
    describe_counter!(
        "fanout_prewarm_total",
        "Prewarm requests to the content tier for the keys of a batch of changes, by outcome"
    );
    describe_counter!(
        "fanout_changes_total",
        "Change events consumed from the change feed"
    );
    describe_counter!(
        "fanout_notifies_total",
        "NOTIFYs caused by change events, by result (sent, unchanged, gone)"
    );
    describe_gauge!(
        "fanout_feed_offset",
        "Last change-feed position fully processed"
    );
    describe_counter!(
        "store_errors_total",
        "Subscription store errors, by operation"
    );
    describe_gauge!(
        "notifier_subscriptions_held",
        "Subscriptions in the store partitions this node owns (sampled every 5 s; the tier's \
         total is the sum over nodes)"
    );
    describe_gauge!(
        "notifier_partitions_owned",
        "Store partitions whose timed duties (expiry, fan-out) this node holds: its Redis \
         leases, or 1 for the embedded store"
    );
    describe_gauge!(
        "notifier_notifies_inflight",
        "NOTIFY client transactions in flight, by priority (first, change, background: the \
         pipeline queue it left from; subscribe: the answer to a SUBSCRIBE; terminal)"
    );
    describe_counter!(
        "sip_merged_requests_total",
        "Requests answered 482 as a merged copy of a transaction already in progress \
         (RFC 3261 §8.2.2.2)"
    );
    describe_counter!(
        "notify_bodiless_total",
        "NOTIFYs answering a SUBSCRIBE sent without documents because no fetch credit was \
         at hand (the URL-bearing one follows through the pipeline)"
    );
    describe_counter!(
        "notify_retries_total",
        "NOTIFYs queued again with back-off after a 5xx, 408 or 486"
    );
    describe_counter!(
        "sip_auth_total",
        "Digest authentications of SUBSCRIBE, by result (ok, bad_response, unknown_user)"
    );
    describe_counter!(
        "sip_tls_handshake_failures_total",
        "SIP-over-TLS connections closed because the handshake failed or timed out"
    );
    describe_counter!(
        "notify_flow_gone_total",
        "NOTIFYs of a TCP dialog whose connection had closed, sent over a new connection to \
         the source host at the Contact's port"
    );
    describe_counter!(
        "notify_udp_oversize_total",
        "NOTIFYs over notifier.udp_max_notify_bytes even pointing at the documents, sent \
         over TCP instead"
    );
    describe_counter!(
        "notify_turns_taken_over_total",
        "Dialog NOTIFY turns taken from a node that left the registry (Redis store)"
    );
    describe_counter!(
        "store_replication_shortfalls_total",
        "Redis writes that reached fewer replicas than configured within the WAIT timeout \
         (answered as store unavailable)"
    );
    describe_counter!(
        "dns_lookups_total",
        "Next-hop DNS lookups, by outcome (resolved, stale, failed)"
    );
    describe_counter!(
        "fanout_jobs_recorded_total",
        "Fan-out jobs recorded durably in the store for change events"
    );
    describe_counter!(
        "fanout_jobs_total",
        "Fan-out jobs ended, by result (done, superseded, abandoned)"
    );
    describe_gauge!(
        "fanout_walks_running",
        "Fan-out walks (one changed key in one partition) in progress"
    );
    describe_gauge!(
        "pipeline_queue_depth",
        "NOTIFY wants queued in the pipeline, by priority"
    );
    describe_gauge!(
        "pipeline_queue_age_seconds",
        Unit::Seconds,
        "Age of the oldest want in each pipeline queue, by priority"
    );
    describe_histogram!(
        "pipeline_wait_seconds",
        Unit::Seconds,
        "Time a want waited in the pipeline before its delivery started, by priority"
    );
    describe_gauge!(
        "pipeline_credits",
        "Fetch credits at hand for NOTIFYs that point phones at documents (-1: unlimited)"
    );
    describe_gauge!(
        "pipeline_first_pressure",
        "How far the first-NOTIFY queue runs over its age bound (0: it keeps up); that \
         share of new SUBSCRIBEs is refused with 503"
    );
    describe_gauge!(
        "ownership_live_nodes",
        "Notifier nodes in the registry at this node's last heartbeat"
    );
    describe_counter!(
        "ownership_changes_total",
        "Partition leases acquired or released by this node"
    );
}
