// Host (C++17) emulation of the CUDA built-ins used by bda-gpu/kernels, so that the kernel
// sources can be compiled with an ordinary C++ compiler and their arithmetic checked without a
// GPU.
//
// A kernel without barriers runs its threads one after another (`bda_launch`). A kernel with
// barriers or warp shuffles (`bda_launch_sync`) runs every thread of a block as a fiber (a
// ucontext with its own stack) on the calling OS thread, with the block's real thread count:
// `__syncthreads` and `__syncthreads_or` suspend a thread until every thread of the block has
// arrived, `__shfl_down_sync` exchanges values through per-warp slots between two warp
// barriers. The order of the blocks, and the order in which threads resume after every
// barrier, are shuffled from a seed (`BDA_FAKE_CUDA_SEED`, default 1), and in each block half
// the warps (drawn from the seed) run only when no other thread can: code that reads shared
// memory without the barrier that orders it sees another warp's stale or later value and
// computes a wrong result, as it would on a GPU. A barrier no thread can pass (threads waiting at
// different barriers) is a deadlock: reported, then abort. A barrier or shuffle in a kernel
// launched without barrier support aborts too, so the launch table cannot hide one.
//
// `__shared__` variables are `static`: blocks run one at a time, so one copy serves each block
// in turn. One launch at a time per process (the fake device's tests run on one thread).
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define BDA_FAKE_ASAN 1
#else
#define BDA_FAKE_ASAN 0
#endif

struct bda_dim3 {
    unsigned int x, y, z;
};
static bda_dim3 blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    return u;
}

