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
# fails on any FAIL, on a missing "SYSTEST: DONE", or if the VM has not
# powered off within VM_TIMEOUT seconds.
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
# Environment: GO, VM_TIMEOUT (seconds, default 600), VM_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=test-system
. vmtest/lib.sh
TIMEOUT=${VM_TIMEOUT:-600}
start=$(date +%s)
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
grep -q '^SYSTEST: DONE' "$out" || die "FAIL: the scenario did not finish (qemu exit $QEMU_RC); see $out"
[ "$fails" = 0 ] || die "FAIL: $fails checks failed; see $out"
log "PASS ($(grep -c '^SYSTEST: PASS ' "$out") checks)"
