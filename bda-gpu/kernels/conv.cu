// Kernels of the conv4 backbone (3×3 convolution with padding 1, batch norm with batch
// statistics, ReLU, 2×2 max-pool with ceil mode), forward and backward.
//
// Feature maps of a batch of n images live channel-major over the whole batch: map c of image
// i at maps + c·n·hw + i·hw, hw = s·s, row-major inside (the CPU backbone's chunk layout with
// one chunk). A convolution is then one GEMM per chunk of images, Z[c][i·hw + p] =
// Σ_r W[c][r]·cols[r][i·hw + p], over the im2col matrix of the chunk. Every kernel but the
// per-channel reductions uses one thread per output element (grid-stride loops, so any grid
// size is correct), and every sum has a fixed order: results do not depend on the launch shape.
#include "common.cuh"

// im2col of images [i0, i0 + len) of a c_in-channel batch (n images of s×s):
//   cols[(ci·9 + ky·3 + kx)·(len·hw) + i·hw + oy·s + ox] = in[ci][i0 + i][oy + ky − 1][ox + kx − 1]
// (0 outside the image: padding 1).
extern "C" __global__ void im2col(
    const float* __restrict__ in, int c_in, int n, int s, int i0, int len, float* __restrict__ cols)
{
    const long long hw = (long long)s * s;
    const long long cols_n = (long long)len * hw;
    const long long total = (long long)c_in * 9 * cols_n;
    BDA_FOR_EACH(idx, total) {
        const long long row = idx / cols_n;
        const long long col = idx - row * cols_n;
        const int ci = (int)(row / 9);
        const int kk = (int)(row - (long long)ci * 9);
        const int ky = kk / 3, kx = kk - 3 * (kk / 3);
        const long long i = col / hw;
        const int p = (int)(col - i * hw);
        const int oy = p / s, ox = p - (p / s) * s;
        const int iy = oy + ky - 1, ix = ox + kx - 1;
        float v = 0.0f;
        if (iy >= 0 && iy < s && ix >= 0 && ix < s) {
            v = in[((long long)ci * n + i0 + i) * hw + (long long)iy * s + ix];
        }
        cols[idx] = v;
    }
}

// Adjoint of im2col for images [i0, i0 + len): each input position gathers the (at most 9)
// column entries that read it, in (ky, kx) order, and overwrites din (no atomics).
extern "C" __global__ void col2im(
    const float* __restrict__ dcols, int c_in, int n, int s, int i0, int len, float* __restrict__ din)
{
    const long long hw = (long long)s * s;
    const long long cols_n = (long long)len * hw;
    const long long total = (long long)c_in * cols_n;
    BDA_FOR_EACH(idx, total) {
        const long long ci = idx / cols_n;
        const long long col = idx - ci * cols_n;
        const long long i = col / hw;
        const int p = (int)(col - i * hw);
        const int iy = p / s, ix = p - (p / s) * s;
        float acc = 0.0f;
        for (int ky = 0; ky < 3; ++ky) {
            const int oy = iy + 1 - ky;
            if (oy < 0 || oy >= s) continue;
            for (int kx = 0; kx < 3; ++kx) {
                const int ox = ix + 1 - kx;
                if (ox < 0 || ox >= s) continue;
                acc += dcols[(ci * 9 + ky * 3 + kx) * cols_n + i * hw + (long long)oy * s + ox];
            }
        }
        din[(ci * n + i0 + i) * hw + p] = acc;
    }
}

// Batch-norm statistics of channel blockIdx.x over its m = n·hw values, in double:
// mean[c] = Σz/m, invstd[c] = 1/sqrt(Σ(z − mean)²/m + eps) (two passes, as the CPU backbone).
extern "C" __global__ void bn_stats(
    const float* __restrict__ z, int m, float eps, float* __restrict__ mean, float* __restrict__ invstd)
{
    __shared__ double bcast;
    const int c = blockIdx.x;
    const float* zc = z + (long long)c * m;
    double acc = 0.0;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        acc += (double)zc[i];
    }
    acc = bda_block_sum(acc);
    if (threadIdx.x == 0) {
        bcast = acc / (double)m;
    }
    __syncthreads();
    const double mu = bcast;
    double sq = 0.0;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const double d = (double)zc[i] - mu;
        sq += d * d;
    }
    sq = bda_block_sum(sq);
    if (threadIdx.x == 0) {
        mean[c] = (float)mu;
        invstd[c] = (float)(1.0 / sqrt(sq / (double)m + (double)eps));
    }
}

