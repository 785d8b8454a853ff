#!/bin/sh
# Builds the waferd Debian packages with dpkg-deb (no debhelper, no source
# package): one per ARCH=BINARY argument, named waferd_VERSION_ARCH.deb, in
# OUTDIR. `make deb` runs it with the binaries of `make cross`:
#
#   packaging/build-deb.sh VERSION OUTDIR arm64=bin/waferd-linux-arm64 \
#       armhf=bin/waferd-linux-armv7 amd64=bin/waferd-linux-amd64
#
# Contents (all root:root):
#   /usr/bin/waferd                          the static binary, 0755
#   /usr/lib/systemd/system/waferd.service   }
#   /usr/lib/sysusers.d/waferd.conf          } from package systemd (embedded
#   /usr/lib/tmpfiles.d/waferd.conf          } files, systemd.Install paths
#   /usr/lib/udev/rules.d/60-waferd.rules    } and modes), 0644
#   /etc/waferd/waferd.toml                  } a conffile
#   /usr/share/doc/waferd/{copyright,changelog.gz}, /usr/share/man/man1/waferd.1.gz
#   /usr/share/lintian/overrides/waferd      each override says why
#   DEBIAN/{control,conffiles,md5sums,postinst,prerm,postrm}
#
# File times are clamped to SOURCE_DATE_EPOCH (default: the commit time), so
# the same commit and binaries give the same packages.
set -eu
umask 022

if [ $# -lt 3 ]; then
	echo "usage: $0 VERSION OUTDIR ARCH=BINARY..." >&2
	exit 2
fi
version=$1
out=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
GO=${GO:-go}

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

mkdir -p "$out"
# dist/ holds build output only: keep it out of git without touching .gitignore.
printf '*\n' >"$out/.gitignore"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# The architecture-independent part of every package.
common=$work/common
(cd "$repo" && "$GO" run ./packaging/installfiles "$common") >/dev/null
install -d "$common/usr/share/doc/waferd" "$common/usr/share/man/man1"
install -m 0644 "$here/debian/copyright" "$common/usr/share/doc/waferd/copyright"
gzip -9n <"$here/waferd.1" >"$common/usr/share/man/man1/waferd.1.gz"
install -D -m 0644 "$here/debian/lintian-overrides" "$common/usr/share/lintian/overrides/waferd"
maintainer=$(sed -n 's/^Maintainer: //p' "$here/debian/control")
commit=$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo unknown)
subject=$(git -C "$repo" log -1 --format=%s 2>/dev/null || echo unknown)
{
	printf 'waferd (%s) unstable; urgency=medium\n\n' "$version"
	printf '  * Built from git %s:\n' "$commit"
	printf '    %s\n' "$subject" | fold -s -w 76 | sed '2,$s/^/    /'
	printf '\n -- %s  %s\n' "$maintainer" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$common/usr/share/doc/waferd/changelog.gz"
chmod 0644 "$common/usr/share/doc/waferd/changelog.gz" "$common/usr/share/man/man1/waferd.1.gz"

for spec in "$@"; do
	arch=${spec%%=*}
	bin=${spec#*=}
	[ -f "$bin" ] || { echo "build-deb: $bin: no such file (make cross?)" >&2; exit 1; }
	root=$work/waferd_${version}_$arch
	cp -a "$common" "$root"
	install -D -m 0755 "$bin" "$root/usr/bin/waferd"

	install -d "$root/DEBIAN"
	install -m 0755 "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm" "$root/DEBIAN/"
	install -m 0644 "$here/debian/conffiles" "$root/DEBIAN/"
	# md5sums of every file but the conffiles (dpkg tracks those itself),
	# as dh_md5sums does.
	sed 's|^/||' "$here/debian/conffiles" >"$work/conffiles"
	(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' |
		LC_ALL=C sort | grep -vxF -f "$work/conffiles" | xargs md5sum) >"$root/DEBIAN/md5sums"
	chmod 0644 "$root/DEBIAN/md5sums"
	# Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded
	# up, and 1 per directory.
	size=$(cd "$root" && find . -path ./DEBIAN -prune -o ! -name . -printf '%y %s\n' |
		awk '$1 == "f" { n += int(($2 + 1023) / 1024); next } { n++ } END { print n }')
	sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
		"$here/debian/control" >"$root/DEBIAN/control"
	chmod 0644 "$root/DEBIAN/control"

	find "$root" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	dpkg-deb --root-owner-group -Zxz --build "$root" "$out/waferd_${version}_$arch.deb" >/dev/null
	echo "$out/waferd_${version}_$arch.deb"
done
