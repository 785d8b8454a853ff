#!/usr/bin/env bash
# vmtest/gpiosim.sh ARCH: build the kernel's GPIO simulator (gpio-sim) as a
# module for Debian's ARCH kernel (amd64 or arm64), and print its path.
#
# Debian's kernels build neither gpio-sim nor gpio-mockup. This builds one
# module out of tree, from the packages of the same version as the kernel
# linux-image-ARCH depends on:
#   linux-source-6.1               drivers/gpio/gpio-sim.c, gpiolib.h and
#                                  kernel/irq/irq_sim.c (the irq simulator
#                                  is not built in either)
#   linux-headers-<ver>-ARCH       the kernel's configuration and symbols
#   linux-headers-<ver>-common     the headers
#   linux-kbuild-6.1               kbuild's host tools (this machine's)
# with `make -C <headers> M=<dir> modules` (gpio-sim-y := gpio-sim-main.o
# irq_sim.o; for arm64 with ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-).
# Two changes: the headers' Makefile includes the common headers by an
# absolute path, pointed here at the unpacked tree; and irq_sim.c calls
# irq_to_desc, which modules cannot use: generic_handle_irq(irqnum) does
# the same there (the irq's handler is handle_simple_irq).
#
# The module loads into Debian's kernel (signatures are not enforced; it
# taints the kernel) after configfs. Lines get names and are driven through
# configfs and /sys/devices/platform/<dev>/<chip>/sim_gpioN/{pull,value}
# (see board/gpiosim_test.go).
#
# Cached as VM_CACHE/gpio-sim/<kernel version>-ARCH-<hash of this
# script>/gpio-sim.ko; the sources of a kernel version are kept beside it
# (the 139 MB linux-source package is not).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=gpio-sim
. vmtest/lib.sh

arch=${1:?usage: gpiosim.sh amd64|arm64}
case $arch in
amd64) kmake=() ;;
arm64) kmake=(ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-) ;;
*) die "unsupported architecture $arch" ;;
esac
kpkg=$(kernel_pkg "$arch")              # linux-image-6.1.0-57-arm64
abi=${kpkg#linux-image-}                # 6.1.0-57-arm64
abi=${abi%-"$arch"}                     # 6.1.0-57
ver=$(pkg_field "$arch" "$kpkg" Version) # 6.1.192-3
[ -n "$ver" ] || die "no version for $kpkg"
major=$(echo "$abi" | cut -d. -f1-2)   # 6.1
key=$(sha256sum vmtest/gpiosim.sh | cut -c1-12)
out=$CACHE/gpio-sim/$ver-$arch-$key
if [ -f "$out/gpio-sim.ko" ]; then
	echo "$out/gpio-sim.ko"
	exit 0
fi
[ "$arch" = amd64 ] || need_pkgs gcc-aarch64-linux-gnu
need_pkgs gcc make xz-utils kmod

# The three source files of this kernel version.
src=$CACHE/gpio-sim/src-$ver
if [ ! -f "$src/irq_sim.c" ]; then
	log "extracting gpio-sim's sources from linux-source-$major $ver"
	rm -rf "$src.dl" "$src.tmp" && mkdir -p "$src.tmp"
	fetch "$HOST_ARCH" "$src.dl" "linux-source-$major=$ver"
	dpkg-deb --fsys-tarfile "$src.dl"/linux-source-*.deb | tar -xO "./usr/src/linux-source-$major.tar.xz" |
		tar -xJ -C "$src.tmp" --strip-components=1 "linux-source-$major/drivers/gpio/gpio-sim.c" \
			"linux-source-$major/drivers/gpio/gpiolib.h" "linux-source-$major/kernel/irq/irq_sim.c"
	mv "$src.tmp/drivers/gpio/gpio-sim.c" "$src.tmp/drivers/gpio/gpiolib.h" "$src.tmp/kernel/irq/irq_sim.c" "$src.tmp/"
	rm -rf "$src.tmp/drivers" "$src.tmp/kernel" "$src.dl"
	mv "$src.tmp" "$src"
fi

# Headers and kbuild (kbuild's tools run on this machine: its architecture).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "building gpio-sim for $kpkg ($ver)"
fetch "$arch" "$work/dl" "linux-headers-$abi-$arch=$ver"
fetch "$HOST_ARCH" "$work/dl" "linux-headers-$abi-common=$ver" "linux-kbuild-$major=$ver"
for d in "$work"/dl/*.deb; do dpkg-deb -x "$d" "$work/tree"; done
hdr=$work/tree/usr/src/linux-headers-$abi-$arch
[ -f "$hdr/Makefile" ] || die "no $hdr/Makefile"
sed -i "s#^include /usr/src/#include $work/tree/usr/src/#" "$hdr/Makefile"

mkdir "$work/m"
cp "$src/gpio-sim.c" "$work/m/gpio-sim-main.c"
cp "$src/gpiolib.h" "$work/m/"
sed 's/handle_simple_irq(irq_to_desc(irqnum))/generic_handle_irq(irqnum)/' "$src/irq_sim.c" >"$work/m/irq_sim.c"
grep -q 'generic_handle_irq(irqnum)' "$work/m/irq_sim.c" || die "irq_sim.c of $ver: the irq_to_desc call was not found"
printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-main.o irq_sim.o\n' >"$work/m/Kbuild"
make -s -C "$hdr" M="$work/m" "${kmake[@]}" modules >"$work/build.log" 2>&1 ||
	{ cat "$work/build.log" >&2; die "building gpio-sim for $arch failed"; }
magic=$(modinfo -F vermagic "$work/m/gpio-sim.ko")
case $magic in "$abi-$arch "*) ;; *) die "gpio-sim.ko has vermagic '$magic', not $abi-$arch" ;; esac
mkdir -p "$out.tmp" && cp "$work/m/gpio-sim.ko" "$out.tmp/" && rm -rf "$out" && mv "$out.tmp" "$out"
log "built $out/gpio-sim.ko"
echo "$out/gpio-sim.ko"
