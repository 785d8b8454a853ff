#!/usr/bin/env bash
# make test-vm: run the device tests against real kernel drivers in a VM.
#
# Boots Debian's amd64 kernel (linux-image-*-amd64 from the configured apt
# sources) under qemu-system-x86_64 in software emulation (no KVM needed)
# with a busybox initramfs holding:
#   - the vivid V4L2 test driver and its dependencies (/dev/video0),
#   - the i6300esb watchdog driver (qemu -device i6300esb, /dev/watchdog0),
#   - gpio-sim, the kernel's GPIO simulator, built for this kernel by
#     vmtest/gpiosim.sh (Debian builds it not), with configfs,
#   - the test binaries of camera/v4l2 (with the race detector), watchdog
#     and board: its GPIO tests (real kernel GPIO lines of gpio-sim chips
#     that the tests create, used through periph's gpioioctl driver by
#     OpenLine, illumination and input) and its UART test (the GRBL
#     emulator on /dev/ttyS2 driven through board.OpenStage on /dev/ttyS1,
#     two 8250 UARTs that qemu wires together through a unix socket: one
#     socket chardev listening, one connecting to it).
# The guest's /init (vmtest/init.sh) runs them and prints
# "WAFERD-VM: PASS|FAIL <pkg>" per binary and a final verdict on the serial
# console, then powers off. This script fails unless every binary of
# VM_TESTS printed its PASS, the final verdict came, and the VM finished
# within VM_TIMEOUT seconds.
#
# Needs root (or the packages already installed): it installs
# qemu-system-x86, busybox-static, cpio and kmod with apt-get (gpiosim.sh:
# gcc, make), and downloads the kernel package with apt-get download.
# Downloads and the module are cached under vmtest/.cache (git-ignored),
# keyed on the kernel's version (see lib.sh).
#
# Environment: GO (go), VM_TIMEOUT (seconds the VM may run, default 180:
# the README's 3-minute budget; builds and downloads do not count),
# VM_KERNEL_PKG (default: what linux-image-amd64 depends on), VM_CACHE
# (vmtest/.cache), VM_TESTS (the binaries to run, default all: camera/v4l2
# camera/v4l2-race watchdog board/gpio board/uart).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=test-vm
. vmtest/lib.sh
TIMEOUT=${VM_TIMEOUT:-180}
start=$(date +%s)

need_pkgs qemu-system-x86 busybox-static cpio kmod

# --- kernel and modules from Debian's package ------------------------------
pkg=$(kernel_pkg amd64)
kdir=$(extract_pkg amd64 "$pkg")
kernel=$(ls "$kdir"/boot/vmlinuz-* | head -1)
moddir=$(ls -d "$kdir"/lib/modules/*/ | head -1)
[ -f "$kernel" ] && [ -d "$moddir" ] || die "$kdir holds no kernel or modules"
gpiosim=$(vmtest/gpiosim.sh amd64)

# --- the initramfs -----------------------------------------------------------
root=$CACHE/root
rm -rf "$root"
mkdir -p "$root"/{bin,tests,proc,sys,dev,tmp}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 vmtest/init.sh "$root/init"

modules_init "$root" "$moddir"
addmod vivid
addmod i6300esb nowayout=0
addmod configfs
addmod_file gpio-sim "$gpiosim"
log "kernel $(basename "$kernel"), modules: $(cut -d" " -f1 "$root/lib/modules/load.order" | tr "\n" " ")"

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
run board/gpio env WAFERD_TEST_GPIOSIM=/sys/kernel/config/gpio-sim /tests/board.test -test.v -test.count=1 -test.run=GPIO -test.timeout=120s
run board/uart env WAFERD_TEST_UART_DRIVER=/dev/ttyS1 WAFERD_TEST_UART_EMULATOR=/dev/ttyS2 /tests/board.test -test.v -test.count=1 -test.run=UART -test.timeout=120s
EOF
# VM_TESTS="board/gpio ..." runs only those (while working on them).
tests=${VM_TESTS:-camera/v4l2 camera/v4l2-race watchdog board/gpio board/uart}
grep -E "^run ($(echo $tests | tr ' ' '|')) " "$root/tests/run.list" >"$root/tests/run.list.tmp"
mv "$root/tests/run.list.tmp" "$root/tests/run.list"
initrd=$CACHE/initramfs.cpio.gz
cpio_gz "$root" "$initrd"
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
boot "$TIMEOUT" "$out" qemu-system-x86_64 \
	-machine pc -cpu max -smp 2 -m 512M \
	-nographic -no-reboot -nodefaults -serial stdio \
	-chardev socket,id=uart1,path="$sock",server=on,wait=off \
	-chardev socket,id=uart2,path="$sock" \
	-serial chardev:uart1 -serial chardev:uart2 \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 loglevel=4 rdinit=/init" \
	-device i6300esb
qrc=$QEMU_RC
log "VM ran ${VM_SECONDS}s, total $(($(date +%s) - start))s"

[ "$qrc" = 124 ] && die "FAIL: the VM did not finish within ${TIMEOUT}s (raise VM_TIMEOUT?)"
grep -E '^WAFERD-VM: (PASS|FAIL) ' "$out" >&2 || true
# Each binary of the list ($tests) must report: one that failed and one
# that printed no verdict (the VM stopped early, a binary left out of
# run.list) are both named.
failed=() missing=()
for want in $tests; do
	if grep -q "^WAFERD-VM: PASS $want\$" "$out"; then continue; fi
	if grep -q "^WAFERD-VM: FAIL $want " "$out"; then failed+=("$want"); else missing+=("$want"); fi
done
[ ${#failed[@]} -eq 0 ] || log "failed: ${failed[*]}"
[ ${#missing[@]} -eq 0 ] || log "no verdict: ${missing[*]}"
[ ${#failed[@]} -eq 0 ] && [ ${#missing[@]} -eq 0 ] || die "FAIL: ${#failed[@]} failed, ${#missing[@]} without a verdict, of: $tests (qemu exit $qrc); see $out"
grep -q '^WAFERD-VM: ALL TESTS PASSED' "$out" || die "FAIL: no final verdict: the VM stopped early (qemu exit $qrc); see $out"
log "PASS ($(echo $tests | wc -w) test binaries, each reported)"
