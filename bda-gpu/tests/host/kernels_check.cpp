// Checks the arithmetic of the CUDA kernels on the host (see cuda_shim.h): per-row results
// against central finite differences of softmax/cross-entropy in double, element-wise kernels
// against their definitions. Prints one line per check; exits non-zero on failure.
#include "cuda_shim.h"
#include "softmax.cu"
#include "vector.cu"
#include "conv.cu"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

static int failures = 0;

static void report(const char* what, double err, double tol) {
    const bool ok = err <= tol;
    std::printf("%-40s max error %.2e %s\n", what, err, ok ? "ok" : "FAIL");
    failures += ok ? 0 : 1;
}

static double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Two block sums in a row with nothing between them, as a kernel may call bda_block_sum: the
// second call's warp-sum writes must not overtake warp 0's reads of the first call's.
extern "C" __global__ void two_block_sums(const float* a, const float* b, int n, double* out) {
    double x = 0.0, y = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        x += (double)a[i];
        y += (double)b[i];
    }
    x = bda_block_sum(x);
    y = bda_block_sum(y);
    if (threadIdx.x == 0) {
        out[0] = x;
        out[1] = y;
    }
}

// Softmax p and log-sum-exp of z[0..c) in double.
static void softmax(const double* z, int c, double* p, double* lse) {
    double m = z[0];
    for (int k = 1; k < c; ++k) m = std::max(m, z[k]);
    double s = 0;
    for (int k = 0; k < c; ++k) s += std::exp(z[k] - m);
    for (int k = 0; k < c; ++k) p[k] = std::exp(z[k] - m) / s;
    *lse = m + std::log(s);
}

static double ce_of(const double* z, int c, int v) {
    double p[64], lse;
    softmax(z, c, p, &lse);
    return lse - z[v];
}