namespace bda_fake {

// Stack of one emulated thread: generous, since kernels keep small arrays on the stack and the
// sanitizers enlarge frames (only the pages touched are ever backed by memory).
constexpr size_t kStack = 256 * 1024;

enum class Wait { None, Block, Warp };

struct Fiber {
    ucontext_t ctx;
    char* stack = nullptr;
    unsigned int tid = 0;
    Wait wait = Wait::None;
    bool done = false;
#if BDA_FAKE_ASAN
    void* fake_stack = nullptr;
#endif
};

struct Scheduler {
    std::vector<Fiber> fibers;
    ucontext_t main;
    Fiber* current = nullptr;
    bool sync = false;           // inside a launch with barrier support
    unsigned int plain_tid = 0;  // the running thread of a launch without it
    uint64_t rng = 0;
    int or_acc = 0, or_last = 0;  // __syncthreads_or: the OR so far, and of the last barrier
    uint64_t slots[32][32];       // warp shuffles: a slot per lane of each warp
    void (*call)(void*) = nullptr;
    void* body = nullptr;
#if BDA_FAKE_ASAN
    void* main_fake_stack = nullptr;
    const void* main_bottom = nullptr;
    size_t main_size = 0;
#endif
};

inline uint64_t seed() {
    const char* e = getenv("BDA_FAKE_CUDA_SEED");
    return e ? strtoull(e, nullptr, 10) : 1;
}

inline Scheduler& sched() {
    static Scheduler s = [] {
        Scheduler n;
        n.rng = seed();
        return n;
    }();
    return s;
}

inline uint64_t next(Scheduler& s) {
    // splitmix64: a seeded, platform-independent order.
    uint64_t z = (s.rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <class T>
void shuffle(Scheduler& s, std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) {
        std::swap(v[i - 1], v[next(s) % i]);
    }
}

[[noreturn]] inline void fail(const char* what) {
    fprintf(stderr, "fake CUDA: %s\n", what);
    abort();
}

// Switch from the scheduler to `f` and back.
inline void resume(Scheduler& s, Fiber& f) {
    s.current = &f;
#if BDA_FAKE_ASAN
    __sanitizer_start_switch_fiber(&s.main_fake_stack, f.stack, kStack);
#endif
    swapcontext(&s.main, &f.ctx);
#if BDA_FAKE_ASAN
    __sanitizer_finish_switch_fiber(s.main_fake_stack, nullptr, nullptr);
#endif
    s.current = nullptr;
}

// Switch from the running fiber back to the scheduler.
inline void yield(Scheduler& s) {
    Fiber& f = *s.current;
#if BDA_FAKE_ASAN
    __sanitizer_start_switch_fiber(&f.fake_stack, s.main_bottom, s.main_size);
#endif
    swapcontext(&f.ctx, &s.main);
#if BDA_FAKE_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, &s.main_bottom, &s.main_size);
#endif
}

inline void entry() {
    Scheduler& s = sched();
#if BDA_FAKE_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &s.main_bottom, &s.main_size);
#endif
    s.call(s.body);
    s.current->done = true;
#if BDA_FAKE_ASAN
    __sanitizer_start_switch_fiber(nullptr, s.main_bottom, s.main_size);
#endif
    setcontext(&s.main);
}

inline Fiber& running(const char* what) {
    Scheduler& s = sched();
    if (!s.sync || s.current == nullptr) {
        fprintf(stderr, "fake CUDA: %s in a kernel launched without barrier support (bda_launch_sync)\n", what);
        abort();
    }
    return *s.current;
}

// Suspend the running thread at a barrier of `scope` until the scheduler releases it.
inline void wait_at(Wait scope) {
    Fiber& f = running(scope == Wait::Block ? "__syncthreads" : "__shfl_down_sync");
    f.wait = scope;
    yield(sched());
}

// Run every thread of one block to completion.
inline void run_block(Scheduler& s, unsigned int threads) {
    if (s.fibers.size() < threads) s.fibers.resize(threads);
    std::vector<unsigned int> order(threads);
    for (unsigned int t = 0; t < threads; ++t) {
        Fiber& f = s.fibers[t];
        if (f.stack == nullptr) f.stack = static_cast<char*>(malloc(kStack));
        if (f.stack == nullptr) fail("out of memory for a thread's stack");
        f.tid = t;
        f.wait = Wait::None;
        f.done = false;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, entry, 0);
        order[t] = t;
    }
    s.or_acc = 0;
    const unsigned int warps = (threads + 31) / 32;
    // Half the warps, drawn per block, are slow: they run only when no fast thread can, so
    // a fast warp may run far ahead of a slow one between two barriers (a read that a missing
    // barrier leaves unordered then sees the other warp's later write).
    std::vector<char> slow(warps);
    for (auto& w : slow) w = static_cast<char>(next(s) & 1u);
    for (;;) {
        // Run every runnable thread until it finishes or waits at a barrier, in a new order;
        // the slow warps only when no fast thread was runnable.
        shuffle(s, order);
        bool ran = false;
        for (int pass = 0; pass < 2 && !ran; ++pass) {
            for (unsigned int t : order) {
                Fiber& f = s.fibers[t];
                if (f.done || f.wait != Wait::None || (slow[t / 32] != 0) != (pass == 1)) continue;
                resume(s, f);
                ran = true;
            }
        }
        bool live = false, released = false;
        // A block barrier opens when every live thread waits at it (exited threads count as
        // arrived, as on the hardware).
        bool all_block = true;
        for (unsigned int t = 0; t < threads; ++t) {
            const Fiber& f = s.fibers[t];
            if (f.done) continue;
            live = true;
            all_block = all_block && f.wait == Wait::Block;
        }
        if (!live) return;
        if (all_block) {
            s.or_last = s.or_acc;
            s.or_acc = 0;
            for (unsigned int t = 0; t < threads; ++t) s.fibers[t].wait = Wait::None;
            continue;
        }
        // A warp barrier opens when every live lane of the warp waits at it.
        for (unsigned int w = 0; w < warps; ++w) {
            bool any = false, all = true;
            for (unsigned int t = w * 32; t < threads && t < w * 32 + 32; ++t) {
                const Fiber& f = s.fibers[t];
                if (f.done) continue;
                any = true;
                all = all && f.wait == Wait::Warp;
            }
            if (any && all) {
                for (unsigned int t = w * 32; t < threads && t < w * 32 + 32; ++t) s.fibers[t].wait = Wait::None;
                released = true;
            }
        }
        if (!ran && !released) fail("deadlock: the threads of a block wait at different barriers");
    }
}

}  // namespace bda_fake

