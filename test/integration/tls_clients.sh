#!/bin/sh
# tls_clients.sh: real SIP clients over TLS. sipsak registers with digest; baresip registers,
# calls out through sipauthd to a UDP gateway stand-in (sipp on 127.0.0.2) and takes an
# inbound call from it over its own TLS connection; the call crossing TLS -> UDP carries two
# Record-Route entries. Protocol versions, stalled handshakes and reload are in tls.sh.
#
# The daemon offers MD5 only here. Debian 12's clients cannot answer SHA-256: sipsak 0.9.8.1
# takes the first challenge and stops with "unsupported authentication algorithm" when it is
# SHA-256; baresip 1.0.0 (libre) gives up with ENOSYS ("Function not implemented") on any
# SHA-256 challenge, even when an MD5 one comes first.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/tls_lib.sh"
need sipp
setup_store || { fail "store setup"; finish; }
TRUNK_DNS=$(printf '%s' "$TRUNK_HOST" | tr _ -)
make_cert server sipauthd-test || { cat "$T/server.openssl.log"; fail "openssl made no certificate"; finish; }
start_tls_sipauthd d "MD5" || { fail "sipauthd did not start with a tls listener"; finish; }
LOG=$T/d.log
# registered LOGFILE: how many new TLS bindings of our credential the daemon logged
registered() { grep -c "event=register cred=$CRED trunk=$TRUNK src=127.0.0.1:[0-9]* proto=tls added=1 removed=0" "$LOG"; }

# ---------------------------------------------------------------- sipsak
# sipsak resolves the URI's host (c-ares SRV, then the resolver), and trunk hosts are not in
# DNS: it runs in a private mount namespace whose /etc/hosts maps the trunk host to 127.0.0.1
# and whose resolv.conf points at a closed loopback port (no waiting on a real resolver).
# -U with -C and no -b/-e registers exactly the user of -s once (usrloc mode appends numbers
# only with -b/-e). sipsak checks the server certificate only at -vvv.
sipsak_run() {   # NAME CONTACT_PORT [ENV...]: exit status; readable output in $T/NAME.txt
	_n=$1 _cp=$2; shift 2
	env "$@" timeout 20 unshare -m sh -c 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"' \
		sh "$T/hosts" "$T/resolv.conf" \
		sipsak -U -C "sip:$SIP_USER@127.0.0.1:$_cp" -s "sip:$SIP_USER@$TRUNK_DNS" -r "$TLS_PORT" --transport=tls \
		--tls-ca-cert "$T/server.pem" -u "$SIP_USER" -a "$SIP_PASS" -x 300 -i -vvv >"$T/$_n.out" 2>&1
	_rc=$?
	tr -cd '\11\12\15\40-\176' <"$T/$_n.out" >"$T/$_n.txt"
	return $_rc
}
sipsak_checks() {   # NAME CONTACT_PORT TLSVERSION RC BEFORE
	_t=$T/$1.txt
	assert_eq "sipsak ($3) exits 0 after registering" 0 "$4"
	[ "$4" = 0 ] || echo "  sipsak's last words: $(grep -v '^[[:space:]]*$' "$_t" | tail -n1)"
	assert_eq "sipsak ($3): the TLS session is $3" "Protocol: $3" "$(grep '^Protocol:' "$_t" | head -n1)"
	assert_match "sipsak ($3) answers the challenge with MD5 for the credential's username" \
		"^Authorization: Digest username=\"$SIP_USER\", uri=\"sip:$TRUNK_DNS\", algorithm=MD5, realm=\"$TRUNK_HOST\"" \
		"$(grep '^Authorization:' "$_t")"
	assert_eq "sipsak ($3) gets the 200 listing its contact" 1 \
		"$(tr -d '\r' <"$_t" | grep -cxF "Contact: <sip:$SIP_USER@127.0.0.1:$2>;expires=300")"
	assert_eq "sipsak ($3): the daemon logged the TLS binding (event=register ... proto=tls)" $(($5 + 1)) "$(registered)"
}
printf '127.0.0.1 localhost %s\n127.0.0.1 %s\n' "$(uname -n)" "$TRUNK_DNS" >"$T/hosts"
printf 'nameserver 127.0.0.1\n' >"$T/resolv.conf"
if ! command -v sipsak >/dev/null 2>&1; then
	echo "SKIP (sipsak part): sipsak is not installed"
