// Kernels of the batched few-shot head: m tasks, each with a linear N-way softmax head on
// d features, solved together as one block-diagonal problem.
//
// Rows of x (row-major, d floats each): the ns support rows of every task (task by task),
// then the nq query rows of every task. A y buffer holds the m heads one after another, head t
// at y + t·(d+1)·N: W_t row-major (d×N), then b_t (N). Per-row buffers (logits z, gradient
// terms g and h) have N entries per row (2N for [logits | tangent logits] pairs).
//
// A row's weight ω (a kernel argument per set: w_s/ns for support rows, w_q/nq for query rows,
// sign included) makes one launch serve both levels; every sum has a fixed order.
#include "common.cuh"

// Task of row r, and whether r is a query row.
__device__ __forceinline__ int head_task(long long r, int m, int ns, int nq, bool* query) {
    const long long n_sup = (long long)m * ns;
    *query = r >= n_sup;
    return *query ? (int)((r - n_sup) / nq) : (int)(r / ns);
}

// Weight ω of row r: w_s/ns on support rows, w_q/nq on query rows.
__device__ __forceinline__ float head_weight(long long r, int m, int ns, int nq, float w_s, float w_q) {
    bool query;
    head_task(r, m, ns, nq, &query);
    return query ? w_q / (float)nq : w_s / (float)ns;
}

// Offset in a y buffer of the head of row r's task.
__device__ __forceinline__ long long head_offset(long long r, int d, int nw, int m, int ns, int nq) {
    bool query;
    return (long long)head_task(r, m, ns, nq, &query) * (d + 1) * nw;
}

// z[r·ldz + col + k] = b_t[k] + Σ_j x[r][j]·Y_t[j][k] for rows r ∈ [r0, r1) (j in order, as
// the CPU head), one thread per (row, class).
extern "C" __global__ void head_logits(
    const float* __restrict__ x, const float* __restrict__ y, int d, int nw, int m, int ns, int nq,
    int r0, int r1, float* __restrict__ z, int ldz, int col)
{
    const long long total = (long long)(r1 - r0) * nw;
    BDA_FOR_EACH(idx, total) {
        const long long r = r0 + idx / nw;
        const int k = (int)(idx % nw);
        const float* yt = y + head_offset(r, d, nw, m, ns, nq);
        const float* xr = x + r * d;
        float acc = yt[(long long)d * nw + k];
        for (int j = 0; j < d; ++j) {
            acc += xr[j] * yt[(long long)j * nw + k];
        }
        z[r * ldz + col + k] = acc;
    }
}

// Per row r ∈ [r0, r1) with logits z (row stride ldz): ce[r] = −log softmax(z_r)_{v_r},
// hit[r] = 1 if the first largest logit is the label (else 0), and
// g[r][k] = ω (p_rk − [k = v_r]), ω = w_s/ns on support rows, w_q/nq on query rows.
extern "C" __global__ void head_xent_rows(
    const float* __restrict__ z, int ldz, const unsigned char* __restrict__ labels, int nw, int m,
    int ns, int nq, int r0, int r1, float w_s, float w_q,
    float* __restrict__ g, float* __restrict__ ce, float* __restrict__ hit)
{
    BDA_FOR_EACH(idx, (long long)(r1 - r0)) {
        const long long r = r0 + idx;
        const float w = head_weight(r, m, ns, nq, w_s, w_q);
        const float* zr = z + r * ldz;
        float mx, s;
        bda_softmax_stats(zr, nw, &mx, &s);
        const int v = labels[r];
        ce[r] = mx + logf(s) - zr[v];
        int best = 0;
        for (int k = 1; k < nw; ++k) {
            if (zr[k] > zr[best]) best = k;
        }
        hit[r] = best == v ? 1.0f : 0.0f;
        bda_xent_grad(zr, nw, mx, s, v, w, g + r * nw);
    }
}

