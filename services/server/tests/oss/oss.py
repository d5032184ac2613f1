#!/usr/bin/env python3
"""An OSS-side Kafka client for the tests, written against the published schema only.

It compiles proto/uaprof/events/v1/events.proto with grpc_tools (protoc) at start, then
either produces change events or dumps a topic, with confluent-kafka (its own librdkafka).

    oss.py produce BROKERS TOPIC < actions.json      one JSON action per line, see below
    oss.py dump BROKERS TOPIC COUNT TIMEOUT_S        prints COUNT records as JSON lines

Actions (one JSON object per line):
    {"change_id": "...", "class": ["acme", "Z100"] | "device": "00:11:..." | "user": "...",
     "version": 7, "put": {"name": "a.xml", "content_type": "application/xml",
     "content": "<a/>"} | "delete_document": "a.xml" | "delete_key": true
     | "default_user": "sip:..." | "resync": {"contact": "sip:...", "event": "...",
     "username": "...", "password": "..."} (null or {} clears),
     "effective_by": 30, "rollout_window": 60, "producer": "oss", "record_key": "...",
     "traceparent": "00-...-01", "signing_key": "<secret>"}   signing_key: HMAC-SHA256 the value
                                                              into header uaprof-signature
    {"raw": "<hex bytes>", "record_key": "class/acme:Z100"}      a record that is no event
"""

import hashlib
import hmac
import json
import os
import sys
import tempfile
import time


def load_schema():
    from grpc_tools import protoc

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(os.path.join(here, "..", "..", "..", "..", "proto"))
    out = tempfile.mkdtemp(prefix="uaprof-pb-")
    rc = protoc.main(["protoc", f"-I{root}", f"--python_out={out}",
                      os.path.join(root, "uaprof/events/v1/events.proto")])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    from uaprof.events.v1 import events_pb2  # noqa: E402
    return events_pb2


def canonical_key(a):
    if "class" in a:
        return "class/%s:%s" % tuple(a["class"])
    if "device" in a:
        hexdigits = "".join(c for c in a["device"].lower() if c in "0123456789abcdef")
        return "device/mac:" + hexdigits[-12:]
    if "user" in a:
        user, host = a["user"].removeprefix("sip:").rsplit("@", 1)
        return f"user/{user}@{host.lower()}"
    return "local-network/" + a["local_network"].lower()


def build(pb, a):
    ev = pb.ProfileChange(change_id=a["change_id"], version=a.get("version", 0),
                          producer=a.get("producer", "oss-test"),
                          occurred_unix_ms=int(time.time() * 1000))
    if "class" in a:
        ev.key.device_class.vendor, ev.key.device_class.model = a["class"]
    elif "device" in a:
        ev.key.device = a["device"]
    elif "user" in a:
        ev.key.user = a["user"]
    else:
        ev.key.local_network = a["local_network"]
    if "put" in a:
        p = a["put"]
        ev.put_document.name = p["name"]
        ev.put_document.content_type = p["content_type"]
        ev.put_document.content = p["content"].encode()
    elif "delete_document" in a:
        ev.delete_document.name = a["delete_document"]
    elif "delete_key" in a:
        ev.delete_key.SetInParent()
    elif "default_user" in a:
        ev.set_default_user.user = a["default_user"]
    elif "resync" in a:
        r = a["resync"] or {}
        ev.set_resync.SetInParent()
        for field in ("contact", "event", "username", "password"):
            if field in r:
                setattr(ev.set_resync, field, r[field])
    if "effective_by" in a:
        ev.effective_by_seconds = a["effective_by"]
    if "rollout_window" in a:
        ev.rollout_window_seconds = a["rollout_window"]
    return ev.SerializeToString()


def produce(brokers, topic):
    from confluent_kafka import Producer

    pb = load_schema()
    p = Producer({"bootstrap.servers": brokers, "partitioner": "murmur2_random",
                  "enable.idempotence": True, "linger.ms": 5,
                  "message.timeout.ms": 60000})
    results = []

    def report(err, msg):
        results.append({"error": str(err) if err else None,
                        "partition": msg.partition(), "offset": msg.offset()})

    n = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        a = json.loads(line)
        if "raw" in a:
            key, value = a["record_key"], bytes.fromhex(a["raw"])
        else:
            key, value = a.get("record_key") or canonical_key(a), build(pb, a)
        headers = [("traceparent", a["traceparent"].encode())] if "traceparent" in a else []
        if "signing_key" in a:
            sig = hmac.new(a["signing_key"].encode(), value, hashlib.sha256).hexdigest()
            headers.append(("uaprof-signature", sig.encode()))
        headers = headers or None
        p.produce(topic, key=key.encode(), value=value, headers=headers, on_delivery=report)
        p.poll(0)
        n += 1
    left = p.flush(60)
    for r in results:
        print(json.dumps(r))
    if left or len(results) != n or any(r["error"] for r in results):
        sys.exit(f"not every record was delivered: {left} left, {results}")


def dump(brokers, topic, count, timeout_s):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": "dump-%d" % os.getpid(),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = 0
    deadline = time.time() + timeout_s
    while got < count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        headers = {k: (v.decode(errors="replace") if v is not None else None)
                   for k, v in (m.headers() or [])}
        print(json.dumps({"key": (m.key() or b"").decode(errors="replace"),
                          "value_hex": (m.value() or b"").hex(),
                          "partition": m.partition(), "offset": m.offset(),
                          "timestamp_ms": m.timestamp()[1],
                          "headers": headers}), flush=True)
        got += 1
    c.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "produce":
        produce(sys.argv[2], sys.argv[3])
    elif cmd == "dump":
        dump(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(f"unknown command {cmd}")
