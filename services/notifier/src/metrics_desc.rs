//! Metric names and descriptions: the names dashboards and alerts rely on.

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
    describe_counter!(
        "fanout_shards_reconciled_total",
        "Shards taken over behind the feed and reconciled against current content"
    );
    describe_gauge!(
        "ownership_partitions",
        "Store partitions whose lease this node holds (Redis store)"
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
