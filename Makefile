# BiFSMNv2 keyword spotting toolkit.  A new user needs two commands: `make demo` and `make test`.
SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_STAMP := $(VENV)/.apt-installed
DEB_PACKAGES := espeak-ng sox gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user libc6-dev-arm64-cross
# XNNPACK for arm64 (multiarch): the production float baseline of firmware_sim.cost
DEB_PACKAGES_ARM64 := libxnnpack-dev:arm64
DEMO_DIR ?= build/demo
SETUP_LOG := build/setup.log
# The tests run one pytest-xdist worker per core, a test file per worker at a time (module
# fixtures are built once); every native build they need is made by `make setup` first, so no
# two workers build the same target. PYTEST_PAR= (empty) runs them in one process.
PYTEST_PAR ?= -n $(shell nproc 2>/dev/null || echo 2) --dist loadfile

.PHONY: setup kernels test test-slow demo bench publish-real8 publish-real8-stream clean fuzz

setup: $(STAMP) $(APT_STAMP) kernels

# The project's ops (LceBDfsmn, LceQuantize, LceDequantize, LceBconv2d): cores + test runners,
# ASan/UBSan runners, TFLite op library (links the tensorflow wheel), static aarch64 runners,
# the op library with ASan/UBSan, the .tflite verifier (warnings are errors in every build);
# the firmware: TensorFlow Lite Micro from the pinned sources with the project's ops, x86-64 +
# aarch64 (+ the ASan/UBSan host build of its own code), firmware_sim/firmware.mk.
kernels: $(STAMP) $(APT_STAMP)
	@$(MAKE) --no-print-directory -s -C lce_kernels all asan op aarch64 op-asan verify \
	  op-real op-abi layout
	@$(MAKE) --no-print-directory -s -C firmware_sim all
	@$(MAKE) --no-print-directory -s -j2 -C firmware_sim firmware firmware-asan

$(APT_STAMP): Makefile
	@SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
	dpkg --print-foreign-architectures | grep -qx arm64 || $$SUDO dpkg --add-architecture arm64; \
	missing=""; for p in $(DEB_PACKAGES) $(DEB_PACKAGES_ARM64); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  mkdir -p $(dir $(SETUP_LOG)); t0=$$(date +%s); \
	  printf 'setup: Debian packages%s ... ' "$$missing"; \
	  { $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y \
	    --no-install-recommends $$missing; } >>$(SETUP_LOG) 2>&1 || { echo "FAILED"; \
	    tail -n 20 $(SETUP_LOG); echo "setup: apt-get failed (the end of $(SETUP_LOG) above)"; \
	    exit 1; }; \
	  echo "installed in $$(( $$(date +%s) - t0 )) s (log: $(SETUP_LOG))"; \
	fi
	@mkdir -p $(VENV) && touch $@

# apt's and pip's output goes to $(SETUP_LOG); the terminal gets one line per step (or, when a
# step fails, the end of the log).
$(STAMP): requirements.txt
	@mkdir -p $(dir $(SETUP_LOG)); t0=$$(date +%s); \
	printf 'setup: Python packages (requirements.txt) into $(VENV) ... '; \
	{ { test -x $(PY) || $(PY_SYS) -m venv $(VENV); } && $(PY) -m pip install --upgrade pip && \
	  $(PY) -m pip install -r requirements.txt; } >>$(SETUP_LOG) 2>&1 || { echo "FAILED"; \
	  tail -n 20 $(SETUP_LOG); echo "setup: pip failed (the end of $(SETUP_LOG) above)"; \
	  exit 1; }; \
	echo "installed in $$(( $$(date +%s) - t0 )) s (log: $(SETUP_LOG))"
	@touch $@

test: setup
	$(PY) -m pytest -q $(PYTEST_PAR) -m "not slow" tests

# pytest exits 5 when no test carries the marker: that is not a failure here.
test-slow: setup
	$(PY) -m pytest -q $(PYTEST_PAR) -m slow tests || [ $$? -eq 5 ]