// Normalise (γ, β from gb = [γ (ch) | β (ch)]), ReLU and 2×2 max-pool with ceil mode, one
// thread per pooled output (c, i, oy, ox) of the so×so output maps. argmax holds the index in
// z of the chosen input (ties: the first of top-left, top-right, bottom-left, bottom-right).
extern "C" __global__ void bn_relu_pool(
    const float* __restrict__ z, const float* __restrict__ mean, const float* __restrict__ invstd,
    const float* __restrict__ gb, int ch, int n, int s, int so,
    float* __restrict__ out, unsigned int* __restrict__ argmax)
{
    const long long hw = (long long)s * s, hwo = (long long)so * so;
    const long long total = (long long)ch * n * hwo;
    BDA_FOR_EACH(q, total) {
        const long long ci = q / hwo;  // c·n + i
        const int po = (int)(q - ci * hwo);
        const int c = (int)(ci / n);
        const int oy = po / so, ox = po - (po / so) * so;
        const float sc = gb[c] * invstd[c];
        const float sh = gb[ch + c] - sc * mean[c];
        const long long base = ci * hw;
        const int p0 = 2 * oy * s + 2 * ox;
        const bool right = 2 * ox + 1 < s, down = 2 * oy + 1 < s;
        int best = p0;
        float y = sc * z[base + p0] + sh;
        float bv = y > 0.0f ? y : 0.0f;
        const int cand[3] = {p0 + 1, p0 + s, p0 + s + 1};
        const bool ok[3] = {right, down, right && down};
        for (int k = 0; k < 3; ++k) {
            if (!ok[k]) continue;
            y = sc * z[base + cand[k]] + sh;
            const float a = y > 0.0f ? y : 0.0f;
            if (a > bv) {
                best = cand[k];
                bv = a;
            }
        }
        out[q] = bv;
        argmax[q] = (unsigned int)(base + best);
    }
}

// Backward of max-pool and ReLU: dy[argmax[q]] += dout[q] where the chosen input was active
// (dy must be zero on entry; pooling windows do not overlap, so no two threads meet).
extern "C" __global__ void pool_relu_backward(
    const float* __restrict__ dout, const unsigned int* __restrict__ argmax, const float* __restrict__ z,
    const float* __restrict__ mean, const float* __restrict__ invstd, const float* __restrict__ gb,
    int ch, int n, int hwo, float* __restrict__ dy)
{
    const long long total = (long long)ch * n * hwo;
    const long long per_c = (long long)n * hwo;
    BDA_FOR_EACH(q, total) {
        const int c = (int)(q / per_c);
        const float sc = gb[c] * invstd[c];
        const float sh = gb[ch + c] - sc * mean[c];
        const unsigned int p = argmax[q];
        if (sc * z[p] + sh > 0.0f) {
            dy[p] += dout[q];
        }
    }
}

// Per channel blockIdx.x (m = n·hw values): dgb[c] = Σ dy·(z − mean)·invstd (dγ) and
// dgb[ch + c] = Σ dy (dβ), accumulated in double.
extern "C" __global__ void bn_backward_sums(
    const float* __restrict__ dy, const float* __restrict__ z, const float* __restrict__ mean,
    const float* __restrict__ invstd, int ch, int m, float* __restrict__ dgb)
{
    __shared__ double bcast;
    const int c = blockIdx.x;
    const long long off = (long long)c * m;
    const double mu = (double)mean[c];
    double sd = 0.0, sdx = 0.0;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const double d = (double)dy[off + i];
        sd += d;
        sdx += d * ((double)z[off + i] - mu);
    }
    sd = bda_block_sum(sd);
    if (threadIdx.x == 0) {
        bcast = sd;
    }
    __syncthreads();
    sdx = bda_block_sum(sdx);
    if (threadIdx.x == 0) {
        dgb[c] = (float)(sdx * (double)invstd[c]);
        dgb[ch + c] = (float)bcast;
    }
}

