#!/bin/sh
# restart_purge.sh: the registration of a credential deleted by sipauthctl while sipauthd was
# stopped is removed at the next start, from the tombstone: runtime/ keeps how far the last run
# followed them, so a restart looks at the deleted credentials only, not at the credential of
# every registration (which, with 100 000 registrations on a million credentials, paged in most
# of data.mdb before the first request). A restart with nothing deleted removes nothing.
. "$top_srcdir/test/lib.sh"
need sipp
need curl
setup_store || { fail "store setup"; finish; }
GONE_USER=pbx-gone-01
GONE_PASS=another_password_456
GONE=$(printf '%s\n' "$GONE_PASS" | "$SIPAUTHCTL" --store "$STORE" credential create --trunk "$TRUNK" \
	--username "$GONE_USER" --password-stdin | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
API_PORT=$(free_port 127.0.0.1)
start_daemon() {
	start_sipauthd "MD5" "[api]
listen = 127.0.0.1:$API_PORT"
}
stop_daemon() {
	kill -TERM "$SIPAUTHD_PID"
	wait "$SIPAUTHD_PID"
}
metric() { curl -s "http://127.0.0.1:$API_PORT/metrics" | sed -n "s/^sipauthd_$1 //p"; }
# register USER PASSWORD PORT: one REGISTER exchange from PORT (its Contact; expires 300); sipp's exit status
register() {
	timeout 20 sipp -sf "$SIPP_DIR/pbx_register.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$3" -m 1 \
		-nostdin -s "$1" -au "$1" -ap "$2" -key trunk_host "$TRUNK_HOST" -key expires 300 >/dev/null 2>&1
}
PORT1=$(free_port 127.0.0.1)
PORT2=$(free_port 127.0.0.1)
purge_lines() { grep -c "event=bindings_purged" "$T/sipauthd.log"; }

# --- a new store: nothing was deleted, nothing to remove
start_daemon || { fail "sipauthd did not start"; finish; }
assert_eq "the first start removes nothing" 0 "$(purge_lines)"
register "$SIP_USER" "$SIP_PASS" "$PORT1"
assert_eq "PBX 1 registers" 0 $?
register "$GONE_USER" "$GONE_PASS" "$PORT2"
assert_eq "PBX 2 registers" 0 $?
assert_eq "two registrations" 2 "$(metric registrations_active)"
stop_daemon
assert_eq "SIGTERM: exit status 0" 0 $?

# --- PBX 2's credential deleted while the daemon is stopped (sipauthctl cannot touch runtime/)
"$SIPAUTHCTL" --store "$STORE" credential delete --trunk "$TRUNK" --id "$GONE" >/dev/null
assert_eq "sipauthctl deletes PBX 2's credential" 0 $?
start_daemon || { fail "sipauthd did not restart"; finish; }
assert_eq "the restart removed the registration of the one credential deleted since the last run" \
	"event=bindings_purged cause=credentials_deleted credentials=1 since=0" \
	"$(grep -o 'event=bindings_purged.*' "$T/sipauthd.log")"
assert_eq "one registration left" 1 "$(metric registrations_active)"
register "$GONE_USER" "$GONE_PASS" "$PORT2"
assert_eq "PBX 2 is refused now" 1 $?
stop_daemon

# --- a second restart: the place was kept, nothing new was deleted
start_daemon || { fail "sipauthd did not start a third time"; finish; }
assert_eq "a restart with nothing deleted removes nothing" 0 "$(purge_lines)"
assert_eq "PBX 1's registration is still there" 1 "$(metric registrations_active)"
register "$SIP_USER" "$SIP_PASS" "$PORT1"
assert_eq "PBX 1 refreshes" 0 $?
assert_eq "still one registration" 1 "$(metric registrations_active)"
stop_daemon
finish
