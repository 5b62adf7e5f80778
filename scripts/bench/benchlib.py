#!/usr/bin/env python3
"""Helpers for scripts/bench/run (Python standard library only).

  benchlib.py freeport ADDR             a port free for UDP and TCP on ADDR
  benchlib.py tree PID                  PID and all its descendants, one per line
  benchlib.py cpu PID...                CPU time used so far by the PIDs, all their threads and
                                        all their descendants: "ns user_ticks system_ticks"
  benchlib.py sippstat CSVFILE          "successful failed retransmissions" from sipp -trace_stat
  benchlib.py md5 TEXT                  hex MD5 of TEXT
  benchlib.py report TSV                the results table from run's per-round rows
  benchlib.py bound ADDR PORT           exit 0 when something has bound UDP ADDR:PORT
  benchlib.py samples SAMPLES RTT STAT  the --sample table: per 10 s, RSS, open fds, calls set up and
                                        failed (sipp -trace_stat), p50/p99 of the authenticated
                                        INVITE -> 200 time (sipp -trace_rtt)
  benchlib.py udpdrops ADDR:PORT...     for each address, the datagrams the kernel dropped so far because
                                        the receive buffer of a UDP socket bound there was full (all
                                        sockets on it summed: SO_REUSEPORT workers), space-separated
  benchlib.py scenarios SIPP_DIR OUT    the call scenarios of SIPP_DIR as the benchmark runs them
                                        (see bench_scenarios), written to OUT/pbx_call.xml and
                                        OUT/gateway_uas.xml
"""
import hashlib
import os
import random
import socket
import sys


def freeport(addr):
    for _ in range(500):
        p = random.randint(20000, 60000)
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_INET, kind)
                try:
                    s.bind((addr, p))
                finally:
                    s.close()
        except OSError:
            continue
        return p
    raise SystemExit("no free port on " + addr)


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields follow the last ')'
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def task_cpu_ns(pid, tid):
    """On-CPU time of one thread in ns: schedstat (ns resolution), else utime+stime (ticks)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        ticks = int(fields[11]) + int(fields[12])   # utime, stime (fields 14 and 15)
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0


def task_ticks(pid, tid):
    """utime and stime of one thread, in clock ticks (for the user/system split)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        return int(fields[11]), int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0, 0


def cpu(pids):
    total = ut = st = 0
    for root in pids:
        for p in tree(root):
            try:
                tids = os.listdir(f"/proc/{p}/task")
            except OSError:
                continue
            for t in tids:
                total += task_cpu_ns(p, t)
                u, s = task_ticks(p, t)
                ut += u
                st += s
    return total, ut, st


def threads(pid):
    """One line per thread of pid: name and on-CPU ns ("sipauthd" is the main thread: worker 0)."""
    out = []
    for t in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        out.append(f"{t} {name} {task_cpu_ns(pid, t)}")
    return out


def thread_shares(before, after):
    """Each thread's CPU between two `threads` listings (files), in ms and share of the total."""
    def load(path):
        d = {}
        for line in open(path):
            tid, name, ns = line.split()
            d[tid] = (name, int(ns))
        return d
    a, b = load(before), load(after)
    used = [(b[t][0], b[t][1] - a.get(t, (None, 0))[1]) for t in b]
    total = sum(ns for _, ns in used) or 1
    return ", ".join(f"{name} {ns / 1e6:.0f} ms ({100 * ns / total:.0f}%)" for name, ns in used if ns > 0)


def sippstat(path):
    """Last row of a sipp -trace_stat CSV file (';'-separated, header first)."""
    with open(path, encoding="latin-1") as f:
        rows = [l.rstrip("\n").split(";") for l in f if l.strip()]
    if len(rows) < 2:
        raise SystemExit(f"{path}: no statistics")
    head, last = rows[0], rows[-1]
    col = {name: i for i, name in enumerate(head)}

    def get(name):
        i = col.get(name)
        return int(last[i]) if i is not None and i < len(last) and last[i].strip().isdigit() else 0

    return get("SuccessfulCall(C)"), get("FailedCall(C)"), get("Retransmissions(C)")


