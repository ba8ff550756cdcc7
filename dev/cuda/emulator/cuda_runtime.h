// A CPU stand-in for the CUDA runtime and for the way kernels run, so that the kernels
// of cuda/ and the GPU trainer run (slowly) on a machine without a GPU: `make
// test-cuda-emulated` builds them with g++ against this header (and cublas_v2.h beside
// it) after turning every launch `kernel<<<grid, block>>>(args)` into
// `emu::Launch(grid, block).run(kernel, "kernel")(args)`.
//
// Blocks run one after the other. The threads of a block are coroutines, each on its
// own stack, switched only where CUDA threads wait for each other: __syncthreads waits
// for every thread of the block, a warp shuffle for the 32 threads of its warp. So
// shared memory is a plain static array, and a barrier that some threads never reach,
// or a shuffle with lanes that have exited, stops the program instead of hanging.
// Between two barriers the threads run in turn, in alternating order from one round to
// the next, so that a missing barrier usually shows as a wrong result.
// What this checks: arithmetic, indexing, barriers and the use of the library calls
// (cuBLAS's argument checks included). What it cannot: speed, memory coalescing,
// limits of registers or shared memory, and races that no order of whole runs
// between barriers exposes. x86-64 only (the coroutine switch is a few instructions of
// assembly).
#ifndef EMULATOR_CUDA_RUNTIME_H
#define EMULATOR_CUDA_RUNTIME_H

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <float.h>
#include <sys/mman.h>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};

// The running thread's coordinates, set at every switch into it.
static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

// ---- coroutines ---------------------------------------------------------------------

// Saves the callee-saved registers and the stack pointer in *save, and resumes the
// context whose stack pointer is load.
extern "C" void emu_switch(void** save, void* load);
__asm__(".text\n.globl emu_switch\n.type emu_switch,@function\nemu_switch:\n"
        "pushq %rbp\npushq %rbx\npushq %r12\npushq %r13\npushq %r14\npushq %r15\n"
        "movq %rsp, (%rdi)\nmovq %rsi, %rsp\n"
        "popq %r15\npopq %r14\npopq %r13\npopq %r12\npopq %rbx\npopq %rbp\nret\n"
        ".size emu_switch, .-emu_switch\n");

namespace emu {

enum { RUNNABLE, AT_SYNCTHREADS, AT_WARP, DONE };

struct Thread {
    void* sp;
    int state;
    uint3 idx;
};

static const size_t STACK = 256 * 1024;
static Thread* threads;          // of the running block
static int nthreads;
static char* stacks;             // nthreads stacks of STACK bytes
static size_t stacks_bytes;
static Thread* current;
static void* scheduler_sp;
static const std::function<void()>* body;
static float exchange[32][32];  // one slot per lane of every warp, for shuffles
static const char* kernel_name = "a launch";  // the running launch's kernel, for messages

[[noreturn]] static void fail(const char* what) {
    fprintf(stderr, "error: emulated CUDA, %s: %s\n", kernel_name, what);
    exit(1);
}

static void entry() {
    (*body)();
    current->state = DONE;
    emu_switch(&current->sp, scheduler_sp);
    fail("a finished thread was resumed");
}

// Back to the scheduler until the barrier `state` lets this thread go.
__attribute__((noinline)) static void wait(int state) {
    current->state = state;
    emu_switch(&current->sp, scheduler_sp);
}

// Releases the threads waiting at a barrier that every thread it waits for has reached:
// __syncthreads needs every thread of the block that has not exited; a warp barrier,
// all 32 lanes of the warp. Returns whether any thread was released.
static bool release() {
    bool released = false;
    int waiting = 0, live = 0;
    for (int i = 0; i < nthreads; i++) {
        live += threads[i].state != DONE;
        waiting += threads[i].state == AT_SYNCTHREADS;
    }
    if (waiting > 0 && waiting == live) {
        for (int i = 0; i < nthreads; i++)
            if (threads[i].state == AT_SYNCTHREADS) threads[i].state = RUNNABLE;
        released = true;
    }
    for (int w = 0; w * 32 < nthreads; w++) {
        int at = 0, done = 0, lanes = nthreads - w * 32 < 32 ? nthreads - w * 32 : 32;
        for (int l = 0; l < lanes; l++) {
            at += threads[w * 32 + l].state == AT_WARP;
            done += threads[w * 32 + l].state == DONE;
        }
        if (at == 0 || at + done < lanes) continue;
        if (lanes < 32 || done > 0) fail("a warp shuffle or __syncwarp over lanes that do not exist or have exited");
        for (int l = 0; l < 32; l++) threads[w * 32 + l].state = RUNNABLE;
        released = true;
    }
    return released;
}

// Runs body for every thread of every block of kernel `name`.
static void run(const char* name, dim3 grid, dim3 block, const std::function<void()>& f) {
    kernel_name = name;
    nthreads = (int)(block.x * block.y * block.z);
    if (nthreads < 1 || nthreads > 1024) fail("a block of more than 1024 threads");
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) fail("an empty grid");
    if ((size_t)nthreads * STACK > stacks_bytes) {
        if (stacks != NULL) munmap(stacks, stacks_bytes);
        stacks_bytes = (size_t)nthreads * STACK;
        stacks = (char*)mmap(NULL, stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (stacks == MAP_FAILED) fail("no memory for the threads' stacks");
    }
    static Thread pool[1024];
    threads = pool;
    body = &f;
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = uint3{bx, by, bz};
                for (int i = 0; i < nthreads; i++) {
                    Thread* t = &threads[i];
                    t->state = RUNNABLE;
                    t->idx = uint3{(unsigned)i % block.x, (unsigned)i / block.x % block.y,
                                   (unsigned)i / (block.x * block.y)};
                    // a fresh stack that emu_switch "returns" into entry() from, aligned as after a call
                    void** top = (void**)(stacks + (size_t)(i + 1) * STACK - 16);
                    top[0] = (void*)entry;
                    for (int r = 1; r <= 6; r++) top[-r] = NULL;
                    t->sp = top - 6;
                }
                for (int round = 0;; round++) {
                    bool ran = false, all_done = true;
                    for (int j = 0; j < nthreads; j++) {
                        Thread* t = &threads[round % 2 ? nthreads - 1 - j : j];
                        if (t->state != RUNNABLE) continue;
                        current = t;
                        threadIdx = t->idx;
                        emu_switch(&scheduler_sp, t->sp);
                        ran = true;
                    }
                    for (int i = 0; i < nthreads; i++) all_done = all_done && threads[i].state == DONE;
                    if (all_done) break;
                    if (!release() && !ran) fail("threads wait at a barrier that the others never reach");
                }
            }
}

