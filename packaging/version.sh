#!/bin/sh
# Prints the Debian package version of the checkout, derived from
# `git describe` (the same source as `waferd version`):
#
#   HEAD tagged v1.2.0                  1.2.0
#   HEAD tagged v1.2.0-rc1              1.2.0~rc1       (sorts before 1.2.0)
#   3 commits after v1.2.0              1.2.0+git20261126.3.b72111f
#   no tag at all                       0.0~git20261126.17.b72111f
#   uncommitted changes                 ...+dirty
#
# The date is the commit's (UTC) and the number counts commits (since the
# tag, or in all of HEAD's history without one), so successive builds of a
# branch sort in order, also several on one day. The version has no Debian
# revision ("-1"): the packaging lives in this repository (native package).
set -eu
cd "$(dirname "$0")/.."

git rev-parse --git-dir >/dev/null 2>&1 || {
	echo "version.sh: not a git checkout; set DEB_VERSION" >&2
	exit 1
}
hash=$(git rev-parse --short HEAD)
date=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d HEAD)
dirty=
git diff --quiet HEAD -- 2>/dev/null || dirty=+dirty

if desc=$(git describe --tags --long --match 'v[0-9]*' HEAD 2>/dev/null); then
	# v1.2.0-rc1-3-gb72111f: the tag, commits since, g<hash>
	n=${desc%-g*}
	n=${n##*-}
	tag=${desc%-*-g*}
	upstream=$(printf '%s' "${tag#v}" | tr -- '-_' '~~')
	if [ "$n" = 0 ]; then
		version=$upstream
	else
		version=$upstream+git$date.$n.$hash
	fi
else
	version=0.0~git$date.$(git rev-list --count HEAD).$hash
fi
version=$version$dirty

# Debian: starts with a digit; letters, digits and . + ~ only (no "-":
# that would start a Debian revision).
case $version in
[0-9]*) ;;
*) echo "version.sh: $version does not start with a digit" >&2; exit 1 ;;
esac
if printf '%s' "$version" | LC_ALL=C grep -q '[^A-Za-z0-9.+~]'; then
	echo "version.sh: $version is not a valid Debian version" >&2
	exit 1
fi
echo "$version"
