#!/bin/bash
# The `make test-system` scenario, run inside the VM by
# waferd-systemtest.service once systemd has booted (see vmtest/system.sh).
# Everything it needs is in /opt/waferd-test: the two amd64 packages
# (waferd.deb and the newer waferd-new.deb), vmhelper, the configuration
# and the recipe. It prints "SYSTEST: PASS|FAIL <check> ..." per check and
# "SYSTEST: FIGURE ..." for measured times on the serial console, then
# "SYSTEST: DONE" and powers the VM off.
#
# A check's name is the same in its PASS and its FAIL line and comes first:
# what varies (a PID, a run, a time) follows it in parentheses or after
# ": ". vmtest/system.sh lists every name and fails on a check that
# reported nothing: a check added here is added to that list.
#
# The devices, as waferd.toml names them:
#   stage    /dev/ttyS1, wired by qemu to /dev/ttyS2 where vmhelper serves
#            the GRBL emulator (systemd-run unit grblsim)
#   console  /dev/ttyS4 (a PCI 16550), wired to /dev/ttyS5 where vmhelper
#            types the commands
#   GPIO     gpio-sim chip "waferd-sim": light, button, estop
#   camera   vivid's /dev/video0; watchdog: i6300esb's /dev/watchdog0
set -u
T=/opt/waferd-test
PATH=/usr/sbin:/usr/bin:/sbin:/bin
H=$T/vmhelper
DATA=/var/lib/waferd
failed=0

# at: seconds since boot, at the end of each line (where the VM's time goes).
at() { echo "@$(cut -d' ' -f1 /proc/uptime)s"; }
pass() { echo "SYSTEST: PASS $* $(at)"; }
fail() {
	echo "SYSTEST: FAIL $* $(at)"
	failed=$((failed + 1))
}
figure() { echo "SYSTEST: FIGURE $*"; }
# check NAME CMD...: PASS if CMD succeeds, else FAIL with its output.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		pass "$name${out:+ ($(echo "$out" | tr -d '\r' | grep . | tail -1 | cut -c1-160))}"
	else
		fail "$name: $(echo "$out" | tail -3 | tr '\n' ' ')"
	fi
}
con() { $H console /dev/ttyS5 "$@"; }
mainpid() { systemctl show -p MainPID --value waferd; }
prop() { systemctl show -p "$1" --value waferd; }
lastrun() { $H run $DATA/runs/$cur; }
# started NAME: the newest run is running with a site done; it becomes
# the current run ($cur) that waitrun and lastrun look at.
started() {
	local r
	if r=$($H run $DATA running 1 60s); then
		cur=${r%% *}
		pass "$1: run in progress ($cur)"
	else
		cur=none
		fail "$1: run in progress: none: $r"
	fi
}
waitrun() { $H run $DATA/runs/$cur "$@"; }
# idle: the console's status says the machine is idle. A run's record has
# its outcome before the machine is released (the record is part of the
# run), so a run asked for right after waitrun may be refused as busy.
idle() {
	local i
	for i in 1 2 3 4 5 6 7 8 9 10; do
		con 3s "status" '(?i)machine +idle' >/dev/null 2>&1 && return 0
	done
	con 3s "status" '(?i)machine +idle'
}
now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }

SIM=/sys/kernel/config/gpio-sim/waferd
line() { echo "/sys/devices/platform/$(cat $SIM/dev_name)/$(cat $SIM/bank0/chip_name)/sim_gpio$1"; }
LIGHT=0 BUTTON=1 ESTOP=2

echo "SYSTEST: BEGIN $(uname -r), systemd $(systemctl --version | head -1 | cut -d' ' -f2) $(at)"

# --- install ---------------------------------------------------------------
check "install: dpkg -i the amd64 package" dpkg -i $T/waferd.deb
check "install: enabled, not started" sh -c '[ "$(systemctl is-enabled waferd)" = enabled ] && ! systemctl is-active -q waferd'
check "install: user waferd in dialout video gpio" sh -c 'id -nG waferd | tr " " "\n" | sort | tr "\n" " " | grep -qx "dialout gpio video waferd "'

