// Kernels of the whole few-shot network as the lower level: the tangents (R-operator) of
// the conv4 blocks' batch norm, ReLU and pool, and the head's bias, so that a Hessian–vector
// product is one forward pass, its tangent, and the backward pass with its tangent.
//
// Maps are channel-major over the task's n images, [c][i·hw + p] (conv.cu's layout), a
// block's tape holds its convolution output z and the batch statistics (mean, invstd), and
// x̂ = (z − mean)·invstd is recomputed where needed. Per-channel kernels run one block per
// channel and sum in double in a fixed order: results do not depend on the launch shape.
#include "common.cuh"

// Tangent of batch norm's x̂ along ż (in d, m entries per channel), in place, one block per
// channel c: with D = ι(ż − mean(ż)) and cc = mean(x̂·D), d ← D − cc·x̂ (the tangent of x̂),
// and c_out[c] = cc (ι's tangent is −cc·ι).
extern "C" __global__ void bn_tangent(
    float* __restrict__ d, const float* __restrict__ z, const float* __restrict__ mean,
    const float* __restrict__ invstd, int m, float* __restrict__ c_out)
{
    __shared__ double bcast;
    const int c = blockIdx.x;
    float* dc = d + (long long)c * m;
    const float* zc = z + (long long)c * m;
    const float mu = mean[c], inv = invstd[c];
    double acc = 0.0;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        acc += (double)dc[i];
    }
    acc = bda_block_sum(acc);
    if (threadIdx.x == 0) {
        bcast = acc / (double)m;
    }
    __syncthreads();
    const float mu_dot = (float)bcast;
    double sx = 0.0;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const float v = (dc[i] - mu_dot) * inv;
        dc[i] = v;
        sx += (double)((zc[i] - mu) * inv * v);
    }
    sx = bda_block_sum(sx);
    __syncthreads();
    if (threadIdx.x == 0) {
        bcast = sx / (double)m;
    }
    __syncthreads();
    const float cc = (float)bcast;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        dc[i] -= cc * (zc[i] - mu) * inv;
    }
    if (threadIdx.x == 0) {
        c_out[c] = cc;
    }
}

// Tangent of normalise + ReLU + pool, one thread per pooled output q of channel c: where
// the chosen input argmax[q] passed the ReLU, out_dot[q] = vγ·x̂ + γ·x̂̇ + vβ there, else 0.
// gb = [γ | β] and vgb = [vγ | vβ] (ch entries each).
extern "C" __global__ void pool_tangent(
    const float* __restrict__ xhat_dot, const unsigned int* __restrict__ argmax,
    const float* __restrict__ z, const float* __restrict__ mean, const float* __restrict__ invstd,
    const float* __restrict__ gb, const float* __restrict__ vgb, int ch, int n, int hwo,
    float* __restrict__ out_dot)
{
    const long long total = (long long)ch * n * hwo;
    const long long per_c = (long long)n * hwo;
    BDA_FOR_EACH(q, total) {
        const int c = (int)(q / per_c);
        const float sc = gb[c] * invstd[c];
        const float sh = gb[ch + c] - sc * mean[c];
        const unsigned int p = argmax[q];
        float v = 0.0f;
        if (sc * z[p] + sh > 0.0f) {
            const float xh = (z[p] - mean[c]) * invstd[c];
            v = vgb[c] * xh + gb[c] * xhat_dot[p] + vgb[ch + c];
        }
        out_dot[q] = v;
    }
}

// Batch norm's backward and its tangent, in place, one block per channel c (m entries):
// from da (the gradient at the normalised output a = γx̂ + β) and dd (its tangent),
//   da ← k·r,  r = da − mean(da) − x̂·mean(da·x̂),  k = γι,
//   dd ← k̇·r + k·(dd − mean(dd) − x̂̇·mean(da·x̂) − x̂·mean(dd·x̂ + da·x̂̇)),
//   k̇ = vγ·ι − γ·ι·cc,
// and the tangents of γ's and β's gradients: dgb_dot[c] = Σ(dd·x̂ + da·x̂̇),
// dgb_dot[ch + c] = Σ dd.
extern "C" __global__ void bn_tangent_backward(
    float* __restrict__ da, float* __restrict__ dd, const float* __restrict__ z,
    const float* __restrict__ mean, const float* __restrict__ invstd,
    const float* __restrict__ xhat_dot, const float* __restrict__ cc, const float* __restrict__ gb,
    const float* __restrict__ vgb, int ch, int m, float* __restrict__ dgb_dot)
{
    __shared__ double sums[4];
    const int c = blockIdx.x;
    const long long off = (long long)c * m;
    const float mu = mean[c], inv = invstd[c];
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const double a = (double)da[off + i], t = (double)dd[off + i];
        const double xh = (double)((z[off + i] - mu) * inv), xd = (double)xhat_dot[off + i];
        s[0] += a;
        s[1] += a * xh;
        s[2] += t;
        s[3] += t * xh + a * xd;
    }
    for (int k = 0; k < 4; ++k) {
        const double v = bda_block_sum(s[k]);
        if (threadIdx.x == 0) {
            sums[k] = v;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        dgb_dot[c] = (float)sums[3];
        dgb_dot[ch + c] = (float)sums[2];
    }
    const float sd = (float)(sums[0] / m), sdx = (float)(sums[1] / m);
    const float sd_dot = (float)(sums[2] / m), sdx_dot = (float)(sums[3] / m);
    const float k0 = gb[c] * inv;
    const float k0_dot = vgb[c] * inv - gb[c] * inv * cc[c];
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const float xh = (z[off + i] - mu) * inv, xd = xhat_dot[off + i];
        const float a = da[off + i];
        const float r = a - sd - xh * sdx;
        dd[off + i] = k0_dot * r + k0 * (dd[off + i] - sd_dot - xd * sdx - xh * sdx_dot);
        da[off + i] = k0 * r;
    }
}

// z[r·ldz + col + k] += b[k] for rows r < n and classes k < nw (the head's bias).
extern "C" __global__ void add_bias_rows(
    float* __restrict__ z, int ldz, int col, const float* __restrict__ b, int n, int nw)
{
    BDA_FOR_EACH(idx, (long long)n * nw) {
        const long long r = idx / nw;
        const int k = (int)(idx - r * nw);
        z[r * ldz + col + k] += b[k];
    }
}
