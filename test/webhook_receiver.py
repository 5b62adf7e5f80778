#!/usr/bin/env python3
"""webhook_receiver.py: a webhook target for test/integration/webhooks.sh (Python standard library only).

Listens on 127.0.0.1:PORT (HTTPS with --cert/--key), checks each POST's
Sipauthd-Signature the way a customer would (HMAC-SHA256 keyed with the
secret read from --secret-file at each request, over "<t>.<body>", compared
in constant time, t within 300 s of the clock) and appends one JSON line per
request to --out:
  {"n": 1, "at": 1775731200.5, "answered": 500, "sig_ok": true, "path": "/hook", "event": "...",
   "delivery": "dlv_...", "body": {...}}
It answers 500 to the first --fail-first requests (to make the sender
retry), 400 to a bad signature, else 204.
"""

import argparse
import hashlib
import hmac
import http.server
import json
import ssl
import sys
import threading
import time


def signature_ok(header, body, secret):
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > 300:
        return False
    want = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts.get("v1", ""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--secret-file", required=True)
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args()
    lock = threading.Lock()
    seen = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                secret = open(args.secret_file).read().strip()
            except OSError:
                secret = ""
            ok = bool(secret) and signature_ok(self.headers.get("Sipauthd-Signature", ""), body, secret)
            with lock:
                seen[0] += 1
                n = seen[0]
                status = 500 if n <= args.fail_first else (204 if ok else 400)
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
                with open(args.out, "a") as f:
                    f.write(json.dumps({"n": n, "at": time.time(), "answered": status, "sig_ok": ok, "path": self.path,
                                        "event": self.headers.get("Sipauthd-Event"),
                                        "delivery": self.headers.get("Sipauthd-Delivery"),
                                        "content_type": self.headers.get("Content-Type"),
                                        "body": parsed}) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("listening", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