# --- the board ------------------------------------------------------------------
mkdir -p $SIM/bank0
echo waferd-sim >$SIM/bank0/label
echo 3 >$SIM/bank0/num_lines
for n in 0:light 1:button 2:estop; do
	mkdir -p $SIM/bank0/line${n%%:*} && echo ${n#*:} >$SIM/bank0/line${n%%:*}/name
done
echo 1 >$SIM/live
udevadm settle
echo pull-up >"$(line $BUTTON)/pull"  # the button is open: pulled up
echo pull-down >"$(line $ESTOP)/pull" # the e-stop's closed contact holds it low
chip=/dev/$(cat $SIM/bank0/chip_name)
check "board: the gpio-sim chip is root:gpio 0660 (waferd's udev rule: $chip)" sh -c "[ \"\$(stat -c %G:%a $chip)\" = gpio:660 ]"
# The administrator gives the hardware watchdog to waferd (README), and
# allows the board's UARTs (waferd.service: DeviceAllow= in a drop-in).
echo 'KERNEL=="watchdog[0-9]*", GROUP="waferd", MODE="0660"' >/etc/udev/rules.d/61-waferd-watchdog.rules
udevadm control --reload && udevadm trigger -s watchdog && udevadm settle
mkdir -p /etc/systemd/system/waferd.service.d
printf '[Service]\nDeviceAllow=char-ttyS rw\n' >/etc/systemd/system/waferd.service.d/uart.conf
systemctl daemon-reload
install -m 0644 $T/waferd.toml /etc/waferd/waferd.toml
install -m 0644 $T/sys.toml /etc/waferd/recipes/sys.toml
systemd-run -q --unit=grblsim $H grbl /dev/ttyS2
# The scenario's end of the console line: raw, no echo, also between the
# commands (the line discipline would echo waferd's prompt back to it).
stty -F /dev/ttyS5 raw -echo 115200
# Keep the port open between the commands: a closed 8250 receives nothing,
# qemu then stops sending from waferd's end, and waferd's console writes
# block once its UART's buffer is full (a writer blocked so kept the
# shutdown waiting past TimeoutStopSec in one run: see the report).
sleep infinity </dev/ttyS5 &

# --- start ------------------------------------------------------------------
t0=$(now)
if systemctl start waferd; then
	pass "start: systemctl start returned (Type=notify: READY=1) after $(ms $t0 $(now)) ms"
else
	fail "start: systemctl start returned: it failed: $(journalctl -u waferd -b --no-pager | tail -5 | tr '\n' ' ')"
fi
check "start: active (running)" sh -c '[ "$(systemctl show -p ActiveState,SubState --value waferd | tr "\n" " ")" = "active running " ]'
check "start: as user waferd, watchdog armed" sh -c '[ "$(ps -o user= -p '"$(mainpid)"')" = waferd ] && [ "$(systemctl show -p WatchdogUSec --value waferd)" = 20s ]'
check "start: light line low" [ "$(cat "$(line $LIGHT)/value")" = 0 ]

# --- a run from the console port, stopped by the button ------------------------
check "console: run sys started from /dev/ttyS4" con 90s "run sys" 'site [0-9]+/[0-9]+'
started button
press=$($H write "$(line $BUTTON)/pull" pull-down | awk '/^T / {print $2}')
check "button: run canceled, reason button" waitrun canceled 0 30s
r=$(lastrun)
case $r in *'"button'*) pass "button: reason ($r)" ;; *) fail "button: reason: $r" ;; esac
check "button: light line low" [ "$(cat "$(line $LIGHT)/value")" = 0 ]
hold=$(journalctl -u grblsim -o cat --no-pager | awk -v t="$press" '$1 == "RT" && $2 == "!" && $3 >= t {print $3; exit}')
if [ -n "$hold" ]; then
	pass "button: feed hold reached the emulator"
	figure "button edge (pull written) -> '!' read by the emulator over the UART: $(((hold - press) / 1000)) us"
else
	fail "button: feed hold reached the emulator: none after the press"
fi
$H write "$(line $BUTTON)/pull" pull-up >/dev/null
sleep 0.5 # released for longer than the debounce time
check "button: the machine idle again" idle

# --- the e-stop ------------------------------------------------------------------
check "e-stop: run started" con 90s "run sys" 'site [0-9]+/[0-9]+'
started e-stop
trip=$($H write "$(line $ESTOP)/pull" pull-up | awk '/^T / {print $2}')
check "e-stop: run aborted, reason estop" waitrun aborted 0 30s
r=$(lastrun)
case $r in *'"estop'*) pass "e-stop: reason ($r)" ;; *) fail "e-stop: reason: $r" ;; esac
reset=$(journalctl -u grblsim -o cat --no-pager | awk -v t="$trip" '$1 == "RT" && $2 == "reset" && $3 >= t {print $3; exit}')
[ -n "$reset" ] && figure "e-stop edge -> soft reset (0x18) read by the emulator: $(((reset - trip) / 1000)) us"
check "e-stop: latched while engaged (status)" con 10s "status" '(?i)machine +estop'
check "e-stop: a new run is refused while latched" con 10s "run sys" '(?i)error: .*e-?stop'
check "e-stop: reset refused while engaged" con 15s "reset" '\[y/N\]' "y" '(?i)error: .*e-?stop'
$H write "$(line $ESTOP)/pull" pull-down >/dev/null # released
sleep 0.5
check "e-stop: reset after release" con 15s "reset" '\[y/N\]' "y" 'reset: machine idle'
check "e-stop: a run starts again" con 90s "run sys" 'site [0-9]+/[0-9]+'
started "e-stop: after reset"
con 10s "stop" '.' >/dev/null
check "e-stop: console stop: canceled" waitrun canceled 0 30s
check "e-stop: the machine idle again" idle

