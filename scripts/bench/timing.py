#!/usr/bin/env python3
"""scripts/bench/timing.py: can the time of a 401 tell unknown trunk, unknown user and wrong
password apart? (issue 10, item 8). Python standard library only. Where sipauthctl can rotate
(issue 15), a fourth case: a wrong password for a credential in a rotation's overlap (whose
answers are checked against two passwords).

Starts sipauthd on a store of its own (one trunk, one credential), then, round-robin so that
drift hits every case alike (in a shuffled order each round), answers a fresh challenge wrongly in each of the three ways and
times the answer (send -> 401 received) on loopback. Prints the median and 10th/90th
percentiles per case and, for each pair, the Mann-Whitney U test's |z| (above ~3: the two
can be told apart). Usage:
  scripts/bench/timing.py [--tries N] [--sipauthd PATH] [--sipauthctl PATH]
"""
import argparse
import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
DOMAIN = "sip.tryvox.io"


def freeport():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def ctl(args, binary, store, stdin=None):
    return subprocess.run([binary, "--store", store] + args, input=stdin, capture_output=True, text=True,
                          check=True).stdout.strip()


def setup(tmp, sipauthctl):
    store = os.path.join(tmp, "store")
    ctl(["init", "--domain", DOMAIN], sipauthctl, store)
    acc = ctl(["account", "create", "--name", "timing"], sipauthctl, store)
    trunk = ctl(["trunk", "create", "--account", acc, "--name", "timing"], sipauthctl, store)
    ctl(["credential", "create", "--trunk", trunk, "--username", "pbx-timing", "--password-stdin"], sipauthctl,
        store, stdin="timing_password_123\n")
    out = ctl(["credential", "create", "--trunk", trunk, "--username", "pbx-rotated", "--password-stdin"], sipauthctl,
              store, stdin="timing_password_123\n")
    try:
        ctl(["credential", "rotate", "--trunk", trunk, "--id", json.loads(out)["id"], "--password-stdin",
             "--overlap-seconds", "86400"], sipauthctl, store, stdin="timing_password_456\n")
        rotated = True
    except subprocess.CalledProcessError:   # a sipauthctl from before rotation
        rotated = False
    return store, trunk, rotated


def start(tmp, sipauthd, store, port):
    conf = os.path.join(tmp, "sipauthd.conf")
    with open(conf, "w") as f:
        f.write(f"[sip]\nlisten = udp:127.0.0.1:{port}\ndomain = {DOMAIN}\n[upstream]\n"
                f"gateway = udp:127.0.0.2:{freeport()}\ntrusted = 127.0.0.2/32\n[auth]\nalgorithms = MD5\n"
                f"[store]\npath = {store}\n[abuse]\nmax_failures = 0\n[log]\nlevel = info\n")
    log = open(os.path.join(tmp, "sipauthd.log"), "w")
    proc = subprocess.Popen([sipauthd, "--config", conf], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        time.sleep(0.05)
        if "event=started" in open(os.path.join(tmp, "sipauthd.log")).read():
            return proc
    proc.kill()
    raise SystemExit("sipauthd did not start: see " + log.name)


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def register(sock, server, host, n, auth=""):
    ip, port = sock.getsockname()
    lines = [f"REGISTER sip:{host} SIP/2.0", f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
             "Max-Forwards: 70", f"From: <sip:t@{host}>;tag=t{n}", f"To: <sip:t@{host}>",
             f"Call-ID: timing-{n}", f"CSeq: {2 if auth else 1} REGISTER", f"Contact: <sip:t@{ip}:{port}>"]
    if auth:
        lines.append(auth)
    lines.append("Content-Length: 0")
    sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), server)


def recv(sock):
    data, _ = sock.recvfrom(65535)
    return data.decode(errors="replace")


def one_try(sock, server, host, user, n):
    register(sock, server, host, n)
    ch = recv(sock)
    realm = re.search(r'realm="([^"]*)"', ch).group(1)
    nonce = re.search(r'nonce="([^"]*)"', ch).group(1)
    uri = f"sip:{host}"
    # a well-formed answer with the wrong password: what a guesser sends
    ha1 = md5(f"{user}:{realm}:not_the_password")
    resp = md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{md5('REGISTER:' + uri)}")
    auth = (f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"')
    t0 = time.perf_counter_ns()
    register(sock, server, host, n, auth)
    answer = recv(sock)
    t1 = time.perf_counter_ns()
    if not answer.startswith("SIP/2.0 401"):
        raise SystemExit("unexpected answer: " + answer.split("\r\n", 1)[0])
    return (t1 - t0) / 1000.0


def mann_whitney_z(a, b):
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks, i = [0.0] * len(pooled), 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2.0 + 1
        i = j + 1
    r1 = sum(r for r, (_, g) in zip(ranks, pooled) if g == 0)
    n1, n2 = len(a), len(b)
    u = r1 - n1 * (n1 + 1) / 2.0
    return (u - n1 * n2 / 2.0) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)


def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, int(p * len(s)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tries", type=int, default=1000)
    ap.add_argument("--sipauthd", default=os.path.join(TOP, "daemon", "sipauthd"))
    ap.add_argument("--sipauthctl", default=os.path.join(TOP, "daemon", "sipauthctl"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sipauthd-timing.")
    proc = None
    try:
        store, trunk, rotated = setup(tmp, a.sipauthctl)
        port = freeport()
        proc = start(tmp, a.sipauthd, store, port)
        server = ("127.0.0.1", port)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        known = f"trunk-{trunk}.{DOMAIN}"
        # an unknown trunk id of the real one's length and alphabet, as a guesser would send
        other = "trunk_" + "".join(random.Random(7).choice("abcdefghijklmnopqrstuvwxyz0123456789")
                                   for _ in range(len(trunk) - len("trunk_")))
        cases = {"unknown trunk": (f"trunk-{other}.{DOMAIN}", "pbx-timing"),
                 "unknown user": (known, "pbx-nobody"),
                 "wrong password": (known, "pbx-timing")}
        if rotated:
            cases["wrong, rotated"] = (known, "pbx-rotated")
        times = {c: [] for c in cases}
        for n in range(50):   # warm up
            for host, user in cases.values():
                one_try(sock, server, host, user, n)
        rng = random.Random(1)
        for n in range(a.tries):
            order = list(cases.items())
            rng.shuffle(order)   # no case always follows the same one
            for c, (host, user) in order:
                times[c].append(one_try(sock, server, host, user, 1000 + n))
        rows = {c: {"median_us": round(pct(v, 0.5), 1), "p10_us": round(pct(v, 0.1), 1),
                    "p90_us": round(pct(v, 0.9), 1)} for c, v in times.items()}
        names = list(cases)
        pairs = {f"{x} / {y}": round(abs(mann_whitney_z(times[x], times[y])), 2)
                 for i, x in enumerate(names) for y in names[i + 1:]}
        print(f"tries per case: {a.tries}  (send -> 401 received, loopback, microseconds)")
        for c, r in rows.items():
            print(f"  {c:15s} median {r['median_us']:8.1f}   p10 {r['p10_us']:8.1f}   p90 {r['p90_us']:8.1f}")
        for p, z in pairs.items():
            print(f"  Mann-Whitney |z| {p}: {z}")
        print(json.dumps({"cases": rows, "abs_z": pairs}))
    finally:
        if proc:
            proc.terminate()
            proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
