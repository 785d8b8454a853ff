# waferd — see README.md. Every target works on a clean clone with Go installed.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PKGS      := ./...
BIN       := bin
FUZZTIME  ?= 30s

.PHONY: all build test demo cross lint fuzz soak install bench clean test-vm test-vm-arm64 test-system

all: lint build test

## build: the native waferd binary in bin/
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/waferd ./cmd/waferd

## test: the whole suite with the race detector
test:
	$(GO) test -race -count=1 $(PKGS)

## demo: a real inspection on the simulated board, results in ./runs
demo: build
	$(BIN)/waferd run --sim --recipe examples/recipes/demo.toml --data .

## cross: static binaries for the boards (linux/arm64 and linux/arm GOARM=7)
cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/waferd-linux-arm64 ./cmd/waferd
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/waferd-linux-armv7 ./cmd/waferd

## lint: gofmt check and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## bench: every benchmark, medians of several runs, written to BENCHMARKS.md
## (about 5 minutes; not part of test)
bench:
	GO=$(GO) scripts/bench.sh

## fuzz: run every fuzz target for FUZZTIME each (not part of test)
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParseStatus$$' -fuzztime=$(FUZZTIME) ./motion/grbl/
	$(GO) test -run='^$$' -fuzz='^FuzzParseResponse$$' -fuzztime=$(FUZZTIME) ./motion/grbl/
	$(GO) test -run='^$$' -fuzz='^FuzzEditor$$' -fuzztime=$(FUZZTIME) ./console/
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./console/
	$(GO) test -run='^$$' -fuzz='^FuzzDetect$$' -fuzztime=$(FUZZTIME) ./inspection/analysis/
	$(GO) test -run='^$$' -fuzz='^FuzzRecipe$$' -fuzztime=$(FUZZTIME) ./inspection/recipe/
	$(GO) test -run='^$$' -fuzz='^FuzzConfig$$' -fuzztime=$(FUZZTIME) ./config/
	$(GO) test -run='^$$' -fuzz='^FuzzFrame$$' -fuzztime=$(FUZZTIME) ./gem/

## soak: the stop-contract tests with many more cases than make test runs
## (random-time stops on fakes and on the emulator, SIGKILLs, the fleet);
## about half an hour here, not part of test
soak:
	$(GO) test -race -count=1 -timeout 3h -run '^TestStopStorm$$' ./machine/ -args -storm.cases=5000
	$(GO) test -race -count=1 -timeout 3h -run '^TestStopAtRandomTimes$$' ./inspection/ -args -stop.cases=2000
	$(GO) test -race -count=1 -timeout 3h -run '^TestCrashLeavesNothingCorrupt$$' ./cmd/waferd/ -args -crash.kills=200
	$(GO) test -race -count=1 -timeout 3h -run '^TestFleet$$' ./cmd/waferd/ -args -fleet.tools=20 -fleet.runs=10

## install: binary, unit, config, sysusers, tmpfiles and udev rules under DESTDIR
## (the paths are those of systemd.Install in systemd/systemd.go)
install: build
	install -D -m 0755 $(BIN)/waferd $(DESTDIR)/usr/bin/waferd
	install -D -m 0644 systemd/waferd.service $(DESTDIR)/usr/lib/systemd/system/waferd.service
	install -D -m 0644 systemd/waferd.sysusers.conf $(DESTDIR)/usr/lib/sysusers.d/waferd.conf
	install -D -m 0644 systemd/waferd.tmpfiles.conf $(DESTDIR)/usr/lib/tmpfiles.d/waferd.conf
	install -D -m 0644 systemd/waferd.udev.rules $(DESTDIR)/usr/lib/udev/rules.d/60-waferd.rules
	install -D -m 0644 systemd/waferd.toml $(DESTDIR)/etc/waferd/waferd.toml

## test-vm: device tests against real kernel drivers (vivid, i6300esb) in a
## qemu VM booted from Debian's kernel package; see vmtest/run.sh (needs root
## the first time: apt-get install/download, cached in vmtest/.cache)
test-vm:
	GO=$(GO) vmtest/run.sh

