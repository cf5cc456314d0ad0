// A CPU stand-in for libcuda (driver API), just enough for cudarc and bda-gpu: device memory is
// host memory (fresh allocations hold garbage, as on a GPU), the stream is synchronous, and the
// kernels are the bda-gpu `.cu` sources compiled as host C++ through tests/host/cuda_shim.h.
// Kernels with barriers or warp shuffles run with their real block size, threads as fibers;
// see cuda_shim.h.
#include "cuda_shim.h"
#include "softmax.cu"
#include "vector.cu"
#include "conv.cu"
#include "head.cu"
#include "network.cu"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "common.h"

typedef int CUresult;
typedef uint64_t CUdeviceptr;
enum : CUresult { OK = 0, INVALID_VALUE = 1, INVALID_DEVICE = 101, INVALID_IMAGE = 200, NOT_FOUND = 500, LAUNCH_FAILED = 719 };

namespace {
std::mutex g_lock;
// Kernels run on the launching thread with the shim's process-wide state (block index,
// `__shared__` statics, the barrier scheduler): one launch at a time, as threads that stand
// for several ranks launch at once.
std::mutex g_launch;
std::map<uintptr_t, size_t> g_allocs;  // start → bytes
int g_ctx;
thread_local void* g_current = nullptr;
struct Function { std::string name; };
}  // namespace

extern "C" bool bda_fake_in_allocation(const void* p, size_t bytes) {
    std::lock_guard<std::mutex> l(g_lock);
    const uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return false;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second;
}

extern "C" {
CUresult cuInit(unsigned) { return OK; }
CUresult cuDeviceGetCount(int* n) { *n = 1; return OK; }
CUresult cuDeviceGet(int* d, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *d = 0;
    return OK;
}
CUresult cuDeviceGetAttribute(int* v, int attr, int) {
    // 75/76: compute capability major/minor (an H100's 9.0); everything else (memory pools…) 0.
    *v = attr == 75 ? 9 : 0;
    return OK;
}
CUresult cuDeviceGetName(char* name, int len, int) {
    std::snprintf(name, (size_t)len, "fake CUDA device (CPU)");
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, int) { *bytes = size_t(16) << 30; return OK; }
CUresult cuDevicePrimaryCtxRetain(void** ctx, int) { *ctx = &g_ctx; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(int) { return OK; }
CUresult cuCtxGetCurrent(void** ctx) { *ctx = g_current; return OK; }
CUresult cuCtxSetCurrent(void* ctx) { g_current = ctx; return OK; }
CUresult cuCtxSynchronize() { return OK; }
CUresult cuStreamCreate(void** s, unsigned) { *s = std::malloc(1); return OK; }
CUresult cuStreamDestroy_v2(void* s) { std::free(s); return OK; }
CUresult cuStreamSynchronize(void*) { return OK; }

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
    void* m = std::malloc(n ? n : 1);
    std::memset(m, 0xA5, n);
    std::lock_guard<std::mutex> l(g_lock);
    g_allocs[(uintptr_t)m] = n;
    *p = (CUdeviceptr)m;
    return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    std::lock_guard<std::mutex> l(g_lock);
    if (g_allocs.erase((uintptr_t)p) != 1) return INVALID_VALUE;
    std::free((void*)p);
    return OK;
}
CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, void*) {
    if (!fake::check_range("memset", (void*)p, n)) return INVALID_VALUE;
    std::memset((void*)p, v, n);
    return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* s, size_t n, void*) {
    if (!fake::check_range("copy to device", (void*)d, n)) return INVALID_VALUE;
    std::memcpy((void*)d, s, n);
    return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void* d, CUdeviceptr s, size_t n, void*) {
    if (!fake::check_range("copy from device", (void*)s, n)) return INVALID_VALUE;
    std::memcpy(d, (void*)s, n);
    return OK;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void*) {
    if (!fake::check_range("device copy source", (void*)s, n) || !fake::check_range("device copy target", (void*)d, n))
        return INVALID_VALUE;
    std::memmove((void*)d, (void*)s, n);
    return OK;
}