// Second-order row terms from [z_r | u_r] (row stride 2N; u = tangent logits of a direction):
//   h[r][k] = ω p_rk (u_rk − ⟨p_r, u_r⟩)     (the Hessian–vector row term)
//   g[r][k] = ω (p_rk − [k = v_r])             (the gradient row term, for the mixed product)
extern "C" __global__ void head_hvp_rows(
    const float* __restrict__ zu, const unsigned char* __restrict__ labels, int nw, int m, int ns,
    int nq, int r0, int r1, float w_s, float w_q, float* __restrict__ g, float* __restrict__ h)
{
    BDA_FOR_EACH(idx, (long long)(r1 - r0)) {
        const long long r = r0 + idx;
        const float w = head_weight(r, m, ns, nq, w_s, w_q);
        const float* zr = zu + r * 2 * nw;
        float mx, s;
        bda_softmax_stats(zr, nw, &mx, &s);
        bda_softmax_jvp(zr, zr + nw, nw, mx, s, w, h + r * nw);
        bda_xent_grad(zr, nw, mx, s, labels[r], w, g + r * nw);
    }
}

// dst_t[j][k] ← s_dst·dst_t[j][k] + Σ_r x̃[r][j]·g[r][k] over the support rows (use_s) and
// query rows (use_q) of task t, x̃[r][d] = 1 (the bias row); s_dst = 0 does not read dst.
// One thread per entry of the m heads.
extern "C" __global__ void head_param_acc(
    const float* __restrict__ x, const float* __restrict__ g, int d, int nw, int m, int ns, int nq,
    int use_s, int use_q, float s_dst, float* __restrict__ dst)
{
    const long long per = (long long)(d + 1) * nw;
    const long long total = (long long)m * per;
    BDA_FOR_EACH(idx, total) {
        const int t = (int)(idx / per);
        const long long e = idx - (long long)t * per;
        const int j = (int)(e / nw);
        const int k = (int)(e - (long long)j * nw);
        float acc = 0.0f;
        for (int set = 0; set < 2; ++set) {
            if (set == 0 ? !use_s : !use_q) continue;
            const long long first = set == 0 ? (long long)t * ns : (long long)m * ns + (long long)t * nq;
            const int rows = set == 0 ? ns : nq;
            for (int i = 0; i < rows; ++i) {
                const long long r = first + i;
                const float xv = j < d ? x[r * d + j] : 1.0f;
                acc += xv * g[r * nw + k];
            }
        }
        dst[idx] = (s_dst == 0.0f ? 0.0f : s_dst * dst[idx]) + acc;
    }
}

// gx[r][j] += scale·Σ_k (g[r][k]·y1_t[j][k] + h[r][k]·y2_t[j][k]) for rows r ∈ [r0, r1),
// j < d; the h term only with use_h (then h and y2 are read, else ignored).
extern "C" __global__ void head_dx(
    const float* __restrict__ g, const float* __restrict__ y1, const float* __restrict__ h,
    const float* __restrict__ y2, int use_h, int d, int nw, int m, int ns, int nq, int r0, int r1,
    float scale, float* __restrict__ gx)
{
    const long long total = (long long)(r1 - r0) * d;
    BDA_FOR_EACH(idx, total) {
        const long long r = r0 + idx / d;
        const int j = (int)(idx % d);
        const long long yoff = head_offset(r, d, nw, m, ns, nq) + (long long)j * nw;
        float acc = 0.0f;
        for (int k = 0; k < nw; ++k) {
            acc += g[r * nw + k] * y1[yoff + k];
            if (use_h) acc += h[r * nw + k] * y2[yoff + k];
        }
        gx[r * d + j] += scale * acc;
    }
}

// Per task t: loss[t] = Σ ce[r]/nq and hits[t] = Σ hit[r] over the task's query rows (in row
// order; one thread per task).
extern "C" __global__ void head_task_stats(
    const float* __restrict__ ce, const float* __restrict__ hit, int m, int ns, int nq,
    float* __restrict__ loss, float* __restrict__ hits)
{
    BDA_FOR_EACH(t, (long long)m) {
        const long long first = (long long)m * ns + t * nq;
        const float inv = 1.0f / (float)nq;
        float l = 0.0f, h = 0.0f;
        for (int i = 0; i < nq; ++i) {
            l += ce[first + i] * inv;
            h += hit[first + i];
        }
        loss[t] = l;
        hits[t] = h;
    }
}
