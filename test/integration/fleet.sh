# fleet.sh: fleet mode on a real PostgreSQL 15: sipauthctl --database answers as --store does,
# and two sipauthd nodes on 127.0.0.21 / 127.0.0.22 mirror the database into their own stores.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/pg_lib.sh"

fleet_prepare

PW=secure_password_here_123

# ---- sipauthctl: the same commands against --store and --database ----

# transcript BACKEND-ARGS...: every command, each line "exit status | stdout | stderr", with ids,
# times and the store's or database's name replaced by placeholders
transcript() {
	_ctl() {
		_o=$("$SIPAUTHCTL" "$@" 2>"$T/stderr" </dev/null); _rc=$?
		_show
	}
	_ctl_in() {
		_i=$1; shift
		_o=$(printf '%b' "$_i" | "$SIPAUTHCTL" "$@" 2>"$T/stderr"); _rc=$?
		_show
	}
	_show() {
		printf '%s | %s | %s\n' "$_rc" "$_o" "$(cat "$T/stderr")" | sed -E \
			-e 's/acc_[a-z0-9]{16}/ACC/g; s/trunk_[a-z0-9]{16}/TRUNK/g; s/cred_[a-z0-9]{16}/CRED/g' \
			-e 's/tvx_sk_live_[A-Za-z0-9]{32}/KEY/g; s/key_[0-9a-f]{16}/KEYID/g' \
			-e 's/"(created_at|rotated_at|previous_password_expires_at)": "[^"]*"/"\1": T/g' \
			-e 's#(store|database [^ ]+ on [^ ]+) not initialised#TARGET not initialised#' \
			-e 's#(store [^ ]+|database [^ ]+ on [^ ]+) is already#TARGET is already#' \
			-e 's#initialised (database )?[^ ]+( on [^ ]+)? for#initialised TARGET for#' \
			-e 's#sipauthctl --(store|database) [^ ]+ init#sipauthctl --X init#' | tr '\n' ' '
		echo
	}
	_ctl "$@" account create --name early
	_ctl "$@" credential list --trunk trunk_0000000000000000
	_ctl "$@" init --domain 'bad domain!'
	_ctl "$@" init --domain Sip.Example.COM
	_ctl "$@" init
	_ctl "$@" account create --name ''
	_ctl "$@" account create --name acme
	_a=$("$SIPAUTHCTL" "$@" account create --name other)
	_ctl "$@" apikey create --account "$_a"
	_ctl "$@" apikey create --account acc_nope
	_k=$("$SIPAUTHCTL" "$@" apikey create --account "$_a")
	_ctl "$@" apikey revoke --account "$_a" --id "key_$(printf %s "$_k" | sha256sum | cut -c1-16)"
	_ctl "$@" apikey revoke --account "$_a" --id "key_$(printf %s "$_k" | sha256sum | cut -c1-16)"
	_ctl "$@" apikey list --account "$_a"
	_ctl "$@" apikey list --account acc_nope
	_ctl "$@" trunk create --account acc_nope --name x
	_ctl "$@" trunk create --account "$_a" --name "$(printf 'bad\001name')"
	_t=$("$SIPAUTHCTL" "$@" trunk create --account "$_a" --name main)
	"$SIPAUTHCTL" "$@" trunk create --account "$_a" >/dev/null
	_ctl "$@" trunk list --account "$_a"
	_ctl "$@" trunk list --account acc_nope
	_ctl "$@" trunk set --trunk "$_t" --max-concurrent-calls 5 --max-calls-per-second 0.5 \
		--allowed-sources 10.0.0.0/8,192.0.2.1 --ip-authentication true --digest-algorithms MD5,SHA-256
	_ctl "$@" trunk set --trunk "$_t" --require-tls maybe
	_ctl "$@" trunk set --trunk "$_t"
	_ctl "$@" trunk set --trunk trunk_nope --require-tls true
	_ctl "$@" trunk list --account "$_a"
	_ctl_in "$PW\n" "$@" credential create --trunk "$_t" --username pbx-1 --password-stdin
	_ctl_in "$PW\n" "$@" credential create --trunk "$_t" --username PBX-1 --password-stdin
	_ctl_in "short\n" "$@" credential create --trunk "$_t" --username pbx-2 --password-stdin
	_ctl_in "xpbx-2-and-more-text\n" "$@" credential create --trunk "$_t" --username pbx-2 --password-stdin
	_ctl_in "$PW\n" "$@" credential create --trunk "$_t" --username 'bad user' --password-stdin
	_ctl_in "$PW\n" "$@" credential create --trunk trunk_nope --username pbx-3 --password-stdin
	_ctl_in "$PW\n" "$@" credential create --trunk "$_t" --username pbx-3 --password-stdin
	_ctl "$@" credential list --trunk "$_t"
	_ctl "$@" credential list --trunk trunk_nope
	_c=$("$SIPAUTHCTL" "$@" credential list --trunk "$_t" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
	_ctl "$@" credential delete --trunk "$_t" --id cred_nope
	_ctl "$@" credential delete --trunk trunk_nope --id "$_c"
	_ctl "$@" credential delete --trunk "$_t" --id "$_c"
	_ctl "$@" credential delete --trunk "$_t" --id "$_c"
	_ctl "$@" credential list --trunk "$_t"
	_ctl_in "$PW\n" "$@" credential create --trunk "$_t" --username pbx-1 --password-stdin
	_c=$("$SIPAUTHCTL" "$@" credential list --trunk "$_t" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][-1]["id"])')
	_ctl_in "$PW\n" "$@" credential rotate --trunk "$_t" --id "$_c" --password-stdin
	_ctl_in "another_password_456\n" "$@" credential rotate --trunk "$_t" --id "$_c" --password-stdin --overlap-seconds 90000
	_ctl_in "another_password_456\n" "$@" credential rotate --trunk "$_t" --id cred_nope --password-stdin
	_ctl_in "another_password_456\n" "$@" credential rotate --trunk "$_t" --id "$_c" --password-stdin --overlap-seconds 0
	_ctl_in "third_password_789\n" "$@" credential rotate --trunk "$_t" --id "$_c" --password-stdin
	_ctl "$@" credential list --trunk "$_t"
}