def report(path):
    """Rows: round server phase status ok failed retrans cpu_ns wall_s user_ticks sys_ticks."""
    import statistics
    agg = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) < 9:
            continue
        key = (f[2], f[1])
        a = agg.setdefault(key, {"status": "ok", "ok": 0, "fail": 0, "retr": 0, "cpu": 0, "measured": 0, "us": [],
                                  "ut": 0, "st": 0})
        if len(f) >= 11:
            a["ut"] += int(f[9])
            a["st"] += int(f[10])
        ok, fail, retr, cpu_ns = int(f[4]), int(f[5]), int(f[6]), int(f[7])
        if f[3] != "ok":
            a["status"] = "FAILED"
        a["ok"] += ok
        a["fail"] += fail
        a["retr"] += retr
        a["cpu"] += cpu_ns
        if ok and cpu_ns > 0:   # 0: a server process died in that round, no figure
            a["us"].append(cpu_ns / 1000 / ok)
            a["measured"] += ok
    # (user/system ticks are kept in the rows but not shown: at 10 ms a tick, the split of
    # a server that runs in bursts of tens of microseconds is too coarse to print)
    fmt = "%-9s %-9s %-6s %9s %7s %8s %8s %9s %9s  %s"
    print(fmt % ("phase", "server", "status", "completed", "failed", "retrans", "CPU ms", "us/each",
                 "(median)", "per round"))
    med = {}
    for phase in ("register", "call"):
        for server in ("sipauthd", "kamailio", "floor"):
            a = agg.get((phase, server))
            if not a:
                continue
            pooled = "%.1f" % (a["cpu"] / 1000 / a["measured"]) if a["measured"] else "-"
            m = statistics.median(a["us"]) if a["us"] else None
            med[(phase, server)] = (m, a["status"])
            print(fmt % (phase, server, a["status"], a["ok"], a["fail"], a["retr"], "%.0f" % (a["cpu"] / 1e6), pooled,
                         "%.1f" % m if m is not None else "-", " ".join("%.1f" % u for u in a["us"])))
    print()
    failed = [f"{s} {p}" for (p, s), a in agg.items() if a["status"] != "ok"]
    for phase, unit in (("register", "REGISTER exchange"), ("call", "call")):
        s_, k_ = med.get((phase, "sipauthd")), med.get((phase, "kamailio"))
        if not s_ or not k_ or s_[0] is None or k_[0] is None:
            continue
        r = s_[0] / k_[0]
        verdict = "meets" if r <= 0.5 else "misses"
        print(f"ratio sipauthd/kamailio per {unit}: {r:.2f} ({s_[0]:.1f} / {k_[0]:.1f} us CPU, medians);"
              f" target <= 0.50: {verdict}")
    for phase, unit in (("register", "REGISTER exchange"), ("call", "call")):
        f_, s_, k_ = (med.get((phase, x)) for x in ("floor", "sipauthd", "kamailio"))
        if not f_ or f_[0] is None or f_[1] != "ok":
            continue
        f = f_[0]
        line = (f"floor per {unit} (scripts/bench/floor.c: the same datagrams sent with no SIP logic): {f:.1f} us")
        if s_ and k_ and s_[0] is not None and k_[0] is not None:
            s, k = s_[0], k_[0]
            line += (f"; above it: sipauthd {s - f:.1f} us, kamailio {k - f:.1f} us"
                     + (f" ({(s - f) / (k - f):.2f}x)" if k > f else "")
                     + f"; 0.50x of Kamailio's ({k / 2:.1f} us) leaves {k / 2 - f:.1f} us above the floor")
        print(line)
    if failed:
        print("WARNING: sipp reported failed or missing calls in: " + ", ".join(sorted(failed)) +
              " (their figures are not comparable)")


def samples(sample_path, rtt_path, stat_path):
    """Join the sampler's rows (t rss_kb fds) with sipp's response times and call counters."""
    rows = [l.split() for l in open(sample_path) if l.strip()]
    rtts = []   # (ms since sipp started, response ms)
    try:
        for line in open(rtt_path, encoding="latin-1"):
            parts = line.strip().split(";")
            if len(parts) >= 2 and parts[0].replace(".", "").isdigit():
                rtts.append((float(parts[0]), float(parts[1])))
    except OSError:
        pass
    start = 0.0
    stats = []  # (epoch s, successful, failed)
    try:
        lines = [l.rstrip("\n").split(";") for l in open(stat_path, encoding="latin-1") if l.strip()]
        col = {n: i for i, n in enumerate(lines[0])}
        start = float(lines[1][col["StartTime"]].split("\t")[-1])
        for r in lines[1:]:
            try:
                stats.append((float(r[col["CurrentTime"]].split("\t")[-1]), int(r[col["SuccessfulCall(C)"]]),
                              int(r[col["FailedCall(C)"]])))
            except (KeyError, ValueError, IndexError):
                continue
    except (OSError, IndexError):
        pass
    print(f"{'t_s':>5} {'rss_mb':>7} {'fds':>5} {'calls_ok':>9} {'failed':>7} {'setup_p50_ms':>13} {'setup_p99_ms':>13}")
    prev_t = None
    for t, rss_kb, fds in rows:
        t = float(t)
        window = sorted(ms for when, ms in rtts
                        if (prev_t is None or start + when / 1000 > prev_t) and start + when / 1000 <= t)
        ok = fail = "-"
        done = [s for s in stats if s[0] <= t]
        if done:
            ok, fail = done[-1][1], done[-1][2]
        p50 = f"{window[len(window) // 2]:.1f}" if window else "-"
        p99 = f"{window[min(len(window) - 1, int(len(window) * 0.99))]:.1f}" if window else "-"
        t0 = float(rows[0][0]) - 10
        print(f"{t - t0:5.0f} {int(rss_kb) / 1024:7.1f} {fds:>5} {ok:>9} {fail:>7} {p50:>13} {p99:>13}")
        prev_t = t