# The fuzz harness (issue 14): 300 damaged variants of every export run as the tools run them,
# then the bdfsmn ones with the ASan/UBSan op library (the same runs are in test-slow).
# Both runs always run; the target fails if either found a failure.
fuzz: setup
	@$(MAKE) --no-print-directory -s -C lce_kernels op-asan
	@rc=0; $(PY) -m pipeline.fuzz_models --depths all --json_out build/fuzz/fuzz.json || rc=1; \
	$(PY) -m pipeline.fuzz_models --depths all --sanitize --json_out build/fuzz/fuzz_asan.json \
	  || rc=1; exit $$rc

# The product in miniature (pipeline/demo.py): synthetic corpus -> teacher -> binary student
# (thinnable depths, FID) -> bdfsmn, binary and lce exports, verified and scored -> latency ->
# a streaming run with detections -> one summary table and $(DEMO_DIR)/summary.png. The terminal
# shows a progress line per stage and the summary; everything else (TensorFlow's logs, the
# training logs, the reports) goes to $(DEMO_DIR)/demo.log.
demo: setup
	@mkdir -p $(DEMO_DIR)
	@$(PY) -m pipeline.demo --out_dir $(DEMO_DIR) 2>$(DEMO_DIR)/demo.log || { \
	  echo "make demo failed: the details are in $(DEMO_DIR)/demo.log"; exit 1; }

REAL8 ?= ../shared/data/speech_commands_real8
REAL8_WORDS := --wanted_words yes,no,up,down,left,right,stop,go --unknown_percentage 0

bench: setup
	$(PY) -m pipeline.bench_input --data_dir $(REAL8) $(REAL8_WORDS)

# Copy the finished real-pack runs into pretrained/ (committed): model.json, flags, metrics,
# history and ONE model.weights.h5 (teacher: best validation epoch; student: the last epoch, the end
# of its cosine schedule), not ckpt/, tb/. Runs of a queue: make publish-real8
# TEACHER_RUN=RUNS/teacher_adam100 STUDENT_RUN=RUNS/student_d0e300_s1 (the published pair).
TEACHER_RUN ?= runs/real8/teacher
STUDENT_RUN ?= runs/real8/bifsmnv2
publish-real8:
	@mkdir -p pretrained/real8/teacher pretrained/real8/bifsmnv2
	@for f in model.json flags.json metrics.json history.json; do \
	  cp $(TEACHER_RUN)/$$f pretrained/real8/teacher/ && \
	  cp $(STUDENT_RUN)/$$f pretrained/real8/bifsmnv2/ || exit 1; done
	cp $(TEACHER_RUN)/best.weights.h5 pretrained/real8/teacher/model.weights.h5
	cp $(STUDENT_RUN)/last.weights.h5 pretrained/real8/bifsmnv2/model.weights.h5

# The published streaming student (issue 16; README "Streaming"): its run's records and the
# weights the exports run (best.weights.h5, the run directory's default), then its binary
# streaming exports (one 256 ms hop per invoke, depths 8 / 4 / 2), each verified against the
# Keras model on the validation clips as every export is. STREAM_RUN: a run of
# configs/queue_real8_stream.txt (the published one: bifsmnv2_stream_hist2s35_tail640_e100).
STREAM_RUN ?= runs/real8/bifsmnv2_stream
REAL8 = --data_dir ../shared/data/speech_commands_real8 --wanted_words yes,no,up,down,left,right,stop,go --unknown_percentage 0
publish-real8-stream: setup
	@mkdir -p pretrained/real8/bifsmnv2_stream pretrained/real8/stream_exports
	@for f in model.json flags.json metrics.json history.json; do \
	  cp $(STREAM_RUN)/$$f pretrained/real8/bifsmnv2_stream/ || exit 1; done
	cp $(STREAM_RUN)/best.weights.h5 pretrained/real8/bifsmnv2_stream/model.weights.h5
	$(PY) -m pipeline.export --model pretrained/real8/bifsmnv2_stream --flavor binary --streaming \
	    --hop_frames 8 --depth 8,4,2 --out_dir pretrained/real8/stream_exports $(REAL8)

clean:
	rm -rf build firmware_sim/build
	$(MAKE) -C lce_kernels clean
