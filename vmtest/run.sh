#!/usr/bin/env bash
# make test-vm: run the device tests against real kernel drivers in a VM.
#
# Boots Debian's amd64 kernel (linux-image-*-amd64 from the configured apt
# sources) under qemu-system-x86_64 in software emulation (no KVM needed)
# with a busybox initramfs holding:
#   - the vivid V4L2 test driver and its dependencies (/dev/video0),
#   - the i6300esb watchdog driver (qemu -device i6300esb, /dev/watchdog0),
#   - the test binaries of camera/v4l2 (with the race detector), watchdog
#     and board (its UART test: the GRBL emulator on /dev/ttyS2 driven
#     through board.OpenStage on /dev/ttyS1, two 8250 UARTs that qemu wires
#     together through a unix socket: one socket chardev listening, one
#     connecting to it).
# The guest's /init (vmtest/init.sh) runs them and prints
# "WAFERD-VM: PASS|FAIL <pkg>" per binary and a final verdict on the serial
# console, then powers off. This script fails unless every binary passed and
# the VM finished within VM_TIMEOUT seconds.
#
# Needs root (or the packages already installed): it installs
# qemu-system-x86, busybox-static, cpio and kmod with apt-get, and downloads
# the kernel package with apt-get download. Downloads are cached under
# vmtest/.cache (git-ignored).
#
# Environment: GO (go), VM_TIMEOUT (seconds, default 600), VM_KERNEL_PKG
# (default: what linux-image-amd64 depends on), VM_CACHE (vmtest/.cache).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
TIMEOUT=${VM_TIMEOUT:-600}
CACHE=$(mkdir -p "${VM_CACHE:-vmtest/.cache}" && cd "${VM_CACHE:-vmtest/.cache}" && pwd)
start=$(date +%s)
log() { echo "test-vm: $*" >&2; }
die() { log "$*"; exit 1; }

# --- host packages ---------------------------------------------------------
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
command -v modinfo >/dev/null || missing+=(kmod)
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]} (or install them first)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
		die "apt-get install ${missing[*]} failed"
fi
dpkg -s busybox-static >/dev/null 2>&1 || die "busybox-static is not installed (the dynamic busybox cannot run in the initramfs)"

