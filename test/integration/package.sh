# package.sh: dpkg-buildpackage -us -uc -b builds an installable sipauthd .deb from a copy of
# the tree; dpkg -i installs it: binaries, unit, sysusers/tmpfiles entries, the sipauthd user,
# the conffile, man pages. Where systemd runs as PID 1 it also starts, reloads and stops it.
#
# Slow and it installs a package system-wide, so it runs only when asked:
#     SIPAUTHD_TEST_PACKAGE=1 make check TESTS=test/integration/package.sh
# It needs root (or passwordless sudo) and the build dependencies:
#     apt-get install debhelper dpkg-dev fakeroot  (plus scripts/setup's list)
# When sipauthd was not installed before, it purges the package at the end (the store
# /var/lib/sipauthd and the sipauthd user stay, as Debian does with data and users).
. "$top_srcdir/test/lib.sh"

[ "${SIPAUTHD_TEST_PACKAGE:-}" = 1 ] || skip "set SIPAUTHD_TEST_PACKAGE=1 to build and install the .deb"
need dpkg-buildpackage
need dh
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo -n true 2>/dev/null || skip "dpkg -i needs root or passwordless sudo"
	sudo="sudo -n"
fi
out=$(cd "$top_srcdir" && dpkg-checkbuilddeps 2>&1) || skip "build dependencies missing: $out"

# ---- build from a clean copy (the source tree may hold an in-tree build) ----
B=$T/build/sipauthd
mkdir -p "$B"
if git -C "$top_srcdir" rev-parse --git-dir >/dev/null 2>&1; then
	# tracked and new files, as they are in the work tree now
	(cd "$top_srcdir" && git ls-files -co --exclude-standard -z | { xargs -0 cp --parents -t "$B" 2>/dev/null || true; })
else
	(cd "$top_srcdir" && tar -cf - --exclude=autom4te.cache .) | tar -xf - -C "$B"
	(cd "$B" && { [ ! -f Makefile ] || make distclean >/dev/null 2>&1; })
fi
(cd "$B" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL dpkg-buildpackage -us -uc -b) >"$T/build.log" 2>&1
assert_eq "dpkg-buildpackage -us -uc -b: exit status" 0 $?
[ $_failures -eq 0 ] || { tail -40 "$T/build.log"; finish; }
deb=$(ls "$T"/build/sipauthd_*.deb 2>/dev/null | head -1)
assert_match "a sipauthd .deb was built" 'sipauthd_[^/]*\.deb$' "$deb"
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for want in '^\./usr/sbin/sipauthd$' '^\./usr/sbin/sipauthctl$' '^\./etc/sipauthd/sipauthd\.conf$' \
	'/lib/systemd/system/sipauthd\.service$' '^\./usr/lib/sysusers\.d/sipauthd\.conf$' \
	'^\./usr/lib/tmpfiles\.d/sipauthd\.conf$' '^\./usr/share/man/man8/sipauthd\.8\.gz$' \
	'^\./usr/share/man/man8/sipauthctl\.8\.gz$' '^\./usr/share/man/man5/sipauthd\.conf\.5\.gz$'; do
	assert_match "in the .deb: $want" "$want" "$contents"
done
assert_match "conffile: /etc/sipauthd/sipauthd.conf" '^/etc/sipauthd/sipauthd\.conf$' \
	"$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles)"
assert_match "unit in the .deb runs /usr/sbin/sipauthd with /etc/sipauthd/sipauthd.conf" \
	'^ExecStart=/usr/sbin/sipauthd --config /etc/sipauthd/sipauthd\.conf$' \
	"$(dpkg-deb --fsys-tarfile "$deb" | tar -xOf - --wildcards '*/systemd/system/sipauthd.service')"

