# flowformer.c: `make` builds the trainers and tools, `make test` runs the suite,
# `make USE_MPI=1` builds the trainers with MPI, `make test-mpi` checks them under mpirun,
# `make sanitize` runs the suite built with AddressSanitizer and UBSan, `make fuzz` fuzzes
# the readers of untrusted files, `make cuda` builds the GPU trainer and its tests, `make
# test-cuda` runs those on a GPU, `make test-cuda-emulated` on the CPU through an emulation
# of CUDA, `make bench` prints the benchmark tables, `make deps` installs what is needed,
# `make venv` creates the PyTorch peer's virtual environment and `make bench-train` times
# the C trainers against it.
# This file reads top to bottom: settings, what each target builds, then the rules.

CC ?= gcc
CFLAGS ?= -O3 -march=native
CFLAGS += -fopenmp -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-unused-function -I.
# errors, not warnings: each of these has meant a wrong value at run time (as GCC 14 does)
CFLAGS += -Werror=int-conversion -Werror=incompatible-pointer-types -Werror=implicit-function-declaration
LDLIBS = -lm
BUILD = build
# Where the program tests find the trainers (make sanitize points it at its own build).
TRAINER_DIR = .
# Every program depends on every shared header: they are all header-only.
HEADERS = $(wildcard layers/*.h) $(wildcard utils/*.h) $(wildcard models/*.h)
# OpenBLAS serves only bench-matmul's comparison: make test builds that benchmark where it is installed.
HAVE_OPENBLAS := $(shell echo 'int main(void) { return 0; }' | $(CC) -x c - -lopenblas -o /dev/null 2>/dev/null && echo 1)
# Where `make bench-data` finds the real data sets.
DATA ?= ../shared/data
# USE_MPI=1: the trainers are built with Open MPI's mpicc to run under mpirun
# (utils/dist.h); without it they do not depend on MPI.
USE_MPI ?= 0
MPICC ?= mpicc
MPI_FLAGS = -DUSE_MPI
TRAINER_CC = $(if $(filter 1,$(USE_MPI)),$(MPICC),$(CC))
TRAINER_FLAGS = $(if $(filter 1,$(USE_MPI)),$(MPI_FLAGS))
# Switching USE_MPI rebuilds the trainers: each setting has its own stamp file.
MPI_STAMP = $(BUILD)/use_mpi-$(USE_MPI)
# USE_CUDA=1 (or `make cuda`): also the GPU trainer train_gpt_flow_cuda (train_gpt_flow.cu,
# cuda/), built by nvcc with cuBLAS; with USE_MPI=1 too, NCCL sums the gradients across
# GPUs. Plain `make` needs no CUDA. The code is compiled for Hopper (sm_90: H100, H200)
# and as PTX for compute capability 8.0, which the driver compiles for any GPU since Ampere.
USE_CUDA ?= 0
NVCC ?= nvcc
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80
NVCC_FLAGS = -O3 -std=c++17 $(CUDA_ARCH) -I. \
	-Xcompiler -fopenmp,-Wall,-Wextra,-Wno-unused-parameter,-Wno-unused-function
CUDA_LIBS = -lcublas -lcjson -lgomp -lm
# MPI's C interface only (its C++ bindings do not compile warning-free), and NCCL
NVCC_MPI_ALWAYS = -DUSE_MPI -DOMPI_SKIP_MPICXX -DMPICH_SKIP_MPICXX $(shell $(MPICC) --showme:compile) \
	$(shell $(MPICC) --showme:link) -lnccl
NVCC_MPI = $(if $(filter 1,$(USE_MPI)),$(NVCC_MPI_ALWAYS))
CUDA_HEADERS = $(wildcard cuda/*.cuh)

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
# the headers the GPU trainer shares with the CPU one compile as C++ too
TESTS += dev/test/test_headers_cxx.sh

# The trainers built with MPI, apart from the normal ones, for `make test-mpi`
# (dev/test/test_mpi.sh: equivalence of 1 and 2 ranks, with ZeRO-1, resume, two
# network namespaces over TCP, a killed rank, bad launches), and the all-reduce
# benchmark behind the README's figures (`make bench-allreduce`).
MPI_BUILD = $(BUILD)/mpi
MPI_TRAINERS = $(MPI_BUILD)/train_gpt_flow $(MPI_BUILD)/train_vit_flow
# checkpoints, settings and checksums against damaged and hostile files; the fuzz
# targets' seed and regression inputs
TESTS += $(BUILD)/test_formats $(BUILD)/test_fuzz_inputs

# make sanitize: the whole suite, trainers and tools included, built in build/sanitize/
# with AddressSanitizer and UBSan (every report fatal) and run. -O2 -march=native keep the
# arithmetic of the normal build (fused multiply-adds: test_fastmath's bounds need them).
# Not checked: leaks (fail() exits with its allocations live) and signed left shifts
# out of range, which stb_image_write's JPEG writer does (the tests use it). OpenMP's
# threads sleep at barriers rather than spin: instrumented code on shared cores crawls
# otherwise (test_attention took 134 s instead of 12).
SANITIZE_CFLAGS = -O2 -g -march=native -fsanitize=address,undefined,float-cast-overflow \
                  -fno-sanitize=shift-base -fno-sanitize-recover=all -fno-omit-frame-pointer
SANITIZE_ENV = ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 OMP_WAIT_POLICY=passive

# make fuzz: each libFuzzer target of dev/fuzz/targets.h for FUZZ_SECONDS, from its seed
# inputs (dev/fuzz/corpus/, committed; new inputs go to build/fuzz/corpus/). A crash
# leaves its input in build/fuzz/crashes/<target>/: fix the reader, then commit the
# input under dev/fuzz/regressions/<target>/, where make test replays it.
FUZZ_TARGETS = token_shard image_shard checkpoint config vocab image_decode
FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang
FUZZ_CFLAGS = -O1 -g -std=gnu11 -I. -DFUZZING -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
              -fsanitize-ignorelist=dev/fuzz/ignorelist.txt
FUZZ_ENV = ASAN_OPTIONS=detect_leaks=0

BENCHES = $(BUILD)/bench_attention
# Generation speed, flow against softmax, against the context: make bench-generate.
BENCHES += $(BUILD)/bench_generate
# Elementwise and fused layers, unfused against fused: make bench-layers.
BENCHES += $(BUILD)/bench_layers

# The GPU trainer, its test (dev/test/test_cuda.cu: the kernels and the model against the
# CPU trainer's, and the programs against each other; it says "skipped: no GPU" without
# one) and its benchmarks (dev/cuda/: attention against the sequence length, tokens/s of
# the paper's configuration).
CUDA_PROGRAMS = train_gpt_flow_cuda $(BUILD)/test_cuda $(BUILD)/bench_attention_cuda
# The same test on the CPU (dev/cuda/emulator/): every kernel launch rewritten into a call
# of the emulator, the code otherwise as it is, compiled by g++ into build/emulated/.
EMU = $(BUILD)/emulated
EMU_LAUNCHES = sed -E 's/([A-Za-z_][A-Za-z0-9_]*(<[^<>]*>)?)<<<(.*)>>>\(/emu::Launch(\3).run(\1, "\1")(/'
EMU_SOURCES = $(addprefix $(EMU)/,$(CUDA_HEADERS) train_gpt_flow.cu dev/test/test_cuda.cu)
EMU_FLAGS = -std=c++17 -O1 -fopenmp -Wall -Wextra -Wno-unused-parameter -Wno-unused-function -DCUDA_EMULATED \
	-I$(EMU) -Idev/cuda/emulator -I.

.DEFAULT_GOAL := all
.PHONY: all test test-mpi sanitize fuzz fuzz-corpus cuda test-cuda test-cuda-emulated bench-cuda bench bench-layers \
	bench-generate bench-matmul bench-peak bench-data bench-train bench-allreduce venv deps clean

all: $(TRAINERS) $(DATA_PROGRAMS) $(SHAKESPEARE) $(if $(filter 1,$(USE_CUDA)),$(CUDA_PROGRAMS))

cuda: $(CUDA_PROGRAMS)

# On a machine with a GPU: make cuda test-cuda (with two GPUs and Open MPI, build
# $(MPI_BUILD)/train_gpt_flow_cuda first and the test also runs two ranks)
test-cuda: $(CUDA_PROGRAMS) train_gpt_flow $(SHAKESPEARE)
	@dev/run_tests.sh $(BUILD)/test_cuda

test-cuda-emulated: $(EMU)/test_cuda $(EMU)/train_gpt_flow_cuda $(EMU)/mpi/train_gpt_flow_cuda train_gpt_flow \
		$(SHAKESPEARE)
	@dev/run_tests.sh $(EMU)/test_cuda

# Attention kernels on the GPU against the sequence length, and the paper's WikiText-103
# configuration's tokens/s (dev/cuda/bench_train.sh), on a machine with a GPU.
bench-cuda: $(CUDA_PROGRAMS) $(BUILD)/prepare_text
	$(BUILD)/bench_attention_cuda
	dev/cuda/bench_train.sh

# The trainers are named so that make keeps those of make sanitize's build; the benchmarks
# are built so that a change to what they call cannot leave them behind (make sanitize
# leaves them out: they run no checks).
TEST_BENCHES = $(BENCHES) $(BUILD)/bench_peak $(BUILD)/bench_data $(if $(HAVE_OPENBLAS),$(BUILD)/bench_matmul)
test: $(TESTS) $(addprefix $(TRAINER_DIR)/,$(TRAINERS)) $(TEST_BENCHES)
	@dev/run_tests.sh $(TESTS)

test-mpi: $(MPI_TRAINERS) $(BUILD)/prepare_images $(SHAKESPEARE)
	@dev/run_tests.sh dev/test/test_mpi.sh

# All-reduce time of the paper's WikiText-103 model's gradients, 2 ranks over
# shared memory and over TCP between two network namespaces (root only).
bench-allreduce: $(MPI_BUILD)/bench_allreduce
	dev/bench_allreduce.sh
sanitize:
	$(SANITIZE_ENV) CFLAGS="$(SANITIZE_CFLAGS)" $(MAKE) BUILD=$(BUILD)/sanitize TRAINER_DIR=$(BUILD)/sanitize test TEST_BENCHES=

fuzz: $(addprefix fuzz-,$(FUZZ_TARGETS))

fuzz-%: $(BUILD)/fuzz/fuzz_%
	@mkdir -p $(BUILD)/fuzz/corpus/$* $(BUILD)/fuzz/crashes/$*
	$(FUZZ_ENV) $< -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
	    -artifact_prefix=$(BUILD)/fuzz/crashes/$*/ $(BUILD)/fuzz/corpus/$* dev/fuzz/corpus/$*

# Rewrites the seed inputs (after a format changes).
fuzz-corpus: $(BUILD)/make_corpus
	$(BUILD)/make_corpus

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

# Debian packages: cJSON (configs), stb (image decode), clang and its libFuzzer (make fuzz),
# PyTorch/numpy (dev/ references only), OpenBLAS (make bench-matmul only), Open MPI
# (make USE_MPI=1, make test-mpi), iproute2 (the network namespaces of make test-mpi).
deps:
	apt-get update -q
	apt-get install -y -q build-essential libcjson-dev libstb-dev clang libclang-rt-14-dev python3-numpy \
		python3-torch libopenblas-dev libopenmpi-dev openmpi-bin iproute2

clean:
	rm -rf $(BUILD) $(TRAINERS) train_gpt_flow_cuda

# ---- rules --------------------------------------------------------------------

$(BUILD):
	mkdir -p $(BUILD)

$(MPI_STAMP): | $(BUILD)
	rm -f $(BUILD)/use_mpi-*
	touch $@

train_%: train_%.c $(HEADERS) $(MPI_STAMP)
	$(TRAINER_CC) $(CFLAGS) $(TRAINER_FLAGS) -o $@ $< $(LDLIBS) -lcjson

$(MPI_BUILD)/train_%: train_%.c $(HEADERS)
	mkdir -p $(MPI_BUILD)
	$(MPICC) $(CFLAGS) $(MPI_FLAGS) -o $@ $< $(LDLIBS) -lcjson
$(MPI_BUILD)/bench_allreduce: dev/bench_allreduce.c train_gpt_flow.c $(HEADERS)
	mkdir -p $(MPI_BUILD)
	$(MPICC) $(CFLAGS) $(MPI_FLAGS) -DTESTING -o $@ $< $(LDLIBS) -lcjson
# the trainers of a build of their own (make sanitize)
$(BUILD)/train_%: train_%.c $(HEADERS) | $(BUILD)
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
$(BUILD)/test_data_images: dev/test/test_data_images.c dev/test/*.h $(HEADERS) $(BUILD)/prepare_images $(BUILD)/prepare_fashion_mnist | $(BUILD)
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
$(BUILD)/test_%_cli: dev/test/test_%_cli.c $(TRAINER_DIR)/train_%_flow dev/test/*.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -DTRAINER_DIR='"$(TRAINER_DIR)"' -o $@ $< $(LDLIBS)
$(BUILD)/test_formats: dev/test/test_formats.c dev/test/*.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS) -lcjson
$(BUILD)/test_fuzz_inputs: dev/test/test_fuzz_inputs.c dev/fuzz/targets.h dev/test/*.h $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS) -lcjson

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
$(BUILD)/fuzz/fuzz_%: dev/fuzz/fuzz.c dev/fuzz/targets.h dev/fuzz/ignorelist.txt $(HEADERS)
	@mkdir -p $(BUILD)/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DFUZZ_TARGET=fuzz_$* -o $@ $< $(LDLIBS) -lcjson
$(BUILD)/make_corpus: dev/fuzz/make_corpus.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
# The GPU trainer and its test, which links the CPU trainer's code built by gcc.
train_gpt_flow_cuda: train_gpt_flow.cu $(HEADERS) $(CUDA_HEADERS) $(MPI_STAMP)
	$(NVCC) $(NVCC_FLAGS) $(NVCC_MPI) -o $@ $< $(CUDA_LIBS)
$(BUILD)/cuda_cpu.o: dev/test/cuda_cpu.c dev/test/cuda_cpu.h train_gpt_flow.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -DTESTING -c -o $@ $<
CUDA_TEST_OBJECTS = $(BUILD)/cuda_cpu.o $(BUILD)/attention_f64.o
$(BUILD)/test_cuda: dev/test/test_cuda.cu train_gpt_flow.cu $(CUDA_TEST_OBJECTS) dev/test/*.h $(HEADERS) \
		$(CUDA_HEADERS) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -DTESTING -o $@ $< $(CUDA_TEST_OBJECTS) $(CUDA_LIBS)
$(BUILD)/bench_attention_cuda: dev/cuda/bench_attention.cu $(HEADERS) $(CUDA_HEADERS) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -o $@ $< $(CUDA_LIBS)
$(MPI_BUILD)/train_gpt_flow_cuda: train_gpt_flow.cu $(HEADERS) $(CUDA_HEADERS)
	mkdir -p $(MPI_BUILD)
	$(NVCC) $(NVCC_FLAGS) $(NVCC_MPI_ALWAYS) -o $@ $< $(CUDA_LIBS)
$(EMU)/%: % Makefile
	@mkdir -p $(dir $@)
	$(EMU_LAUNCHES) $< > $@
$(EMU)/train_gpt_flow_cuda: $(EMU_SOURCES) $(HEADERS) dev/cuda/emulator/*.h
	$(CXX) $(EMU_FLAGS) -o $@ -x c++ $(EMU)/train_gpt_flow.cu -x none -lcjson -lm
$(EMU)/mpi/train_gpt_flow_cuda: $(EMU_SOURCES) $(HEADERS) dev/cuda/emulator/*.h
	mkdir -p $(EMU)/mpi
	$(CXX) $(EMU_FLAGS) -DUSE_MPI -DOMPI_SKIP_MPICXX $(shell $(MPICC) --showme:compile) -o $@ \
		-x c++ $(EMU)/train_gpt_flow.cu -x none $(shell $(MPICC) --showme:link) -lcjson -lm
$(EMU)/test_cuda: $(EMU_SOURCES) $(CUDA_TEST_OBJECTS) dev/test/*.h $(HEADERS) dev/cuda/emulator/*.h
	$(CXX) $(EMU_FLAGS) -DTESTING -o $@ -x c++ $(EMU)/dev/test/test_cuda.cu -x none $(CUDA_TEST_OBJECTS) -lcjson -lm
$(VENV)/.installed: dev/requirements.txt dev/setup_venv.sh
	VENV=$(VENV) dev/setup_venv.sh
	touch $@
