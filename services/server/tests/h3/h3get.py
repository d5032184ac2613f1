"""HTTP/3 GET with aioquic (an HTTP/3 stack this project did not write).

    h3get.py URL --ca CA.pem [--cert C.pem --key K.pem] [--head] [-H 'Name: value'] ...

Prints one JSON object: the status, the response headers (lower-cased names; repeated
ones joined by ", ") and the body (text) and its length. Exit 0 whenever a response came
back, 2 when none did (handshake refused, timeout).
"""

import argparse
import asyncio
import json
import ssl
import sys
from urllib.parse import urlparse

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiters = {}
        self.responses = {}
        self.closed = None

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            self.closed = event
            for w in self.waiters.values():
                if not w.done():
                    w.set_exception(ConnectionError(f"connection closed: {event.reason_phrase}"))
            return
        for ev in self.h3.handle_event(event):
            r = self.responses.setdefault(ev.stream_id, {"headers": [], "body": b""})
            if isinstance(ev, HeadersReceived):
                r["headers"].extend(ev.headers)
            elif isinstance(ev, DataReceived):
                r["body"] += ev.data
            if getattr(ev, "stream_ended", False):
                w = self.waiters.get(ev.stream_id)
                if w and not w.done():
                    w.set_result(r)

    async def request(self, method, url, headers):
        u = urlparse(url)
        path = u.path + (f"?{u.query}" if u.query else "")
        sid = self._quic.get_next_available_stream_id()
        hs = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", u.netloc.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"aioquic-h3get"),
        ] + [(k.lower().encode(), v.encode()) for k, v in headers]
        self.h3.send_headers(stream_id=sid, headers=hs, end_stream=True)
        fut = asyncio.get_running_loop().create_future()
        self.waiters[sid] = fut
        self.transmit()
        return await fut


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--head", action="store_true")
    ap.add_argument("-H", dest="headers", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()
    u = urlparse(args.url)
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    cfg.verify_mode = ssl.CERT_REQUIRED
    cfg.load_verify_locations(args.ca)
    cfg.server_name = u.hostname
    if args.cert:
        cfg.load_cert_chain(args.cert, args.key)
    headers = [tuple(x.strip() for x in h.split(":", 1)) for h in args.headers]
    try:
        async with connect(
            u.hostname, u.port or 443, configuration=cfg, create_protocol=Client
        ) as client:
            r = await asyncio.wait_for(
                client.request("HEAD" if args.head else "GET", args.url, headers),
                args.timeout,
            )
    except (ConnectionError, asyncio.TimeoutError, OSError) as e:
        print(json.dumps({"error": str(e) or type(e).__name__}))
        sys.exit(2)
    out = {}
    for k, v in r["headers"]:
        k, v = k.decode(), v.decode()
        out[k] = f"{out[k]}, {v}" if k in out else v
    print(
        json.dumps(
            {
                "status": int(out.pop(":status")),
                "headers": out,
                "body": r["body"].decode("utf-8", "replace"),
                "length": len(r["body"]),
            }
        )
    )


asyncio.run(main())
