# fleet.sh: fleet mode on a real PostgreSQL 15: sipauthctl --database answers as --store does,
# and two sipauthd nodes on 127.0.0.21 / 127.0.0.22 mirror the database into their own stores.
. "$top_srcdir/test/lib.sh"
. "$top_srcdir/test/pg_lib.sh"

[ -x "$SIPAUTHCTL" ] || skip "$SIPAUTHCTL is not built"
need python3
need psql
"$SIPAUTHCTL" --help | grep -q -- "--database CONNINFO" || skip "sipauthctl was built without libpq"
pg_start || { fail "PostgreSQL did not start"; finish; }

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
			-e 's/tvx_sk_live_[A-Za-z0-9]{32}/KEY/g' \
			-e 's/"created_at": "[^"]*"/"created_at": T/g' \
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
}

transcript --store "$T/ctlstore" >"$T/store.txt"
transcript --database "$DB" >"$T/db.txt"
n=$(wc -l <"$T/store.txt")
assert_eq "the transcripts have every command" 33 "$n"
i=0
while IFS= read -r want && IFS= read -r got <&3; do
	i=$((i + 1))
	assert_eq "sipauthctl command $i: --database answers as --store" "$want" "$got"
done <"$T/store.txt" 3<"$T/db.txt"

# what the database holds: hashes, never a password or a key
assert_eq "schema version recorded" 1 "$(psql_q 'SELECT version FROM schema_version')"
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

finish