# --- systemctl stop mid-run ---------------------------------------------------
check "stop: run started" con 90s "run sys" 'site [0-9]+/[0-9]+'
started stop
t0=$(now)
systemctl stop waferd
took=$(ms $t0 $(now))
check "stop: run canceled, reason shutdown" waitrun canceled 0 5s
r=$(lastrun)
case $r in *'"shutdown'*) pass "stop: reason ($r)" ;; *) fail "stop: reason: $r" ;; esac
check "stop: exit status 0" [ "$(prop ExecMainStatus)" = 0 ]
check "stop: result success" [ "$(prop Result)" = success ]
if [ "$took" -lt 20000 ]; then pass "stop: within TimeoutStopSec=20s ($took ms)"; else fail "stop: within TimeoutStopSec=20s: took $took ms"; fi
figure "systemctl stop mid-run -> stopped: $took ms"

# --- frozen: systemd's watchdog ------------------------------------------------------
# The unit's own WatchdogSec=20s was checked at the start ("watchdog
# armed"); a freeze is caught the same way with a shorter one, which saves
# the VM 12 s of waiting.
printf '[Service]\nWatchdogSec=8s\n' >/etc/systemd/system/waferd.service.d/watchdog.conf
systemctl daemon-reload
systemctl start waferd
check "watchdog: WatchdogSec=8s for this part (drop-in)" [ "$(prop WatchdogUSec)" = 8s ]
check "watchdog: run started" con 90s "run sys" 'site [0-9]+/[0-9]+'
started watchdog
frozen=$cur
old=$(mainpid)
restarts=$(prop NRestarts)
t0=$(now)
kill -STOP "$old"
i=0
while [ $i -lt 600 ] && { [ "$(mainpid)" = "$old" ] || [ "$(mainpid)" = 0 ] || ! systemctl is-active -q waferd; }; do
	sleep 0.1
	i=$((i + 1))
done
new=$(mainpid)
if [ "$new" != "$old" ] && [ "$new" != 0 ] && systemctl is-active -q waferd; then
	pass "watchdog: frozen daemon killed and restarted ($old -> $new after $(ms $t0 $(now)) ms)"
else
	fail "watchdog: frozen daemon killed and restarted: not within 60 s (MainPID $new, $(systemctl show -p ActiveState,SubState,Result --value waferd | tr '\n' ' '))"
fi
figure "SIGSTOP -> restarted and READY: $(ms $t0 $(now)) ms (WatchdogSec=8s, RestartSec=2s)"
check "watchdog: NRestarts went up" [ "$(prop NRestarts)" -gt "$restarts" ]
check "watchdog: systemd logged the watchdog timeout" sh -c "journalctl -b --no-pager -u waferd | grep -q 'Watchdog timeout'"
check "watchdog: the frozen run is interrupted" sh -c "grep -q '\"state\": *\"interrupted\"' $DATA/runs/$frozen/run.json"

# --- the journal ---------------------------------------------------------------------
# Each stop's request as journald has it: "<priority> message".
jw=$(journalctl -b -u waferd -o export --no-pager | awk -F= '/^PRIORITY=/ {p=$2} /^MESSAGE=/ {sub(/^MESSAGE=/, ""); print "<" p "> " $0}')
for s in button estop shutdown; do
	l=$(echo "$jw" | grep -m1 "stop requested: stopped: $s")
	case $l in
	"<4> "*) pass "journal: the $s stop at priority warning ($l)" ;;
	*) fail "journal: the $s stop at priority warning: got '$l'" ;;
	esac
done
check "journal: the e-stop latch at priority error" sh -c "echo \"\$1\" | grep -q '^<3> .*machine estop'" - "$jw"
echo "SYSTEST: journalctl -u waferd -p warning (priority, message):"
journalctl -b -u waferd -p warning -o export --no-pager | awk -F= '/^PRIORITY=/ {p=$2} /^MESSAGE=/ {sub(/^MESSAGE=/, ""); print "SYSTEST:   <" p "> " $0}' | head -40

# --- upgrade ----------------------------------------------------------------------
pid=$(mainpid)
before=$(waferd version)
check "upgrade: dpkg -i the newer package" dpkg -i $T/waferd-new.deb
check "upgrade: the running daemon was not restarted (MainPID $pid)" [ "$(mainpid)" = "$pid" ]
check "upgrade: still active" systemctl is-active -q waferd
after=$(waferd version)
if [ "$after" != "$before" ]; then pass "upgrade: new binary ($before -> $after)"; else fail "upgrade: new binary: still $after"; fi
check "upgrade: the edited configuration kept" cmp -s $T/waferd.toml /etc/waferd/waferd.toml

# --- purge ------------------------------------------------------------------------
check "purge: dpkg --purge" dpkg --purge waferd
check "purge: service stopped" sh -c '! systemctl is-active -q waferd'
check "purge: /usr/bin/waferd and the unit removed" sh -c '[ ! -e /usr/bin/waferd ] && [ ! -e /usr/lib/systemd/system/waferd.service ]'
check "purge: /etc/waferd removed" [ ! -e /etc/waferd/waferd.toml ]
check "purge: /var/lib/waferd and its results removed" [ ! -e $DATA ]
check "purge: user waferd kept (Debian policy)" id waferd

echo "SYSTEST: DONE ($failed failed)"
