"""A plug-and-play phone on its LAN: sends one SUBSCRIBE to the SIP multicast group, as
phones do at boot, answers the NOTIFY that comes back, and prints what it got as JSON.

    phone.py GROUP PORT LOCAL_IP MAC VENDOR MODEL
"""

import json
import socket
import sys
import time

group, port, local, mac, vendor, model = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((local, 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
lport = s.getsockname()[1]
uri = f"sip:MAC%3a{mac}@{group}"
msg = (
    f"SUBSCRIBE {uri} SIP/2.0\r\n"
    f"Via: SIP/2.0/UDP {local}:{lport};branch=z9hG4bKpnp{mac};rport\r\n"
    f"Max-Forwards: 70\r\nFrom: <{uri}>;tag=pnp{mac}\r\nTo: <{uri}>\r\n"
    f"Call-ID: pnp-{mac}@{local}\r\nCSeq: 1 SUBSCRIBE\r\n"
    f"Contact: <sip:{mac}@{local}:{lport}>\r\n"
    f'Event: ua-profile;profile-type="device";vendor="{vendor}";model="{model}";version="1.0"\r\n'
    "Accept: application/url\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n"
)
s.sendto(msg.encode(), (group, port))
out = {}
s.settimeout(1.0)
deadline = time.time() + 15
while time.time() < deadline and not ("status" in out and "notify_body" in out):
    try:
        data, src = s.recvfrom(65535)
    except socket.timeout:
        if "status" not in out:
            s.sendto(msg.encode(), (group, port))  # Timer E, roughly
        continue
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if lines[0].startswith("SIP/2.0 "):
        out["status"] = int(lines[0].split()[1])
        out["response_from"] = src[0]
    elif lines[0].startswith("NOTIFY "):
        out["notify_from"] = src[0]
        out["notify_body"] = body
        keep = [l for l in lines[1:] if l.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        s.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode(), src)
print(json.dumps(out))
