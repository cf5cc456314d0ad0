// Element-wise and reduction kernels on y- and x-shaped buffers. Element-wise kernels use one
// thread per element; reductions run in a single block (blockDim.x = 1024) and accumulate in
// double, so that they are deterministic and accurate for the buffer sizes of this backend
// (up to a few 10^5 entries).
#include "common.cuh"

// dst[i] = src[i] · (i < n_w ? s_w : s_b), i ∈ [0, n). Used to start a lower step
// (y_out = y with the weight-decay factor on W) and an upper gradient (2λW, 0 on b).
extern "C" __global__ void masked_scale_copy(
    const float* __restrict__ src, float* __restrict__ dst, int n, int n_w, float s_w, float s_b)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        dst[i] = src[i] * (i < n_w ? s_w : s_b);
    }
}

// Interleave two row-major rows×c matrices into one rows×2c matrix: ya[r] = [y[r] | a[r]],
// so that one GEMM gives the logits of both.
extern "C" __global__ void pack_pair(
    const float* __restrict__ y, const float* __restrict__ a, float* __restrict__ ya, int rows, int c)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < rows * c) {
        const int r = idx / c;
        const int k = idx - r * c;
        ya[(long long)r * 2 * c + k] = y[idx];
        ya[(long long)r * 2 * c + c + k] = a[idx];
    }
}

// pack_pair, then a[i] *= s_w for i < n_w (the weight-decay part of the adjoint update, applied
// after a has been copied so that the tangent logits use the unscaled a).
extern "C" __global__ void pack_pair_scale(
    const float* __restrict__ y, float* __restrict__ a, float* __restrict__ ya, int rows, int c,
    int n_w, float s_w)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < rows * c) {
        const int r = idx / c;
        const int k = idx - r * c;
        const float av = a[idx];
        ya[(long long)r * 2 * c + k] = y[idx];
        ya[(long long)r * 2 * c + c + k] = av;
        if (idx < n_w) {
            a[idx] = av * s_w;
        }
    }
}

// y ← y + alpha·x.
extern "C" __global__ void axpy(float alpha, const float* __restrict__ x, float* __restrict__ y, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[i] += alpha * x[i];
    }
}

// acc[i] += parts[0·stride + i], then parts[1·stride + i], … up to `chunks`, one addition at a
// time in chunk order: a rank continues the running sum of a chain over ranks with its own chunks'
// partial sums, so the result has the same bits whichever rank holds which chunk.
extern "C" __global__ void fold_chunks(
    float* __restrict__ acc, const float* __restrict__ parts, int n, int stride, int chunks)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float a = acc[i];
        for (int j = 0; j < chunks; ++j) {
            a += parts[(long long)j * stride + i];
        }
        acc[i] = a;
    }
}

// y ← alpha·y.
extern "C" __global__ void scale(float alpha, float* __restrict__ y, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[i] *= alpha;
    }
}

// out[0] = Σ_i a_i b_i (double accumulation). Single block.
extern "C" __global__ void reduce_dot(
    const float* __restrict__ a, const float* __restrict__ b, int n, double* __restrict__ out)
{
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        acc += (double)a[i] * (double)b[i];
    }
    acc = bda_block_sum(acc);
    if (threadIdx.x == 0) {
        out[0] = acc;
    }
}

// out[0] = Σ_i a_i (double accumulation). Single block.
extern "C" __global__ void reduce_sum(const float* __restrict__ a, int n, double* __restrict__ out)
{
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        acc += (double)a[i];
    }
    acc = bda_block_sum(acc);
    if (threadIdx.x == 0) {
        out[0] = acc;
    }
}

// out[0] = 1 if some a_i is infinite or NaN, else 0. Single block.
extern "C" __global__ void any_nonfinite(const float* __restrict__ a, int n, unsigned int* __restrict__ out)
{
    int bad = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        bad |= bda_is_finite(a[i]) ? 0 : 1;
    }
    bad = __syncthreads_or(bad);
    if (threadIdx.x == 0) {
        out[0] = bad ? 1u : 0u;
    }
}

// The hidden layer of the hyper-cleaning network, rows×ld with the first `h` columns used:
// h[i, k] ← max(h[i, k], 0) for k < h, 1 at k = h (the bias column of the next GEMM), 0
// beyond.
extern "C" __global__ void relu_aug(float* __restrict__ hid, int rows, int h, int ld)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < rows * ld) {
        const int k = idx % ld;
        hid[idx] = k < h ? fmaxf(hid[idx], 0.0f) : (k == h ? 1.0f : 0.0f);
    }
}

// g[i, k] ← g[i, k]·1[hid[i, k] > 0] for k < h, 0 beyond (g rows×ldg, hid rows×ldh): ReLU's
// derivative (0 at the kink), read from the activations relu(A) > 0 ⟺ A > 0.
extern "C" __global__ void relu_mask(
    float* __restrict__ g, int ldg, const float* __restrict__ hid, int ldh, int rows, int h)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < rows * ldg) {
        const int i = idx / ldg, k = idx % ldg;
        g[idx] = (k < h && hid[(long long)i * ldh + k] > 0.0f) ? g[idx] : 0.0f;
    }
}