transcript --store "$T/ctlstore" >"$T/store.txt"
transcript --database "$DB" >"$T/db.txt"
n=$(wc -l <"$T/store.txt")
assert_eq "the transcripts have every command" 43 "$n"
i=0
while IFS= read -r want && IFS= read -r got <&3; do
	i=$((i + 1))
	assert_eq "sipauthctl command $i: --database answers as --store" "$want" "$got"
done <"$T/store.txt" 3<"$T/db.txt"

# what the database holds: hashes, never a password or a key
assert_eq "schema version recorded" 6 "$(psql_q 'SELECT version FROM schema_version')"
assert_eq "domain recorded as init normalised it" sip.example.com "$(psql_q "SELECT value FROM settings WHERE name = 'domain'")"
assert_eq "API keys kept as SHA-256 (32 bytes)" 32 "$(psql_q 'SELECT DISTINCT length(hash) FROM api_keys')"
assert_eq "no password anywhere in the database" 0 \
	"$(psql_q "SELECT count(*) FROM credentials c WHERE to_jsonb(c)::text LIKE '%$PW%'")$(psql_q "SELECT count(*) FROM change_log WHERE payload::text LIKE '%$PW%'" | sed 's/^0$//')"
ha1=$(psql_q "SELECT length(ha1_md5) || ',' || length(ha1_sha256) || ',' || length(ha1_sha512_256) FROM credentials LIMIT 1")
assert_eq "HA1 for every algorithm" "32,64,64" "$ha1"
gaps=$(psql_q 'SELECT count(*) FROM change_log') 
assert_eq "change_log is gap-free up to change_seq" "$gaps" "$(psql_q 'SELECT max(seq) FROM change_log')"
assert_eq "change_seq is the last sequence" "$gaps" "$(psql_q 'SELECT last FROM change_seq')"
"$SIPAUTHCTL" --database "$DB" --store "$T/x" trunk list --account x >/dev/null 2>"$T/stderr"
assert_eq "--store with --database refused" "1 sipauthctl: --store and --database exclude each other" "$? $(cat "$T/stderr")"
"$SIPAUTHCTL" --database "host=127.0.0.1 port=1 user=nobody password=hunter2secret connect_timeout=2" trunk list --account x \
	>/dev/null 2>"$T/stderr"
rc=$?
assert_eq "database away: exit status 5" 5 "$rc"
assert_match "database away: says it cannot connect" "^sipauthctl: cannot connect to the database: " "$(cat "$T/stderr")"
assert_nomatch "database away: the connection string's password is not printed" "hunter2secret" "$(cat "$T/stderr")"

# ---- two sipauthd nodes sharing one database ----
need sipp
fleet_db_setup || { fail "the fleet database"; finish; }
CRED1=$(cred pbx-a)
GW_PORT=$(free_port 127.0.0.2)
node A 127.0.0.21
node B 127.0.0.22
for n in A B; do
	wait_for grep -q "event=cluster_connected" "$T/$n.log" || { cat "$T/$n.log"; fail "node $n did not connect"; finish; }
done
pass "both nodes started from an empty store and connected"
assert_match "node A made its store from the database" "event=cluster_mirror_created node=A .* domain=sip.tryvox.io" "$(cat "$T/A.log")"

