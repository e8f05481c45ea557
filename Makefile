# Thin wrapper over meson. `make run` is the demo, `make test` the whole default suite.
BUILD      ?= build
ASAN_BUILD ?= build-asan
MESON_OPTS ?=

.PHONY: all setup build run test clean

all: build

setup:
	@scripts/setup.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

build: setup $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: build
	@scripts/demo.sh $(BUILD)/cli/vtool

# Two builds: gcc with -Werror, and clang with ASan+UBSan (so both compilers stay clean
# and every test also runs under the sanitizers). The last line is the summary.
test: setup
	@[ -f $(BUILD)-ci/build.ninja ] || meson setup $(BUILD)-ci --werror $(MESON_OPTS)
	@[ -f $(ASAN_BUILD)/build.ninja ] || CC=clang meson setup $(ASAN_BUILD) --werror \
		-Db_sanitize=address,undefined -Db_lundef=false $(MESON_OPTS)
	ninja -C $(BUILD)-ci
	ninja -C $(ASAN_BUILD)
	@rc=0; \
	meson test -C $(BUILD)-ci --print-errorlogs --num-processes 2 || rc=1; \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C $(ASAN_BUILD) --print-errorlogs --num-processes 2 || rc=1; \
	python3 scripts/test-summary.py $(BUILD)-ci $(ASAN_BUILD) || rc=1; \
	exit $$rc

clean:
	rm -rf $(BUILD) $(BUILD)-ci $(ASAN_BUILD)
