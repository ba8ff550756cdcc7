# flowformer.c: `make` builds the trainers and tools, `make test` runs the suite,
# `make bench` prints the benchmark tables, `make deps` installs what is needed,
# `make venv` creates the PyTorch peer's virtual environment and `make bench-train`
# times the C trainers against it.
# This file reads top to bottom: settings, what each target builds, then the rules.

CC ?= gcc
CFLAGS ?= -O3 -march=native
CFLAGS += -fopenmp -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-unused-function -I.
LDLIBS = -lm
BUILD = build
# Every program depends on every shared header: they are all header-only.
HEADERS = $(wildcard layers/*.h) $(wildcard utils/*.h)
# Where `make bench-data` finds the real data sets.
DATA ?= ../shared/data

# ---- targets ------------------------------------------------------------------

TRAINERS = train_gpt_flow train_vit_flow
DATA_PROGRAMS = $(BUILD)/prepare_text $(BUILD)/prepare_images $(BUILD)/prepare_fashion_mnist
# character-level tinyshakespeare, the default data of ./train_gpt_flow (with val.bin, vocab.txt)
SHAKESPEARE = data/tinyshakespeare/train.bin

# Tests: each program (or script) prints PASS/FAIL lines; dev/run_tests.sh adds them up.
#   every header compiles on its own; attention kernels against dense definitions, finite
#   differences and PyTorch; data preparation; each trainer's model in float64 (finite
#   differences) and float32 (PyTorch reference, checkpoints, generation, augmentation),
#   then the program itself (resume, bad input).
TESTS = dev/test/test_headers.sh $(BUILD)/test_attention $(BUILD)/test_data_text $(BUILD)/test_data_images
TESTS += $(BUILD)/test_gpt_grad $(BUILD)/test_gpt $(BUILD)/test_gpt_cli
TESTS += $(BUILD)/test_vit_grad $(BUILD)/test_vit $(BUILD)/test_vit_cli
# fastmath.h's error bounds (and libm in float64); fused layers against the
# unfused ones, in float32 and in float64
TESTS += $(BUILD)/test_fastmath $(BUILD)/test_fused $(BUILD)/test_fused_f64
# gemm and the fully connected layer on every kernel family, float32 and float64
TESTS += $(BUILD)/test_matmul $(BUILD)/test_matmul_f64

BENCHES = $(BUILD)/bench_attention
# Generation speed, flow against softmax, against the context: make bench-generate.
BENCHES += $(BUILD)/bench_generate
# Elementwise and fused layers, unfused against fused: make bench-layers.
BENCHES += $(BUILD)/bench_layers

.DEFAULT_GOAL := all
.PHONY: all test bench bench-layers bench-generate bench-matmul bench-peak bench-data bench-train venv deps clean

all: $(TRAINERS) $(DATA_PROGRAMS) $(SHAKESPEARE)

test: $(TESTS)
	@dev/run_tests.sh $(TESTS)

bench: $(BENCHES)
	$(BUILD)/bench_attention
	$(BUILD)/bench_generate
	$(BUILD)/bench_layers

bench-generate: $(BUILD)/bench_generate
	$(BUILD)/bench_generate

bench-layers: $(BUILD)/bench_layers
	$(BUILD)/bench_layers

# gemm against OpenBLAS's sgemm on the trainers' shapes (make deps installs OpenBLAS),
# and the machine's float32 FMA peak.
bench-matmul: $(BUILD)/bench_matmul
	$(BUILD)/bench_matmul
bench-peak: $(BUILD)/bench_peak
	$(BUILD)/bench_peak

# Speed of tokenising and of image decoding on the real data (make bench-data DATA=folder).
bench-data: $(BUILD)/bench_data
	$(BUILD)/bench_data $(DATA)

# The PyTorch peer (dev/torch_peer.py) in .venv/ from dev/requirements.txt (PyTorch from
# PyPI), and the training speed of the C trainers against it in one interleaved run
# (about 10 minutes on 2 cores); options through BENCH_TRAIN_ARGS, e.g.
# make bench-train BENCH_TRAIN_ARGS="--configs a,vit --json log/bench_train.json".
VENV ?= .venv
BENCH_TRAIN_ARGS ?=
venv: $(VENV)/.installed
bench-train: all $(VENV)/.installed
	DATA=$(DATA) $(VENV)/bin/python dev/bench_train.py $(BENCH_TRAIN_ARGS)

# Debian packages: cJSON (configs), stb (image decode), PyTorch/numpy (dev/ references only),
# OpenBLAS (make bench-matmul only).
deps:
	apt-get update -q
	apt-get install -y -q build-essential libcjson-dev libstb-dev python3-numpy python3-torch libopenblas-dev

clean:
	rm -rf $(BUILD) $(TRAINERS)

# ---- rules --------------------------------------------------------------------

$(BUILD):
	mkdir -p $(BUILD)

train_%: train_%.c $(HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS) -lcjson

$(BUILD)/prepare_%: data/prepare_%.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

$(SHAKESPEARE): data/tinyshakespeare/input.txt $(BUILD)/prepare_text
	$(BUILD)/prepare_text char $< data/tinyshakespeare

# The attention test checks float32 kernels against the same source built in float64.
$(BUILD)/attention_f64.o: dev/test/attention_f64.c dev/test/attention_f64.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -DREAL_DOUBLE -c -o $@ $<
$(BUILD)/test_attention: dev/test/test_attention.c $(BUILD)/attention_f64.o dev/test/*.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/attention_f64.o $(LDLIBS)

# Data tests run the preparation programs as subprocesses, so they depend on them.
$(BUILD)/test_data_text: dev/test/test_data_text.c dev/test/*.h $(HEADERS) $(BUILD)/prepare_text | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/test_data_images: dev/test/test_data_images.c dev/test/*.h $(HEADERS) $(BUILD)/prepare_images | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# The model tests include the trainer with -DTESTING (its main() left out); the
# gradient checks build it in float64.
$(BUILD)/test_%_grad: dev/test/test_%_grad.c train_%_flow.c dev/test/*.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -DREAL_DOUBLE -DTESTING -o $@ $< $(LDLIBS) -lcjson
$(BUILD)/test_gpt: dev/test/test_gpt.c train_gpt_flow.c dev/test/*.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -DTESTING -o $@ $< $(LDLIBS) -lcjson
$(BUILD)/test_vit: dev/test/test_vit.c train_vit_flow.c dev/test/*.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -DTESTING -o $@ $< $(LDLIBS) -lcjson
# The program tests run the trainer itself.
$(BUILD)/test_%_cli: dev/test/test_%_cli.c train_%_flow dev/test/*.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

$(BUILD)/bench_attention: dev/bench_attention.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
# The generation benchmark includes the trainer with -DTESTING, as the model tests do.
$(BUILD)/bench_generate: dev/bench_generate.c train_gpt_flow.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -DTESTING -o $@ $< $(LDLIBS) -lcjson
$(BUILD)/bench_data: dev/bench_data.c dev/test/capture.h $(HEADERS) $(DATA_PROGRAMS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
# The fastmath test checks the float64 build of fastmath.h against libm.
$(BUILD)/fastmath_f64.o: dev/test/fastmath_f64.c dev/test/fastmath_f64.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -DREAL_DOUBLE -c -o $@ $<
$(BUILD)/test_fastmath: dev/test/test_fastmath.c $(BUILD)/fastmath_f64.o dev/test/testing.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/fastmath_f64.o $(LDLIBS)
# The fused-layer test, built once per precision.
$(BUILD)/test_fused: dev/test/test_fused.c dev/test/testing.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/test_fused_f64: dev/test/test_fused.c dev/test/testing.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -DREAL_DOUBLE -o $@ $< $(LDLIBS)
$(BUILD)/bench_layers: dev/bench_layers.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/test_matmul: dev/test/test_matmul.c dev/test/testing.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/test_matmul_f64: dev/test/test_matmul.c dev/test/testing.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -DREAL_DOUBLE -o $@ $< $(LDLIBS)
$(BUILD)/bench_matmul: dev/bench_matmul.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS) -lopenblas
$(BUILD)/bench_peak: dev/bench_peak.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(VENV)/.installed: dev/requirements.txt dev/setup_venv.sh
	VENV=$(VENV) dev/setup_venv.sh
	touch $@
