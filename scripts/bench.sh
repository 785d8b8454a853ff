#!/usr/bin/env bash
# scripts/bench.sh — `make bench`: run every benchmark in the module and
# write BENCHMARKS.md with the medians over COUNT runs, the ratios, the goals
# (issues 3 and 8), whether each is met, the exact commands and the machine.
#
#   COUNT=5       runs of each benchmark (-count); figures are their medians
#   STOPS=100     stopped runs per count in BenchmarkStopLatency (-benchtime=Nx;
#                 its p99 is a nearest-rank percentile over these)
#   SAFESTOPS=50  the same for BenchmarkSafeStop
#   RUNS=3        -count of BenchmarkRun (pipelined vs serial: one 16-site run
#                 of 2048x2048 frames in real time per count and mode)
#   STARTS=20     starts of waferd per count in BenchmarkServeReady
#   OUTBOX=20000  events per count in BenchmarkOutbox (publishing, needs mosquitto)
#   ABORTS=50     iterations per count of BenchmarkHostAbort (each stops two
#                 runs: one by the host's ABORT, one by the console's stop)
#   BENCHTIME=1s  -benchtime of the throughput benchmarks
#   OUT=BENCHMARKS.md
#
# About 6 minutes on a 2-core machine: the pipeline comparison (real-time
# runs) and the 10,000-site run take half of it. Benchmarks are never part
# of `make test`: they run only with -bench.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
COUNT=${COUNT:-5}
STOPS=${STOPS:-100}
SAFESTOPS=${SAFESTOPS:-50}
RUNS=${RUNS:-3}
STARTS=${STARTS:-20}
OUTBOX=${OUTBOX:-20000}
ABORTS=${ABORTS:-50}
BENCHTIME=${BENCHTIME:-1s}
OUT=${OUT:-BENCHMARKS.md}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/commands"

# run GROUP ARGS...: runs a go test command, keeps its output for the report.
run() {
	local group=$1
	shift
	local cmd="" a
	for a in "$@"; do
		if [[ $a =~ [^A-Za-z0-9_./=:,+-] ]]; then
			a="'$a'" # for display; no argument here contains a quote
		fi
		cmd+="${cmd:+ }$a"
	done
	printf '%s\n' "$cmd" >>"$tmp/commands"
	echo "+ $cmd" >&2
	if ! "$@" 2>&1 | tee "$tmp/$group.out" >&2; then
		echo "bench: $group failed" >&2
		exit 1
	fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%s)

# The benchmarks with goals, with settings of their own.
analysis='^Benchmark(Analyze|AnalyzeNoCancelChecks|Memmove|AnalyzeVsMemmove|CancelLatency|CancelCheckCost)$'
stops='^Benchmark(StopLatency|SafeStop|Run|LongRun|StopLatencyPublishing)$'
ready='^BenchmarkServeReady$'
outbox='^BenchmarkOutbox$'
hostabort='^BenchmarkHostAbort$'
run analysis "$GO" test -run '^$' -bench "$analysis" -benchtime="$BENCHTIME" -count="$COUNT" -benchmem ./inspection/analysis/
run stop "$GO" test -run '^$' -bench '^BenchmarkStopLatency$' -benchtime="${STOPS}x" -count="$COUNT" -timeout=30m ./inspection/
run safestop "$GO" test -run '^$' -bench '^BenchmarkSafeStop$' -benchtime="${SAFESTOPS}x" -count="$COUNT" -timeout=30m ./inspection/
run pipeline "$GO" test -run '^$' -bench '^BenchmarkRun$' -benchtime=1x -count="$RUNS" -timeout=30m ./inspection/
run longrun "$GO" test -run '^$' -bench '^BenchmarkLongRun$' -benchtime=1x -count=1 -timeout=30m ./inspection/
run ready "$GO" test -run '^$' -bench "$ready" -benchtime="${STARTS}x" -count="$COUNT" ./cmd/waferd/
run stoppub "$GO" test -run '^$' -bench '^BenchmarkStopLatencyPublishing$' -benchtime="${STOPS}x" -count="$COUNT" -timeout=30m ./inspection/
run outbox "$GO" test -run '^$' -bench "$outbox" -benchtime="${OUTBOX}x" -count="$COUNT" -timeout=30m ./publish/
run hostabort "$GO" test -run '^$' -bench "$hostabort" -benchtime="${ABORTS}x" -count="$COUNT" -timeout=30m ./gem/

