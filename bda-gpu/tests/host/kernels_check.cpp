// Checks the arithmetic of the CUDA kernels on the host (see cuda_shim.h): per-row results
// against central finite differences of softmax/cross-entropy in double, element-wise kernels
// against their definitions. Prints one line per check; exits non-zero on failure.
#include "cuda_shim.h"
#include "softmax.cu"
#include "vector.cu"

#include <algorithm>
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
    // gx_scale = 0: gx is not touched (a dummy pointer may be passed).
    bda_launch(grid, 128, [&] {
        hvp_rows(z.data(), lab.data(), x.data(), n_tr, row0, row1, c, a_tr, a_val, hv.data(), nullptr, 0.0f);
    });
    report("hvp_rows: gx_scale = 0 never writes gx", 0.0, 0.0);

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

    // Reductions (one thread: loop and output only).
    double dot = 0, sum = 0, want_dot = 0, want_sum = 0;
    bda_launch(1, 1, [&] { reduce_dot(y.data(), a.data(), n, &dot); });
    bda_launch(1, 1, [&] { reduce_sum(y.data(), n, &sum); });
    for (int i = 0; i < n; ++i) {
        want_dot += (double)y[i] * a[i];
        want_sum += y[i];
    }
    report("reduce_dot, reduce_sum", std::max(std::fabs(dot - want_dot), std::fabs(sum - want_sum)), 1e-12);
    unsigned int flag = 7;
    bda_launch(1, 1, [&] { any_nonfinite(y.data(), n, &flag); });
    const unsigned int finite_flag = flag;
    y[n - 1] = NAN;
    bda_launch(1, 1, [&] { any_nonfinite(y.data(), n, &flag); });
    report("any_nonfinite", (finite_flag == 0u && flag == 1u) ? 0.0 : 1.0, 0.0);

    // Logistic function at the extremes.
    const bool sig_ok = bda_sigmoid(-1e30f) == 0.0f && bda_sigmoid(1e30f) == 1.0f &&
                        std::fabs(bda_sigmoid(0.3f) - sig(0.3)) < 1e-7 && bda_is_finite(1.0f) &&
                        !bda_is_finite(NAN) && !bda_is_finite(INFINITY);
    report("bda_sigmoid, bda_is_finite", sig_ok ? 0.0 : 1.0, 0.0);

    std::printf(failures == 0 ? "all kernel checks passed\n" : "%d kernel checks FAILED\n", failures);
    return failures == 0 ? 0 : 1;
}