int main() {
    const int c = 7, n_tr = 40, n_all = 65, row0 = 5, row1 = 60;
    const float a_tr = 0.3f, a_val = 0.9f, gx_scale = -0.45f;
    const double h = 1e-5;
    std::mt19937 gen(1);
    std::uniform_real_distribution<float> u(-3.0f, 3.0f);
    std::vector<float> z(n_all * 2 * c), x(n_tr), gx0(n_tr);
    std::vector<unsigned char> lab(n_all);
    for (auto& v : z) v = u(gen);
    for (auto& v : x) v = u(gen);
    for (auto& v : gx0) v = 0.1f * u(gen);
    for (auto& l : lab) l = (unsigned char)(gen() % c);
    const unsigned grid = (row1 - row0 + 127) / 128;

    // xent_grad_rows (ldz = 2c: only the first c entries of a row are logits).
    std::vector<float> g(n_all * c, 0.0f), ce(n_all, 0.0f);
    bda_launch(grid, 128, [&] {
        xent_grad_rows(z.data(), 2 * c, lab.data(), x.data(), n_tr, row0, row1, c, a_tr, a_val, g.data(), ce.data());
    });
    double e_out = 0, e_ce = 0, e_g = 0;
    for (int i = 0; i < n_all; ++i) {
        double zd[64], zs[64];
        for (int k = 0; k < c; ++k) zd[k] = z[i * 2 * c + k];
        if (i < row0 || i >= row1) {
            for (int k = 0; k < c; ++k) e_out = std::max(e_out, (double)std::fabs(g[i * c + k]));
            continue;
        }
        const double w = i < n_tr ? a_tr * sig(x[i]) : a_val;
        e_ce = std::max(e_ce, std::fabs(ce[i] - ce_of(zd, c, lab[i])));
        for (int k = 0; k < c; ++k) {
            std::copy(zd, zd + c, zs);
            zs[k] = zd[k] + h;
            const double cp = ce_of(zs, c, lab[i]);
            zs[k] = zd[k] - h;
            const double cm = ce_of(zs, c, lab[i]);
            e_g = std::max(e_g, std::fabs(g[i * c + k] - w * (cp - cm) / (2 * h)));
        }
    }
    report("xent_grad_rows: rows outside the range", e_out, 0.0);
    report("xent_grad_rows: CE", e_ce, 1e-5);
    report("xent_grad_rows: G = w dCE/dz", e_g, 1e-5);

    // hvp_rows: H = w d/de p(z + e t), gx += s σ'(x) d/de CE(z + e t).
    std::vector<float> hv(n_all * c, 0.0f), gx = gx0;
    bda_launch(grid, 128, [&] {
        hvp_rows(z.data(), lab.data(), x.data(), n_tr, row0, row1, c, a_tr, a_val, hv.data(), gx.data(), gx_scale);
    });
    double e_h = 0, e_gx = 0;
    for (int i = 0; i < n_all; ++i) {
        const bool in = i >= row0 && i < row1;
        double zp[64], zm[64], pp[64], pm[64], lp, lm;
        for (int k = 0; k < c; ++k) {
            const double t = z[i * 2 * c + c + k];
            zp[k] = z[i * 2 * c + k] + h * t;
            zm[k] = z[i * 2 * c + k] - h * t;
        }
        softmax(zp, c, pp, &lp);
        softmax(zm, c, pm, &lm);
        const double w = i < n_tr ? a_tr * sig(x[i]) : a_val;
        for (int k = 0; k < c; ++k) {
            const double want = in ? w * (pp[k] - pm[k]) / (2 * h) : 0.0;
            e_h = std::max(e_h, std::fabs(hv[i * c + k] - want));
        }
        if (i < n_tr) {
            const double dce = ((lp - zp[lab[i]]) - (lm - zm[lab[i]])) / (2 * h);
            const double s = sig(x[i]);
            const double want = gx0[i] + (in ? gx_scale * s * (1 - s) * dce : 0.0);
            e_gx = std::max(e_gx, std::fabs(gx[i] - want));
        }
    }
    report("hvp_rows: H = w (diag p - pp^T) t", e_h, 1e-5);
    report("hvp_rows: gx term", e_gx, 1e-5);
    // gx_scale = 0: H is the same and gx is not touched (the backends then pass a dummy
    // pointer). gx holds -0.0: a write of gx += 0·s·σ'·(⟨p, t⟩ − t_v) would turn it into +0 in
    // every row where ⟨p, t⟩ > t_v (about half of them), so even a write of zero shows.
    std::vector<float> hv0(n_all * c, 0.0f), probe(n_all, -0.0f);
    bda_launch(grid, 128, [&] {
        hvp_rows(z.data(), lab.data(), x.data(), n_tr, row0, row1, c, a_tr, a_val, hv0.data(), probe.data(), 0.0f);
    });
    double e_h0 = 0, written = 0;
    for (int k = 0; k < n_all * c; ++k) e_h0 = std::max(e_h0, (double)std::fabs(hv0[k] - hv[k]));
    for (int i = 0; i < n_all; ++i) written += std::signbit(probe[i]) ? 0.0 : 1.0;
    report("hvp_rows: gx_scale = 0, H unchanged", e_h0, 0.0);
    report("hvp_rows: gx_scale = 0, gx writes", written, 0.0);
    // And with no gx at all, as the backends call it: a dereference would crash here (run
    // only when no write was seen, so that a regression is reported rather than a crash).
    if (written == 0) {
        bda_launch(grid, 128, [&] {
            hvp_rows(z.data(), lab.data(), x.data(), n_tr, row0, row1, c, a_tr, a_val, hv0.data(), nullptr, 0.0f);
        });
    }

    // xent_dx_rows with ldz = 2c.
    gx = gx0;
    bda_launch((n_tr + 127) / 128, 128, [&] {
        xent_dx_rows(z.data(), 2 * c, lab.data(), x.data(), n_tr, c, gx.data(), 0.7f);
    });
    double e_dx = 0;
    for (int i = 0; i < n_tr; ++i) {
        double zd[64];
        for (int k = 0; k < c; ++k) zd[k] = z[i * 2 * c + k];
        const double s = sig(x[i]);
        e_dx = std::max(e_dx, std::fabs(gx[i] - (gx0[i] + 0.7 * s * (1 - s) * ce_of(zd, c, lab[i]))));
    }
    report("xent_dx_rows: gx += s sigma'(x) CE", e_dx, 1e-5);

    // Element-wise kernels on a (rows x c) "y" buffer whose first n_w entries are W.
    const int rows = 5, n = rows * c, n_w = (rows - 1) * c;
    std::vector<float> y(n), a(n), out(n), ya(2 * n);
    for (auto& v : y) v = u(gen);
    for (auto& v : a) v = u(gen);
    const unsigned eg = (n + 255) / 256;
    bda_launch(eg, 256, [&] { masked_scale_copy(y.data(), out.data(), n, n_w, 0.5f, -2.0f); });
    double e = 0;
    for (int i = 0; i < n; ++i) e = std::max(e, (double)std::fabs(out[i] - y[i] * (i < n_w ? 0.5f : -2.0f)));
    report("masked_scale_copy", e, 0.0);
    std::vector<float> a2 = a;
    bda_launch(eg, 256, [&] { pack_pair_scale(y.data(), a2.data(), ya.data(), rows, c, n_w, 0.25f); });
    e = 0;
    for (int r = 0; r < rows; ++r) {
        for (int k = 0; k < c; ++k) {
            e = std::max(e, (double)std::fabs(ya[r * 2 * c + k] - y[r * c + k]));
            e = std::max(e, (double)std::fabs(ya[r * 2 * c + c + k] - a[r * c + k]));
            const int i = r * c + k;
            e = std::max(e, (double)std::fabs(a2[i] - a[i] * (i < n_w ? 0.25f : 1.0f)));
        }
    }
    report("pack_pair_scale", e, 0.0);
    std::fill(ya.begin(), ya.end(), 0.0f);
    bda_launch(eg, 256, [&] { pack_pair(y.data(), a.data(), ya.data(), rows, c); });
    e = 0;
    for (int r = 0; r < rows; ++r)
        for (int k = 0; k < c; ++k)
            e = std::max({e, (double)std::fabs(ya[r * 2 * c + k] - y[r * c + k]),
                          (double)std::fabs(ya[r * 2 * c + c + k] - a[r * c + k])});
    report("pack_pair", e, 0.0);
    out = y;
    bda_launch(eg, 256, [&] { axpy(-1.5f, a.data(), out.data(), n); });
    bda_launch(eg, 256, [&] { scale(2.0f, out.data(), n); });
    e = 0;
    for (int i = 0; i < n; ++i) e = std::max(e, (double)std::fabs(out[i] - 2.0f * (y[i] - 1.5f * a[i])));
    report("axpy, scale", e, 1e-6);

    // fold_chunks: the chain's running sum continued with three chunks, one addition at a time
    // in chunk order (exact: the same float operations as the loop below).
    {
        const int chunks = 3, stride = n + 5;
        std::vector<float> parts((size_t)chunks * stride), acc = y, want = y;
        for (size_t i = 0; i < parts.size(); ++i) parts[i] = 1e-3f * (float)((i * 7919) % 1000) - 0.5f;
        for (int j = 0; j < chunks; ++j)
            for (int i = 0; i < n; ++i) want[i] += parts[(size_t)j * stride + i];
        bda_launch(eg, 256, [&] { fold_chunks(acc.data(), parts.data(), n, stride, chunks); });
        e = 0;
        for (int i = 0; i < n; ++i) e = std::max(e, (double)std::fabs(acc[i] - want[i]));
        report("fold_chunks", e, 0.0);
    }

    // Reductions, with the block sizes the launches use (1024: `launch::reduction`; 256: the
    // per-channel reductions) and a partial last warp of data.
    for (unsigned int threads : {256u, 1024u}) {
        double dot = 0, sum = 0, want_dot = 0, want_sum = 0;
        bda_launch_sync(1, threads, [&] { reduce_dot(y.data(), a.data(), n, &dot); });
        bda_launch_sync(1, threads, [&] { reduce_sum(y.data(), n, &sum); });
        for (int i = 0; i < n; ++i) {
            want_dot += (double)y[i] * a[i];
            want_sum += y[i];
        }
        report(threads == 256 ? "reduce_dot, reduce_sum (256 threads)" : "reduce_dot, reduce_sum (1024 threads)",
               std::max(std::fabs(dot - want_dot) / (1 + std::fabs(want_dot)),
                        std::fabs(sum - want_sum) / (1 + std::fabs(want_sum))),
               1e-12);
        unsigned int flag = 7;
        std::vector<float> z = y;
        bda_launch_sync(1, threads, [&] { any_nonfinite(z.data(), n, &flag); });
        const unsigned int finite_flag = flag;
        z[n - 1] = NAN;
        bda_launch_sync(1, threads, [&] { any_nonfinite(z.data(), n, &flag); });
        const unsigned int last_flag = flag;
        z[n - 1] = y[n - 1];
        z[0] = INFINITY;
        bda_launch_sync(1, threads, [&] { any_nonfinite(z.data(), n, &flag); });
        // Flags, as the number of wrong ones: 0 finite, 1 with a NaN at the end, 1 with ∞ first.
        report("any_nonfinite", (finite_flag != 0u) + (last_flag != 1u) + (flag != 1u), 0.0);
    }

    // Consecutive block sums, in several schedules (each launch resumes threads in new orders).
    {
        const int m = 3000;
        std::vector<float> p(m), q(m);
        double want_p = 0, want_q = 0;
        for (int i = 0; i < m; ++i) {
            p[i] = u(gen);
            q[i] = 100.0f + u(gen);
            want_p += p[i];
            want_q += q[i];
        }
        double e = 0;
        for (int trial = 0; trial < 8; ++trial) {
            double out[2] = {0, 0};
            bda_launch_sync(1, 1024, [&] { two_block_sums(p.data(), q.data(), m, out); });
            e = std::max({e, std::fabs(out[0] - want_p) / (1 + std::fabs(want_p)),
                          std::fabs(out[1] - want_q) / (1 + std::fabs(want_q))});
        }
        report("two block sums in a row (1024 threads)", e, 1e-12);
    }

    // conv.cu's per-channel reductions (256 threads, as `launch::per_channel`): two block sums
    // each, with a broadcast through shared memory in between.
    {
        const int ch = 3, m = 700;
        const float eps = 1e-5f;
        std::vector<float> z(ch * m), dy(ch * m), mean(ch), inv(ch), dgb(2 * ch);
        for (auto& v : z) v = 2.0f * u(gen) + 0.5f;
        for (auto& v : dy) v = u(gen);
        bda_launch_sync(ch, 256, [&] { bn_stats(z.data(), m, eps, mean.data(), inv.data()); });
        bda_launch_sync(ch, 256, [&] { bn_backward_sums(dy.data(), z.data(), mean.data(), inv.data(), ch, m, dgb.data()); });
        double e_stats = 0, e_sums = 0;
        for (int c = 0; c < ch; ++c) {
            double s = 0, q = 0, sd = 0, sdx = 0;
            for (int i = 0; i < m; ++i) s += z[c * m + i];
            const double mu = s / m;
            for (int i = 0; i < m; ++i) q += (z[c * m + i] - mu) * (z[c * m + i] - mu);
            const double want_inv = 1.0 / std::sqrt(q / m + eps);
            e_stats = std::max({e_stats, std::fabs(mean[c] - mu) / (1 + std::fabs(mu)),
                                std::fabs(inv[c] - want_inv) / want_inv});
            for (int i = 0; i < m; ++i) {
                sd += dy[c * m + i];
                sdx += dy[c * m + i] * (z[c * m + i] - (double)mean[c]);
            }
            e_sums = std::max({e_sums, std::fabs(dgb[c] - sdx * inv[c]) / (1 + std::fabs(sdx * inv[c])),
                               std::fabs(dgb[ch + c] - sd) / (1 + std::fabs(sd))});
        }
        report("bn_stats (256 threads)", e_stats, 1e-6);
        report("bn_backward_sums (256 threads)", e_sums, 1e-6);

        // chunk_moments: per (chunk, channel) of 300 entries (the last chunk 100), chunk-major,
        // in the three modes, against sums in double.
        const int chunk = 300, chunks = (m + chunk - 1) / chunk;
        std::vector<double> mu(ch), out(2 * chunks * ch);
        for (int c = 0; c < ch; ++c) mu[c] = 0.25 * c + 0.5;
        double e_mom = 0;
        for (int mode = 0; mode < 3; ++mode) {
            bda_launch_sync(chunks * ch, 256, [&] {
                chunk_moments(dy.data(), z.data(), mu.data(), ch, m, chunk, mode, out.data());
            });
            for (int j = 0; j < chunks; ++j) {
                for (int c = 0; c < ch; ++c) {
                    double s0 = 0, s1 = 0;
                    for (int i = j * chunk; i < std::min(m, (j + 1) * chunk); ++i) {
                        const double a = dy[c * m + i], d = a - mu[c];
                        s0 += mode == 1 ? d * d : a;
                        if (mode == 2) s1 += a * (z[c * m + i] - mu[c]);
                    }
                    const int b = j * ch + c;
                    e_mom = std::max({e_mom, std::fabs(out[2 * b] - s0), std::fabs(out[2 * b + 1] - s1)});
                }
            }
        }
        report("chunk_moments (256 threads)", e_mom, 1e-10);
    }

    // conv.cu: col2im is the adjoint of im2col on a chunk (⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩).
    {
        const int ci_n = 3, nn = 4, s = 5, i0 = 1, len = 2, hw = s * s;
        std::vector<float> xin(ci_n * nn * hw), cols(ci_n * 9 * len * hw), cv(cols.size()), din(xin.size(), 0.0f);
        for (auto& v : xin) v = u(gen);
        for (auto& v : cv) v = u(gen);
        bda_launch(7, 64, [&] { im2col(xin.data(), ci_n, nn, s, i0, len, cols.data()); });
        bda_launch(3, 32, [&] { col2im(cv.data(), ci_n, nn, s, i0, len, din.data()); });
        double lhs = 0, rhs = 0, outside = 0;
        for (size_t i = 0; i < cols.size(); ++i) lhs += (double)cols[i] * cv[i];
        for (int c = 0; c < ci_n; ++c)
            for (int i = 0; i < nn; ++i)
                for (int p = 0; p < hw; ++p) {
                    const size_t k = ((size_t)c * nn + i) * hw + p;
                    if (i >= i0 && i < i0 + len) rhs += (double)xin[k] * din[k];
                    else outside = std::max(outside, (double)std::fabs(din[k]));
                }
        report("im2col / col2im adjoint", std::fabs(lhs - rhs) / std::max(1.0, std::fabs(lhs)), 1e-5);
        report("col2im leaves other images alone", outside, 0.0);
        // Centre tap (ky = kx = 1) of image i0 is the image itself.
        double e_c = 0;
        for (int c = 0; c < ci_n; ++c)
            for (int p = 0; p < hw; ++p)
                e_c = std::max(e_c, (double)std::fabs(cols[((size_t)c * 9 + 4) * len * hw + p] -
                                                      xin[((size_t)c * nn + i0) * hw + p]));
        report("im2col centre tap", e_c, 0.0);
    }
    // conv.cu: maps_to_rows and rows_to_maps are inverse permutations.
    {
        const int ch = 3, nn = 5, hw = 4;
        std::vector<float> maps(ch * nn * hw), rows(maps.size()), back(maps.size());
        for (auto& v : maps) v = u(gen);
        bda_launch(2, 16, [&] { maps_to_rows(maps.data(), ch, nn, hw, rows.data()); });
        bda_launch(1, 8, [&] { rows_to_maps(rows.data(), ch, nn, hw, back.data()); });
        double e_p = rows[(1 * ch + 2) * hw + 3] == maps[(2 * nn + 1) * hw + 3] ? 0.0 : 1.0;
        for (size_t i = 0; i < maps.size(); ++i) e_p = std::max(e_p, (double)std::fabs(back[i] - maps[i]));
        report("maps_to_rows / rows_to_maps", e_p, 0.0);
    }
    // conv.cu: batch norm + ReLU + 2x2 max-pool with ceil mode on odd maps (3x3 -> 2x2).
    {
        const int ch = 2, nn = 3, s = 3, so = 2, hw = s * s;
        std::vector<float> z(ch * nn * hw), mean = {0.1f, -0.2f}, inv = {1.5f, 0.7f}, gb = {1.2f, 0.8f, -0.1f, 0.3f};
        for (auto& v : z) v = u(gen);
        std::vector<float> out(ch * nn * so * so);
        std::vector<unsigned int> am(out.size());
        bda_launch(1, 32, [&] { bn_relu_pool(z.data(), mean.data(), inv.data(), gb.data(), ch, nn, s, so, out.data(), am.data()); });
        double e_pool = 0;
        for (int c = 0; c < ch; ++c)
            for (int i = 0; i < nn; ++i)
                for (int oy = 0; oy < so; ++oy)
                    for (int ox = 0; ox < so; ++ox) {
                        double best = -1;
                        for (int dy = 0; dy < 2; ++dy)
                            for (int dx = 0; dx < 2; ++dx) {
                                const int y = 2 * oy + dy, x = 2 * ox + dx;
                                if (y >= s || x >= s) continue;
                                const double a = std::max(0.0, (double)gb[c] * inv[c] * (z[(c * nn + i) * hw + y * s + x] - mean[c]) + gb[ch + c]);
                                best = std::max(best, a);
                            }
                        const size_t q = ((size_t)c * nn + i) * so * so + oy * so + ox;
                        const double at = std::max(0.0, (double)gb[c] * inv[c] * (z[am[q]] - mean[c]) + gb[ch + c]);
                        e_pool = std::max({e_pool, std::fabs(out[q] - best), std::fabs(at - best)});
                    }
        report("bn_relu_pool (ceil mode, argmax)", e_pool, 1e-5);
    }

    // Logistic function at the extremes.
    const bool sig_ok = bda_sigmoid(-1e30f) == 0.0f && bda_sigmoid(1e30f) == 1.0f &&
                        std::fabs(bda_sigmoid(0.3f) - sig(0.3)) < 1e-7 && bda_is_finite(1.0f) &&
                        !bda_is_finite(NAN) && !bda_is_finite(INFINITY);
    report("bda_sigmoid, bda_is_finite", sig_ok ? 0.0 : 1.0, 0.0);

    std::printf(failures == 0 ? "all kernel checks passed\n" : "%d kernel checks FAILED\n", failures);
    return failures == 0 ? 0 : 1;
}
