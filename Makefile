# hearth: the two commands of the README.
#   make serve   install deps, build, fetch the default model, start the server
#   make test    build (release, ASan+UBSan, and CUDA compile-only when nvcc exists) and run every test
JOBS    ?= $(shell nproc)
BUILD   ?= build
ASAN    ?= build-asan
CUDAB   ?= build-cuda
MODEL   ?=
ARGS    ?=
CACHE   ?= $(HOME)/.cache/hearth
NVCC    := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)

.PHONY: all deps build asan cuda test test-release test-asan serve default-model clean format

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan: deps
	@cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DHEARTH_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN) -j $(JOBS)

# The CUDA backend cannot run here, but it must compile and link.
cuda: deps
	@if [ -n "$(NVCC)" ]; then \
	  cmake -S . -B $(CUDAB) -DCMAKE_BUILD_TYPE=Release -DHEARTH_CUDA=ON -DCMAKE_CUDA_COMPILER=$(NVCC) >/dev/null && \
	  cmake --build $(CUDAB) -j $(JOBS) --target hearth; \
	else echo "cuda: nvcc not found, CUDA build skipped"; fi

test-release: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Sanitizer run: every C test (script tests drive the release binary).
test-asan: asan
	@cd $(ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -LE "slow|script"

# CUDA compile check first, so the run ends with the test summaries.
test: cuda test-release test-asan

default-model: deps
	@bash scripts/fetch-default-model.sh $(CACHE)

serve: build
	@if [ -z "$(MODEL)" ]; then m=$$(bash scripts/fetch-default-model.sh $(CACHE)); else m="$(MODEL)"; fi; \
	exec ./$(BUILD)/hearth serve "$$m" $(ARGS)

format:
	@clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h')

clean:
	rm -rf $(BUILD) $(ASAN) $(CUDAB)