# Every other benchmark in the module, found by name.
pkgs=$(grep -rl --include='*_test.go' '^func Benchmark' . | xargs -n1 dirname | sort -u)
others=()
for p in $pkgs; do
	names=$("$GO" test -list '^Benchmark' "$p" | grep '^Benchmark' || true)
	case $p in
	./inspection/analysis) names=$(grep -Evx "${analysis//[\^\$]/}" <<<"$names" || true) ;;
	./inspection) names=$(grep -Evx "${stops//[\^\$]/}" <<<"$names" || true) ;;
	./cmd/waferd) names=$(grep -Evx "${ready//[\^\$]/}" <<<"$names" || true) ;;
	./publish) names=$(grep -Evx "${outbox//[\^\$]/}" <<<"$names" || true) ;;
	./gem) names=$(grep -Evx "${hostabort//[\^\$]/}" <<<"$names" || true) ;;
	esac
	[[ -n $names ]] || continue
	re="^($(paste -sd'|' <<<"$names"))\$"
	others+=("$p:$re")
done
i=0
for o in "${others[@]}"; do
	i=$((i + 1))
	run "other$i" "$GO" test -run '^$' -bench "${o#*:}" -benchtime="$BENCHTIME" -count="$COUNT" -benchmem "${o%%:*}"
done
elapsed=$(($(date -u +%s) - started))

