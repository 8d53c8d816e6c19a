# The two commands a fresh Debian machine needs (see README.md):
#   make demo   installs what is missing, builds voxtap, generates a small capture and prints its CDRs
#   make test   installs what the tests need and runs the whole test suite (what CI runs)

CARGO ?= cargo
DEMO := target/demo/demo.pcap

.PHONY: demo test build release bench fmt clippy image image-test

demo:
	./scripts/deps.sh
	$(CARGO) build --release
	mkdir -p target/demo
	python3 perf/gen/voxgen.py -o $(DEMO) --calls 12 --cps 4 --duration 4 --mix --dtmf --loss 0.02 --jitter 15 --seed 7
	./target/release/voxtap -r $(DEMO)
	./target/release/voxtap -r $(DEMO) --json | head -n 2

test:
	./scripts/test.sh

build:
	$(CARGO) build

release:
	$(CARGO) build --release

bench:
	./perf/bench.sh

fmt:
	$(CARGO) fmt

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# The appliance disk image (docs/appliance.md): build it, then boot it under QEMU with BIOS and UEFI.
image:
	./appliance-image/build.sh image

image-test:
	./appliance-image/build.sh smoke

