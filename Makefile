# flowformer.c: `make` builds the trainers and tools, `make test` runs the suite,
# `make bench` prints the benchmark tables, `make deps` installs what is needed.

CC ?= gcc
CFLAGS ?= -O3 -march=native
CFLAGS += -fopenmp -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-unused-function -I.
LDLIBS = -lm
BUILD = build

LAYERS = $(wildcard layers/*.h) $(wildcard utils/*.h)

# ---- trainers ---------------------------------------------------------------
TRAINERS = train_gpt_flow
# the GPT trainer reads its JSON configurations with cJSON
train_gpt_flow: LDLIBS += -lcjson
# the vision trainer likewise
TRAINERS += train_vit_flow
train_vit_flow: LDLIBS += -lcjson

# ---- data preparation (data/) ----------------------------------------------
# Rules come before `all`, so name the default goal explicitly.
.DEFAULT_GOAL := all
DATA_PROGRAMS = $(BUILD)/prepare_text $(BUILD)/prepare_images $(BUILD)/prepare_fashion_mnist
SHAKESPEARE = data/tinyshakespeare/train.bin

$(BUILD)/prepare_%: data/prepare_%.c data/image_prep.h $(LAYERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# Character-level tinyshakespeare, the default data of ./train_gpt_flow (val.bin and
# vocab.txt are written by the same run).
$(SHAKESPEARE): data/tinyshakespeare/input.txt $(BUILD)/prepare_text
	$(BUILD)/prepare_text char $< data/tinyshakespeare

# Speed of tokenising and of image decoding on ../shared/data (the folder: make bench-data DATA=...).
DATA ?= ../shared/data
$(BUILD)/bench_data: dev/bench_data.c dev/test/capture.h data/image_prep.h $(LAYERS) $(DATA_PROGRAMS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
bench-data: $(BUILD)/bench_data
	$(BUILD)/bench_data $(DATA)
.PHONY: bench-data

# Data tests run the preparation programs as subprocesses, so they depend on them.
$(BUILD)/test_data_text: dev/test/test_data_text.c dev/test/testing.h dev/test/capture.h $(LAYERS) $(BUILD)/prepare_text | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/test_data_images: dev/test/test_data_images.c dev/test/testing.h dev/test/capture.h data/image_prep.h $(LAYERS) $(BUILD)/prepare_images | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)


# ---- tests (each program prints PASS/FAIL lines; dev/run_tests.sh adds them up)
TESTS = $(BUILD)/test_attention $(BUILD)/test_data_text $(BUILD)/test_data_images
# GPT trainer: float64 whole-model gradients; float32 reference state, generation,
# checkpoints; the program itself (resume, bad input)
TESTS += $(BUILD)/test_gpt_grad $(BUILD)/test_gpt $(BUILD)/test_gpt_cli
# ViT trainer: float64 whole-model gradients (plain and hierarchical); float32
# reference state, checkpoints, augmentation; the program itself (resume, bad input)
TESTS += $(BUILD)/test_vit_grad $(BUILD)/test_vit $(BUILD)/test_vit_cli
# gemm and the fully connected layer on every kernel family, float32 and float64
TESTS += $(BUILD)/test_matmul $(BUILD)/test_matmul_f64

# ---- benchmarks -------------------------------------------------------------
BENCHES = $(BUILD)/bench_attention

.PHONY: all test bench deps clean

all: $(TRAINERS) $(DATA_PROGRAMS) $(SHAKESPEARE)

test: $(TESTS)
	@dev/run_tests.sh $(TESTS)

bench: $(BENCHES)
	$(BUILD)/bench_attention

# Debian packages: cJSON (configs), stb (image decode), PyTorch/numpy (dev/ references only).
deps:
	apt-get update -q
	apt-get install -y -q build-essential libcjson-dev libstb-dev python3-numpy python3-torch
	apt-get install -y -q libopenblas-dev # make bench-matmul compares gemm with OpenBLAS

$(BUILD):
	mkdir -p $(BUILD)

train_%: train_%.c $(LAYERS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# The attention test checks float32 kernels against the same source built in float64.
$(BUILD)/attention_f64.o: dev/test/attention_f64.c $(LAYERS) | $(BUILD)
	$(CC) $(CFLAGS) -DREAL_DOUBLE -c -o $@ $<
$(BUILD)/test_attention: dev/test/test_attention.c $(BUILD)/attention_f64.o dev/test/testing.h dev/test/capture.h $(LAYERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/attention_f64.o $(LDLIBS)

# The GPT tests include train_gpt_flow.c with -DTESTING (its main() left out).
GPT_TEST_DEPS = train_gpt_flow.c dev/test/testing.h $(LAYERS) | $(BUILD)
$(BUILD)/test_gpt_grad: dev/test/test_gpt_grad.c $(GPT_TEST_DEPS)
	$(CC) $(CFLAGS) -DREAL_DOUBLE -DTESTING -o $@ $< $(LDLIBS) -lcjson
$(BUILD)/test_gpt: dev/test/test_gpt.c $(GPT_TEST_DEPS)
	$(CC) $(CFLAGS) -DTESTING -o $@ $< $(LDLIBS) -lcjson
$(BUILD)/test_gpt_cli: dev/test/test_gpt_cli.c train_gpt_flow dev/test/capture.h $(GPT_TEST_DEPS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# The ViT tests include train_vit_flow.c with -DTESTING (its main() left out).
VIT_TEST_DEPS = train_vit_flow.c dev/test/testing.h $(LAYERS) | $(BUILD)
$(BUILD)/test_vit_grad: dev/test/test_vit_grad.c $(VIT_TEST_DEPS)
	$(CC) $(CFLAGS) -DREAL_DOUBLE -DTESTING -o $@ $< $(LDLIBS) -lcjson
$(BUILD)/test_vit: dev/test/test_vit.c $(VIT_TEST_DEPS)
	$(CC) $(CFLAGS) -DTESTING -o $@ $< $(LDLIBS) -lcjson
$(BUILD)/test_vit_cli: dev/test/test_vit_cli.c train_vit_flow dev/test/capture.h $(VIT_TEST_DEPS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

$(BUILD)/bench_attention: dev/bench_attention.c $(LAYERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

$(BUILD)/test_matmul: dev/test/test_matmul.c dev/test/testing.h $(LAYERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/test_matmul_f64: dev/test/test_matmul.c dev/test/testing.h $(LAYERS) | $(BUILD)
	$(CC) $(CFLAGS) -DREAL_DOUBLE -o $@ $< $(LDLIBS)

# gemm against OpenBLAS's sgemm on the trainers' shapes (make deps installs OpenBLAS),
# and the machine's float32 peak.
$(BUILD)/bench_matmul: dev/bench_matmul.c $(LAYERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS) -lopenblas
bench-matmul: $(BUILD)/bench_matmul
	$(BUILD)/bench_matmul
$(BUILD)/bench_peak: dev/bench_peak.c $(LAYERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
bench-peak: $(BUILD)/bench_peak
	$(BUILD)/bench_peak
.PHONY: bench-matmul bench-peak

clean:
	rm -rf $(BUILD) $(TRAINERS)
