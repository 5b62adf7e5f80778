#!/usr/bin/env python3
"""scripts/bench/stall.py: does API work hold up SIP? (issue 10, item 16). Python standard library only.

Starts sipauthd on a store of its own on a real disk (--dir, default /var/tmp: fsync costs what
it costs there) with --creds credentials in one trunk, then times authenticated REGISTERs
(challenge + answer, which writes the binding) from a PBX every --gap ms in three phases:
  idle      nothing else
  big-gets  --getters clients GET the trunk's whole credential list, again and again
  creates   --creators clients POST new credentials (each one fsynced), again and again
and prints, per phase, the REGISTERs' p50/p99/max round trip and how many went unanswered
within 2 s, with the API requests' own times. Run it against two builds to compare:
  scripts/bench/stall.py [--sipauthd PATH] [--creds 20000] [--seconds 10]
The credentials are made with test/durability_writer (built by `make check`).
"""
import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import timing  # noqa: E402  (store set-up)

PASSWORD = "timing_password_123"


def start(tmp, sipauthd, store, port, api_port):
    conf = os.path.join(tmp, "sipauthd.conf")
    with open(conf, "w") as f:
        f.write(f"[sip]\nlisten = udp:127.0.0.1:{port}\ndomain = {timing.DOMAIN}\n[upstream]\n"
                f"gateway = udp:127.0.0.2:{timing.freeport()}\ntrusted = 127.0.0.2/32\n[auth]\nalgorithms = MD5\n"
                f"[store]\npath = {store}\n[api]\nlisten = 127.0.0.1:{api_port}\nmax_connections = 64\n"
                f"[abuse]\nmax_failures = 0\n[log]\nlevel = warning\n")
    log = open(os.path.join(tmp, "sipauthd.log"), "w")
    proc = subprocess.Popen([sipauthd, "--config", conf], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        time.sleep(0.05)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=1).read()
            return proc
        except OSError:
            pass
    proc.kill()
    raise SystemExit("sipauthd did not start: see " + log.name)


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def register_once(sock, server, host, n):
    """Challenge and answer; the round trip of both, in ms, or None when an answer is missing."""
    t0 = time.perf_counter()
    timing.register(sock, server, host, n)
    try:
        ch = timing.recv(sock)
        realm = re.search(r'realm="([^"]*)"', ch).group(1)
        nonce = re.search(r'nonce="([^"]*)"', ch).group(1)
        uri = f"sip:{host}"
        ha1 = md5(f"pbx-timing:{realm}:{PASSWORD}")
        resp = md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{md5('REGISTER:' + uri)}")
        auth = (f'Authorization: Digest username="pbx-timing", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                f'response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"')
        timing.register(sock, server, host, n, auth)
        answer = timing.recv(sock)
    except socket.timeout:
        return None
    if not answer.startswith("SIP/2.0 200"):
        raise SystemExit("unexpected answer: " + answer.split("\r\n", 1)[0])
    return (time.perf_counter() - t0) * 1000.0


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else float("nan")


class Load:
    """Clients calling fn in a loop until stopped; each call's time in ms."""

    def __init__(self, n, fn):
        self.stop = threading.Event()
        self.times = []
        self.errors = 0
        self.threads = [threading.Thread(target=self.run, args=(fn, i)) for i in range(n)]
        for t in self.threads:
            t.start()

    def run(self, fn, i):
        k = 0
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                fn(i, k)
                self.times.append((time.perf_counter() - t0) * 1000.0)
            except OSError:
                self.errors += 1
            k += 1

    def end(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def setup(tmp, sipauthctl):
    """A store with an account, its API key, one trunk and the PBX's credential."""
    store = os.path.join(tmp, "store")
    timing.ctl(["init", "--domain", timing.DOMAIN], sipauthctl, store)
    acc = timing.ctl(["account", "create", "--name", "stall"], sipauthctl, store)
    key = timing.ctl(["apikey", "create", "--account", acc], sipauthctl, store)
    trunk = timing.ctl(["trunk", "create", "--account", acc, "--name", "stall"], sipauthctl, store)
    timing.ctl(["credential", "create", "--trunk", trunk, "--username", "pbx-timing", "--password-stdin"],
               sipauthctl, store, stdin=PASSWORD + "\n")
    return store, acc, key, trunk


def api(base, key, method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=body,
                                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


def phase(name, a, server, host, load=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    rtts, lost, n = [], 0, 0
    end = time.perf_counter() + a.seconds
    while time.perf_counter() < end:
        n += 1
        r = register_once(sock, server, host, f"{name}-{n}-{secrets.token_hex(3)}")
        if r is None:
            lost += 1
        else:
            rtts.append(r)
        time.sleep(a.gap / 1000.0)
    sock.close()
    if load:
        load.end()
    api_part = ""
    if load:
        api_part = (f"  API: {len(load.times)} answered (p50 {pct(load.times, 50):.0f} ms, max "
                    f"{max(load.times) if load.times else float('nan'):.0f} ms), {load.errors} failed")
    print(f"{name:9s} REGISTER x{len(rtts) + lost}: p50 {pct(rtts, 50):6.2f} ms  p99 {pct(rtts, 99):7.2f} ms  "
          f"max {max(rtts) if rtts else float('nan'):7.2f} ms  unanswered {lost}{api_part}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sipauthd", default=os.path.join(TOP, "daemon", "sipauthd"))
    ap.add_argument("--sipauthctl", default=os.path.join(TOP, "daemon", "sipauthctl"))
    ap.add_argument("--writer", default=os.path.join(TOP, "test", "durability_writer"))
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--creds", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--gap", type=float, default=20.0, help="ms between REGISTERs")
    ap.add_argument("--getters", type=int, default=8)
    ap.add_argument("--creators", type=int, default=4)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="sipauth-stall.", dir=a.dir)
    proc = None
    try:
        store, acc, key, trunk = setup(tmp, a.sipauthctl)
        t0 = time.time()
        subprocess.run([a.writer, store, trunk, str(a.creds)], stdout=subprocess.DEVNULL, check=True)
        print(f"store on {a.dir}: {a.creds} credentials made in {time.time() - t0:.1f} s; sipauthd {a.sipauthd}")
        port, api_port = timing.freeport(), timing.freeport()
        proc = start(tmp, a.sipauthd, store, port, api_port)
        base = f"http://127.0.0.1:{api_port}"
        server, host = ("127.0.0.1", port), f"trunk-{trunk}.{timing.DOMAIN}"
        creds = f"/v1/account/{acc}/trunks/{trunk}/credentials"

        phase("idle", a, server, host)
        phase("big-gets", a, server, host, Load(a.getters, lambda i, k: api(base, key, "GET", creds)))

        def create(i, k):
            body = json.dumps({"username": f"stall-{i}-{k}", "password": "stall_password_0123"}).encode()
            api(base, key, "POST", creds, body)
        phase("creates", a, server, host, Load(a.creators, create))
    finally:
        if proc:
            proc.terminate()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
