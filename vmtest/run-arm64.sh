#!/usr/bin/env bash
# make test-vm-arm64: the arm64 builds of the device tests on Debian's arm64
# kernel, under qemu-system-aarch64 (-M virt,acpi=off -cpu cortex-a72,
# software emulation).
#
# The kernel (linux-image-<version>-arm64) and busybox-static:arm64 are
# downloaded through a private apt state that reads the machine's apt
# sources (lib.sh): the machine's dpkg architectures are not changed. The
# busybox initramfs holds vivid, i6300esb, configfs, gpio_keys and gpio-sim
# (cross-built for this kernel by gpiosim.sh) and the test binaries, built
# with GOARCH=arm64 CGO_ENABLED=0 (no race detector: it needs cgo on
# arm64):
#   camera/v4l2   vivid's /dev/video0
#   watchdog      i6300esb on the virt machine's PCI bus
#   board/gpio    the gpio-sim tests of test-vm, on the arm64 kernel
#   board/pl061   the virt machine's PL061 GPIO controller: the light on
#                 line 0 as the kernel sees it (debugfs), line 3 refused
#                 because gpio-keys holds it (the power button)
#   board/uart    the GRBL emulator across two 16550s of a PCI card
#                 (pci-serial-2x: /dev/ttyS0 and /dev/ttyS1), wired by qemu
# The verdict comes back on the PL011 console as in test-vm (init.sh), and
# is judged as there: each binary of VM_TESTS must print its PASS.
#
# Environment: GO, VM_TIMEOUT (seconds the VM may run, default 180: the
# README's 3-minute budget; builds and downloads do not count), VM_CACHE,
# VM_TESTS (default: camera/v4l2 watchdog board/gpio board/pl061
# board/uart).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=test-vm-arm64
. vmtest/lib.sh
TIMEOUT=${VM_TIMEOUT:-180}
start=$(date +%s)

need_pkgs qemu-system-arm cpio kmod
pkg=$(kernel_pkg arm64)
kdir=$(extract_pkg arm64 "$pkg")
bbdir=$(extract_pkg arm64 busybox-static)
kernel=$(ls "$kdir"/boot/vmlinuz-* | head -1)
moddir=$(ls -d "$kdir"/lib/modules/*/ | head -1)
[ -f "$kernel" ] && [ -d "$moddir" ] || die "$kdir holds no kernel or modules"
gpiosim=$(vmtest/gpiosim.sh arm64)

work=$(mktemp -d /tmp/waferd-arm64.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,tests,proc,sys,dev,tmp}
cp "$bbdir/bin/busybox" "$root/bin/busybox"
install -m 0755 vmtest/init.sh "$root/init"
modules_init "$root" "$moddir"
addmod vivid
addmod i6300esb nowayout=0
addmod gpio_keys
addmod configfs
addmod_file gpio-sim "$gpiosim"
log "kernel $(basename "$kernel"), modules: $(cut -d" " -f1 "$root/lib/modules/load.order" | tr "\n" " ")"

for p in camera/v4l2 watchdog board; do
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $GO test -c -o "$root/tests/$(basename $p).test" ./$p/
done
cat >"$root/tests/run.list" <<'LIST'
run camera/v4l2 env WAFERD_TEST_VIDEO=/dev/video0 WAFERD_TEST_SLOW_VM=1 /tests/v4l2.test -test.v -test.count=1 -test.timeout=300s
run watchdog env WAFERD_TEST_WATCHDOG=/dev/watchdog0 /tests/watchdog.test -test.v -test.count=1 -test.run=Hardware -test.timeout=120s
run board/gpio env WAFERD_TEST_GPIOSIM=/sys/kernel/config/gpio-sim /tests/board.test -test.v -test.count=1 -test.run=GPIO -test.skip=PL061 -test.timeout=120s
run board/pl061 env WAFERD_TEST_PL061=9030000.pl061 /tests/board.test -test.v -test.count=1 -test.run=PL061 -test.timeout=60s
run board/uart env WAFERD_TEST_UART_DRIVER=/dev/ttyS0 WAFERD_TEST_UART_EMULATOR=/dev/ttyS1 /tests/board.test -test.v -test.count=1 -test.run=UART -test.timeout=120s
LIST
tests=${VM_TESTS:-camera/v4l2 watchdog board/gpio board/pl061 board/uart}
grep -E "^run ($(echo $tests | tr ' ' '|')) " "$root/tests/run.list" >"$root/tests/run.list.tmp"
mv "$root/tests/run.list.tmp" "$root/tests/run.list"
initrd=$work/initramfs.cpio.gz
cpio_gz "$root" "$initrd"
log "initramfs $(du -h "$initrd" | cut -f1), built in $(($(date +%s) - start))s"

out=$CACHE/console-arm64.log
sock=$work/uart.sock
log "booting (software emulation, timeout ${TIMEOUT}s); console in $out"
boot "$TIMEOUT" "$out" qemu-system-aarch64 \
	-machine virt,acpi=off -cpu cortex-a72 -smp 2 -m 512M \
	-nographic -no-reboot -nodefaults -serial stdio \
	-chardev socket,id=uart1,path="$sock",server=on,wait=off \
	-chardev socket,id=uart2,path="$sock" \
	-device pci-serial-2x,chardev1=uart1,chardev2=uart2 \
	-device i6300esb \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyAMA0 panic=-1 loglevel=4 rdinit=/init"
log "VM ran ${VM_SECONDS}s, total $(($(date +%s) - start))s"

[ "$QEMU_RC" = 124 ] && die "FAIL: the VM did not finish within ${TIMEOUT}s (raise VM_TIMEOUT?)"
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
[ ${#failed[@]} -eq 0 ] && [ ${#missing[@]} -eq 0 ] || die "FAIL: ${#failed[@]} failed, ${#missing[@]} without a verdict, of: $tests (qemu exit $QEMU_RC); see $out"
grep -q '^WAFERD-VM: ALL TESTS PASSED' "$out" || die "FAIL: no final verdict: the VM stopped early (qemu exit $QEMU_RC); see $out"
log "PASS ($(echo $tests | wc -w) test binaries, each reported)"
