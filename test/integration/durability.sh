# durability.sh: a credential writer killed with SIGKILL mid-run loses no credential whose creation it acknowledged.
. "$top_srcdir/test/lib.sh"

WRITER="$top_builddir/test/durability_writer"
[ -x "$SIPAUTHCTL" ] || skip "$SIPAUTHCTL is not built"
[ -x "$WRITER" ] || skip "$WRITER is not built (make check builds it)"
need python3

S="$T/store"
"$SIPAUTHCTL" --store "$S" init >/dev/null || fail "init"
ACC=$("$SIPAUTHCTL" --store "$S" account create --name durability)
TR=$("$SIPAUTHCTL" --store "$S" trunk create --account "$ACC")

# acked LOG: the ids a writer reported, complete lines only
acked() {
	grep -E '^cred_[a-z0-9]{16}$' "$1"
}

# lines FILE: number of acknowledged ids so far
lines() {
	acked "$1" | wc -l
}

# missing ACKED_FILE: acknowledged ids absent from the trunk's credential list
missing() {
	"$SIPAUTHCTL" --store "$S" credential list --trunk "$TR" >"$T/list.json" || { echo "list failed"; return; }
	python3 - "$1" "$T/list.json" <<'PY'
import json, sys
acked = [l.strip() for l in open(sys.argv[1]) if l.strip()]
listed = {c["id"] for c in json.load(open(sys.argv[2]))["data"]}
print(" ".join(i for i in acked if i not in listed))
PY
}

# round N WRITERS MIN_ACKED: start WRITERS writers, SIGKILL them once at least
# MIN_ACKED ids were acknowledged (plus a varying delay), then check the store
round() {
	for w in $(seq 1 "$2"); do
		spawn "$T/writer.$1.$w" "$WRITER" "$S" "$TR" 0
		eval "pid_$w=\$!"
	done
	for _ in $(seq 1 200); do
		[ "$(cat "$T"/writer."$1".* | grep -cE '^cred_')" -ge "$3" ] && break
		sleep 0.05
	done
	sleep "0.$((RANDOM % 5 + 1))"
	for w in $(seq 1 "$2"); do
		eval "kill -KILL \$pid_$w"
		eval "wait \$pid_$w" 2>/dev/null
	done
	for w in $(seq 1 "$2"); do acked "$T/writer.$1.$w"; done >"$T/acked.$1"
	n=$(wc -l <"$T/acked.$1")
	if [ "$n" -ge "$3" ]; then pass "round $1: $n acknowledged before SIGKILL"; else fail "round $1: only $n acknowledged"; fi
	cat "$T/acked.$1" >>"$T/acked.all"
	assert_eq "round $1: every acknowledged credential is in the reopened store" "" "$(missing "$T/acked.$1")"
}

round 1 1 5
round 2 1 20
round 3 2 10
round 4 1 1

# the store still takes writes after its writers were killed holding locks
out=$(printf 'after_the_kills_pw\n' | "$SIPAUTHCTL" --store "$S" credential create --trunk "$TR" --username after-kill --password-stdin)
assert_eq "create after the kills" 0 "$?"
assert_match "create after the kills: JSON" '"username": "after-kill"' "$out"
assert_eq "all rounds' acknowledged credentials still there" "" "$(missing "$T/acked.all")"

finish
