# sipauthctl.sh: drives the real sipauthctl through every command and error, asserting exact output and exit status.
. "$top_srcdir/test/lib.sh"

[ -x "$SIPAUTHCTL" ] || skip "$SIPAUTHCTL is not built"
need python3

S="$T/store"
PW=secure_password_here_123

# ctl ARGS...: run sipauthctl with empty stdin; sets $out, $err and $rc
ctl() {
	out=$("$SIPAUTHCTL" "$@" 2>"$T/stderr" </dev/null)
	rc=$?
	err=$(cat "$T/stderr")
}
# ctl_in INPUT ARGS...: the same with INPUT (printf %b escapes) on stdin
ctl_in() {
	_in=$1; shift
	out=$(printf '%b' "$_in" | "$SIPAUTHCTL" "$@" 2>"$T/stderr")
	rc=$?
	err=$(cat "$T/stderr")
}
# expect WHAT RC STDERR: the last command's exit status and stderr
expect() {
	assert_eq "$1: exit status" "$2" "$rc"
	assert_eq "$1: stderr" "$3" "$err"
}
# json WHAT PYTHON_CONDITION JSON: the condition on j (the parsed JSON) holds
json() {
	_r=$(printf '%s' "$3" | python3 -c "
import json, re, sys
j = json.load(sys.stdin)
print('yes' if ($2) else 'no: ' + json.dumps(j))" 2>&1)
	assert_eq "$1" yes "$_r"
}
RFC3339='re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", %s)'
CRED_KEYS="['id', 'trunk_id', 'username', 'created_at']"
LIST_KEYS="['id', 'trunk_id', 'username', 'created_at', 'password_version', 'rotated_at', 'previous_password_expires_at']"

# ---- usage ----
ctl --help
assert_eq "--help exit status" 0 "$rc"
assert_match "--help lists credential create" "credential create --trunk TRUNK_ID --username U --password-stdin" "$out"
assert_match "--help names the default store" "default /var/lib/sipauthd" "$out"
assert_match "--help documents exit statuses" "exit status: 0 ok, 1 bad usage" "$out"

ctl --version
assert_eq "--version: its version (the daemon's), exit 0" "0 sipauthctl $("$top_builddir/daemon/sipauthd" --version | sed 's/^sipauthd //')" "$rc $out"

ctl
assert_eq "no command: exit status" 1 "$rc"
assert_match "no command: usage on stderr" "^usage: sipauthctl" "$err"

ctl --store "$S" frobnicate now
expect "unknown command" 1 "sipauthctl: unknown command 'frobnicate now' (see sipauthctl --help)"
ctl --store "$S" --bogus init
expect "unknown option" 1 "sipauthctl: bad option --bogus (see sipauthctl --help)"
ctl --store "$S" init --domain
expect "option without its value" 1 "sipauthctl: --domain needs a value"
ctl --store "$S" init --trunk trunk_x
expect "option for another command" 1 "sipauthctl: --trunk does not apply to init"
ctl --store "$S" account create extra --name X
expect "stray argument" 1 "sipauthctl: unexpected argument 'extra'"
ctl --store "$S" --min-password-length 8 init
expect "minimum below 12" 1 "sipauthctl: --min-password-length must be a number from 12 to 128"
ctl --store "$S" --min-password-length 12x init
expect "minimum not a number" 1 "sipauthctl: --min-password-length must be a number from 12 to 128"

# ---- a store that is not there ----
ctl --store "$S" credential list --trunk trunk_x
expect "not initialised (list)" 4 "sipauthctl: store not initialised: run sipauthctl --store $S init"
ctl --store "$S" account create --name Acme
expect "not initialised (create)" 4 "sipauthctl: store not initialised: run sipauthctl --store $S init"
assert_eq "no store directory left behind" no "$([ -e "$S" ] && echo yes || echo no)"
mkdir -p "$T/parent/store" && : >"$T/parent/store/data.mdb" && : >"$T/parent/sipauthd.conf"
ctl --store "$T/parent" trunk list --account acc_x
expect "a folder with files but no store (a store's parent): not 'run init' there" 4 \
	"sipauthctl: $T/parent holds files but no store (no data.mdb): is --store the folder that holds data.mdb? (sipauthctl --store DIR init makes a new, empty one)"
assert_eq "... and nothing made there" no "$([ -e "$T/parent/data.mdb" ] && echo yes || echo no)"

# ---- init ----
ctl --store "$S" init
assert_eq "init: exit status" 0 "$rc"
assert_eq "init: output" "initialised $S for domain sip.tryvox.io" "$out"
assert_eq "init: store directory private" 700 "$(stat -c %a "$S")"
ctl --store "$S" init --domain other.example
expect "re-init refused" 3 "sipauthctl: store $S is already initialised (domain sip.tryvox.io)"
ctl --store "$T/store2" init --domain Voice.Example.NET
assert_eq "init --domain: output" "initialised $T/store2 for domain voice.example.net" "$out"
ctl --store "$T/store3" init --domain bad_domain
expect "init bad domain" 1 "sipauthctl: invalid domain bad_domain: use a DNS name like sip.tryvox.io"

# ---- accounts and API keys ----
ctl --store "$S" account create --name "Acme Corp"
assert_eq "account create: exit status" 0 "$rc"
assert_match "account create: prints an acc_ id" '^acc_[a-z0-9]{16}$' "$out"
ACC=$out
ctl --store "$S" account create --name "Other"
ACC2=$out
ctl --store "$S" account create
expect "account create without name" 1 "sipauthctl: account create needs --name NAME"
ctl --store "$S" account create --name ""
expect "account create empty name" 1 "sipauthctl: invalid account name: use 1 to 128 characters of UTF-8 text without control characters"

ctl --store "$S" apikey create --account "$ACC"
assert_eq "apikey create: exit status" 0 "$rc"
assert_match "apikey create: prints a key" '^tvx_sk_live_[A-Za-z0-9]{32}$' "$out"
KEY=$out
ctl --store "$S" apikey create --account "$ACC"
assert_nomatch "apikey create: a new key each time" "^$KEY\$" "$out"
ctl --store "$S" apikey create --account acc_nope
expect "apikey create unknown account" 2 "sipauthctl: unknown account acc_nope"

# ---- trunks ----
ctl --store "$S" trunk create --account "$ACC" --name main
assert_eq "trunk create: exit status" 0 "$rc"
assert_match "trunk create: prints a trunk_ id" '^trunk_[a-z0-9]{16}$' "$out"
TR=$out
ctl --store "$S" trunk create --account "$ACC"
TR2=$out
ctl --store "$S" trunk create --account "$ACC2" --name theirs
TR3=$out
ctl --store "$S" trunk create --account acc_nope
expect "trunk create unknown account" 2 "sipauthctl: unknown account acc_nope"
ctl --store "$S" trunk create --name x
expect "trunk create without account" 1 "sipauthctl: trunk create needs --account ACC_ID"

ctl --store "$S" trunk list --account "$ACC"
assert_eq "trunk list: exit status" 0 "$rc"
json "trunk list: two trunks in creation order" "[t['id'] for t in j['data']] == ['$TR', '$TR2']" "$out"
json "trunk list: fields" "j['data'][0] == dict(id='$TR', account_id='$ACC', name='main', created_at=j['data'][0]['created_at'], max_concurrent_calls=None, max_calls_per_second=None, allowed_sources=[], ip_authentication=False, require_tls=False, digest_algorithms=None)" "$out"
json "trunk list: unnamed trunk" "j['data'][1]['name'] == ''" "$out"
json "trunk list: created_at is RFC 3339 UTC" "$(printf "$RFC3339" "j['data'][0]['created_at']")" "$out"
ctl --store "$S" trunk list --account "$ACC2"
json "trunk list: only the account's trunks" "[t['id'] for t in j['data']] == ['$TR3']" "$out"
ctl --store "$S" trunk list --account acc_nope
expect "trunk list unknown account" 2 "sipauthctl: unknown account acc_nope"

# ---- credentials ----
ctl_in "$PW\n" --store "$S" credential create --trunk "$TR" --username pbx-prod-01 --password-stdin
assert_eq "credential create: exit status" 0 "$rc"
assert_eq "credential create: no stderr" "" "$err"
json "credential create: exactly the API's fields" "list(j.keys()) == $CRED_KEYS" "$out"
json "credential create: values" "j['trunk_id'] == '$TR' and j['username'] == 'pbx-prod-01'" "$out"
json "credential create: id" "re.fullmatch(r'cred_[a-z0-9]{16}', j['id'])" "$out"
json "credential create: created_at" "$(printf "$RFC3339" "j['created_at']")" "$out"
assert_nomatch "credential create: password not echoed" "$PW" "$out"
C1=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
CREATED1="$out"

ctl_in "another_password_456\n" --store "$S" credential create --trunk "$TR" --username PBX-PROD-01 --password-stdin
expect "duplicate username ignoring case" 3 "sipauthctl: duplicate username PBX-PROD-01 on trunk $TR"
ctl_in "short\n" --store "$S" credential create --trunk "$TR" --username pbx-2 --password-stdin
expect "weak password" 1 "sipauthctl: weak password: password must be at least 12 characters"
ctl_in "" --store "$S" credential create --trunk "$TR" --username pbx-2 --password-stdin
expect "empty password" 1 "sipauthctl: weak password: password must be at least 12 characters"
ctl_in "fifteen_chars_x\n" --store "$S" --min-password-length 16 credential create --trunk "$TR" --username pbx-2 --password-stdin
expect "--min-password-length 16" 1 "sipauthctl: weak password: password must be at least 16 characters"
ctl_in "my-PBX-2-password\n" --store "$S" credential create --trunk "$TR" --username pbx-2 --password-stdin
expect "password containing the username" 1 "sipauthctl: weak password: password must not contain the username"
ctl_in "two_newlines_pass\n\n" --store "$S" credential create --trunk "$TR" --username pbx-2 --password-stdin
expect "only one newline stripped" 1 "sipauthctl: weak password: password must contain only printable ASCII characters"
ctl_in "$(printf '%0200d' 0)" --store "$S" credential create --trunk "$TR" --username pbx-2 --password-stdin
expect "password too long" 1 "sipauthctl: weak password: password must be at most 128 characters"
ctl_in "$PW\n" --store "$S" credential create --trunk "$TR" --username "pbx 2" --password-stdin
expect "bad username" 1 "sipauthctl: invalid username: username may contain only letters, digits, '.', '_' and '-'"
ctl_in "$PW\n" --store "$S" credential create --trunk trunk_nope --username pbx-2 --password-stdin
expect "unknown trunk" 2 "sipauthctl: unknown trunk trunk_nope"
ctl_in "$PW\n" --store "$S" credential create --trunk "$TR" --username pbx-2
expect "password not from stdin" 1 "sipauthctl: credential create needs --trunk TRUNK_ID --username U --password-stdin"

# "\r\n" is stripped as one newline: the stored HA1 is that of the bare password
ctl_in "crlf_password_ok\r\n" --store "$S" credential create --trunk "$TR" --username pbx-crlf --password-stdin
assert_eq "CRLF password accepted" 0 "$rc"
HA1=$(python3 -c "import hashlib; print(hashlib.md5(b'pbx-crlf:trunk-$TR.sip.tryvox.io:crlf_password_ok').hexdigest())")
assert_eq "stored MD5 HA1 is of the password without CRLF" 1 "$(grep -c "$HA1" "$S/data.mdb")"
HA1=$(python3 -c "import hashlib; print(hashlib.sha256(b'pbx-crlf:trunk-$TR.sip.tryvox.io:crlf_password_ok').hexdigest())")
assert_eq "stored SHA-256 HA1 is of the password without CRLF" 1 "$(grep -c "$HA1" "$S/data.mdb")"

ctl_in "$PW\n" --store "$S" credential create --trunk "$TR" --username alpha --password-stdin
C3=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
ctl_in "$PW\n" --store "$S" credential create --trunk "$TR2" --username pbx-prod-01 --password-stdin
assert_eq "same username on another trunk" 0 "$rc"

ctl --store "$S" credential list --trunk "$TR"
assert_eq "credential list: exit status" 0 "$rc"
json "credential list: creation order" "[c['username'] for c in j['data']] == ['pbx-prod-01', 'pbx-crlf', 'alpha']" "$out"
json "credential list: exactly the API's fields" "all(list(c.keys()) == $LIST_KEYS for c in j['data'])" "$out"
json "credential list: same object as create, at password_version 1" \
	"dict((k, j['data'][0][k]) for k in $CRED_KEYS) == json.loads('''$CREATED1''') and j['data'][0]['password_version'] == 1" "$out"
json "credential list: only the top-level data key" "list(j.keys()) == ['data']" "$out"
assert_nomatch "credential list: no password or HA1" "$PW|ha1|\"password\"" "$out"
ctl --store "$S" credential list --trunk trunk_nope
expect "credential list unknown trunk" 2 "sipauthctl: unknown trunk trunk_nope"

# ---- rotate: the API's rules and JSON ----
ctl_in "rotated_password_456\n" --store "$S" credential rotate --trunk "$TR" --id "$C3" --password-stdin --overlap-seconds 60
expect "rotate" 0 ""
json "rotate: version 2, the old password until rotated_at + 60 s" \
	"j['id'] == '$C3' and j['password_version'] == 2 and list(j.keys()) == $LIST_KEYS and $(printf "$RFC3339" "j['rotated_at']") is not None and j['previous_password_expires_at'] > j['rotated_at']" "$out"
assert_nomatch "rotate: no password or HA1" "rotated_password_456|$PW|ha1|\"password\"" "$out"
ctl_in "rotated_password_456\n" --store "$S" credential rotate --trunk "$TR" --id "$C3" --password-stdin
expect "rotate to the current password" 1 "sipauthctl: password must differ from the current password"
ctl_in "third_password_789\n" --store "$S" credential rotate --trunk "$TR" --id "$C3" --password-stdin --overlap-seconds 86401
expect "rotate: overlap over a day" 1 "sipauthctl: --overlap-seconds must be a number from 0 to 86400"
ctl_in "third_password_789\n" --store "$S" credential rotate --trunk "$TR2" --id "$C3" --password-stdin
expect "rotate on the wrong trunk" 2 "sipauthctl: unknown credential $C3 on trunk $TR2"
ctl --store "$S" credential list --trunk "$TR"
json "the list shows the rotation" "[c['password_version'] for c in j['data'] if c['id'] == '$C3'] == [2]" "$out"
assert_eq "the rotated password is not in data.mdb" 0 "$(grep -c rotated_password_456 "$S/data.mdb")"

ctl --store "$S" credential delete --trunk "$TR2" --id "$C1"
expect "delete on the wrong trunk" 2 "sipauthctl: unknown credential $C1 on trunk $TR2"
ctl --store "$S" credential delete --trunk trunk_nope --id "$C1"
expect "delete unknown trunk" 2 "sipauthctl: unknown trunk trunk_nope"
ctl --store "$S" credential delete --trunk "$TR"
expect "delete without id" 1 "sipauthctl: credential delete needs --trunk TRUNK_ID --id CRED_ID"
ctl --store "$S" credential delete --trunk "$TR" --id "$C1"
expect "delete" 0 ""
assert_eq "delete: no output" "" "$out"
ctl --store "$S" credential delete --trunk "$TR" --id "$C1"
expect "delete twice" 2 "sipauthctl: unknown credential $C1 on trunk $TR"
ctl --store "$S" credential list --trunk "$TR"
json "list after delete" "[c['id'] for c in j['data']][-1] == '$C3' and '$C1' not in [c['id'] for c in j['data']]" "$out"
ctl_in "$PW\n" --store "$S" credential create --trunk "$TR" --username pbx-prod-01 --password-stdin
assert_eq "deleted username can be created again" 0 "$rc"

# ---- secrets never reach the store files ----
assert_eq "password not in data.mdb" 0 "$(grep -c "$PW" "$S/data.mdb")"
assert_eq "CRLF password not in data.mdb" 0 "$(grep -c crlf_password_ok "$S/data.mdb")"
assert_eq "password not in lock.mdb" 0 "$(grep -c "$PW" "$S/lock.mdb")"
assert_eq "API key not in data.mdb" 0 "$(grep -c "$KEY" "$S/data.mdb")"
assert_match "the grep can see stored text" '^[1-9]' "$(grep -c pbx-crlf "$S/data.mdb")"

finish
