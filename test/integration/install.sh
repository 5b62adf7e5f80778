# install.sh: `make install DESTDIR=...` puts every file where a systemd host looks for it,
# the installed unit and sample config agree with each other, the sample config passes
# --check-config, and conf/sipauthd.conf and sipauthd.conf(5) document every key conf.c knows.
. "$top_srcdir/test/lib.sh"

[ -x "$SIPAUTHD" ] || skip "$SIPAUTHD is not built"
[ -f "$top_builddir/Makefile" ] || skip "no Makefile in $top_builddir"
need make

# ---- every key the parser accepts is documented in both places ----
CONF_C="$top_srcdir/daemon/conf.c"
SAMPLE="$top_srcdir/conf/sipauthd.conf"
MAN5="$top_srcdir/man/sipauthd.conf.5"
keys=$(sed -n 's/^\t\(UINT\|STR\|LIST\|FN\)("\([a-z_]*\)", *"\([a-z_]*\)".*/\2.\3/p' "$CONF_C" | sort -u)
[ -n "$keys" ] || fail "no keys found in $CONF_C (did the keys[] table change shape?)"
# the sample's keys as section.key, set ("key = v") or shown unset ("# key = v")
sample_keys=$(awk '/^\[/{gsub(/[][ \t]/, ""); sec=$0; next}
	{l = $0; sub(/^#[ \t]*/, "", l)} l ~ /^[a-z_]+[ \t]*=/ {sub(/[ \t]*=.*/, "", l); print sec "." l}' "$SAMPLE" | sort -u)
assert_eq "conf/sipauthd.conf sets every key of conf.c, and no other" "$keys" "$sample_keys"
# the man page: each section is a .SH [section], each key a .B key under it
man_keys=$(awk '/^\.SH \[/{sec=$2; gsub(/[][]/, "", sec); next} /^\.SH /{sec=""; next}
	sec != "" && prev == ".TP" && /^\.B [a-z_]+$/ {print sec "." $2} {prev=$0}' "$MAN5" | sort -u)
assert_eq "sipauthd.conf(5) documents every key of conf.c, and no other" "$keys" "$man_keys"
for k in $keys; do
	sec=${k%%.*}; key=${k#*.}
	# comment lines right above the key's line (set or shown unset)
	c=$(awk -v sec="[$sec]" -v key="$key" '/^\[/{in_sec = ($0 == sec); n = 0; next}
		{l = $0; sub(/^#[ \t]*/, "", l)} in_sec && l ~ ("^" key "[ \t]*=") {print n; exit}
		/^#/ {n++; next} {n = 0}' "$SAMPLE")
	[ "${c:-0}" -gt 0 ] || fail "conf/sipauthd.conf: [$sec] $key has no comment line above it"
done
out=$("$SIPAUTHD" --check-config "$SAMPLE" 2>&1)
assert_eq "sample config passes --check-config" "sipauthd: $SAMPLE: configuration ok" "$out"

# ---- the man pages format without warnings ----
if command -v groff >/dev/null 2>&1; then
	for m in sipauthd.8 sipauthctl.8 sipauthd.conf.5; do
		out=$(LC_ALL=C.UTF-8 groff -man -ww -z -Tutf8 "$top_srcdir/man/$m" 2>&1)
		assert_eq "man/$m: groff -ww is silent" "" "$out"
	done
else
	echo "SKIPPED (visible): groff is not installed; man pages not linted"
fi
# sipauthctl(8) names every command that sipauthctl --help lists
for cmd in "init" "account create" "apikey create" "apikey list" "apikey revoke" "trunk create" "trunk list" \
	"credential create" "credential list" "credential delete"; do
	"$SIPAUTHCTL" --help | grep -q "^  $cmd" || fail "sipauthctl --help no longer lists '$cmd'"
	grep -q "^\.B.* \"\?${cmd}" "$top_srcdir/man/sipauthctl.8" || fail "sipauthctl(8) does not document '$cmd'"
done

# ---- make install into a staging root ----
R=$T/root
# a fresh make, not the parent's jobserver: this runs inside `make check`
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$top_builddir" install DESTDIR="$R" >"$T/install.log" 2>&1
assert_eq "make install DESTDIR: exit status" 0 $?
files=$(cd "$R" && find . -type f -o -type l | sed 's|^\.||' | sort)
for want in '/sbin/sipauthd$' '/sbin/sipauthctl$' '/etc/sipauthd/sipauthd\.conf$' \
	'/lib/systemd/system/sipauthd\.service$' '/lib/sysusers\.d/sipauthd\.conf$' '/lib/tmpfiles\.d/sipauthd\.conf$' \
	'/man/man8/sipauthd\.8$' '/man/man8/sipauthctl\.8$' '/man/man5/sipauthd\.conf\.5$'; do
	assert_match "installed: $want" "$want" "$files"
done
unit=$(printf '%s\n' "$files" | grep '/lib/systemd/system/sipauthd\.service$')
sbin=$(printf '%s\n' "$files" | grep '/sbin/sipauthd$')
conf=$(printf '%s\n' "$files" | grep '/etc/sipauthd/sipauthd\.conf$')
assert_match "installed unit runs the installed daemon with the installed config" \
	"^ExecStart=$sbin --config $conf\$" "$(cat "$R$unit")"
cmp -s "$R$conf" "$SAMPLE"
assert_eq "installed config is the sample" 0 $?
out=$("$R$sbin" --check-config "$R$conf" 2>&1)
assert_eq "installed daemon accepts the installed config" "sipauthd: $R$conf: configuration ok" "$out"

# an upgrade by `make install` keeps the operator's configuration
echo "# edited by the operator" >>"$R$conf"
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$top_builddir" install DESTDIR="$R" >>"$T/install.log" 2>&1
assert_eq "second make install: exit status" 0 $?
assert_match "second make install keeps an edited config" '^# edited by the operator$' "$(tail -1 "$R$conf")"
cmp -s "$R$conf.new" "$SAMPLE"
assert_eq "second make install puts the new sample next to it as .new" 0 $?

env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$top_builddir" uninstall DESTDIR="$R" >>"$T/install.log" 2>&1
assert_eq "make uninstall: exit status" 0 $?
assert_eq "make uninstall leaves only the edited config behind" "$conf" \
	"$(cd "$R" && find . -type f -o -type l | sed 's|^\.||')"

finish