CUresult cuModuleLoadData(void** m, const void* image) {
    if (std::memcmp(image, "\x7f" "ELF", 4) != 0) return INVALID_IMAGE;
    *m = std::malloc(1);
    return OK;
}
CUresult cuModuleUnload(void* m) { std::free(m); return OK; }
CUresult cuModuleGetFunction(void** f, void*, const char* name) {
    *f = new Function{name};  // leaked on purpose: functions live as long as the process here
    return OK;
}
CUresult cuGetErrorString(int, const char** s) { *s = "fake CUDA error"; return OK; }
CUresult cuGetErrorName(int, const char** s) { *s = "CUDA_ERROR_FAKE"; return OK; }

// Kernel parameters arrive as an array of pointers to the argument values.
#define ARG(T, i) (*(T*)params[i])
CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void*, void** params, void** extra) {
    const std::string& n = ((Function*)f)->name;
    if (gx == 0 || gy != 1 || gz != 1 || bx == 0 || bx > 1024 || by != 1 || bz != 1 || shared != 0 || extra)
        return INVALID_VALUE;
    // `BDA_FAKE_CUDA_FAIL_AFTER=N`: launches after the N-th fail, as a lost device's do (for
    // the tests of a failure on one rank alone).
    static const long fail_after = [] {
        const char* v = std::getenv("BDA_FAKE_CUDA_FAIL_AFTER");
        return v ? std::atol(v) : -1L;
    }();
    static std::atomic<long> launched{0};
    if (fail_after >= 0 && launched.fetch_add(1) >= fail_after) return LAUNCH_FAILED;
    std::lock_guard<std::mutex> one_at_a_time(g_launch);
    if (n == "xent_grad_rows") {
        bda_launch(gx, bx, [&] {
            xent_grad_rows(ARG(float*, 0), ARG(int, 1), ARG(unsigned char*, 2), ARG(float*, 3), ARG(int, 4),
                           ARG(int, 5), ARG(int, 6), ARG(int, 7), ARG(float, 8), ARG(float, 9), ARG(float*, 10),
                           ARG(float*, 11));
        });
    } else if (n == "xent_dx_rows") {
        bda_launch(gx, bx, [&] {
            xent_dx_rows(ARG(float*, 0), ARG(int, 1), ARG(unsigned char*, 2), ARG(float*, 3), ARG(int, 4),
                         ARG(int, 5), ARG(float*, 6), ARG(float, 7));
        });
    } else if (n == "hvp_rows") {
        bda_launch(gx, bx, [&] {
            hvp_rows(ARG(float*, 0), ARG(unsigned char*, 1), ARG(float*, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5),
                     ARG(int, 6), ARG(float, 7), ARG(float, 8), ARG(float*, 9), ARG(float*, 10), ARG(float, 11));
        });
    } else if (n == "masked_scale_copy") {
        bda_launch(gx, bx, [&] {
            masked_scale_copy(ARG(float*, 0), ARG(float*, 1), ARG(int, 2), ARG(int, 3), ARG(float, 4), ARG(float, 5));
        });
    } else if (n == "relu_aug") {
        bda_launch(gx, bx, [&] { relu_aug(ARG(float*, 0), ARG(int, 1), ARG(int, 2), ARG(int, 3)); });
    } else if (n == "relu_mask") {
        bda_launch(gx, bx, [&] {
            relu_mask(ARG(float*, 0), ARG(int, 1), ARG(float*, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5));
        });
    } else if (n == "pack_pair") {
        bda_launch(gx, bx, [&] { pack_pair(ARG(float*, 0), ARG(float*, 1), ARG(float*, 2), ARG(int, 3), ARG(int, 4)); });
    } else if (n == "pack_pair_scale") {
        bda_launch(gx, bx, [&] {
            pack_pair_scale(ARG(float*, 0), ARG(float*, 1), ARG(float*, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5),
                            ARG(float, 6));
        });
    } else if (n == "axpy") {
        bda_launch(gx, bx, [&] { axpy(ARG(float, 0), ARG(float*, 1), ARG(float*, 2), ARG(int, 3)); });
    } else if (n == "scale") {
        bda_launch(gx, bx, [&] { scale(ARG(float, 0), ARG(float*, 1), ARG(int, 2)); });
    } else if (n == "fold_chunks") {
        bda_launch(gx, bx, [&] { fold_chunks(ARG(float*, 0), ARG(float*, 1), ARG(int, 2), ARG(int, 3), ARG(int, 4)); });
    } else if (n == "reduce_dot") {
        if (gx != 1 || bx % 32 != 0) return INVALID_VALUE;
        bda_launch_sync(1, bx, [&] { reduce_dot(ARG(float*, 0), ARG(float*, 1), ARG(int, 2), ARG(double*, 3)); });
    } else if (n == "reduce_sum") {
        if (gx != 1 || bx % 32 != 0) return INVALID_VALUE;
        bda_launch_sync(1, bx, [&] { reduce_sum(ARG(float*, 0), ARG(int, 1), ARG(double*, 2)); });
    } else if (n == "any_nonfinite") {
        if (gx != 1) return INVALID_VALUE;
        bda_launch_sync(1, bx, [&] { any_nonfinite(ARG(float*, 0), ARG(int, 1), ARG(unsigned int*, 2)); });
    } else if (n == "im2col") {
        bda_launch(gx, bx, [&] {
            im2col(ARG(float*, 0), ARG(int, 1), ARG(int, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5), ARG(float*, 6));
        });
    } else if (n == "col2im") {
        bda_launch(gx, bx, [&] {
            col2im(ARG(float*, 0), ARG(int, 1), ARG(int, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5), ARG(float*, 6));
        });
    } else if (n == "bn_stats") {
        // One block per channel, reduced with the block's threads.
        if (bx % 32 != 0) return INVALID_VALUE;
        bda_launch_sync(gx, bx, [&] { bn_stats(ARG(float*, 0), ARG(int, 1), ARG(float, 2), ARG(float*, 3), ARG(float*, 4)); });
    } else if (n == "bn_relu_pool") {
        bda_launch(gx, bx, [&] {
            bn_relu_pool(ARG(float*, 0), ARG(float*, 1), ARG(float*, 2), ARG(float*, 3), ARG(int, 4), ARG(int, 5),
                         ARG(int, 6), ARG(int, 7), ARG(float*, 8), ARG(unsigned int*, 9));
        });
    } else if (n == "pool_relu_backward") {
        bda_launch(gx, bx, [&] {
            pool_relu_backward(ARG(float*, 0), ARG(unsigned int*, 1), ARG(float*, 2), ARG(float*, 3), ARG(float*, 4),
                               ARG(float*, 5), ARG(int, 6), ARG(int, 7), ARG(int, 8), ARG(float*, 9));
        });
    } else if (n == "bn_backward_sums") {
        if (bx % 32 != 0) return INVALID_VALUE;
        bda_launch_sync(gx, bx, [&] {
            bn_backward_sums(ARG(float*, 0), ARG(float*, 1), ARG(float*, 2), ARG(float*, 3), ARG(int, 4), ARG(int, 5),
                             ARG(float*, 6));
        });
    } else if (n == "bn_dz") {
        bda_launch(gx, bx, [&] {
            bn_dz(ARG(float*, 0), ARG(float*, 1), ARG(float*, 2), ARG(float*, 3), ARG(float*, 4), ARG(float*, 5),
                  ARG(int, 6), ARG(int, 7), ARG(int, 8));
        });
    } else if (n == "chunk_moments") {
        // One block per (chunk, channel), reduced with the block's threads.
        if (bx % 32 != 0) return INVALID_VALUE;
        bda_launch_sync(gx, bx, [&] {
            chunk_moments(ARG(float*, 0), ARG(float*, 1), ARG(double*, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5),
                          ARG(int, 6), ARG(double*, 7));
        });
    } else if (n == "maps_to_rows") {
        bda_launch(gx, bx, [&] { maps_to_rows(ARG(float*, 0), ARG(int, 1), ARG(int, 2), ARG(int, 3), ARG(float*, 4)); });
    } else if (n == "rows_to_maps") {
        bda_launch(gx, bx, [&] { rows_to_maps(ARG(float*, 0), ARG(int, 1), ARG(int, 2), ARG(int, 3), ARG(float*, 4)); });
    } else if (n == "head_logits") {
        bda_launch(gx, bx, [&] {
            head_logits(ARG(float*, 0), ARG(float*, 1), ARG(int, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5), ARG(int, 6),
                        ARG(int, 7), ARG(int, 8), ARG(float*, 9), ARG(int, 10), ARG(int, 11));
        });
    } else if (n == "head_xent_rows") {
        bda_launch(gx, bx, [&] {
            head_xent_rows(ARG(float*, 0), ARG(int, 1), ARG(unsigned char*, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5),
                           ARG(int, 6), ARG(int, 7), ARG(int, 8), ARG(float, 9), ARG(float, 10), ARG(float*, 11),
                           ARG(float*, 12), ARG(float*, 13));
        });
    } else if (n == "head_hvp_rows") {
        bda_launch(gx, bx, [&] {
            head_hvp_rows(ARG(float*, 0), ARG(unsigned char*, 1), ARG(int, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5),
                          ARG(int, 6), ARG(int, 7), ARG(float, 8), ARG(float, 9), ARG(float*, 10), ARG(float*, 11));
        });
    } else if (n == "head_param_acc") {
        bda_launch(gx, bx, [&] {
            head_param_acc(ARG(float*, 0), ARG(float*, 1), ARG(int, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5),
                           ARG(int, 6), ARG(int, 7), ARG(int, 8), ARG(float, 9), ARG(float*, 10));
        });
    } else if (n == "head_dx") {
        bda_launch(gx, bx, [&] {
            head_dx(ARG(float*, 0), ARG(float*, 1), ARG(float*, 2), ARG(float*, 3), ARG(int, 4), ARG(int, 5),
                    ARG(int, 6), ARG(int, 7), ARG(int, 8), ARG(int, 9), ARG(int, 10), ARG(int, 11), ARG(float, 12),
                    ARG(float*, 13));
        });
    } else if (n == "head_task_stats") {
        bda_launch(gx, bx, [&] {
            head_task_stats(ARG(float*, 0), ARG(float*, 1), ARG(int, 2), ARG(int, 3), ARG(int, 4), ARG(float*, 5),
                            ARG(float*, 6));
        });
    } else if (n == "bn_tangent") {
        if (bx % 32 != 0) return INVALID_VALUE;
        bda_launch_sync(gx, bx, [&] {
            bn_tangent(ARG(float*, 0), ARG(float*, 1), ARG(float*, 2), ARG(float*, 3), ARG(int, 4), ARG(float*, 5));
        });
    } else if (n == "pool_tangent") {
        bda_launch(gx, bx, [&] {
            pool_tangent(ARG(float*, 0), ARG(unsigned int*, 1), ARG(float*, 2), ARG(float*, 3), ARG(float*, 4),
                         ARG(float*, 5), ARG(float*, 6), ARG(int, 7), ARG(int, 8), ARG(int, 9), ARG(float*, 10));
        });
    } else if (n == "bn_tangent_backward") {
        if (bx % 32 != 0) return INVALID_VALUE;
        bda_launch_sync(gx, bx, [&] {
            bn_tangent_backward(ARG(float*, 0), ARG(float*, 1), ARG(float*, 2), ARG(float*, 3), ARG(float*, 4),
                                ARG(float*, 5), ARG(float*, 6), ARG(float*, 7), ARG(float*, 8), ARG(int, 9),
                                ARG(int, 10), ARG(float*, 11));
        });
    } else if (n == "add_bias_rows") {
        bda_launch(gx, bx, [&] {
            add_bias_rows(ARG(float*, 0), ARG(int, 1), ARG(int, 2), ARG(float*, 3), ARG(int, 4), ARG(int, 5));
        });
    } else {
        std::fprintf(stderr, "fake CUDA: unknown kernel %s\n", n.c_str());
        return NOT_FOUND;
    }
    return OK;
}
}
