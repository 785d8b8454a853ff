#!/bin/sh
# Checks waferd .deb files (`make deb-check`, CI):
#   every package  contents, owners and modes; control fields; conffiles;
#                  md5sums; the binary's architecture, static linking, and
#                  its Go modules all named in the copyright file; lintian
#                  (no errors; warnings are printed)
#   the amd64 one  installed into a scratch root with dpkg --root (the
#                  maintainer scripts run chrootless, under DPKG_ROOT:
#                  nothing on this machine changes), then checked: files,
#                  modes, conffiles, the waferd user and groups, the state
#                  directory, the service enabled; reinstalled over itself
#                  with a changed conffile (kept); removed (configuration
#                  and results kept); purged (both gone, the user kept).
#
#   packaging/check-deb.sh dist/waferd_VERSION_ARCH.deb...
set -eu
umask 022
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
GO=${GO:-go}
[ $# -gt 0 ] || { echo "usage: $0 PACKAGE.deb..." >&2; exit 2; }

fails=0
fail() {
	echo "check-deb: FAIL: $*" >&2
	fails=$((fails + 1))
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# Expected contents: "mode owner path", sorted. Every file is root:root.
(cd "$repo" && "$GO" run ./packaging/installfiles -list) >"$work/install.list"
{
	echo "0755 usr/bin/waferd"
	cat "$work/install.list" | awk '{ print $2, $1 }'
	echo "0644 usr/share/doc/waferd/copyright"
	echo "0644 usr/share/doc/waferd/changelog.gz"
	echo "0644 usr/share/man/man1/waferd.1.gz"
	echo "0644 usr/share/lintian/overrides/waferd"
} | awk '{ print $1, "root/root", $2 }' | LC_ALL=C sort >"$work/want.files"

# stat-like mode (0755) from ls-style permissions (-rwxr-xr-x).
octal() {
	awk '{
		p = substr($1, 2); m = 0
		for (i = 0; i < 3; i++) {
			d = 0
			if (substr(p, 3*i+1, 1) == "r") d += 4
			if (substr(p, 3*i+2, 1) == "w") d += 2
			if (substr(p, 3*i+3, 1) == "x") d += 1
			m = m * 10 + d
		}
		printf "0%03d %s %s\n", m, $2, $NF
	}'
}

for deb in "$@"; do
	name=$(basename "$deb" .deb)
	echo "== $name"
	arch=${name##*_}
	version=${name#waferd_}
	version=${version%_*}
	[ "$(dpkg-deb -f "$deb" Package)" = waferd ] || fail "$deb: Package"
	[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "$deb: Version is not $version"
	[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "$deb: Architecture is not $arch"

	# Regular files: mode, owner, path. Directories: root/root 0755.
	dpkg-deb -c "$deb" | awk '$1 ~ /^-/' | sed 's|\./||' | octal | LC_ALL=C sort >"$work/got.files"
	diff -u "$work/want.files" "$work/got.files" >&2 || fail "$deb: contents (want -, got +)"
	dpkg-deb -c "$deb" | awk '$1 ~ /^d/ && ($1 != "drwxr-xr-x" || $2 != "root/root")' >"$work/baddirs"
	[ ! -s "$work/baddirs" ] || { cat "$work/baddirs" >&2; fail "$deb: directories not 0755 root/root"; }

	rm -rf "$work/x" && mkdir "$work/x"
	dpkg-deb -R "$deb" "$work/x"
	[ "$(cat "$work/x/DEBIAN/conffiles")" = /etc/waferd/waferd.toml ] || fail "$deb: conffiles"
	(cd "$work/x" && md5sum --quiet -c DEBIAN/md5sums) || fail "$deb: md5sums"
	for s in postinst prerm postrm; do
		[ -x "$work/x/DEBIAN/$s" ] || fail "$deb: $s not executable"
	done
	(cd "$repo" && "$GO" run ./packaging/installfiles "$work/want") >/dev/null
	while read -r path mode; do
		cmp -s "$work/want/$path" "$work/x/$path" || fail "$deb: $path differs from the embedded file"
	done <"$work/install.list"

	# The binary: built for this architecture, static, its modules credited.
	"$GO" version -m "$work/x/usr/bin/waferd" >"$work/buildinfo"
	case $arch in
	arm64) want="GOARCH=arm64" ;;
	armhf) want="GOARCH=arm" ;;
	amd64) want="GOARCH=amd64" ;;
	*) want="GOARCH=?" ;;
	esac
	grep -q "build[[:space:]]$want\$" "$work/buildinfo" || fail "$deb: binary is not $want"
	[ "$arch" != armhf ] || grep -q "build[[:space:]]GOARM=7" "$work/buildinfo" || fail "$deb: binary is not GOARM=7"
	grep -q "build[[:space:]]CGO_ENABLED=0" "$work/buildinfo" || fail "$deb: binary is not static (CGO_ENABLED=0)"
	for mod in $(awk '$1 == "dep" { print $2 }' "$work/buildinfo"); do
		grep -q "^Files:.* $mod/\*" "$work/x/usr/share/doc/waferd/copyright" ||
			fail "$deb: Go module $mod is linked in but not in packaging/debian/copyright"
	done

done

# lintian, once for every package: most of its time is starting up.
if command -v lintian >/dev/null; then
	# --fail-on error: warnings are shown, not fatal.
	lintian --fail-on error --info "$@" >"$work/lintian" 2>&1 || { cat "$work/lintian" >&2; fail "lintian errors"; }
	sed 's/^/  lintian: /' "$work/lintian"
	echo "  lintian: $(grep -c '^E:' "$work/lintian" || true) errors, $(grep -c '^W:' "$work/lintian" || true) warnings over $# packages"
else
	fail "lintian is not installed (apt-get install lintian)"
fi

# --- The amd64 package in a scratch root --------------------------------------
deb=
for d in "$@"; do
	case $d in *_amd64.deb) deb=$d ;; esac
