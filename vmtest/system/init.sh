#!/bin/busybox sh
# /init of the `make test-system` initramfs (see vmtest/system.sh): load the
# modules (disk, ext4, and the board's: vivid, i6300esb, configfs,
# gpio-sim), mount the Debian root file system from /dev/vda, put the
# scenario in it, and hand over to systemd.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "SYSTEST: initramfs on $(uname -r)"
while read -r mod args; do
	insmod "/lib/modules/$mod" $args || echo "SYSTEST: insmod $mod failed"
done </lib/modules/load.order
i=0
while [ $i -lt 100 ] && [ ! -b /dev/vda ]; do
	sleep 0.1
	i=$((i + 1))
done
mkdir -p /newroot
if ! mount -t ext4 /dev/vda /newroot; then
	echo "SYSTEST: FAIL boot: cannot mount the root file system /dev/vda"
	poweroff -f
fi
mkdir -p /newroot/opt/waferd-test
cp -a /payload/. /newroot/opt/waferd-test/
s=/newroot/etc/systemd/system
cp /payload/waferd-systemtest.service $s/
mkdir -p $s/multi-user.target.wants
ln -sf ../waferd-systemtest.service $s/multi-user.target.wants/waferd-systemtest.service
# A getty on the console would swallow what the scenario writes there.
ln -sf /dev/null $s/serial-getty@ttyS0.service
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
