# waferd — see README.md. Every target works on a clean clone with Go installed.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PKGS      := ./...
BIN       := bin
FUZZTIME  ?= 30s

.PHONY: all build test demo cross lint fuzz install bench clean test-vm

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

clean:
	rm -rf $(BIN)