done
if [ -z "$deb" ]; then
	[ "$fails" = 0 ] || exit 1
	exit 0
fi
echo "== install $(basename "$deb") into a scratch root"
root=$work/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"
# The scratch root has no packages, so the dependency (systemd-sysusers |
# adduser) is not met there: --force-depends. The scripts use the
# host's systemd-sysusers, systemd-tmpfiles and deb-systemd-helper with
# --root / DPKG_ROOT.
dpkg_root() {
	dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null "$@"
}
mode() { stat -c '%a %U:%G' "$root/$1" 2>/dev/null || echo missing; }
owner_in_root() { # numeric owner resolved against the scratch root's passwd
	ids=$(stat -c '%u %g' "$root/$1")
	u=$(awk -F: -v id="${ids% *}" '$3 == id { print $1 }' "$root/etc/passwd")
	g=$(awk -F: -v id="${ids#* }" '$3 == id { print $1 }' "$root/etc/group")
	echo "$u:$g"
}
expect() { # what, got, want
	[ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}

dpkg_root -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i"; }
expect "status" "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}' waferd)" "install ok installed"
expect "/usr/bin/waferd" "$(mode usr/bin/waferd)" "755 root:root"
while read -r path m; do
	expect "/$path" "$(mode "$path")" "${m#0} root:root"
done <"$work/install.list"
expect "registered conffiles" \
	"$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Conffiles}' waferd | awk 'NF { print $1 }')" \
	"/etc/waferd/waferd.toml"
"$root/usr/bin/waferd" version | grep -q "^waferd " || fail "waferd version does not run"
if command -v systemd-sysusers >/dev/null; then
	grep -q '^waferd:x:[0-9]*:[0-9]*:waferd wafer-inspection controller:/var/lib/waferd:' "$root/etc/passwd" ||
		fail "no waferd user in the root's /etc/passwd"
	for g in dialout video gpio; do
		grep -Eq "^$g:x:[0-9]+:(.*,)?waferd(,.*)?\$" "$root/etc/group" || fail "waferd is not in group $g"
	done
fi
if command -v systemd-tmpfiles >/dev/null; then
	expect "/var/lib/waferd" "$(stat -c %a "$root/var/lib/waferd" 2>/dev/null) $(owner_in_root var/lib/waferd)" "750 waferd:waferd"
	expect "/etc/waferd/recipes" "$(mode etc/waferd/recipes)" "755 root:root"
fi
expect "enabled" "$(readlink "$root/etc/systemd/system/multi-user.target.wants/waferd.service")" \
	"/usr/lib/systemd/system/waferd.service"

echo "== upgrade over itself, with a changed conffile"
echo "# changed by the administrator" >>"$root/etc/waferd/waferd.toml"
mkdir -p "$root/var/lib/waferd/runs/r1" && echo '{}' >"$root/var/lib/waferd/runs/r1/run.json"
dpkg_root -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i (upgrade)"; }
grep -q "changed by the administrator" "$root/etc/waferd/waferd.toml" || fail "upgrade replaced the changed conffile"
[ -f "$root/var/lib/waferd/runs/r1/run.json" ] || fail "upgrade lost the results"
[ -L "$root/etc/systemd/system/multi-user.target.wants/waferd.service" ] || fail "upgrade disabled the service"

echo "== remove"
dpkg_root -r waferd >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -r"; }
[ ! -e "$root/usr/bin/waferd" ] || fail "remove left /usr/bin/waferd"
[ ! -e "$root/usr/lib/systemd/system/waferd.service" ] || fail "remove left the unit"
[ -f "$root/etc/waferd/waferd.toml" ] || fail "remove deleted the configuration"
[ -f "$root/var/lib/waferd/runs/r1/run.json" ] || fail "remove deleted the results"
expect "masked after remove" "$(readlink "$root/etc/systemd/system/waferd.service")" "/dev/null"

echo "== purge"
dpkg_root -P waferd >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -P"; }
for p in etc/waferd var/lib/waferd etc/systemd/system/waferd.service \
	etc/systemd/system/multi-user.target.wants/waferd.service; do
	if [ -e "$root/$p" ] || [ -L "$root/$p" ]; then fail "purge left /$p"; fi
done
if command -v systemd-sysusers >/dev/null; then
	grep -q '^waferd:' "$root/etc/passwd" || fail "purge removed the waferd user (policy: keep it)"
fi

if [ "$fails" != 0 ]; then
	echo "check-deb: $fails check(s) failed" >&2
	exit 1
fi
echo "check-deb: all checks passed"