elif ! unshare -m sh -c 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && getent hosts "$3"' \
		sh "$T/hosts" "$T/resolv.conf" "$TRUNK_DNS" >/dev/null 2>&1; then
	echo "SKIP (sipsak part): cannot bind-mount a private /etc/hosts (unshare -m needs root)"
else
	# TLS 1.2: the client's GnuTLS is kept to 1.2 by a priority override file
	printf '[overrides]\ndisabled-version = tls1.3\n' >"$T/gnutls-tls12.conf"
	n=$(registered)
	sipsak_run sipsak12 40012 GNUTLS_SYSTEM_PRIORITY_FILE="$T/gnutls-tls12.conf"
	sipsak_checks sipsak12 40012 TLS1.2 $? "$n"
	# TLS 1.3, sipsak as it comes. sipsak reads once after select() with gnutls_record_recv()
	# and takes any return <= 0 as failure ("nothing received, select returned error"); a
	# TLS 1.3 server's NewSessionTicket records (OpenSSL sends two after each handshake by
	# default) arrive first and make that read return no data, so sipsak gives up before it
	# reads the 401. It registers when the server sends no tickets (SSL_CTX_set_num_tickets 0).
	n=$(registered)
	sipsak_run sipsak13 40013
	sipsak_checks sipsak13 40013 TLS1.3 $? "$n"
fi

# ---------------------------------------------------------------- baresip
# free_port_pair: P with P and P+1 free (baresip listens for TLS on sip_listen's port + 1)
free_port_pair() {
	python3 - <<'PY'
import random, socket
def free(p):
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", p)); s.close()
        return True
    except OSError:
        return False
for _ in range(200):
    p = random.randint(20000, 60000)
    if free(p) and free(p + 1):
        print(p); break
PY
}
# baresip_dir DIR ANSWERMODE: a headless config: no audio device (the source is a silent
# WAV file, no player), commands from -e (menu), the account over TLS via sipauthd.
baresip_dir() {
	mkdir -p "$1"
	cat >"$1/config" <<EOF
poll_method		epoll
sip_listen		127.0.0.1:$(free_port_pair)
sip_cafile		$T/server.pem
call_local_timeout	20
audio_player		none,none
audio_source		aufile,$T/silence.wav
audio_alert		none,none
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module_tmp		account.so
module_app		menu.so
EOF
	echo "<sip:$SIP_USER@$TRUNK_DNS;transport=tls>;auth_pass=$SIP_PASS;outbound=\"sip:127.0.0.1:$TLS_PORT;transport=tls\";regint=300;answermode=$2" >"$1/accounts"
}
# sip_msg FILE METHOD: the first METHOD request in a sipp -trace_msg file, CRs removed
sip_msg() { tr -d '\r' <"$1" | awk -v m="$2" '$1 == m && $3 == "SIP/2.0" { p = 1 } p && /^$/ { exit } p'; }

if ! command -v baresip >/dev/null 2>&1 || [ ! -d /usr/lib/baresip/modules ]; then
	echo "SKIP (baresip part): baresip-core is not installed"
else
	python3 -c "
import wave, sys
w = wave.open(sys.argv[1], 'wb'); w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
w.writeframes(b'\0\0' * 8000 * 20); w.close()" "$T/silence.wav"

	# --- outbound: register, dial, talk 5 s, hang up (baresip's -t quits and sends BYE)
	spawn "$T/gw.out" timeout 30 sipp -sf "$SIPP_DIR/gateway_uas.xml" -i 127.0.0.2 -p "$GW_PORT" -m 1 -nostdin \
		-trace_err -error_file "$T/gw.err" -trace_msg -message_file "$T/gw.msg"
	gw=$!
	sleep 0.3
	baresip_dir "$T/bs_out" manual
	n=$(registered)
	timeout 20 baresip -f "$T/bs_out" -s -e "/dial 15551234567" -t 5 </dev/null >"$T/bs_out.log" 2>&1
	assert_eq "baresip ran and quit by itself" 0 $?
	wait "$gw"
	assert_eq "gateway sipp saw INVITE, ACK and BYE of baresip's call" 0 $?
	bs=$(tr -cd '\11\12\15\40-\176' <"$T/bs_out.log")
	assert_match "baresip registered over TLS (200 OK)" "$SIP_USER@$TRUNK_DNS: \{0/TLS/v4\} 200 OK" "$bs"
	assert_eq "baresip: the daemon logged the TLS binding (event=register ... proto=tls)" $((n + 1)) "$(registered)"
	assert_match "baresip answers the challenge with a digest for the credential's username" \
		"^Authorization: Digest username=\"$SIP_USER\", realm=\"$TRUNK_HOST\"" "$bs"
	assert_match "baresip's call is established through sipauthd" \
		"Call established: sip:15551234567@$TRUNK_DNS;transport=tls" "$bs"
	assert_match "the daemon logged the call from the TLS credential" \
		"event=call_start call_id=\"[^\"]*\" cred=$CRED trunk=$TRUNK direction=outbound" "$(cat "$LOG")"
	assert_match "the call ended with baresip's BYE" "event=call_end call_id=\"[^\"]*\" cred=$CRED trunk=$TRUNK reason=bye" "$(cat "$LOG")"
	# TLS on the PBX side, UDP on the gateway side: two Record-Route entries, ours towards the
	# gateway on top (RFC 3261 §16.6 step 4, RFC 5658)
	inv=$(sip_msg "$T/gw.msg" INVITE)
	assert_eq "the INVITE the gateway receives has two Record-Route entries: UDP side, then TLS side" \
