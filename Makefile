# sim2real_fast developer entry points.
#   make test                    venv + torch + build tools, build the extension, run the tests
#                                (not the ones marked slow; TESTS=... narrows them to some files)
#   make test S2R_CUDA=ON        the same, failing unless the CUDA kernels build
#   make test TORCH=torch==2.13.0 TORCHVISION=   the CPU-only torch (no torchvision for it: the ViT is left out)
#   make run                     venv + build, then the main job: sim2real run (RUN_ARGS=... for its options)
#   make bench                   the slow tests, then the benchmarks against the reference and the
#                                peers -> benchmarks/RESULTS.md
#   make fuzz                    the property-based op tests (python_tests/test_fuzz_ops.py) with the
#                                "fuzz" hypothesis profile: thousands of random examples per op
#   make note                    docs/technical-note.md from the benchmark outputs (PDF=1: also the
#                                PDF, with pandoc and xelatex)
#   make container-test          the CPU image (Dockerfile) built with podman and the tests run in it
#                                (docker/verify.sh; container-test-cuda: Dockerfile.cuda); not in CI
#   make sanitize                the CPU kernels built with AddressSanitizer + UndefinedBehaviorSanitizer
#                                in their own venv (.venv-asan, CPU-only torch), then the op tests and
#                                the fuzz tests (ci profile) under them; any finding fails the run
PYTHON   ?= python3
VENV     ?= .venv
TORCH    ?= torch==2.14.1
TORCHVISION ?= torchvision==0.29.1
S2R_CUDA ?= AUTO
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda /usr/local/cuda-13.0))
PYTEST_ARGS ?=
TESTS ?= python_tests
S2R_SANITIZE ?= OFF
SANITIZE_VENV ?= .venv-asan

BIN       := $(VENV)/bin
BUILD_DIR := build/$(notdir $(VENV))
BUILD_TOOLS := numpy "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.26" ninja
comma     := ,
EXTRAS    := test$(comma)root$(if $(TORCHVISION),$(comma)vit)
export PATH := $(if $(CUDA_HOME),$(CUDA_HOME)/bin:)$(PATH)
# Python is not instrumented: a sanitized extension needs the compiler's runtimes preloaded (ASan's
# first of all). Python and torch keep memory until exit by design, so leak checking is off.
SANITIZE_ENV = LD_PRELOAD="$(shell $(CXX) -print-file-name=libasan.so) $(shell $(CXX) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
RUN_ENV = $(if $(filter ON,$(S2R_SANITIZE)),$(SANITIZE_ENV))
# The op tests, for the sanitizer run; RSS measurements mean nothing under ASan's shadow memory.
OP_TESTS := python_tests/test_mmd.py python_tests/test_coral.py python_tests/test_grad_reverse.py \
	python_tests/test_hits_to_image.py python_tests/test_shower_features.py python_tests/test_fuzz_ops.py
SANITIZE_PYTEST_ARGS := --deselect python_tests/test_mmd.py::test_memory_stays_linear_in_the_sample_count

RUN_ARGS ?=

.PHONY: install test run bench fuzz note container-test container-test-cuda sanitize clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Build against the venv's torch without isolation (an isolated build would link another torch).
# torch and torchvision are installed together, as PyPI pairs them (torch 2.14.1 is PyPI's default
# Linux build, with CUDA 13.0, and runs on the CPU as well); a constraint file keeps the extras from
# replacing either. The vit extra (timm) needs torchvision: PyPI's torchvision wheels are CUDA builds
# that fail to import beside a CPU-only torch, so with TORCHVISION= the ViT is left out and its tests skip.
# The install is redone only when a source file or the Makefile changed since the last one, or an
# install option differs (the stamp's name holds a digest of the options); `make -q install` exits 0
# when nothing would be redone.
INSTALL_OPTIONS := $(TORCH) $(TORCHVISION) $(EXTRAS) S2R_CUDA=$(S2R_CUDA) S2R_SANITIZE=$(S2R_SANITIZE) CUDA_HOME=$(CUDA_HOME)
STAMP := $(VENV)/.installed-$(shell echo '$(INSTALL_OPTIONS)' | cksum | cut -d' ' -f1)
SOURCES := pyproject.toml CMakeLists.txt Makefile $(shell find csrc sim2real_fast -type f -not -path '*/__pycache__/*' \
	-not -name '*.pyc' -not -name '*.so' 2>/dev/null)

$(STAMP): $(BIN)/python $(SOURCES)
	rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCHVISION),"$(TORCHVISION)") $(BUILD_TOOLS)
	printf '%s\n' "$(TORCH)" $(if $(TORCHVISION),"$(TORCHVISION)") > $(VENV)/torch-constraint.txt
	S2R_CUDA=$(S2R_CUDA) $(BIN)/python -m pip install -q --no-build-isolation -Cbuild-dir=$(BUILD_DIR) \
		-Ccmake.define.S2R_SANITIZE=$(S2R_SANITIZE) -c $(VENV)/torch-constraint.txt ".[$(EXTRAS)]"
	$(RUN_ENV) $(BIN)/python -I -c "import sim2real_fast, torch; print('sim2real_fast', sim2real_fast.__version__, 'torch', torch.__version__, sim2real_fast.build_info())"
	touch $@

install: $(STAMP)

test: install
	$(RUN_ENV) $(BIN)/pytest $(TESTS) -m "not slow" --durations=15 $(PYTEST_ARGS)

run: install
	$(BIN)/sim2real run $(RUN_ARGS)

# The peers without their declared dependencies: pytorch-adapt's torchvision requirement would replace
# the venv's torch, and the layers benchmarked never import it (see benchmarks/peers.py).
PEERS := pytorch-adapt==0.0.83 pytorch-metric-learning==1.6.3 torchmetrics==0.9.3 "geomloss>=0.2.6"

bench: install
	$(BIN)/python -m pip install -q "pytest-benchmark>=4" scipy tqdm "setuptools<81"
	$(BIN)/python -m pip install -q --no-deps $(PEERS)
	$(BIN)/pytest python_tests -m slow --durations=15 $(PYTEST_ARGS)
	$(BIN)/python benchmarks/run.py --out benchmarks/RESULTS.md

fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(RUN_ENV) $(BIN)/pytest python_tests/test_fuzz_ops.py $(PYTEST_ARGS)

note:
	$(PYTHON) docs/make_note.py $(if $(PDF),--pdf)

container-test:
	docker/verify.sh

container-test-cuda:
	docker/verify.sh cuda

sanitize:
	$(MAKE) test VENV=$(SANITIZE_VENV) TORCH=torch==2.13.0 TORCHVISION= S2R_CUDA=OFF S2R_SANITIZE=ON \
		TESTS="$(OP_TESTS)" PYTEST_ARGS="$(SANITIZE_PYTEST_ARGS) $(PYTEST_ARGS)"

clean:
	rm -rf build .venv .venv-* .benchmarks .pytest_cache