// The index of the running thread (a fiber's own, or the plain loop's).
inline unsigned int bda_thread_x() {
    const bda_fake::Scheduler& s = bda_fake::sched();
    return s.current ? s.current->tid : s.plain_tid;
}
#define threadIdx (bda_dim3{bda_thread_x(), 0, 0})

inline void __syncthreads() { bda_fake::wait_at(bda_fake::Wait::Block); }

inline int __syncthreads_or(int p) {
    bda_fake::Scheduler& s = bda_fake::sched();
    bda_fake::running("__syncthreads_or");
    s.or_acc |= p ? 1 : 0;
    bda_fake::wait_at(bda_fake::Wait::Block);
    // or_last changes only when this thread arrives at the next barrier.
    return s.or_last;
}

template <class T>
T __shfl_down_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "a shuffled value fits a slot");
    bda_fake::Scheduler& s = bda_fake::sched();
    const unsigned int tid = bda_fake::running("__shfl_down_sync").tid;
    if (mask != 0xffffffffu || width != 32) bda_fake::fail("__shfl_down_sync: only full warps are emulated");
    const unsigned int lane = tid & 31u, warp = tid >> 5;
    memcpy(&s.slots[warp][lane], &v, sizeof v);
    bda_fake::wait_at(bda_fake::Wait::Warp);
    T out = v;  // a source lane beyond the warp leaves the value unchanged, as on the GPU
    const unsigned int src = lane + delta;
    if (src < 32 && warp * 32 + src < blockDim.x) memcpy(&out, &s.slots[warp][src], sizeof out);
    // Nobody may overwrite the slots before every lane has read them.
    bda_fake::wait_at(bda_fake::Wait::Warp);
    return out;
}

namespace bda_fake {
template <class F>
void call_body(void* body) {
    (*static_cast<F*>(body))();
}

// The blocks of a launch in a shuffled order.
inline std::vector<unsigned int> block_order(Scheduler& s, unsigned int grid) {
    std::vector<unsigned int> order(grid);
    for (unsigned int b = 0; b < grid; ++b) order[b] = b;
    shuffle(s, order);
    return order;
}
}  // namespace bda_fake

// Runs `body` for every (block, thread) of a 1-D launch of a kernel without barriers.
template <class F>
void bda_launch(unsigned int grid, unsigned int block, F body) {
    bda_fake::Scheduler& s = bda_fake::sched();
    blockDim = {block, 1, 1};
    gridDim = {grid, 1, 1};
    for (unsigned int b : bda_fake::block_order(s, grid)) {
        blockIdx = {b, 0, 0};
        for (unsigned int t = 0; t < block; ++t) {
            s.plain_tid = t;
            body();
        }
    }
    s.plain_tid = 0;
}

// Runs `body` for every (block, thread) of a 1-D launch of a kernel with barriers or warp
// shuffles: each block's threads as fibers (see the top of this file).
template <class F>
void bda_launch_sync(unsigned int grid, unsigned int block, F body) {
    bda_fake::Scheduler& s = bda_fake::sched();
    blockDim = {block, 1, 1};
    gridDim = {grid, 1, 1};
    s.call = &bda_fake::call_body<F>;
    s.body = &body;
    s.sync = true;
    for (unsigned int b : bda_fake::block_order(s, grid)) {
        blockIdx = {b, 0, 0};
        bda_fake::run_block(s, block);
    }
    s.sync = false;
    s.call = nullptr;
    s.body = nullptr;
}