"Record-Route: <sip:127.0.0.1:$SIP_PORT;lr>
Record-Route: <sip:127.0.0.1:$TLS_PORT;transport=tls;lr>" "$(printf '%s\n' "$inv" | grep '^Record-Route:')"
	assert_match "the gateway's INVITE has our UDP Via on top" "^Via: SIP/2.0/UDP 127.0.0.1:$SIP_PORT;branch=z9hG4bK" "$(printf '%s\n' "$inv" | grep '^Via:' | head -n1)"
	assert_match "the gateway's INVITE keeps baresip's TLS Via below ours" "^Via: SIP/2.0/TLS 127.0.0.1:[0-9]+;branch=.*;received=127.0.0.1;rport=[0-9]+" \
		"$(printf '%s\n' "$inv" | grep '^Via:' | sed -n 2p)"

	# --- inbound: the gateway calls the trunk; the INVITE reaches baresip over the TLS
	# connection baresip registered on (RFC 5923-style reuse: no new connection to the PBX)
	baresip_dir "$T/bs_in" auto
	n=$(registered)
	spawn "$T/bs_in.log" timeout 20 baresip -f "$T/bs_in" -s -t 7
	bs_pid=$!
	wait_for sh -c "[ \$(grep -c 'event=register cred=$CRED trunk=$TRUNK src=127.0.0.1:[0-9]* proto=tls added=1' '$LOG') -gt $n ]" \
		|| fail "baresip (inbound) did not register"
	pport=$(grep "event=register cred=$CRED trunk=$TRUNK src=127.0.0.1:[0-9]* proto=tls added=1" "$LOG" | tail -n1 \
		| sed 's/.* src=127.0.0.1:\([0-9]*\) .*/\1/')
	timeout 20 sipp -sf "$SIPP_DIR/gateway_call.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.2 -p "$(free_port 127.0.0.2)" \
		-s "$SIP_USER" -key trunk_host "$TRUNK_HOST" -d 1000 -m 1 -nostdin \
		-trace_err -error_file "$T/in.err" -trace_msg -message_file "$T/in.msg" >"$T/in.out" 2>&1
	assert_eq "the gateway's inbound call is answered by baresip over TLS" 0 $?
	wait "$bs_pid"
	bs=$(tr -cd '\11\12\15\40-\176' <"$T/bs_in.log")
	assert_eq "the inbound INVITE came on the TLS connection baresip registered from (port $pport)" 1 \
		"$(printf '%s\n' "$bs" | grep -A1 "^TLS 127.0.0.1:$TLS_PORT -> 127.0.0.1:$pport\$" | grep -c '^INVITE sip:')"
	assert_eq "the INVITE baresip receives has two Record-Route entries: TLS side, then UDP side" \
"Record-Route: <sip:127.0.0.1:$TLS_PORT;transport=tls;lr>
Record-Route: <sip:127.0.0.1:$SIP_PORT;lr>" \
		"$(printf '%s\n' "$bs" | tr -d '\r' | awk '/^INVITE sip:/ { p = 1 } p && /^$/ { exit } p' | grep '^Record-Route:')"
	assert_match "the daemon logged the inbound call" \
		"event=call_start call_id=\"[^\"]*\" cred=$CRED trunk=$TRUNK direction=inbound" "$(cat "$LOG")"
fi
finish
