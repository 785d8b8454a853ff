# Shared by the VM scripts (run.sh, run-arm64.sh, system.sh, gpiosim.sh);
# sourced, not run. Set TAG (the log prefix) before sourcing.
#
# Everything downloaded or built is cached under VM_CACHE (vmtest/.cache,
# git-ignored), keyed on what it is made from: a kernel package's
# directory is named after the package and version, the gpio-sim module
# after the kernel version, its architecture and the hash of gpiosim.sh.
#
# Debian packages come from the machine's own apt sources. A package of
# another architecture (the arm64 kernel, busybox-static:arm64) is
# downloaded through a private apt state under VM_CACHE/apt-ARCH that
# reads the same sources: the machine's dpkg architectures are not
# changed.

GO=${GO:-go}
CACHE=$(mkdir -p "${VM_CACHE:-vmtest/.cache}" && cd "${VM_CACHE:-vmtest/.cache}" && pwd)
HOST_ARCH=$(dpkg --print-architecture)
log() { echo "${TAG:-vm}: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# need_pkgs PKG...: apt-get install the Debian packages not yet installed.
need_pkgs() {
	local missing=() p
	for p in "$@"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]} (or install them first)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
		die "apt-get install ${missing[*]} failed"
}

# apt_opts ARCH: the options that make apt-get and apt-cache look at
# ARCH's packages (nothing for the machine's own architecture).
apt_opts() {
	local arch=$1 d=$CACHE/apt-$1
	[ "$arch" = "$HOST_ARCH" ] && return 0
	echo "-o APT::Architecture=$arch -o APT::Architectures::=$arch -o Dir::State::Lists=$d/lists" \
		"-o Dir::Cache=$d/cache -o Dir::State::status=$d/status -o Debug::NoLocking=1"
}

# apt_update ARCH: refresh ARCH's package lists (the machine's for its own).
apt_update() {
	local arch=$1 d=$CACHE/apt-$1
	if [ "$arch" != "$HOST_ARCH" ]; then
		mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
		[ -f "$d/status" ] || : >"$d/status"
	fi
	# shellcheck disable=SC2046
	apt-get $(apt_opts "$arch") update -qq || die "apt-get update ($arch) failed"
}

# pkg_field ARCH PKG FIELD: a field of the candidate version of PKG.
pkg_field() {
	# shellcheck disable=SC2046
	apt-cache $(apt_opts "$1") show --no-all-versions "$2" 2>/dev/null | awk -v f="$3:" '$1 == f {print $2; exit}'
}

# kernel_pkg ARCH: the versioned kernel package linux-image-ARCH depends on
# (VM_KERNEL_PKG overrides it for the machine's architecture).
kernel_pkg() {
	local arch=$1 pkg=
	[ "$arch" = "$HOST_ARCH" ] && pkg=${VM_KERNEL_PKG:-}
	if [ -z "$pkg" ]; then
		# shellcheck disable=SC2046
		pkg=$(apt-cache $(apt_opts "$arch") depends "linux-image-$arch" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	fi
	if [ -z "$pkg" ]; then
		apt_update "$arch"
		# shellcheck disable=SC2046
		pkg=$(apt-cache $(apt_opts "$arch") depends "linux-image-$arch" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	fi
	[ -n "$pkg" ] || die "cannot find the kernel package linux-image-$arch depends on"
	echo "$pkg"
}

# fetch ARCH DIR PKG[=VERSION]...: download the packages into DIR.
fetch() {
	local arch=$1 dir=$2
	shift 2
	mkdir -p "$dir"
	# shellcheck disable=SC2046
	(cd "$dir" && apt-get $(apt_opts "$arch") download -q "$@" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
	local p
	for p in "$@"; do
		ls "$dir/${p%%=*}"_*.deb >/dev/null 2>&1 || die "apt-get download $p ($arch) failed"
	done
}

# extract_pkg ARCH PKG: PKG's files under CACHE/PKG_VERSION (downloaded and
# unpacked once); prints the directory.
extract_pkg() {
	local arch=$1 pkg=$2 ver dir
	ver=$(pkg_field "$arch" "$pkg" Version)
	[ -n "$ver" ] || { apt_update "$arch" && ver=$(pkg_field "$arch" "$pkg" Version); }
	[ -n "$ver" ] || die "no package $pkg for $arch"
	dir=$CACHE/${pkg}_${ver//[:~]/_}_$arch
	if [ ! -d "$dir" ]; then
		log "downloading $pkg $ver ($arch)"
		rm -rf "$dir.dl" "$dir.tmp"
		fetch "$arch" "$dir.dl" "$pkg=$ver"
		dpkg-deb -x "$dir.dl"/*.deb "$dir.tmp" && mv "$dir.tmp" "$dir" && rm -rf "$dir.dl"
	fi
	echo "$dir"
}

# Modules with their dependencies, dependencies first: modules_init ROOT
# MODDIR, then addmod NAME [ARGS] for each; ROOT/lib/modules/load.order
# lists them for init.sh's insmod loop. A module built in is skipped;
# addmod_file NAME FILE adds a module built here (gpio-sim).
modules_init() {
	MROOT=$1
	MODDIR=$2
	declare -gA MSEEN=()
	mkdir -p "$MROOT/lib/modules"
	: >"$MROOT/lib/modules/load.order"
}
modfile() {
	local n=$1 f
	f=$(find "$MODDIR" -name "$n.ko*" -print -quit)
	[ -n "$f" ] || f=$(find "$MODDIR" -name "${n//_/-}.ko*" -print -quit)
	[ -n "$f" ] || f=$(find "$MODDIR" -name "${n//-/_}.ko*" -print -quit)
	echo "$f"
}
addmod() {
	local n=$1 f d
	shift
	[ -n "${MSEEN[$n]:-}" ] && return
	MSEEN[$n]=1
	if grep -qE "/${n//[-_]/[-_]}\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then return; fi
	f=$(modfile "$n")
	[ -n "$f" ] || die "module $n not found in $MODDIR"
	addmod_file "$n" "$f" "$@"
}
addmod_file() {
	local n=$1 f=$2 d
	shift 2
	for d in $(modinfo -F depends "$f" | tr ',' ' '); do addmod "$d"; done
	case $f in
	*.xz) xz -dc "$f" >"$MROOT/lib/modules/$n.ko" ;;
	*.zst) zstd -qdc "$f" >"$MROOT/lib/modules/$n.ko" ;;
	*) cp "$f" "$MROOT/lib/modules/$n.ko" ;;
	esac
	echo "$n.ko $*" >>"$MROOT/lib/modules/load.order"
}

# cpio_gz DIR FILE: DIR as a gzip'ed newc cpio archive (an initramfs).
cpio_gz() { (cd "$1" && find . | cpio -o -H newc --quiet | gzip -1) >"$2"; }

# boot TIMEOUT LOG QEMU ARGS...: run qemu with its serial console on stdout
# (and in LOG, CRs removed) for at most TIMEOUT seconds. Sets QEMU_RC (124:
# timed out) and VM_SECONDS.
boot() {
	local timeout=$1 out=$2 t0
	shift 2
	t0=$(date +%s)
	set +e
	timeout --foreground -k 10 "$timeout" "$@" </dev/null 2>&1 | tee "$out"
	QEMU_RC=${PIPESTATUS[0]}
	set -e
	VM_SECONDS=$(($(date +%s) - t0))
	tr -d '\r' <"$out" >"$out.tmp" && mv "$out.tmp" "$out"
}