## test-vm-arm64: the arm64 device tests on Debian's arm64 kernel under
## qemu-system-aarch64 (virt): vivid, i6300esb, gpio-sim, PL061, 16550 UARTs
test-vm-arm64:
	GO=$(GO) vmtest/run-arm64.sh

## test-system: the amd64 package under real systemd in a VM: install, start,
## runs stopped by button, e-stop, systemctl stop and systemd's watchdog,
## upgrade, purge (vmtest/system.sh; root: mmdebstrap, apt-get)
test-system:
	GO=$(GO) vmtest/system.sh

clean:
	rm -rf $(BIN)

# --- ARM boards and Debian packages (README: "ARM boards and Debian packages")

.PHONY: cross-amd64 cross-version test-arm64 test-armv7 deb deb-check clean-dist

QEMU_ARM64       ?= qemu-aarch64-static
QEMU_ARM         ?= qemu-arm-static
# A hung test fails within CI's budget, with every goroutine's stack,
# rather than after go test's default 10 minutes.
ARM_TEST_TIMEOUT ?= 8m
# More go test flags for both ARM suites, after the packages, e.g.
#   make test-armv7 PKGS=./inspection/ ARM_TEST_FLAGS='-v -args -stop.cases=40'.
ARM_TEST_FLAGS   ?=
DIST             ?= dist
DEB_VERSION      ?= $(shell packaging/version.sh)
DEB_ARCHS        := arm64 armhf amd64

## cross-amd64: static bin/waferd-linux-amd64 (the amd64 package: simulated board, x86 machines)
cross-amd64:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/waferd-linux-amd64 ./cmd/waferd

## cross-version: the ARM binaries run under qemu-user and report $(VERSION)
cross-version: cross
	test "$$($(QEMU_ARM64) $(BIN)/waferd-linux-arm64 version)" = "waferd $(VERSION)"
	test "$$($(QEMU_ARM) $(BIN)/waferd-linux-armv7 version)" = "waferd $(VERSION)"

# The suite cross-compiled for linux ($(1): GOARCH and GOARM) and run under
# qemu-user $(2): the test binaries through go test -exec, and the waferd
# binary that cmd/waferd's tests start through WAFERD_TEST_EXEC (the kernel
# may have no binfmt_misc handler for ARM). No -race: linux/arm has no race
# detector, and on arm64 it needs cgo with an aarch64 cross C compiler.
# -short: the random-stop and crash tests run fewer cases and the fleet test
# none (make test runs them in full, natively, with -race).
define arm-test
	@command -v $(2) >/dev/null || { echo "$(2) not found: apt-get install qemu-user-static" >&2; exit 1; }
	CGO_ENABLED=0 GOOS=linux $(1) WAFERD_TEST_EXEC=$(2) \
	  $(GO) test -short -count=1 -timeout $(ARM_TEST_TIMEOUT) -exec $(2) $(PKGS) $(ARM_TEST_FLAGS)
endef

## test-arm64: the whole suite built for linux/arm64, run under qemu-aarch64-static
test-arm64:
	$(call arm-test,GOARCH=arm64,$(QEMU_ARM64))

## test-armv7: the whole suite built for linux/arm GOARM=7, run under qemu-arm-static
test-armv7:
	$(call arm-test,GOARCH=arm GOARM=7,$(QEMU_ARM))

## deb: $(DIST)/waferd_$(DEB_VERSION)_{arm64,armhf,amd64}.deb (packaging/build-deb.sh)
deb: cross cross-amd64
	rm -f $(DIST)/waferd_*.deb
	GO=$(GO) packaging/build-deb.sh '$(DEB_VERSION)' $(DIST) \
	  arm64=$(BIN)/waferd-linux-arm64 armhf=$(BIN)/waferd-linux-armv7 amd64=$(BIN)/waferd-linux-amd64

## deb-check: each package's contents and lintian; the amd64 one installed,
## upgraded, removed and purged in a scratch root (packaging/check-deb.sh)
deb-check: deb
	GO=$(GO) packaging/check-deb.sh $(foreach a,$(DEB_ARCHS),$(DIST)/waferd_$(DEB_VERSION)_$(a).deb)

clean: clean-dist
clean-dist:
	rm -rf $(DIST)