assert_eq "credential made before the nodes started: REGISTER at A" 200 "$(reg A pbx-a)"
assert_eq "credential made before the nodes started: REGISTER at B" 200 "$(reg B pbx-a)"

# propagation: credentials created through the database authenticate at both nodes within 2 s;
# each node logs the lag from the change's write to its commit in the local store
for i in $(seq 1 20); do
	cred "prop-$i" >/dev/null
	t0=$(date +%s.%N)   # committed: from here, both nodes at once
	reg_until A "prop-$i" 200 >"$T/a.st" & ra=$!
	reg_until B "prop-$i" 200 >"$T/b.st" & rb=$!
	wait $ra $rb
	t1=$(date +%s.%N)
	a=$(cat "$T/a.st"); b=$(cat "$T/b.st")
	echo "$t0 $t1" >>"$T/prop.txt"
	[ "$a$b" = 200200 ] || fail "credential prop-$i: REGISTER at A=$a B=$b"
done
assert_eq "20 new credentials registered at both nodes" 20 "$(wc -l <"$T/prop.txt")"
slow=$(python3 -c "import sys; print(sum(1 for l in open(sys.argv[1]) if float(l.split()[1]) - float(l.split()[0]) > 2.0))" "$T/prop.txt")
echo "commit to REGISTER 200 at both nodes (python client included), s: $(python3 -c "import sys; print(' '.join('%.2f' % (float(l.split()[1]) - float(l.split()[0])) for l in open(sys.argv[1])))" "$T/prop.txt")"
assert_eq "each registered at both nodes within 2 s of its commit (test tools included)" 0 "$slow"
lags=$(cat "$T/A.log" "$T/B.log" | sed -n 's/.*event=cluster_applied node=.* changes=1 lag_ms=\([0-9-]*\).*/\1/p')
echo "propagation lag (change written -> applied at a node), ms: $(echo $lags | tr ' ' ',')"
python3 -c "
import sys, statistics
v = sorted(int(x) for x in sys.argv[1:])
print('propagation p50=%d ms max=%d ms over %d applies' % (statistics.median(v), v[-1], len(v)))" $lags | tee "$T/lag.txt"
# (the bindings the REGISTERs made are changes too: more than the 40 credentials' applies)
assert_match "lags were measured at both nodes (40 or more applies)" "over (4[0-9]|[5-9][0-9]|[1-9][0-9][0-9]) applies" "$(cat "$T/lag.txt")"

# an answer to node A's challenge that reaches node B: both nodes hold the fleet's nonce key (from
# the database), but A's nonce names A's instance, so B challenges again with stale=true (no
# verdict on the password, A's replay state stays at A), and the answer to B's own nonce is taken
# (test/integration/fleet_nonce.sh covers nonces and their keys in detail)
STRANGER="python3 $top_srcdir/test/stranger.py"
wait_for grep -q "event=nonce_key_loaded" "$T/A.log"
wait_for grep -q "event=nonce_key_loaded" "$T/B.log"
$STRANGER auth --server "$A_ADDR:$A_PORT" --local-ip 127.0.0.1 --host "$TRUNK_HOST" --user pbx-a --password "$PW" \
	--save "$T/at-a.sip" --dont-send >/dev/null
$STRANGER auth --server "$B_ADDR:$B_PORT" --local-ip 127.0.0.1 --host "$TRUNK_HOST" --user pbx-a --password "$PW" \
	--save "$T/at-b.sip" --dont-send >/dev/null
keyid() { python3 -c 'import base64,re,sys; n=re.search(r"nonce=\"([^\"]+)\"", open(sys.argv[1]).read()).group(1); print(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))[1])' "$1"; }
assert_eq "nodes A and B issue nonces with the same key (the database's)" "$(keyid "$T/at-a.sip")" "$(keyid "$T/at-b.sip")"
assert_eq "node A's nonce answered at node B: 401 with stale=true" "401 True" \
	"$($STRANGER auth --server "$B_ADDR:$B_PORT" --replay "$T/at-a.sip" --timeout 2 | json_get 'final.get("status"), final.get("stale")' | tr -d "(),'")"
assert_eq "... and a new answer to node B's nonce registers there" 200 "$(reg B pbx-a)"

