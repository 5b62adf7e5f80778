#!/bin/sh
# credential_index.sh: [store] credential_index (issue 11): with it (the default) sipauthd keeps
# every credential in memory and its start says how many and how much; credentials that sipauthctl
# creates, rotates and deletes while it runs are taken up by the next REGISTER (a new one
# registers, a rotated one's old password is refused once its overlap is 0, a deleted one is
# refused), with no rebuild of the index; an index behind what the change log keeps is let go
# (requests read data.mdb) and built again off the SIP path; off: no index, and REGISTER
# authenticates as before;
# the key needs a restart (SIGHUP names it); a bad value is refused with the file and line.
. "$top_srcdir/test/lib.sh"
need sipp
need curl
setup_store || { fail "store setup"; finish; }
ctl() { "$SIPAUTHCTL" --store "$STORE" "$@"; }
cred_id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
USER2=pbx-prod-02 PASS2=another_password_456
printf '%s\n' "$PASS2" | ctl credential create --trunk "$TRUNK" --username "$USER2" --password-stdin >/dev/null

# reg SCENARIO USER PASSWORD: one REGISTER by sipp (pbx_register.xml: 200 after the
# challenge; pbx_register_fail.xml: 401 again); sipp's exit status
reg() {
	timeout 20 sipp -sf "$SIPP_DIR/$1" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p "$(free_port)" -m 1 -nostdin \
		-s "$2" -au "$2" -ap "$3" -key trunk_host "$TRUNK_HOST" -key expires 300 >/dev/null 2>&1
}

METRICS_PORT=$(free_port 127.0.0.1)
API_CONF="[api]
metrics_listen = 127.0.0.1:$METRICS_PORT"
# metric NAME: its value on /metrics ("none" when absent)
metric() {
	curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v n="sipauthd_$1" '$1 == n { v = $2 } END { print v == "" ? "none" : v }'
}
# index: credentials, rebuilds and drops of the credential index, from /metrics
index() { echo "$(metric credential_index_credentials) $(metric credential_index_rebuilds_total) $(metric credential_index_dropped_total)"; }

start_sipauthd MD5 "$API_CONF" || { fail "sipauthd did not start"; finish; }
assert_match "the start reports the index: both credentials" \
	"level=info event=credential_index credentials=2 memory_mib=[0-9]+\.[0-9] build_ms=[0-9]+$" \
	"$(grep event=credential_index "$T/sipauthd.log")"
reg pbx_register.xml "$USER2" "$PASS2"
assert_eq "a credential made before the start registers" 0 $?
assert_eq "/metrics: 2 credentials in the index, not rebuilt, not dropped" "2 0 0" "$(index)"

# written by another process while sipauthd runs
USER3=pbx-prod-03 PASS3=third_password_789
CRED3=$(printf '%s\n' "$PASS3" | ctl credential create --trunk "$TRUNK" --username "$USER3" --password-stdin | cred_id)
reg pbx_register.xml "$USER3" "$PASS3"
assert_eq "a credential sipauthctl creates while sipauthd runs registers at once" 0 $?
assert_eq "... from the index, which took it up (3 credentials, not rebuilt)" "3 0 0" "$(index)"
PASS3B=rotated_password_012
printf '%s\n' "$PASS3B" | ctl credential rotate --trunk "$TRUNK" --id "$CRED3" --password-stdin --overlap-seconds 0 >/dev/null
assert_eq "sipauthctl rotates" 0 $?
reg pbx_register_fail.xml "$USER3" "$PASS3"
assert_eq "after a rotation without overlap the old password is refused (401 again)" 0 $?
reg pbx_register.xml "$USER3" "$PASS3B"
assert_eq "... and the new one registers" 0 $?
ctl credential delete --trunk "$TRUNK" --id "$CRED3" >/dev/null
assert_eq "sipauthctl deletes" 0 $?
reg pbx_register_fail.xml "$USER3" "$PASS3B"
assert_eq "a deleted credential is refused at once (401 again)" 0 $?
assert_eq "... and has left the index (2 credentials, not rebuilt, not dropped)" "2 0 0" "$(index)"
reg pbx_register.xml "$SIP_USER" "$SIP_PASS"
assert_eq "the other credentials go on" 0 $?
assert_eq "one start line, no failure line" "1 0" \
	"$(grep -c event=credential_index "$T/sipauthd.log") $(grep -c event=credential_index_failed "$T/sipauthd.log")"

