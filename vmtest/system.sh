#!/usr/bin/env bash
# make test-system: the amd64 package under real systemd, on real kernel
# devices, in a VM.
#
# Boots Debian's amd64 kernel under qemu-system-x86_64 (software
# emulation, no KVM) on a Debian root file system with systemd
# (mmdebstrap --variant=apt --include=systemd,systemd-sysv,udev,dbus,kmod,
# procps, from this machine's own apt sources, which are then removed from
# the image; made into an ext4 image with mkfs.ext4 -d). A small busybox
# initramfs loads virtio, ext4 and the board's drivers (vivid, i6300esb,
# configfs, gpio-sim built by gpiosim.sh), puts the scenario into the root
# file system and switches to systemd. The image is opened with
# snapshot=on: the cached image is never written.
#
# The scenario (vmtest/system/scenario.sh, run by
# waferd-systemtest.service) installs the package with dpkg -i and drives
# the service through systemctl, the serial console port and the GPIO
# lines; see the README ("The package under systemd"). It prints
# "SYSTEST: PASS|FAIL <check>" per check on the serial console; this script
# fails on any FAIL, on a check of its list (checks, below) that printed
# neither, on a verdict of a check not in the list, on a missing "SYSTEST:
# DONE", or if the VM has not powered off within VM_TIMEOUT seconds.
#
# Serial lines: ttyS0 is the console; qemu wires ttyS1 (waferd's stage
# port) to ttyS2 (the GRBL emulator), and ttyS4 (waferd's console port,
# the first port of a PCI 16550 card: 8250.nr_uarts=6) to ttyS5 (where the
# scenario types), each pair through a unix socket (one socket chardev
# listening, one connecting).
#
# Cached in VM_CACHE (vmtest/.cache): the kernel and module (see lib.sh),
# and the root file system image rootfs-<key>.ext4, where key hashes the
# mmdebstrap command and the apt sources it was built from.
#
# Needs root: apt-get install (qemu-system-x86, busybox-static, cpio, kmod,
# mmdebstrap, e2fsprogs), mmdebstrap, the package build.
#
# Environment: GO, VM_TIMEOUT (seconds the VM may run; image and package
# builds do not count), VM_CACHE. VM_TIMEOUT defaults to 300, not to the
# 180 of test-vm: this VM took 109 s here on a quiet machine but 169 s on
# a loaded one (README, "The VM tests"), too close to 180 to fail on time
# alone.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=test-system
. vmtest/lib.sh
TIMEOUT=${VM_TIMEOUT:-300}
start=$(date +%s)

# The checks of scenario.sh, each as its verdict line starts: "SYSTEST:
# PASS|FAIL <check>", then the end of the line, " (...)" or ": ...". Each
# must report, and nothing else may: a check that never ran (a scenario
# cut short, a branch that prints nothing) fails the target as a FAIL does.
checks=(
	"install: dpkg -i the amd64 package"
	"install: enabled, not started"
	"install: user waferd in dialout video gpio"
	"board: the gpio-sim chip is root:gpio 0660"
	"start: systemctl start returned"
	"start: active (running)"
	"start: as user waferd, watchdog armed"
	"start: light line low"
	"console: run sys started from /dev/ttyS4"
	"button: run in progress"
	"button: run canceled, reason button"
	"button: reason"
	"button: light line low"
	"button: feed hold reached the emulator"
	"button: the machine idle again"
	"e-stop: run started"
	"e-stop: run in progress"
	"e-stop: run aborted, reason estop"
	"e-stop: reason"
	"e-stop: latched while engaged (status)"
	"e-stop: a new run is refused while latched"
	"e-stop: reset refused while engaged"
	"e-stop: reset after release"
	"e-stop: a run starts again"
	"e-stop: after reset: run in progress"
	"e-stop: console stop: canceled"
	"e-stop: the machine idle again"
	"stop: run started"
	"stop: run in progress"
	"stop: run canceled, reason shutdown"
	"stop: reason"
	"stop: exit status 0"
	"stop: result success"
	"stop: within TimeoutStopSec=20s"
	"watchdog: WatchdogSec=8s for this part (drop-in)"
	"watchdog: run started"
	"watchdog: run in progress"
	"watchdog: frozen daemon killed and restarted"
	"watchdog: NRestarts went up"
	"watchdog: systemd logged the watchdog timeout"
	"watchdog: the frozen run is interrupted"
	"journal: the button stop at priority warning"
	"journal: the estop stop at priority warning"
	"journal: the shutdown stop at priority warning"
	"journal: the e-stop latch at priority error"
	"upgrade: dpkg -i the newer package"
	"upgrade: the running daemon was not restarted"
	"upgrade: still active"
	"upgrade: new binary"
	"upgrade: the edited configuration kept"
	"purge: dpkg --purge"
	"purge: service stopped"
	"purge: /usr/bin/waferd and the unit removed"
	"purge: /etc/waferd removed"
	"purge: /var/lib/waferd and its results removed"
	"purge: user waferd kept (Debian policy)"
)
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, apt-get)"