# the REST API of every node reads and writes the database
out=$(api A POST /credentials "{\"username\":\"api-a\",\"password\":\"$PW\"}")
assert_match "POST a credential at node A: 201" "^201 " "$out"
CRED_API=$(printf '%s' "${out#* }" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
assert_eq "it is in the database at once" api-a "$(psql_q "SELECT username FROM credentials WHERE id = '$CRED_API'")"
out=$(api B GET "/credentials/$CRED_API")
assert_match "GET it at node B: 200 and its username" '^200 .*"username": *"api-a"' "$out"
assert_eq "the credential created at node A's API registers at node B" 200 "$(reg_until B api-a 200)"
out=$(api B POST /credentials "{\"username\":\"API-A\",\"password\":\"$PW\"}")
assert_match "the same username at node B: 409 (unique per trunk across the fleet)" "^409 " "$out"
la=$(api A GET "/credentials?limit=1000" | python3 -c 'import json,sys; print(sorted(c["id"] for c in json.loads(sys.stdin.read().split(" ",1)[1])["data"]))')
lb=$(api B GET "/credentials?limit=1000" | python3 -c 'import json,sys; print(sorted(c["id"] for c in json.loads(sys.stdin.read().split(" ",1)[1])["data"]))')
ld=$(psql_q "SELECT id FROM credentials WHERE trunk_id = '$TRUNK'" | sort | python3 -c 'import sys; print(sorted(l.strip() for l in sys.stdin if l.strip()))')
assert_eq "node A lists what the database holds" "$ld" "$la"
assert_eq "node B lists the same" "$la" "$lb"
p2=$(api B GET "/credentials?limit=2" | python3 -c 'import json,sys; j=json.loads(sys.stdin.read().split(" ",1)[1]); print(len(j["data"]), j["has_more"])')
assert_eq "a page of 2 from the database" "2 True" "$p2"
out=$(api A PATCH "" '{"max_concurrent_calls": 7}')
assert_match "PATCH the trunk at node A" '^200 .*"max_concurrent_calls": *7' "$out"
assert_match "node B reads the new limit" '^200 .*"max_concurrent_calls": *7' "$(api B GET "")"
wait_for sh -c "[ \"\$(psql -X -qtA \"$DB\" -c 'SELECT min(applied_seq) FROM nodes')\" = \"\$(psql -X -qtA \"$DB\" -c 'SELECT last FROM change_seq')\" ]"
# a rotation at node A: at node B the new password works at once and the old one through the overlap
out=$(api A POST "/credentials/$CRED_API/rotate" '{"password":"rotated_password_2468","overlap_seconds":600}')
assert_match "rotate at node A: 200, version 2" '^200 .*"password_version": *2' "$out"
# regpw NODE USER PASSWORD: REGISTER with that password; the final status
regpw() {
	eval "_addr=\$${1}_ADDR; _port=\$${1}_PORT"
	$SIPCLIENT register --server "$_addr:$_port" --host "$TRUNK_HOST" --user "$2" --password "$3" --algorithms MD5 \
		--expires 60 --timeout 2 | json_get 'final.get("final_status")'
}
for _ in $(seq 1 60); do [ "$(regpw B api-a rotated_password_2468)" = 200 ] && break; sleep 0.05; done
assert_eq "node B: the new password registers" 200 "$(regpw B api-a rotated_password_2468)"
assert_eq "node B: the old one too, within the overlap" 200 "$(regpw B api-a "$PW")"
assert_match "node B's API shows the rotation" '^200 .*"password_version": *2' "$(api B GET "/credentials/$CRED_API")"
out=$(api B DELETE "/credentials/$CRED_API")
assert_match "DELETE it at node B: 204" "^204" "$out"
assert_eq "the credential deleted at node B's API is refused at node A" 401 "$(reg_until A api-a 401)"
assert_eq "... with its new password too" 401 "$(regpw A api-a rotated_password_2468)"
assert_eq "... and gone from the database" 0 "$(psql_q "SELECT count(*) FROM credentials WHERE id = '$CRED_API'")"
m=$(curl -s "http://$A_ADDR:$A_API_PORT/metrics")
assert_match "/metrics: connected" "sipauthd_cluster_connected 1" "$m"
assert_match "/metrics: the connection state" 'sipauthd_cluster_state\{state="up"\} 1' "$m"
assert_match "/metrics: the sequence applied" "sipauthd_cluster_applied_seq [1-9][0-9]*" "$m"
assert_match "/metrics: the feed's lag" "sipauthd_cluster_lag_seconds [0-9]+\.[0-9]{3}" "$m"

# revocation: calls of one credential through node A and node B end when it is deleted through
# the database (BYE to the PBX and to the gateway), and REGISTER with it is refused at both
CRED_CALL=$(cred pbx-call)
reg_until A pbx-call 200 >/dev/null
reg_until B pbx-call 200 >/dev/null
spawn "$T/gw.out" timeout 30 sipp -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 2 -nostdin \
	-trace_err -error_file "$T/gw.err"
gw=$!
sleep 0.3
for n in A B; do
	eval "_addr=\$${n}_ADDR; _port=\$${n}_PORT"
	spawn "$T/call$n.out" timeout 30 sipp -sf "$SIPP_DIR/pbx_call_hold.xml" "$_addr:$_port" -i 127.0.0.1 -p "$(free_port)" \
		-m 1 -s 1555000000$n -au pbx-call -ap "$PW" -key trunk_host "$TRUNK_HOST" -nostdin -trace_err \
		-error_file "$T/call$n.err" -trace_msg -message_file "$T/call$n.msg"
	eval "call$n=\$!"
done
wait_for grep -q "event=call_start" "$T/A.log"
wait_for grep -q "event=call_start" "$T/B.log"
assert_eq "the calls are up at node A and node B" "1 1" "$(grep -c event=call_start "$T/A.log") $(grep -c event=call_start "$T/B.log")"
t0=$(date +%s.%N)
ctl_db credential delete --trunk "$TRUNK" --id "$CRED_CALL"
assert_eq "sipauthctl --database deletes the credential" 0 $?
wait "$callA"; assert_eq "the PBX got a BYE for its call through node A and answered it" 0 $?
wait "$callB"; assert_eq "the PBX got a BYE for its call through node B and answered it" 0 $?
wait "$gw"; assert_eq "the gateway got a BYE for both calls" 0 $?
for n in A B; do
	t1=$(bye_at "$T/call$n.msg")
	d=$(python3 -c "import sys; print('none' if sys.argv[2] == 'none' else '%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$t1")
	echo "revocation at node $n: BYE at the PBX $d s after sipauthctl started"
	python3 -c "import sys; sys.exit(0 if sys.argv[1] != 'none' and 0 <= float(sys.argv[1]) <= 1.0 else 1)" "$d"
	assert_eq "node $n: the PBX's BYE within 1 s of the delete ($d s)" 0 $?
	assert_match "node $n revoked the credential" "event=credential_revoked cred=$CRED_CALL calls_ended=1" \
		"$(eval cat "\$T/$n.log")"
done
assert_eq "REGISTER with the deleted credential is refused at A" 401 "$(reg A pbx-call)"
assert_eq "REGISTER with the deleted credential is refused at B" 401 "$(reg B pbx-call)"

# a trunk's limits are shared by the nodes alive (issue 14): max_concurrent_calls 2 with two
# nodes is one channel per node. A second call at node A is refused while its first holds the
# channel; a call at node B goes through.
for n in A B; do
	wait_for grep -q "event=cluster_nodes node=$n alive=2" "$T/$n.log" || fail "node $n did not count two nodes"
done
assert_match "/metrics: two nodes alive" "sipauthd_cluster_nodes_alive 2" \
	"$(curl -s "http://$A_ADDR:$A_API_PORT/metrics")"
ctl_db trunk set --trunk "$TRUNK" --max-concurrent-calls 2 >/dev/null
assert_eq "sipauthctl --database trunk set" 0 $?
CRED_LIM=$(cred pbx-lim)
reg_until A pbx-lim 200 >/dev/null
reg_until B pbx-lim 200 >/dev/null
wait_for sh -c "[ \"\$(psql -X -qtA \"$DB\" -c \"SELECT count(*) FROM nodes WHERE applied_seq = (SELECT last FROM change_seq)\")\" = 2 ]"
spawn "$T/gwlim.out" timeout 30 sipp -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 2 -nostdin
gwlim=$!
sleep 0.3
spawn "$T/limA.out" timeout 30 sipp -sf "$SIPP_DIR/pbx_call.xml" "$A_ADDR:$A_PORT" -i 127.0.0.1 -p "$(free_port)" \
	-m 1 -s 15550000021 -au pbx-lim -ap "$PW" -key trunk_host "$TRUNK_HOST" -d 4000 -nostdin
limA=$!
wait_for grep -q "event=call_start.*cred=$CRED_LIM" "$T/A.log" || fail "the first call at A did not start"
$SIPCLIENT invite --server "$A_ADDR:$A_PORT" --host "$TRUNK_HOST" --user pbx-lim --password "$PW" --algorithms MD5 \
	--to 15550000022 --timeout 3 >"$T/limA2.json"
assert_eq "a second call at node A: 503 for its share (1 of the trunk's 2 channels)" 503 \
	"$(json_get 'final.get("final_status")' <"$T/limA2.json")"
assert_match "... naming the channel limit" 'trunk channel limit' "$(cat "$T/limA2.json")"
$SIPCLIENT invite --server "$B_ADDR:$B_PORT" --host "$TRUNK_HOST" --user pbx-lim --password "$PW" --algorithms MD5 \
	--to 15550000023 --timeout 3 >"$T/limB.json"
assert_eq "a call at node B meanwhile: through (its own share)" 200 \
	"$(json_get '[r["status"] for r in resp if r["method"] == "INVITE"][-1]' <"$T/limB.json")"
wait "$limA"; assert_eq "the call at A completed" 0 $?
wait "$gwlim"; assert_eq "the gateway answered exactly the two admitted calls" 0 $?
# a node that stops beating leaves its share to the others within 6-8 s
alone() { grep -c "event=cluster_nodes node=A alive=1" "$T/A.log"; }
both() { grep -c "event=cluster_nodes node=A alive=2" "$T/A.log"; }
n1=$(alone); n2=$(both)
t0=$(date +%s.%N)
kill -STOP "$B_PID"
for _ in $(seq 1 120); do [ "$(alone)" -gt "$n1" ] && break; sleep 0.1; done
t1=$(date +%s.%N)
assert_eq "node A counts itself alone once B stopped beating" $((n1 + 1)) "$(alone)"
python3 -c "import sys; d = float(sys.argv[2]) - float(sys.argv[1]); print('share taken over after %.1f s' % d); sys.exit(0 if d <= 8.5 else 1)" "$t0" "$t1"
assert_eq "... within 8.5 s (6 s of heartbeat age in whole seconds, plus the next beat)" 0 $?
kill -CONT "$B_PID"
for _ in $(seq 1 150); do [ "$(both)" -gt "$n2" ] && break; sleep 0.1; done
assert_eq "... and counts two again once B beats again" $((n2 + 1)) "$(both)"

# concurrent writers: the APIs of both nodes create at once; nothing lost, nothing twice, and a
# username stays unique per trunk (one of two nodes creating the same one gets 409)
writers=""
for i in $(seq 1 10); do
	for n in A B; do
		api "$n" POST /credentials "{\"username\":\"both-$n-$i\",\"password\":\"$PW\"}" >"$T/cw-$n-$i" &
		writers="$writers $!"
		api "$n" POST /credentials "{\"username\":\"same-$i\",\"password\":\"$PW\"}" >"$T/cs-$n-$i" &
		writers="$writers $!"
	done
done
wait $writers
created=$(cat "$T"/cw-* | grep -c '^201 ')
assert_eq "20 distinct usernames at two nodes at once: 20 created" 20 "$created"
same=$(for i in $(seq 1 10); do cut -c1-3 "$T/cs-A-$i" "$T/cs-B-$i" | sort | tr '\n' ' '; echo; done | sort | uniq -c | sed 's/^ *//')
assert_eq "the same username at both nodes at once: one 201 and one 409, ten times" "10 201 409 " "$same"
assert_eq "the database holds each username once" "20 10" \
	"$(psql_q "SELECT count(*) FILTER (WHERE username LIKE 'both-%') || ' ' || count(*) FILTER (WHERE username LIKE 'same-%') FROM credentials")"
assert_eq "a credential of the burst registers at A" 200 "$(reg_until A same-7 200)"
assert_eq "a credential of the burst registers at B" 200 "$(reg_until B both-A-9 200)"

# a node stopped during 100 changes catches up from the log (no resync) once it goes on
kill -STOP "$B_PID"
# written by an operator's SQL (the trigger logs them all the same), HA1s computed by PostgreSQL
for i in $(seq 1 100); do
	psql_q "INSERT INTO credentials (id, trunk_id, username, created_at, ha1_md5, ha1_sha256, ha1_sha512_256)
		VALUES ('cred_bulk' || lpad('$i', 11, '0'), '$TRUNK', 'bulk-$i', 1775731200,
		        md5('bulk-$i:$TRUNK_HOST:$PW'), encode(sha256('bulk-$i:$TRUNK_HOST:$PW'), 'hex'), repeat('0', 64))" >/dev/null
done
kill -CONT "$B_PID"
head=$(psql_q 'SELECT last FROM change_seq')
# (registrations written or expiring meanwhile are changes too: the head may have moved on)
wait_for sh -c "[ \"\$(psql -X -qtA \"$DB\" -c \"SELECT applied_seq FROM nodes WHERE name = 'B'\")\" -ge $head ]"
assert_eq "node B applied all 100 changes after SIGCONT" t "$(psql_q "SELECT applied_seq >= $head FROM nodes WHERE name = 'B'")"
assert_nomatch "node B caught up without a resync" "event=cluster_resync" "$(cat "$T/B.log")"
assert_eq "credentials written by SQL while node B was stopped register at B" "200 200" "$(reg B bulk-1) $(reg B bulk-100)"
assert_eq "the mirror at B still has pbx-a" 200 "$(reg B pbx-a)"

# a write whose answer never comes (its connection ends while it waits for the change log's
# lock) is reported as of unknown outcome, never as a plain failure
# (hold_log_lock and end_waiting_insert: test/pg_lib.sh)
hold_log_lock
api A POST /credentials "{\"username\":\"lost-1\",\"password\":\"$PW\"}" >"$T/lost.out" &
poster=$!
assert_eq "the API's INSERT waits for the lock; its connection is ended" 1 "$(end_waiting_insert)"
wait "$poster"
assert_match "the API answers 503 outcome_unknown" '^503 .*"code": *"outcome_unknown"' "$(cat "$T/lost.out")"
assert_match "... saying the change may or may not have been made" 'may or may not have been made' "$(cat "$T/lost.out")"
wait "$LOCKER"
hold_log_lock
printf '%s\n' "$PW" | ctl_db credential create --trunk "$TRUNK" --username lost-2 --password-stdin >/dev/null 2>"$T/lost.err" &
ctl=$!
end_waiting_insert >/dev/null
wait "$ctl"
assert_eq "sipauthctl: exit status 8 (outcome unknown)" 8 $?
assert_match "sipauthctl says it may or may not have been made" "went away after the change was sent: it may or may not have been made" "$(cat "$T/lost.err")"
wait "$LOCKER"
assert_match "the node's API works again on a new connection" '^201 ' "$(api A POST /credentials "{\"username\":\"lost-3\",\"password\":\"$PW\"}")"

# the database away: SIP goes on from each node's mirror
pg_stop
wait_for grep -q "event=cluster_down" "$T/A.log"
wait_for grep -q "event=cluster_down" "$T/B.log"
assert_match "node A noticed the database went away" "event=cluster_down node=A" "$(cat "$T/A.log")"
assert_eq "database stopped: REGISTER at A from the mirror" 200 "$(reg A pbx-a)"
assert_eq "database stopped: REGISTER at B from the mirror" 200 "$(reg B prop-3)"
assert_eq "database stopped: a wrong user is still refused at B" 401 "$(reg B nobody)"
sleep 2
assert_eq "database still away after 2 s: REGISTER at A" 200 "$(reg A prop-4)"
out=$(api A GET /credentials)
assert_match "database away: the API answers 503 database_unavailable" '^503 .*"code": *"database_unavailable"' "$out"
assert_match "database away: the message says nothing was changed" 'the database is unavailable: nothing was changed' "$out"
assert_match "database away: a POST too" '^503 .*database_unavailable' "$(api B POST /credentials "{\"username\":\"x-1\",\"password\":\"$PW\"}")"
m=$(curl -s "http://$A_ADDR:$A_API_PORT/metrics")
assert_match "/metrics: disconnected" "sipauthd_cluster_connected 0" "$m"
assert_match "/metrics: the state is not up" 'sipauthd_cluster_state\{state="(down|connecting)"\} 1' "$m"
pg_restart || fail "PostgreSQL restarted"
cred pbx-after >/dev/null
assert_eq "after the restart the feed catches up: new credential at A" 200 "$(reg_until A pbx-after 200)"
assert_eq "after the restart the feed catches up: new credential at B" 200 "$(reg_until B pbx-after 200)"
assert_eq "node A connected again" 2 "$(grep -c "event=cluster_connected" "$T/A.log")"
assert_match "the API of node B answers from the database again" "^200 " "$(api B GET /credentials?limit=1)"

# the log pruned past a node: node B, stopped meanwhile, resyncs the whole database
kill -STOP "$B_PID"
CRED_GONE=$(ctl_db credential list --trunk "$TRUNK" | python3 -c 'import json,sys; print([c["id"] for c in json.load(sys.stdin)["data"] if c["username"] == "prop-5"][0])')
ctl_db credential delete --trunk "$TRUNK" --id "$CRED_GONE"
cred pbx-resync >/dev/null
assert_eq "node A applied both changes" 200 "$(reg_until A pbx-resync 200)"
psql_q "DELETE FROM change_log" >/dev/null
head0=$(psql_q 'SELECT last FROM change_seq')
kill -CONT "$B_PID"
assert_eq "node B after the log was pruned: the new credential registers" 200 "$(reg_until B pbx-resync 200)"
assert_eq "node B after the log was pruned: the deleted credential is refused" 401 "$(reg B prop-5)"
# to the head it found (bindings written since, REGISTERs' among them, come after it)
rseq=$(sed -n 's/.*event=cluster_resynced node=B seq=\([0-9]*\) .*/\1/p' "$T/B.log" | head -n 1)
assert_eq "node B did a full resync, to the head of the log or later" 1 \
	"$(python3 -c "import sys; print(int(sys.argv[2] != '' and int(sys.argv[1]) <= int(sys.argv[2]) <= int(sys.argv[3])))" \
		"$head0" "$rseq" "$(psql_q 'SELECT last FROM change_seq')")"
assert_eq "node B: other credentials still register" 200 "$(reg B prop-6)"
hb=$(psql_q "SELECT string_agg(name || '=' || address, ' ' ORDER BY name) FROM nodes")
assert_eq "both nodes beat in the nodes table with their address" "A=udp:127.0.0.21:$A_PORT B=udp:127.0.0.22:$B_PORT" "$hb"
off=$(curl -s "http://$A_ADDR:$A_API_PORT/metrics" | sed -n 's/^sipauthd_cluster_clock_offset_seconds //p')
python3 -c "import sys; sys.exit(0 if sys.argv[1] and abs(float(sys.argv[1])) < 2 else 1)" "$off"
assert_eq "/metrics: node A's clock against the database's, under 2 s apart on one host ($off)" 0 $?
assert_nomatch "no node logged a clock skew" "event=cluster_clock_skew" "$(cat "$T/A.log" "$T/B.log")"

# a second sipauthd started with node B's name (a cloned host, a copied file): both say so, as
# an error naming the other's address, and count it; B beats alone again once it is gone
sed -e "s|^path = .*|path = $T/B2-store|" -e "s|127\.0\.0\.22|127.0.0.24|g" "$T/B.conf" >"$T/B2.conf"
spawn "$T/B2.log" "$SIPAUTHD" --config "$T/B2.conf"
B2_PID=$!
for f in B B2; do
	wait_for grep -q "event=cluster_node_name_taken node=B" "$T/$f.log" || fail "$f did not see the other B"
done
assert_match "node B logs the other B as an error, with its address" \
	"level=error event=cluster_node_name_taken node=B other_address=udp:127\.0\.0\.24:$B_PORT hint=" "$(cat "$T/B.log")"
assert_match "... and the other B node B" \
	"level=error event=cluster_node_name_taken node=B other_address=udp:127\.0\.0\.22:$B_PORT hint=" "$(cat "$T/B2.log")"
n=$(curl -s "http://$B_ADDR:$B_API_PORT/metrics" | sed -n 's/^sipauthd_cluster_node_name_conflicts_total //p')
[ "${n:-0}" -ge 1 ]
assert_eq "/metrics: node B counts the heartbeats the other B wrote over ($n)" 0 $?
sleep 3   # three more beats of both: logged each second, these would be more lines
stop "$B2_PID"
assert_eq "... once a minute in the log, not each second" 1 "$(grep -c 'event=cluster_node_name_taken' "$T/B.log")"

# a node whose clock is 200 s behind the database's (faketime): registrations are written with
# its clock and expired by the others', so it says so, as an error, with the offset
# (libfaketime preloaded into the daemon itself: the faketime program forks, and its pid's
# death would leave the daemon running)
FT_LIB=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null | head -1)
if [ -n "$FT_LIB" ]; then
	sed -e "s|^path = .*|path = $T/D-store|" -e "s|127\.0\.0\.22|127.0.0.25|g" -e "s|^node = B|node = D|" \
		"$T/B.conf" >"$T/D.conf"
	spawn "$T/D.log" env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
		LD_PRELOAD="$FT_LIB" FAKETIME="-200s" "$SIPAUTHD" --config "$T/D.conf"
	D_PID=$!
	wait_for grep -q "event=cluster_clock_skew" "$T/D.log" || fail "node D logged no clock skew"
	off=$(sed -n 's/.*level=error event=cluster_clock_skew node=D offset_ms=\([0-9]*\) .*/\1/p' "$T/D.log")
	python3 -c "import sys; sys.exit(0 if sys.argv[1] and 199000 <= int(sys.argv[1]) <= 201000 else 1)" "$off"
	assert_eq "a node whose clock is 200 s behind logs the skew as an error, with the offset ($off ms)" 0 $?
	assert_match "... and /metrics shows it" "sipauthd_cluster_clock_offset_seconds 20[01]\." \
		"$(curl -s "http://127.0.0.25:$B_API_PORT/metrics")"
	stop "$D_PID"
else
	echo "libfaketime is not installed: the clock skew check is skipped"
fi

# a node whose store was made for another domain is refused by the feed (its HA1s could not
# match) and says so; it serves SIP from its own store meanwhile
"$SIPAUTHCTL" --store "$T/C-store" init --domain other.example >/dev/null
NODE_DOMAIN=other.example node C 127.0.0.23
wait_for grep -q "event=cluster_domain_mismatch" "$T/C.log"
assert_match "node C: the domain mismatch is logged" \
	"event=cluster_domain_mismatch node=C database=sip.tryvox.io store=other.example" "$(cat "$T/C.log")"
assert_match "node C: /metrics says refused" 'sipauthd_cluster_state\{state="refused"\} 1' \
	"$(curl -s "http://$C_ADDR:$C_API_PORT/metrics")"
sleep 1.5
assert_eq "node C does not retry a refused database" 1 "$(grep -c "event=cluster_down" "$T/C.log")"
stop "$C_PID"
assert_eq "node C stops cleanly" 0 $?

openapi_check
nodes_stop A B

finish