// The batch-norm sums of a batch split over ranks, per chunk of a rank's images: block
// b = j·ch + c sums entries [j·chunk, min((j + 1)·chunk, m)) of channel c (m entries per
// channel, the rank's images) in double, in a fixed order for a fixed block size:
//   mode 0: out[2b] = Σ a                 (the mean's sum),
//   mode 1: out[2b] = Σ (a − mu[c])²      (the variance's, about the whole batch's mean),
//   mode 2: out[2b] = Σ a, out[2b + 1] = Σ a·(z − mu[c])   (backward: a = dy),
// out[2b + 1] = 0 otherwise. Chunk-major, so that the ranks' partials concatenate in chunk
// order and the host adds them in that order.
extern "C" __global__ void chunk_moments(
    const float* __restrict__ a, const float* __restrict__ z, const double* __restrict__ mu,
    int ch, int m, int chunk, int mode, double* __restrict__ out)
{
    const int b = blockIdx.x;
    const int j = b / ch, c = b - j * ch;
    const long long off = (long long)c * m;
    const int lo = j * chunk;
    const int hi = lo + chunk < m ? lo + chunk : m;
    double s0 = 0.0, s1 = 0.0;
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const double v = (double)a[off + i];
        if (mode == 1) {
            const double d = v - mu[c];
            s0 += d * d;
        } else {
            s0 += v;
            if (mode == 2) {
                s1 += v * ((double)z[off + i] - mu[c]);
            }
        }
    }
    s0 = bda_block_sum(s0);
    s1 = bda_block_sum(s1);
    if (threadIdx.x == 0) {
        out[2 * b] = s0;
        out[2 * b + 1] = s1;
    }
}

// Backward of batch norm, in place: dy ← k·(M·dy − Σdy − x̂·Σdy·x̂), k = γ·invstd/M,
// x̂ = (z − mean)·invstd, written as a·dy − b·z + cst (the CPU backbone's form); m entries
// per channel here, M (`count`) in the whole batch (more than m when split over ranks).
extern "C" __global__ void bn_dz(
    float* __restrict__ dy, const float* __restrict__ z, const float* __restrict__ mean,
    const float* __restrict__ invstd, const float* __restrict__ gb, const float* __restrict__ dgb,
    int ch, int m, int batch)
{
    const long long total = (long long)ch * m;
    BDA_FOR_EACH(idx, total) {
        const int c = (int)(idx / m);
        const float count = (float)batch;
        const float k = gb[c] * invstd[c] / count;
        const float a = k * count;
        const float b = k * dgb[c] * invstd[c];
        const float cst = -k * dgb[ch + c] + b * mean[c];
        dy[idx] = a * dy[idx] - b * z[idx] + cst;
    }
}

// Index in row-major features [i][c·hw + p] of entry idx = c·n·hw + i·hw + p of
// channel-major maps [c][i·hw + p] (PyTorch's flatten order).
__device__ __forceinline__ long long row_index(long long idx, int ch, int n, int hw) {
    const long long ci = idx / hw;
    const int p = (int)(idx - ci * hw);
    const int c = (int)(ci / n);
    const long long i = ci - (long long)c * n;
    return (i * ch + c) * hw + p;
}

// Channel-major maps [c][i·hw + p] → row-major features [i][c·hw + p].
extern "C" __global__ void maps_to_rows(
    const float* __restrict__ maps, int ch, int n, int hw, float* __restrict__ rows)
{
    BDA_FOR_EACH(idx, (long long)ch * n * hw) {
        rows[row_index(idx, ch, n, hw)] = maps[idx];
    }
}

// Inverse of maps_to_rows.
extern "C" __global__ void rows_to_maps(
    const float* __restrict__ rows, int ch, int n, int hw, float* __restrict__ maps)
{
    BDA_FOR_EACH(idx, (long long)ch * n * hw) {
        maps[idx] = rows[row_index(idx, ch, n, hw)];
    }
}