// A kernel with its launch's sizes: called with the kernel's arguments, it runs the kernel
// in every thread (the arguments converted to the kernel's parameters, as a launch does).
template <typename... P>
struct Bound {
    dim3 grid, block;
    void (*kernel)(P...);
    const char* name;
    void operator()(P... args) const { emu::run(name, grid, block, [&] { kernel(args...); }); }
};

// A launch: emu::Launch(grid, block).run(kernel, "kernel")(args...) runs kernel(args...)
// in every thread.
struct Launch {
    dim3 grid, block;
    Launch(dim3 g, dim3 b, size_t shared_bytes = 0, void* stream = NULL) : grid(g), block(b) {
        if (shared_bytes != 0) fail("dynamic shared memory is not emulated");
    }
    template <typename... P>
    Bound<P...> run(void (*kernel)(P...), const char* name) const {
        return Bound<P...>{grid, block, kernel, name};
    }
};

template <typename T>
static T shuffle(T v, int from_lane) {
    int lane = (int)(current - threads) % 32, warp = (int)(current - threads) / 32;
    static_assert(sizeof(T) <= sizeof(float), "shuffles of 4 bytes or fewer");
    memcpy(&exchange[warp][lane], &v, sizeof(T));
    wait(AT_WARP);
    T r;
    memcpy(&r, &exchange[warp][from_lane & 31], sizeof(T));
    wait(AT_WARP);
    return r;
}

static int lane_id() { return (int)(current - threads) % 32; }

}  // namespace emu

static inline void __syncthreads() { emu::wait(emu::AT_SYNCTHREADS); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (mask != 0xffffffffu) emu::fail("__syncwarp with a partial mask is not emulated");
    emu::wait(emu::AT_WARP);
}

#define EMU_CHECK_MASK(mask) \
    if ((mask) != 0xffffffffu) emu::fail("warp shuffles with a partial mask are not emulated")
template <typename T> static T __shfl_sync(unsigned mask, T v, int lane) {
    EMU_CHECK_MASK(mask);
    return emu::shuffle(v, lane);
}
template <typename T> static T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    EMU_CHECK_MASK(mask);
    return emu::shuffle(v, emu::lane_id() ^ lane_mask);
}
template <typename T> static T __shfl_up_sync(unsigned mask, T v, unsigned delta) {
    EMU_CHECK_MASK(mask);
    int lane = emu::lane_id();
    T r = emu::shuffle(v, lane >= (int)delta ? lane - (int)delta : lane);
    return r;
}
template <typename T> static T __shfl_down_sync(unsigned mask, T v, unsigned delta) {
    EMU_CHECK_MASK(mask);
    int lane = emu::lane_id();
    return emu::shuffle(v, lane + (int)delta < 32 ? lane + (int)delta : lane);
}

// ---- the runtime API ------------------------------------------------------------------

typedef enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNoDevice = 100,
} cudaError_t;
typedef enum { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice,
               cudaMemcpyDefault } cudaMemcpyKind;
typedef void* cudaStream_t;
enum cudaDeviceAttr { cudaDevAttrClockRate = 13 };

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int multiProcessorCount;
    int major, minor;
};

static const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    }
    return "unknown error";
}
static cudaError_t cudaGetLastError() { return cudaSuccess; }
static cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
// As many GPUs as ranks on a host may ask for: each rank runs in its own process.
#define EMU_DEVICES 8
static cudaError_t cudaGetDeviceCount(int* n) { *n = EMU_DEVICES; return cudaSuccess; }
static cudaError_t cudaSetDevice(int d) { return d >= 0 && d < EMU_DEVICES ? cudaSuccess : cudaErrorInvalidValue; }
static cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "emulated on the CPU");
    p->totalGlobalMem = (size_t)16 << 30;
    p->multiProcessorCount = 1;
    p->major = 9;
    return cudaSuccess;
}
static cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int d) {
    *value = 1000000;  // kHz
    return cudaSuccess;
}
static cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
    *free_bytes = *total = (size_t)16 << 30;
    return cudaSuccess;
}
// Device memory is host memory, filled with NaNs so that reading what was never written shows.
static cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = malloc(bytes > 0 ? bytes : 1);
    if (*p == NULL) return cudaErrorMemoryAllocation;
    memset(*p, 0xff, bytes);
    return cudaSuccess;
}
template <typename T> static cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc((void**)p, bytes); }
static cudaError_t cudaFree(void* p) { free(p); return cudaSuccess; }
static cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    memmove(dst, src, bytes);
    return cudaSuccess;
}
static cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t s = 0) {
    return cudaMemcpy(dst, src, bytes, kind);
}
static cudaError_t cudaMemset(void* p, int value, size_t bytes) { memset(p, value, bytes); return cudaSuccess; }
static cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s = 0) {
    return cudaMemset(p, value, bytes);
}

#endif
