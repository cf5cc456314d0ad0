// Fused per-row kernels of the softmax-regression (hyper-cleaning) backend: one thread per
// sample row, one pass over that row's logits serving every product the step needs.
//
// Rows are numbered globally: rows [0, n_tr) are training samples (weighted by σ(x_i)), rows
// [n_tr, n_all) validation samples. A launch covers rows [row0, row1); row i of a logits
// buffer starts at z + i·ldz, row i of an output buffer at out + i·c.
#include "common.cuh"

// Weight of row i in a gradient: a_tr·σ(x_i) on training rows, a_val on validation rows.
__device__ __forceinline__ float bda_row_weight(int i, int n_tr, const float* x, float a_tr, float a_val) {
    return i < n_tr ? a_tr * bda_sigmoid(x[i]) : a_val;
}

// Softmax + cross-entropy + gradient of the logits:
//   ce[i]    = −log softmax(z_i)_{v_i}
//   g[i, k]  = ω_i (p_ik − [k = v_i]),  ω_i = bda_row_weight(i)
extern "C" __global__ void xent_grad_rows(
    const float* __restrict__ z, int ldz,
    const unsigned char* __restrict__ labels,
    const float* __restrict__ x, int n_tr,
    int row0, int row1, int c,
    float a_tr, float a_val,
    float* __restrict__ g,
    float* __restrict__ ce)
{
    const int i = row0 + blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= row1) {
        return;
    }
    const float* zi = z + (long long)i * ldz;
    float m, s;
    bda_softmax_stats(zi, c, &m, &s);
    const int v = labels[i];
    ce[i] = m + logf(s) - zi[v];
    const float w = bda_row_weight(i, n_tr, x, a_tr, a_val);
    bda_xent_grad(zi, c, m, s, v, w, g + (long long)i * c);
}

// ∂f/∂x on training rows: gx[i] += gx_scale · σ'(x_i) · CE_i, i ∈ [0, n_tr).
extern "C" __global__ void xent_dx_rows(
    const float* __restrict__ z, int ldz,
    const unsigned char* __restrict__ labels,
    const float* __restrict__ x, int n_tr, int c,
    float* __restrict__ gx, float gx_scale)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_tr) {
        return;
    }
    const float* zi = z + (long long)i * ldz;
    float m, s;
    bda_softmax_stats(zi, c, &m, &s);
    const float ce = m + logf(s) - zi[labels[i]];
    const float sg = bda_sigmoid(x[i]);
    gx[i] += gx_scale * sg * (1.0f - sg) * ce;
}

// Hessian-vector row term and mixed x term from logits and tangent logits computed together:
// row i of z2 holds [z_i (c entries) | t_i (c entries)], z_i = x̃_iᵀY, t_i = x̃_iᵀA, ldz = 2c.
//   h[i, k] = ω_i · p_ik (t_ik − ⟨p_i, t_i⟩)                    ((diag p − ppᵀ)·t, weighted)
//   gx[i]  += gx_scale · σ'(x_i) · (⟨p_i, t_i⟩ − t_{i,v_i})    (training rows, if gx_scale ≠ 0)
// With gx_scale = 0, gx is never touched (any pointer may be passed).
extern "C" __global__ void hvp_rows(
    const float* __restrict__ z2,
    const unsigned char* __restrict__ labels,
    const float* __restrict__ x, int n_tr,
    int row0, int row1, int c,
    float a_tr, float a_val,
    float* __restrict__ h,
    float* __restrict__ gx, float gx_scale)
{
    const int i = row0 + blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= row1) {
        return;
    }
    const float* zi = z2 + (long long)i * (2 * c);
    const float* ti = zi + c;
    float m, s;
    bda_softmax_stats(zi, c, &m, &s);
    const float w = bda_row_weight(i, n_tr, x, a_tr, a_val);
    const float pt = bda_softmax_jvp(zi, ti, c, m, s, w, h + (long long)i * c);
    if (i < n_tr && gx_scale != 0.0f) {
        const float sg = bda_sigmoid(x[i]);
        gx[i] += gx_scale * sg * (1.0f - sg) * (pt - ti[labels[i]]);
    }
}