# Medians: one line "name unit median n" per metric of every benchmark.
cat "$tmp"/*.out | awk '
	/^Benchmark/ && NF >= 4 {
		name = $1; sub(/-[0-9]+$/, "", name)
		if (!(name in seen)) { seen[name] = 1; order[++nb] = name }
		for (i = 3; i + 1 <= NF; i += 2) {
			k = name SUBSEP $(i + 1)
			if (!(k in n)) units[name] = units[name] " " $(i + 1)
			v[k, ++n[k]] = $i
		}
	}
	END {
		for (b = 1; b <= nb; b++) {
			name = order[b]
			m = split(substr(units[name], 2), us, " ")
			for (u = 1; u <= m; u++) {
				k = name SUBSEP us[u]; c = n[k]
				for (i = 1; i <= c; i++) a[i] = v[k, i] + 0
				for (i = 2; i <= c; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
				med = (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
				printf "%s %s %s %d\n", name, us[u], (med >= 1e5 || med <= -1e5) ? sprintf("%.0f", med) : sprintf("%.6g", med), c
			}
		}
	}' >"$tmp/medians"

# med NAME UNIT: the median, or "" if the benchmark did not report it.
med() { awk -v b="$1" -v u="$2" '$1 == b && $2 == u { print $3; exit }' "$tmp/medians"; }
# calc EXPR: floating-point arithmetic and comparisons (1 true, 0 false).
calc() { awk "BEGIN { x = $1; printf \"%.4g\", x }"; }
# row FIGURE VALUE UNIT GOAL TEST: a table row; TEST is an awk expression in
# x (the value), e.g. "x <= 100".
row() {
	local fig=$1 val=$2 unit=$3 goal=$4 test=$5 met
	if [[ -z $val ]]; then
		printf '| %s | — | %s | not measured |\n' "$fig" "$goal"
		return
	fi
	if [[ -z $test ]]; then
		met="—"
	elif [[ $(awk -v x="$val" "BEGIN { print ($test) ? 1 : 0 }") == 1 ]]; then
		met="**met**"
	else
		met="**not met**"
	fi
	printf '| %s | %s %s | %s | %s |\n' "$fig" "$val" "$unit" "$goal" "$met"
}

analyze=$(med BenchmarkAnalyze MB/s)
memmove=$(med BenchmarkMemmove MB/s)
an_ns=$(med BenchmarkAnalyze ns/op)
nc_ns=$(med BenchmarkAnalyzeNoCancelChecks ns/op)
ratio=""
[[ -n $analyze && -n $memmove ]] && ratio=$(calc "$analyze / $memmove")
pipe=$(med BenchmarkRun/pipelined wall/critical)
serial=$(med BenchmarkRun/serial wall/critical)
speedup=""
[[ -n $pipe && -n $serial ]] && speedup=$(calc "$(med BenchmarkRun/serial wall-s) / $(med BenchmarkRun/pipelined wall-s)")
unpaired=""
[[ -n $an_ns && -n $nc_ns ]] && unpaired=$(calc "($an_ns / $nc_ns - 1) * 100")

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[[ -n $cpu ]] || cpu=$(awk -F': ' '/^(Hardware|CPU part)/ { print $2; exit }' /proc/cpuinfo)
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)

{
	echo "# Benchmarks"
	echo
	echo "Generated by \`make bench\` (scripts/bench.sh). Every figure is the **median over"
	echo "$COUNT runs** (\`-count=$COUNT\`) of what the benchmark reports; ratios are of those"
	echo "medians. Percentiles (p50, p99, nearest rank) are within one run: the stop-latency"
	echo "benchmark times $STOPS stopped runs per run, the safe-stop benchmark $SAFESTOPS (with"
	echo "fewer than 100 samples p99 is the largest)."
	echo
	echo "## Machine"
	echo
	echo "| | |"
	echo "| --- | --- |"
	echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
	echo "| CPU | ${cpu:-unknown} |"
	echo "| nproc | $(nproc) |"
	echo "| Go | $("$GO" version | sed 's/^go version //') |"
	echo "| kernel | $(uname -sr) |"
	echo "| commit | $commit |"
	echo "| load average before | $load_before (a shared machine: other jobs add noise) |"
	echo "| wall time | ${elapsed} s |"
	echo
	echo "## Goals"
	echo
	echo "| Figure | Median | Goal | Met |"
	echo "| --- | --- | --- | --- |"
	row "Stop latency, \`machine.Stop\` → \`!\` at the emulator, over the stage's bare \`Halt\` → \`!\` on the same link, paired, median of the ratios" "$(med BenchmarkStopLatency stop-ratio-p50)" "×" "≤ 1.1×" "x <= 1.1"
	row "… \`machine.Stop\` → \`!\`, p50" "$(med BenchmarkStopLatency stop-p50-µs)" µs "" ""
	row "… \`machine.Stop\` → \`!\`, p99" "$(med BenchmarkStopLatency stop-p99-µs)" µs "" ""
	row "… bare \`Halt\` → \`!\` (the floor on this link), p50" "$(med BenchmarkStopLatency halt-p50-µs)" µs "" ""
	row "… bare \`Halt\` → \`!\`, p99" "$(med BenchmarkStopLatency halt-p99-µs)" µs "" ""
	row "Stop button edge → \`!\`, over the bare \`Halt\`, paired, median of the ratios" "$(med BenchmarkStopLatency button-ratio-p50)" "×" "" ""
	row "… button edge → \`!\`, p50" "$(med BenchmarkStopLatency button-p50-µs)" µs "" ""
	row "… the pty alone: one byte written → read by the emulator, idle (BenchmarkPTYByte), p50" "$(med BenchmarkPTYByte p50-µs)" µs "" ""
	row "Factory host's ABORT → soft reset (0x18) at the emulator, p99, minus the console's \`stop\` → \`!\`, p99, same run (BenchmarkHostAbort)" "$(med BenchmarkHostAbort added-p99-µs)" µs "< 1000 µs" "x < 1000"
	row "… the same at p50" "$(med BenchmarkHostAbort added-p50-µs)" µs "" ""
	row "… ABORT frame written → 0x18 at the emulator, p50" "$(med BenchmarkHostAbort abort-reset-p50-µs)" µs "" ""
	row "… ABORT frame written → 0x18, p99" "$(med BenchmarkHostAbort abort-reset-p99-µs)" µs "" ""
	row "… console \`stop\` line → \`!\`, p50" "$(med BenchmarkHostAbort stop-p50-µs)" µs "" ""
	row "… console \`stop\` line → \`!\`, p99" "$(med BenchmarkHostAbort stop-p99-µs)" µs "" ""
	row "Safe stop, \`Hold:0\` → outcome persisted, p50" "$(med BenchmarkSafeStop p50-ms)" ms "≤ 10 ms" "x <= 10"
	row "Safe stop, \`Hold:0\` → outcome persisted, p99" "$(med BenchmarkSafeStop p99-ms)" ms "≤ 10 ms" "x <= 10"
	row "… of which \`Hold:0\` → soft reset sent (hold seen by polling), p50" "$(med BenchmarkSafeStop hold-p50-ms)" ms "" ""
	row "… of which soft reset → outcome persisted, p50" "$(med BenchmarkSafeStop record-p50-ms)" ms "" ""
	row "\`Hold:0\` → \`Run\` returned (the wafer map drawn too), p50" "$(med BenchmarkSafeStop returned-p50-ms)" ms "" ""
	row "Pipelined run, wall time / critical path (BenchmarkRun)" "$pipe" "×" "≤ 1.03×" "x <= 1.03"
	row "Serial run (naive loop), wall time / critical path" "$serial" "×" "(≈ 1.3× expected)" ""
	row "Serial / pipelined wall time" "$speedup" "×" "" ""
	row "Live heap growth over a $(med BenchmarkLongRun sites)-site run (BenchmarkLongRun)" "$(med BenchmarkLongRun heap-growth-KiB)" KiB "≤ 1024 KiB" "x <= 1024"
	row "\`waferd serve --sim\` exec → READY=1, p50 (BenchmarkServeReady)" "$(med BenchmarkServeReady p50-ms)" ms "≤ 100 ms" "x <= 100"
	row "\`waferd serve --sim\` exec → READY=1, p99" "$(med BenchmarkServeReady p99-ms)" ms "≤ 100 ms" "x <= 100"
	row "Site image PNG, 2048×2048 (BenchmarkSiteImagePNG/grayPNG)" "$(med BenchmarkSiteImagePNG/grayPNG MB/s)" MB/s "" ""
	row "… image/png at BestSpeed, same frame" "$(med BenchmarkSiteImagePNG/image-png-BestSpeed MB/s)" MB/s "" ""
	row "Analysis throughput, 2048×2048 frame (BenchmarkAnalyze)" "$analyze" MB/s "" ""
	row "Memory bandwidth, same buffer (BenchmarkMemmove)" "$memmove" MB/s "" ""
	row "Analyze / Memmove, paired: one Detect and one copy alternately, median of the ratios (BenchmarkAnalyzeVsMemmove)" "$(med BenchmarkAnalyzeVsMemmove x-memmove)" "×" "≥ 0.5×" "x >= 0.5"
	row "… unpaired: the two MB/s medians above (noisy)" "$ratio" "×" "≥ 0.5×" ""
	row "Stop latency with publishing on and the broker down, over publishing off, paired, median of the ratios (BenchmarkStopLatencyPublishing)" "$(med BenchmarkStopLatencyPublishing on-ratio-p50)" "×" "no difference beyond noise (≤ 1.1×)" "x <= 1.1"
	row "… publishing off, \`machine.Stop\` → \`!\`, p50" "$(med BenchmarkStopLatencyPublishing off-p50-µs)" µs "" ""
	row "… publishing on, broker down, p50" "$(med BenchmarkStopLatencyPublishing on-p50-µs)" µs "" ""
	row "… publishing on, broker down, p99" "$(med BenchmarkStopLatencyPublishing on-p99-µs)" µs "" ""
	row "Safe stop with publishing on (broker down) over off, paired, median of the ratios" "$(med BenchmarkStopLatencyPublishing safe-ratio-p50)" "×" "≤ 1.1×" "x <= 1.1"
	row "Events one tool commits to the outbox, fsync, broker down (BenchmarkOutbox/committed)" "$(med BenchmarkOutbox/committed events/s)" events/s "" ""
	row "Events one tool publishes through the outbox to mosquitto, QoS 1, acknowledged and deleted (BenchmarkOutbox/sent)" "$(med BenchmarkOutbox/sent events/s)" events/s "" ""
	row "Cancellation-check cost, paired (BenchmarkCancelCheckCost)" "$(med BenchmarkCancelCheckCost checks-%)" % "≤ 1 %" "x <= 1"
	row "… unpaired: Analyze / AnalyzeNoCancelChecks − 1 (noisy)" "$unpaired" % "≤ 1 %" ""
	row "Stop during analysis observed (BenchmarkCancelLatency), p50" "$(med BenchmarkCancelLatency p50-µs)" µs "≤ 1000 µs" "x <= 1000"
	row "Stop during analysis observed (BenchmarkCancelLatency), p99" "$(med BenchmarkCancelLatency p99-µs)" µs "≤ 1000 µs" "x <= 1000"
	echo
	echo "Reading the figures:"
	echo
	echo "- Stop latency is timed through the production driver and board.Open: the"
	echo "  GRBL emulator runs in a process of its own (the controller is a separate"
	echo "  machine) behind a pseudo-terminal, the light and camera are the simulated"
	echo "  devices. It runs from the stop request to the emulator reading \`!\` from its"
	echo "  end of the pty while a run moves the stage. Stop writes the hold itself"
	echo "  (the stage's Halt) before it cancels the run; the bare Halt is the same"
	echo "  write without Stop around it, timed on the same link in the same"
	echo "  iteration, so the ratio cancels what the link and the load cost. The pty is part of the figure"
	echo "  (a write(2) on the slave, the kernel's tty buffer work and the wake-up of"
	echo "  the reader: $(med BenchmarkPTYByte p50-µs) µs at p50 with nothing else running, BenchmarkPTYByte), and so is every other"
	echo "  process competing for the two cores at the moment of the stop. On the"
	echo "  machine the floor is one byte time at 115200 baud (87 µs), or the USB frame"
	echo "  of a USB serial adapter."
	echo "- Safe stop runs from the emulator entering \`Hold:0\` to the outcome persisted:"
	echo "  run.json written, fsync'd and renamed into place, on disk, not tmpfs"
	echo "  (StepWaferMap). Its parts: the driver noticing \`Hold:0\` (status polling"
	echo "  every 5 ms) and the soft reset, status and record after it. The wafer map,"
	echo "  a picture derived from run.json, is drawn after it; \`Run\` returns then."
	echo "- The pipeline comparison runs 16 sites of 2048×2048 frames at the demo's"
	echo "  settle, exposure and feed in real time, once with the sites pipelined (the"
	echo "  default) and once with Config.Serial. The critical path is what the"
	echo "  machine itself must spend: the emulator's time in motion, the settle waits"
	echo "  and the camera's capture calls. Wall time includes creating the record,"
	echo "  the last site's analysis and save, and the outcome and wafer map."
	echo "- The long run (BenchmarkLongRun) measures the live heap after two garbage"
	echo "  collections at the 1,000th and at the last site; the emulator runs in its"
	echo "  own process there too, so only waferd's heap is measured. What grows is"
	echo "  what the run record holds for each site saved in between (the paths of"
	echo "  its defect list and image, 32 bytes); frames, encoders and the JSON of"
	echo "  each rewrite of run.json are garbage once used. Allocations per site are"
	echo "  not a goal: a site takes 100 ms or more."
	echo "- Analysis is compute-bound and memmove bandwidth-bound, so the other jobs of"
	echo "  a shared machine slow the first more, and by different amounts in the"
	echo "  minutes between the two benchmarks: their MB/s ratio swings with the load."
	echo "  The paired figure alternates the two within one benchmark, as the"
	echo "  cancellation-check cost is measured."
	echo "  It is the lower of the two on a quiet machine: each Detect follows a copy"
	echo "  that has pushed part of its data out of the caches."
	echo "- The factory host's ABORT (BenchmarkHostAbort) runs on the same kind of board, with"
	echo "  the daemon, the equipment interface on loopback TCP and a console session on a"
	echo "  pipe. The host is a raw socket: the ABORT frame is encoded beforehand and timed"
	echo "  from its write(2); the console's stop from the write of its line. An ABORT's"
	echo "  first byte is the soft reset, written by Stop itself (no feed hold, no"
	echo "  controlled hold); a stop's is the feed hold. The latch is reset between runs."
	echo "- For the stop benchmarks ns/op is the mean of the measured latency, not the"
	echo "  time of an iteration (a whole run); \`late\` counts stops that found the stage"
	echo "  already at rest, which are left out."
	echo
	echo "## Every benchmark (medians)"
	echo
	echo "| Benchmark | Metric | Median | Runs |"
	echo "| --- | --- | --- | --- |"
	awk '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$tmp/medians"
	echo
	echo "## Commands"
	echo
	echo "Run from the repository root, in this order (\`COUNT=$COUNT STOPS=$STOPS SAFESTOPS=$SAFESTOPS RUNS=$RUNS STARTS=$STARTS ABORTS=$ABORTS BENCHTIME=$BENCHTIME scripts/bench.sh\`):"
	echo
	echo '```sh'
	cat "$tmp/commands"
	echo '```'
} >"$OUT"
echo "bench: wrote $OUT (${elapsed} s)" >&2