# --- kernel and modules from Debian's package ------------------------------
pkg=${VM_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	if [ -z "$pkg" ]; then
		apt-get update -qq
		pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	fi
fi
[ -n "$pkg" ] || die "cannot find the kernel package linux-image-amd64 depends on; set VM_KERNEL_PKG"
kdir=$CACHE/$pkg
if [ ! -d "$kdir/boot" ]; then
	log "downloading $pkg"
	rm -rf "$kdir" "$CACHE"/dl && mkdir -p "$CACHE/dl"
	(cd "$CACHE/dl" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
	deb=$(ls "$CACHE"/dl/"$pkg"_*.deb 2>/dev/null | head -1)
	[ -n "$deb" ] || die "apt-get download $pkg failed"
	dpkg-deb -x "$deb" "$kdir.tmp" && mv "$kdir.tmp" "$kdir" && rm -rf "$CACHE/dl"
fi
kernel=$(ls "$kdir"/boot/vmlinuz-* | head -1)
moddir=$(ls -d "$kdir"/lib/modules/*/ | head -1)
[ -f "$kernel" ] && [ -d "$moddir" ] || die "$kdir holds no kernel or modules"

# --- the initramfs -----------------------------------------------------------
root=$CACHE/root
rm -rf "$root"
mkdir -p "$root"/{bin,lib/modules,tests,proc,sys,dev,tmp}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 vmtest/init.sh "$root/init"

# Modules with their dependencies, dependencies first.
declare -A seen=()
order=()
modfile() {
	local n=$1 f
	f=$(find "$moddir" -name "$n.ko*" -print -quit)
	[ -n "$f" ] || f=$(find "$moddir" -name "${n//_/-}.ko*" -print -quit)
	[ -n "$f" ] || f=$(find "$moddir" -name "${n//-/_}.ko*" -print -quit)
	echo "$f"
}
addmod() {
	local n=$1 f d
	[ -n "${seen[$n]:-}" ] && return
	seen[$n]=1
	if grep -qE "/${n//[-_]/[-_]}\.ko" "$moddir/modules.builtin" 2>/dev/null; then return; fi
	f=$(modfile "$n")
	[ -n "$f" ] || die "module $n not found in $pkg"
	for d in $(modinfo -F depends "$f" | tr ',' ' '); do addmod "$d"; done
	case $f in
	*.xz) xz -dc "$f" >"$root/lib/modules/$n.ko" ;;
	*.zst) zstd -qdc "$f" >"$root/lib/modules/$n.ko" ;;
	*) cp "$f" "$root/lib/modules/$n.ko" ;;
	esac
	order+=("$n")
}
addmod vivid
addmod i6300esb
: >"$root/lib/modules/load.order"
for n in "${order[@]}"; do
	args=
	[ "$n" = i6300esb ] && args="nowayout=0"
	echo "$n.ko $args" >>"$root/lib/modules/load.order"
done
log "kernel $(basename "$kernel"), modules: ${order[*]}"

# Test binaries. camera/v4l2 is built with the race detector (it needs cgo:
# its shared libraries go into the initramfs as well); watchdog statically.
CGO_ENABLED=0 $GO test -c -o "$root/tests/v4l2.test" ./camera/v4l2/
$GO test -c -race -o "$root/tests/v4l2-race.test" ./camera/v4l2/
CGO_ENABLED=0 $GO test -c -o "$root/tests/watchdog.test" ./watchdog/
CGO_ENABLED=0 $GO test -c -o "$root/tests/board.test" ./board/
for lib in $(ldd "$root/tests/v4l2-race.test" | grep -o '/[^ ]*'); do
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
done
[ -e "$root/lib64" ] || ln -s lib "$root/lib64" 2>/dev/null || true
cat >"$root/tests/run.list" <<'EOF'
run camera/v4l2 env WAFERD_TEST_VIDEO=/dev/video0 WAFERD_TEST_SLOW_VM=1 /tests/v4l2.test -test.v -test.count=1 -test.timeout=300s
run camera/v4l2-race env WAFERD_TEST_VIDEO=/dev/video0 WAFERD_TEST_SLOW_VM=1 /tests/v4l2-race.test -test.v -test.count=1 -test.timeout=300s -test.run=Device
run watchdog env WAFERD_TEST_WATCHDOG=/dev/watchdog0 /tests/watchdog.test -test.v -test.count=1 -test.run=Hardware -test.timeout=120s
run board/uart env WAFERD_TEST_UART_DRIVER=/dev/ttyS1 WAFERD_TEST_UART_EMULATOR=/dev/ttyS2 /tests/board.test -test.v -test.count=1 -test.run=UART -test.timeout=120s
EOF
initrd=$CACHE/initramfs.cpio.gz
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"
log "initramfs $(du -h "$initrd" | cut -f1), built in $(($(date +%s) - start))s"

# --- boot --------------------------------------------------------------------
out=$CACHE/console.log
# The guest's ttyS1 and ttyS2 are wired to each other: a socket chardev
# listening on a unix socket and one connecting to it, in the same qemu.
# (A short path: sun_path holds 108 bytes.)
sockdir=$(mktemp -d /tmp/waferd-vm.XXXXXX)
trap 'rm -rf "$sockdir"' EXIT
sock=$sockdir/uart.sock
log "booting (software emulation, timeout ${TIMEOUT}s); console in $out"
boot=$(date +%s)
set +e
timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 \
	-machine pc -cpu max -smp 2 -m 512M \
	-nographic -no-reboot -nodefaults -serial stdio \
	-chardev socket,id=uart1,path="$sock",server=on,wait=off \
	-chardev socket,id=uart2,path="$sock" \
	-serial chardev:uart1 -serial chardev:uart2 \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 loglevel=4 rdinit=/init" \
	-device i6300esb \
	</dev/null 2>&1 | tee "$out"
qrc=${PIPESTATUS[0]}
set -e
tr -d '\r' <"$out" >"$out.tmp" && mv "$out.tmp" "$out"
log "VM ran $(($(date +%s) - boot))s, total $(($(date +%s) - start))s"

[ "$qrc" = 124 ] && die "FAIL: the VM did not finish within ${TIMEOUT}s (raise VM_TIMEOUT?)"
grep -E '^WAFERD-VM: (PASS|FAIL) ' "$out" >&2 || true
grep -q '^WAFERD-VM: ALL TESTS PASSED' "$out" || die "FAIL: tests failed in the VM or it stopped early (qemu exit $qrc); see $out"
for want in camera/v4l2 camera/v4l2-race watchdog board/uart; do
	grep -q "^WAFERD-VM: PASS $want\$" "$out" || die "FAIL: $want did not pass; see $out"
done
log "PASS"
