#!/usr/bin/env bash
# scripts/bench/revoke.sh: revocation at scale (issue 11): a credential with N active calls is
# deleted through the API; how long until sipauthd has every one of its 2N BYEs answered (the
# PBX's and the gateway's), how many it had to retransmit, and how many got no answer. Run once
# with the BYEs all at once ([proxy] bye_rate = 0, the old behaviour) and once paced per
# destination (bye_rate, default 2500/s), side by side. Also prints sipauthd's RSS with the N
# calls up (issue 11's memory target is about 10 000 calls). sipp plays the PBX (127.0.0.1, holding
# every call until the BYE) and the gateway (127.0.0.2); sipauthd's /metrics is polled every
# 20 ms (sipauthd_sip_byes_pending, _byes_total, _bye_retransmissions_total).
#
#   scripts/bench/revoke.sh [-n CALLS] [-r RATE] [--rates "0 2500"] [--save] [--keep]
#     -n CALLS     calls set up before the delete (5000)
#     -r RATE      calls per second while setting them up (500)
#     --rates L    bye_rate values to run, in order ("0 2500")
#     --save       append the lines to scripts/bench/results/<date>-revoke.txt
# Uses the build in the work tree (daemon/sipauthd, daemon/sipauthctl).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=5000 RATE=500 RATES="0 2500" SAVE=0 KEEP=0
while [ $# -gt 0 ]; do
	case $1 in
	-n) N=$2; shift ;;
	-r) RATE=$2; shift ;;
	--rates) RATES=$2; shift ;;
	--save) SAVE=1 ;;
	--keep) KEEP=1 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
. scripts/bench/common.sh
bench_workdir revoke
rcvbuf_errors() {   # the host's UDP datagrams dropped for a full receive buffer so far (/proc/net/snmp)
	awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}
metric() {   # metric NAME: its value in the last /metrics sample
	sed -n "s/^sipauthd_$1 //p" "$W/metrics" | head -1
}

CTL="$TOP/daemon/sipauthctl --store $W/store"
$CTL init >/dev/null
ACC=$($CTL account create --name bench)
KEY=$($CTL apikey create --account "$ACC")
TRUNK=$($CTL trunk create --account "$ACC" --name bench)
HOST="trunk-$TRUNK.sip.tryvox.io"
# the PBX waits for the BYE longer than the test's 15 s: setting up N calls takes N / RATE s
sed 's/<recv request="BYE" timeout="15000"\/>/<recv request="BYE" timeout="600000"\/>/' \
	test/sipp/pbx_call_hold.xml >"$W/pbx_held.xml"
grep -q 'timeout="600000"' "$W/pbx_held.xml" || { echo "pbx_call_hold.xml changed: fix the sed" >&2; exit 1; }

run_case() {   # BYE_RATE
	local rate=$1 user="pbx-revoke-$1"
	local cred
	cred=$(printf 'revoke_secret_9876\n' | $CTL credential create --trunk "$TRUNK" --username "$user" --password-stdin \
		| python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
	local sip gw api
	sip=$(port 127.0.0.1) gw=$(port 127.0.0.2) api=$(port 127.0.0.1)
	cat >"$W/$rate.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$sip
[upstream]
gateway = udp:127.0.0.2:$gw
trusted = 127.0.0.2/32
[proxy]
bye_rate = $rate
max_calls = $((N + 1000))
[auth]
algorithms = MD5
[store]
path = $W/store
[api]
listen = 127.0.0.1:$api
[abuse]
max_failures = 0
[log]
level = warning
CONF
	"$TOP/daemon/sipauthd" --config "$W/$rate.conf" >"$W/$rate.log" 2>&1 &
	local d=$!
	PIDS+=($d)
	sleep 0.5
	(cd "$W" && sipp -sf "$TOP/test/sipp/gateway_uas.xml" -i 127.0.0.2 -p "$gw" -m "$N" -timeout 150s -nostdin \
		-trace_stat -stf "gw-$rate.stat" >/dev/null 2>&1) &
	local g=$!
	PIDS+=($g)
	(cd "$W" && sipp -sf "$W/pbx_held.xml" "127.0.0.1:$sip" -i 127.0.0.1 -p "$(port 127.0.0.1)" \
		-s 15551234567 -au "$user" -ap revoke_secret_9876 -key trunk_host "$HOST" \
		-m "$N" -r "$RATE" -l "$N" -timeout 150s -nostdin -trace_stat -stf "pbx-$rate.stat" >/dev/null 2>&1) &
	local p=$!
	PIDS+=($p)
	local active=0 waited=0
	while [ "$active" -lt "$N" ] && [ "$waited" -lt $((N / RATE * 10 + 300)) ]; do
		sleep 0.1; waited=$((waited + 1))
		curl -s "http://127.0.0.1:$api/metrics" >"$W/metrics"
		active=$(metric calls_active); active=${active:-0}
	done
	local t0 t1 pending=1 code drops rss
	rss=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$d/status")   # with the N calls up
	drops=$(rcvbuf_errors)
	t0=$(date +%s%N)
	code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $KEY" \
		"http://127.0.0.1:$api/v1/account/$ACC/trunks/$TRUNK/credentials/$cred")
	while [ "$pending" != 0 ] && [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 60000 ]; do
		sleep 0.02
		curl -s "http://127.0.0.1:$api/metrics" >"$W/metrics"
		pending=$(metric sip_byes_pending)
		[ "$(metric 'sip_byes_total{outcome="answered"}')" = 0 ] && pending=${pending:-1}
	done
	t1=$(date +%s%N)
	drops=$(( $(rcvbuf_errors) - drops ))
	printf 'bye_rate %-5s %d calls up (%s set up, RSS %s MB), DELETE %s: every BYE answered after %5d ms; %s answered, %s timed out, %s retransmitted; %d datagrams dropped by full receive buffers\n' \
		"$rate" "$active" "$N" "$rss" "$code" $(( (t1 - t0) / 1000000 )) "$(metric 'sip_byes_total{outcome="answered"}')" \
		"$(metric 'sip_byes_total{outcome="timeout"}')" "$(metric sip_bye_retransmissions_total)" "$drops"
	wait "$p" 2>/dev/null || true
	wait "$g" 2>/dev/null || true
	kill "$d"; wait "$d" 2>/dev/null || true
}

{
	echo "# $(date -u +%Y-%m-%dT%H:%MZ) scripts/bench/revoke.sh -n $N -r $RATE ($(nproc) cores, $(git rev-parse --short HEAD))"
	for r in $RATES; do run_case "$r"; done
} | tee "$W/out.txt"
if [ "$SAVE" = 1 ]; then
	cat "$W/out.txt" >>"scripts/bench/results/$(date -u +%Y-%m-%d)-revoke.txt"
fi
