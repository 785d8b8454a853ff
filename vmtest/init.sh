#!/bin/busybox sh
# /init of the test VM (see vmtest/run.sh): load the drivers, run the test
# binaries against the real devices, print a marker per binary and a final
# verdict on the serial console, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
# Pseudo-terminals, for the simulated stage of board's tests.
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
say() { echo "WAFERD-VM: $*"; }

# The uptime: how long the kernel took to reach /init under emulation.
say "kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu(s), /init at $(cut -d' ' -f1 /proc/uptime)s"
while read -r mod args; do
	insmod "/lib/modules/$mod" $args || say "insmod $mod failed"
done < /lib/modules/load.order

# gpio-sim is configured through configfs (board's GPIO tests create
# their chips there).
[ -d /sys/kernel/config ] && mount -t configfs configfs /sys/kernel/config
# The kernel's view of the GPIO lines (/sys/kernel/debug/gpio).
mount -t debugfs debugfs /sys/kernel/debug

# devtmpfs creates the nodes as the drivers register; give them a moment.
i=0
while [ $i -lt 100 ] && ! { [ -e /dev/video0 ] && [ -e /dev/watchdog0 ]; }; do
	sleep 0.1
	i=$((i + 1))
done
ls -l /dev/video* /dev/watchdog* /dev/ttyS[0-3] 2>&1

failed=0
run() {
	name=$1
	shift
	say "RUN $name"
	if "$@"; then
		say "PASS $name"
	else
		say "FAIL $name (exit $?)"
		failed=$((failed + 1))
	fi
}

cd /tmp
. /tests/run.list
# The UARTs as the 8250 driver sees them, with their byte counts.
cat /proc/tty/driver/serial 2>&1

if [ $failed -eq 0 ]; then
	say "ALL TESTS PASSED"
else
	say "$failed TEST BINARIES FAILED"
fi
sync
poweroff -f