# behind what the change log keeps (as after 100 000 writes with no request between, or a fleet's
# resync): the next REGISTER reads data.mdb and waits for no build; the store thread builds the
# index again at its next look (every 5 s)
USER4=pbx-prod-04 PASS4=fourth_password_012 USER5=pbx-prod-05 PASS5=fifth_password_345
printf '%s\n' "$PASS4" | ctl credential create --trunk "$TRUNK" --username "$USER4" --password-stdin >/dev/null
printf '%s\n' "$PASS5" | ctl credential create --trunk "$TRUNK" --username "$USER5" --password-stdin >/dev/null
assert_eq "the change log cut to its newest entry (6 of 7 dropped)" 6 "$("$top_builddir/test/durability_writer" --drop-changes "$STORE")"
reg pbx_register.xml "$USER4" "$PASS4"
assert_eq "a credential the index never saw registers at once (from data.mdb)" 0 $?
assert_eq "... the index let go meanwhile (0 credentials, not yet rebuilt)" "0 0 0" "$(index)"
i=0; until grep -q event=credential_index_rebuilt "$T/sipauthd.log" || [ $i -ge 120 ]; do sleep 0.1; i=$((i + 1)); done
assert_match "the store thread builds it again, with the 4 credentials there are" \
	"level=info event=credential_index_rebuilt cause=behind_change_log credentials=4 memory_mib=[0-9]+\.[0-9] build_ms=[0-9]+$" \
	"$(grep event=credential_index_rebuilt "$T/sipauthd.log")"
assert_eq "/metrics: 4 credentials, rebuilt once, never dropped" "4 1 0" "$(index)"
reg pbx_register.xml "$USER5" "$PASS5"
assert_eq "the rebuilt index answers" 0 $?

# the key needs a restart: SIGHUP names it and keeps the index
printf '[store]\ncredential_index = off\n' >>"$T/sipauthd.conf"
kill -HUP "$SIPAUTHD_PID"
wait_for grep -q "event=reloaded" "$T/sipauthd.log"
assert_match "SIGHUP names the key that needs a restart" \
	'event=reload_needs_restart key="\[store\] credential_index"' "$(cat "$T/sipauthd.log")"
reg pbx_register.xml "$USER2" "$PASS2"
assert_eq "after the reload REGISTER still authenticates" 0 $?
stop "$SIPAUTHD_PID"

# off: no index, the same answers
mv "$T/sipauthd.log" "$T/sipauthd-on.log"
start_sipauthd MD5 "$API_CONF
[store]
credential_index = off" || { fail "sipauthd did not start with credential_index = off"; finish; }
assert_eq "off: no index at start, none on /metrics" "0 none" \
	"$(grep -c event=credential_index "$T/sipauthd.log") $(metric credential_index_credentials)"
reg pbx_register.xml "$USER2" "$PASS2"
assert_eq "off: a credential registers" 0 $?
reg pbx_register_fail.xml "$USER2" wrong_password_345
assert_eq "off: a wrong password is refused (401 again)" 0 $?
stop "$SIPAUTHD_PID"

printf '[sip]\nlisten = udp:127.0.0.1:5060\n[upstream]\ngateway = udp:127.0.0.2:5060\n[store]\ncredential_index = yes\n' \
	>"$T/bad.conf"
assert_eq "a bad value is refused with the file and line" \
	"sipauthd: $T/bad.conf:6: credential_index must be on or off, not 'yes'" \
	"$("$SIPAUTHD" --check-config "$T/bad.conf" 2>&1)"
finish
