#!/usr/bin/env bash
# scripts/bench/failover.sh: what a failover costs the caller in latency: the authenticated
# INVITE -> 200 time (sipp's "setup" response-time marker in test/sipp/pbx_call.xml) for calls
# through sipauthd to one gateway directly, after a 503 from the first gateway, and after the
# first gateway stayed silent for failover_timeout_ms (down_after at its maximum, 100, so that
# the silent gateway stays up and every call pays the wait). sipp plays the PBX (127.0.0.1), a 503
# gateway (127.0.0.2) and the answering gateway (127.0.0.3).
#
#   scripts/bench/failover.sh [-n CALLS] [-r RATE] [--timeout MS] [--save]
#     -n CALLS        calls per case (200)
#     -r RATE         calls per second (20)
#     --timeout MS    failover_timeout_ms for the silent case (500)
#     --save          append the lines to scripts/bench/results/<date>-failover.txt
#     --keep          keep the work directory (configs, daemon logs)
# Uses the build in the work tree (daemon/sipauthd, daemon/sipauthctl).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=200 RATE=20 TIMEOUT=500 SAVE=0 KEEP=0
while [ $# -gt 0 ]; do
	case $1 in
	-n) N=$2; shift ;;
	-r) RATE=$2; shift ;;
	--timeout) TIMEOUT=$2; shift ;;
	--save) SAVE=1 ;;
	--keep) KEEP=1 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
. scripts/bench/common.sh
bench_workdir failover

CTL="$TOP/daemon/sipauthctl --store $W/store"
$CTL init >/dev/null
ACC=$($CTL account create --name bench)
TRUNK=$($CTL trunk create --account "$ACC" --name bench)
printf 'failover_secret_9876\n' | $CTL credential create --trunk "$TRUNK" --username pbx-bench --password-stdin >/dev/null
HOST="trunk-$TRUNK.sip.tryvox.io"
SIP=$(port 127.0.0.1) G1=$(port 127.0.0.2) G2=$(port 127.0.0.3)

sipp -sf test/sipp/gateway_503.xml -i 127.0.0.2 -p "$G1" -nostdin >/dev/null 2>&1 &
G503=$!
PIDS+=($G503)
sipp -sf test/sipp/gateway_uas.xml -i 127.0.0.3 -p "$G2" -nostdin >/dev/null 2>&1 &
PIDS+=($!)

run_case() {   # NAME GATEWAY-LINE [CALLS]: mean, p50 and p99 of INVITE -> 200 in ms, and the calls that failed
	local name=$1 gw=$2 n=${3:-$N}
	cat >"$W/$name.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$SIP
[upstream]
gateway = $gw
trusted = 127.0.0.2/32, 127.0.0.3/32
failover_timeout_ms = $TIMEOUT
down_after = 100
[auth]
algorithms = MD5
[store]
path = $W/store
[abuse]
max_failures = 0
[log]
level = ${BENCH_LOG_LEVEL:-warning}
CONF
	"$TOP/daemon/sipauthd" --config "$W/$name.conf" >"$W/$name.log" 2>&1 &
	local d=$!
	sleep 0.5
	(cd "$W" && sipp -sf "$TOP/test/sipp/pbx_call.xml" 127.0.0.1:$SIP -i 127.0.0.1 -p "$(port 127.0.0.1)" \
		-s 15551234567 -au pbx-bench -ap failover_secret_9876 -key trunk_host "$HOST" -d 100 \
		-m "$n" -r "$RATE" -l 200 -nostdin -timer_resol 1 -trace_rtt -rtt_freq 1 -trace_stat -stf "$name.stat" \
		>/dev/null 2>&1) || true
	kill "$d"; wait "$d" 2>/dev/null || true
	python3 - "$W" "$name" "$gw" <<'PY'
import csv, glob, sys
w, name, gw = sys.argv[1:]
rows = []   # sipp -trace_rtt lines: "ms since start;response ms;rtd name"
for f in glob.glob(f"{w}/*_rtt.csv"):
    for line in open(f, encoding="latin-1"):
        parts = line.strip().split(";")
        if len(parts) >= 2 and parts[0].replace(".", "").isdigit():
            rows.append(float(parts[1]))
stat = list(csv.reader(open(f"{w}/{name}.stat"), delimiter=";"))
hdr, last = stat[0], stat[-1]
failed = last[hdr.index("FailedCall(C)")]
ok = last[hdr.index("SuccessfulCall(C)")]
rows.sort()
p = lambda q: rows[min(len(rows) - 1, int(q * len(rows)))] if rows else float("nan")
mean = sum(rows) / len(rows) if rows else float("nan")
print(f"{name:8s} INVITE->200 mean {mean:6.1f} ms  p50 {p(0.5):6.1f} ms  p99 {p(0.99):6.1f} ms  "
      f"calls {ok} ok, {failed} failed  ({gw})")
PY
	rm -f "$W"/*_rtt.csv
}

{
	echo "# $(date -u +%Y-%m-%dT%H:%MZ) scripts/bench/failover.sh -n $N -r $RATE --timeout $TIMEOUT ($(nproc) cores, $(git rev-parse --short HEAD))"
	run_case direct "udp:127.0.0.3:$G2"
	run_case on503 "udp:127.0.0.2:$G1, udp:127.0.0.3:$G2"
	kill "$G503"; wait "$G503" 2>/dev/null || true   # the 503 gateway goes: the first is silent now
	# at most 90 calls: down_after (100, its maximum) failures in a row would put the silent
	# gateway down, and the calls after that go straight to the second (no wait at all)
	run_case silent "udp:127.0.0.2:$G1, udp:127.0.0.3:$G2" $((N < 90 ? N : 90))
} | tee "$W/out.txt"
if [ "$SAVE" = 1 ]; then
	cat "$W/out.txt" >>"scripts/bench/results/$(date -u +%Y-%m-%d)-failover.txt"
fi