# ---- install ----
was_installed=$(dpkg-query -W -f='${Status}' sipauthd 2>/dev/null | grep -c 'install ok installed')
$sudo dpkg -i "$deb" >"$T/install.log" 2>&1
assert_eq "dpkg -i: exit status" 0 $?
assert_match "dpkg: sipauthd installed" '^install ok installed$' "$(dpkg-query -W -f='${Status}' sipauthd)"
assert_match "postinst: system user sipauthd" '^sipauthd:x:[0-9]+:[0-9]+:.*:/var/lib/sipauthd:' "$(getent passwd sipauthd)"
assert_eq "postinst: store directory owned by sipauthd, 0750" "sipauthd 750" "$(stat -c '%U %a' /var/lib/sipauthd)"
out=$(/usr/sbin/sipauthd --check-config /etc/sipauthd/sipauthd.conf 2>&1)
assert_eq "installed config passes --check-config" "sipauthd: /etc/sipauthd/sipauthd.conf: configuration ok" "$out"
man -w sipauthd.conf >/dev/null 2>&1 || [ ! -x /usr/bin/man ]
assert_eq "man sipauthd.conf finds the page" 0 $?

# ---- run under systemd where it is PID 1 ----
if [ -d /run/systemd/system ]; then
	# a loopback configuration for the test; the packaged one is put back after
	sip_port=$(free_port 127.0.0.1)
	api_port=$(free_port 127.0.0.1)
	$sudo cp -p /etc/sipauthd/sipauthd.conf "$T/packaged.conf"
	cat >"$T/test.conf" <<CONF
[sip]
listen = udp:127.0.0.1:$sip_port, tcp:127.0.0.1:$sip_port
domain = sip.tryvox.io
[upstream]
gateway = udp:127.0.0.2:5060
trusted = 127.0.0.2/32
[api]
listen = 127.0.0.1:$api_port
CONF
	$sudo cp "$T/test.conf" /etc/sipauthd/sipauthd.conf
	[ -f /var/lib/sipauthd/data.mdb ] || $sudo runuser -u sipauthd -- sipauthctl init >/dev/null
	$sudo systemctl start sipauthd
	assert_eq "systemctl start: active (READY=1 arrived)" active "$(systemctl is-active sipauthd)"
	assert_eq "runs as sipauthd" sipauthd "$(ps -o user= -p "$(systemctl show -p MainPID --value sipauthd)")"
	assert_match "healthz answers" '"ok"' "$(curl -s "127.0.0.1:$api_port/healthz")"
	$sudo systemctl reload sipauthd
	assert_eq "systemctl reload: exit status" 0 $?
	assert_eq "systemctl reload: still active" active "$(systemctl is-active sipauthd)"
	assert_match "journal: level prefix parsed, not shown" '^level=info event=reloaded' \
		"$(journalctl -u sipauthd -o cat --no-pager | grep 'event=reloaded' | tail -1)"
	printf '[sip]\nbogus = 1\n' | $sudo tee -a /etc/sipauthd/sipauthd.conf >/dev/null
	$sudo systemctl reload sipauthd 2>/dev/null
	assert_eq "systemctl reload with a broken file fails" yes "$([ $? -ne 0 ] && echo yes || echo no)"
	assert_eq "broken reload: still active" active "$(systemctl is-active sipauthd)"
	$sudo systemctl stop sipauthd
	assert_eq "systemctl stop: exit status 0 recorded" 0 "$(systemctl show -p ExecMainStatus --value sipauthd)"
	$sudo cp -p "$T/packaged.conf" /etc/sipauthd/sipauthd.conf
else
	echo "SKIPPED (visible): systemd is not PID 1 here; the service was installed but not started"
fi

# ---- purge, unless it was there before ----
if [ "$was_installed" = 0 ]; then
	$sudo dpkg --purge sipauthd >"$T/purge.log" 2>&1
	assert_eq "dpkg --purge: exit status" 0 $?
	assert_eq "purge removes /etc/sipauthd" no "$([ -e /etc/sipauthd ] && echo yes || echo no)"
	assert_eq "purge removes the binaries" no "$([ -e /usr/sbin/sipauthd ] && echo yes || echo no)"
fi

finish