need_pkgs qemu-system-x86 busybox-static cpio kmod mmdebstrap e2fsprogs

pkg=$(kernel_pkg amd64)
kdir=$(extract_pkg amd64 "$pkg")
kernel=$(ls "$kdir"/boot/vmlinuz-* | head -1)
moddir=$(ls -d "$kdir"/lib/modules/*/ | head -1)
gpiosim=$(vmtest/gpiosim.sh amd64)

# --- the root file system ------------------------------------------------------
# The machine's apt sources, as files mmdebstrap pastes into the image.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -s "$f" ] && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || die "no apt sources on this machine"
suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
include=systemd,systemd-sysv,udev,dbus,kmod,procps
# Nothing of the machine's sources stays in the image: not the sources,
# not the package lists named after them.
hook='rm -rf "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/* "$1"/var/lib/apt/lists/*; echo waferd-vm >"$1"/etc/hostname'
key=$( (echo "$suite $include $hook" && cat "${sources[@]}") | sha256sum | cut -c1-12)
image=$CACHE/rootfs-$suite-$key.ext4
if [ ! -f "$image" ]; then
	log "building the root file system ($suite: $include)"
	t=$(date +%s)
	rm -rf "$CACHE/rootfs.tmp" "$image.tmp"
	mmdebstrap -q --variant=apt --include="$include" --customize-hook="$hook" \
		"$suite" "$CACHE/rootfs.tmp" "${sources[@]}" || die "mmdebstrap failed"
	mkfs.ext4 -q -L root -d "$CACHE/rootfs.tmp" "$image.tmp" 1G || die "mkfs.ext4 failed"
	rm -rf "$CACHE/rootfs.tmp" "$CACHE"/rootfs-*.ext4
	mv "$image.tmp" "$image"
	log "root file system image built in $(($(date +%s) - t))s"
fi

# --- the packages: the one to test and a newer one for the upgrade ------------
work=$(mktemp -d /tmp/waferd-sys.XXXXXX)
trap 'rm -rf "$work"' EXIT
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
debver=$(packaging/version.sh)
for v in "$version:$debver:waferd" "$version-upgrade:$debver+upgrade1:waferd-new"; do
	IFS=: read -r bv dv name <<<"$v"
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $GO build -trimpath -ldflags "-s -w -X main.version=$bv" -o "$work/bin-$name" ./cmd/waferd
	GO=$GO packaging/build-deb.sh "$dv" "$work/$name" amd64="$work/bin-$name" >/dev/null
	mv "$work/$name"/waferd_*_amd64.deb "$work/$name.deb"
done

# --- the initramfs ----------------------------------------------------------------
root=$work/initramfs
mkdir -p "$root"/{bin,proc,sys,dev,payload}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 vmtest/system/init.sh "$root/init"
modules_init "$root" "$moddir"
for m in virtio_pci virtio_blk crc32c_generic ext4 vivid configfs; do addmod $m; done
addmod i6300esb nowayout=0
addmod_file gpio-sim "$gpiosim"
p=$root/payload
cp "$work/waferd.deb" "$work/waferd-new.deb" vmtest/system/waferd.toml vmtest/system/sys.toml \
	vmtest/system/waferd-systemtest.service "$p/"
install -m 0755 vmtest/system/scenario.sh "$p/"
CGO_ENABLED=0 $GO build -o "$p/vmhelper" ./vmtest/vmhelper
initrd=$work/initramfs.cpio.gz
cpio_gz "$root" "$initrd"
log "kernel $(basename "$kernel"), image $(basename "$image"), initramfs $(du -h "$initrd" | cut -f1); prepared in $(($(date +%s) - start))s"

# --- boot ------------------------------------------------------------------------------
out=$CACHE/system-console.log
s1=$work/stage.sock s2=$work/console.sock
log "booting (software emulation, timeout ${TIMEOUT}s); console in $out"
boot "$TIMEOUT" "$out" qemu-system-x86_64 \
	-machine pc -cpu max -smp 2 -m 1G \
	-nographic -no-reboot -nodefaults -serial stdio \
	-chardev socket,id=stage1,path="$s1",server=on,wait=off -chardev socket,id=stage2,path="$s1" \
	-serial chardev:stage1 -serial chardev:stage2 \
	-chardev socket,id=con1,path="$s2",server=on,wait=off -chardev socket,id=con2,path="$s2" \
	-device pci-serial-2x,chardev1=con1,chardev2=con2 \
	-drive file="$image",format=raw,if=virtio,snapshot=on \
	-device i6300esb \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0 rdinit=/init 8250.nr_uarts=6 panic=-1 loglevel=4 systemd.show_status=0"
log "VM ran ${VM_SECONDS}s, total $(($(date +%s) - start))s"

[ "$QEMU_RC" = 124 ] && die "FAIL: the VM did not finish within ${TIMEOUT}s (raise VM_TIMEOUT?); see $out"
grep -E '^SYSTEST: (PASS|FAIL|FIGURE) ' "$out" >&2 || true
fails=$(grep -c '^SYSTEST: FAIL ' "$out" || true)
# The verdicts against the list: "missing: <check>" for a check of the list
# with no verdict, "unlisted: <line>" for a verdict of no check of it.
diffs=$(awk '
	NR == FNR { want[++n] = $0; next }
	/^SYSTEST: (PASS|FAIL) / {
		v = $0
		sub(/^SYSTEST: (PASS|FAIL) /, "", v)
		hit = 0
		for (i = 1; i <= n; i++) {
			c = want[i]
			if (index(v, c) == 1 && (length(v) == length(c) || substr(v, length(c) + 1, 1) ~ /[ :]/)) {
				got[i] = 1
				hit = 1
			}
		}
		if (!hit) print "unlisted: " v
	}
	END { for (i = 1; i <= n; i++) if (!got[i]) print "missing: " want[i] }
' <(printf '%s\n' "${checks[@]}") "$out")
[ -z "$diffs" ] || while read -r l; do log "$l"; done <<<"$diffs"
missing=$(grep -c '^missing: ' <<<"$diffs" || true)
unlisted=$(grep -c '^unlisted: ' <<<"$diffs" || true)
grep -q '^SYSTEST: DONE' "$out" || die "FAIL: the scenario did not finish (qemu exit $QEMU_RC; $missing of ${#checks[@]} checks reported nothing); see $out"
[ "$fails" = 0 ] || die "FAIL: $fails checks failed; see $out"
[ "$missing" = 0 ] || die "FAIL: $missing of ${#checks[@]} checks reported nothing (missing, above); see $out"
[ "$unlisted" = 0 ] || die "FAIL: $unlisted verdicts of checks not in system.sh's list (unlisted, above): add them to checks"
log "PASS (${#checks[@]} checks, each reported)"
