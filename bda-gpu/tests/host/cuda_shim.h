// Host (C++17) emulation of the CUDA built-ins used by bda-gpu/kernels, so that the kernel
// sources can be compiled with an ordinary C++ compiler and their arithmetic checked without a
// GPU. Blocks and threads run one after another; the reductions are emulated with one thread
// per block (a shuffle from a lane that does not exist contributes 0), which checks their loops
// and outputs but not the warp-level code, which only a GPU run checks.
#pragma once
#include <math.h>
#include <string.h>

struct bda_dim3 {
    unsigned int x, y, z;
};
static bda_dim3 threadIdx, blockIdx, blockDim, gridDim;

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
inline double __shfl_down_sync(unsigned int, double, unsigned int, int = 32) { return 0.0; }
inline void __syncthreads() {}
inline int __syncthreads_or(int p) { return p; }

// Runs `body` for every (block, thread) of a 1-D launch.
template <class F>
void bda_launch(unsigned int grid, unsigned int block, F body) {
    blockDim = {block, 1, 1};
    gridDim = {grid, 1, 1};
    for (unsigned int b = 0; b < grid; ++b) {
        for (unsigned int t = 0; t < block; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            body();
        }
    }
}
