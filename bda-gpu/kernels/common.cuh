// Shared device helpers of the bda-gpu kernels. Compiled by NVRTC at run time (no system
// headers: only CUDA built-ins are used). Included by name as "common.cuh"; the Rust side
// hands NVRTC this file's text as an in-memory header.
#pragma once

// Grid-stride loop over [0, total): correct for any 1-D launch shape.
#define BDA_FOR_EACH(idx, total) \
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < (total); \
         idx += (long long)gridDim.x * blockDim.x)

// Logistic function σ(x) = 1 / (1 + e^(−x)), written so that it neither overflows nor
// produces NaN for large |x|.
__device__ __forceinline__ float bda_sigmoid(float x) {
    if (x >= 0.0f) {
        return 1.0f / (1.0f + expf(-x));
    }
    const float e = expf(x);
    return e / (1.0f + e);
}

// Whether x is neither infinite nor NaN (exponent bits not all ones).
__device__ __forceinline__ bool bda_is_finite(float x) {
    return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}

// Row softmax statistics of logits z[0..c): max m and s = Σ_k exp(z_k − m), so that
// p_k = exp(z_k − m) / s and log Σ_k exp(z_k) = m + log s.
__device__ __forceinline__ void bda_softmax_stats(const float* z, int c, float* m_out, float* s_out) {
    float m = z[0];
    for (int k = 1; k < c; ++k) {
        m = fmaxf(m, z[k]);
    }
    float s = 0.0f;
    for (int k = 0; k < c; ++k) {
        s += expf(z[k] - m);
    }
    *m_out = m;
    *s_out = s;
}

// Weighted gradient of the cross-entropy w.r.t. logits z[0..c) with statistics (m, s) from
// bda_softmax_stats and label v: g[k] = w·(p_k − [k = v]), p = softmax(z).
__device__ __forceinline__ void bda_xent_grad(const float* z, int c, float m, float s, int v, float w, float* g) {
    const float inv_s = 1.0f / s;
    for (int k = 0; k < c; ++k) {
        const float p = expf(z[k] - m) * inv_s;
        g[k] = w * (p - (k == v ? 1.0f : 0.0f));
    }
}

// Weighted softmax Jacobian applied to tangent logits t[0..c) at logits z with statistics
// (m, s): h[k] = w·p_k (t_k − ⟨p, t⟩), i.e. w·(diag p − ppᵀ)·t. Returns ⟨p, t⟩.
__device__ __forceinline__ float bda_softmax_jvp(const float* z, const float* t, int c, float m, float s, float w,
                                                 float* h) {
    const float inv_s = 1.0f / s;
    float pt = 0.0f;
    for (int k = 0; k < c; ++k) {
        pt += expf(z[k] - m) * inv_s * t[k];
    }
    for (int k = 0; k < c; ++k) {
        const float p = expf(z[k] - m) * inv_s;
        h[k] = w * p * (t[k] - pt);
    }
    return pt;
}

// Sum of v over the block, valid in thread 0 only. blockDim.x must be a multiple of 32 and at
// most 1024 (the Rust side builds these launches with `launch::block_reduction`, which checks
// it). Contains __syncthreads(): every thread of the block must call it.
//
// Consecutive calls share warp_sums: the barrier at the start keeps a warp's write of this
// call from overtaking warp 0's read of the previous call's slots, whatever the caller does
// in between.
__device__ __forceinline__ double bda_block_sum(double v) {
    __shared__ double warp_sums[32];
    __syncthreads();
    for (int off = 16; off > 0; off >>= 1) {
        v += __shfl_down_sync(0xffffffffu, v, off);
    }
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned int warp = threadIdx.x >> 5;
    if (lane == 0) {
        warp_sums[warp] = v;
    }
    __syncthreads();
    const unsigned int warps = (blockDim.x + 31u) >> 5;
    v = (threadIdx.x < warps) ? warp_sums[threadIdx.x] : 0.0;
    if (warp == 0) {
        for (int off = 16; off > 0; off >>= 1) {
            v += __shfl_down_sync(0xffffffffu, v, off);
        }
    }
    return v;
}