def udpdrops(endpoints):
    """/proc/net/udp: local_address is HEXIP:HEXPORT (IPv4, host byte order), drops the last field."""
    want = {}
    for ep in endpoints:
        ip, port = ep.rsplit(":", 1)
        hexip = "%08X" % int.from_bytes(socket.inet_aton(ip), "little")
        want[f"{hexip}:{int(port):04X}"] = ep
    drops = dict.fromkeys(endpoints, 0)
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            ep = want.get(fields[1])
            if ep:
                drops[ep] += int(fields[-1])
    return [drops[ep] for ep in endpoints]


# What the benchmark changes in test/sipp's call scenarios: (file, anchor, replacement). Both
# changes make sipp behave as RFC 3261 asks of a UA where a proxy with several UDP workers (or a
# busy machine) lawfully reorders or retransmits, and change nothing while messages come in order:
# - the PBX ignores a provisional response to its authenticated INVITE that arrives after the 200
#   (§13.2.2.4; Kamailio's children can relay the 180 and the 200 in either order), through
#   sipp's transaction matching (start_txn/response_txn/ack_txn);
# - the gateway absorbs a retransmitted INVITE while it waits for the ACK (§17.2.1: the proxy
#   retransmits when it has not yet seen the 180 after T1), where sipp would abort the call.
BENCH_SCENARIO_EDITS = (
    ("pbx_call.xml", '<send retrans="500" start_rtd="setup">',
     '<send retrans="500" start_rtd="setup" start_txn="invite">'),
    ("pbx_call.xml",
     '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n'
     '  <recv response="200" rrs="true" rtd="setup"/>\n  <send>',
     '  <recv response="100" optional="true" response_txn="invite"/>\n'
     '  <recv response="180" optional="true" response_txn="invite"/>\n'
     '  <recv response="200" rrs="true" rtd="setup" response_txn="invite"/>\n  <send ack_txn="invite">'),
    ("gateway_uas.xml", '  <recv request="ACK" crlf="true"/>',
     '  <recv request="INVITE" optional="true"/>\n  <recv request="ACK" crlf="true"/>'),
)


def bench_scenarios(src_dir, out_dir):
    texts = {}
    for name, anchor, replacement in BENCH_SCENARIO_EDITS:
        text = texts.get(name)
        if text is None:
            with open(os.path.join(src_dir, name), encoding="latin-1") as f:
                text = f.read()
        if text.count(anchor) != 1:
            raise SystemExit(f"{src_dir}/{name} changed: the benchmark's edit no longer applies "
                             f"(BENCH_SCENARIO_EDITS in {__file__})")
        texts[name] = text.replace(anchor, replacement)
    for name, text in texts.items():
        with open(os.path.join(out_dir, name), "w", encoding="latin-1") as f:
            f.write(text)


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd = argv[1]
    if cmd == "freeport":
        print(freeport(argv[2] if len(argv) > 2 else "127.0.0.1"))
    elif cmd == "tree":
        print("\n".join(str(p) for p in tree(int(argv[2]))))
    elif cmd == "cpu":
        print(*cpu([int(p) for p in argv[2:]]))
    elif cmd == "threads":
        print("\n".join(threads(int(argv[2]))))
    elif cmd == "thread_shares":
        print(thread_shares(argv[2], argv[3]))
    elif cmd == "sippstat":
        print(*sippstat(argv[2]))
    elif cmd == "bound":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((argv[2], int(argv[3])))
        except OSError:
            sys.exit(0)
        finally:
            s.close()
        sys.exit(1)
    elif cmd == "report":
        report(argv[2])
    elif cmd == "samples":
        samples(argv[2], argv[3], argv[4])
    elif cmd == "udpdrops":
        print(*udpdrops(argv[2:]))
    elif cmd == "scenarios":
        bench_scenarios(argv[2], argv[3])
    elif cmd == "md5":
        print(hashlib.md5(argv[2].encode()).hexdigest())
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
