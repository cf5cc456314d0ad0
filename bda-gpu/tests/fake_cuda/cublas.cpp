// A CPU stand-in for libcublas: handles, and column-major SGEMM with BLAS semantics (β = 0
// does not read C), checking every operand's extent against the fake device allocations.
#include <cstdlib>

#include "common.h"

enum : int { SUCCESS = 0, INVALID_VALUE = 7 };

static bool extent_ok(const char* what, const float* p, long rows, long cols, long ld) {
    if (rows == 0 || cols == 0) return true;
    return fake::check_range(what, p, (size_t)((cols - 1) * ld + rows) * sizeof(float));
}

extern "C" {
int cublasCreate_v2(void** h) { *h = std::malloc(1); return SUCCESS; }
int cublasDestroy_v2(void* h) { std::free(h); return SUCCESS; }
int cublasSetStream_v2(void*, void*) { return SUCCESS; }
int cublasSgemm_v2(void*, int ta, int tb, int m, int n, int k, const float* alpha, const float* a, int lda,
                   const float* b, int ldb, const float* beta, float* c, int ldc) {
    // CUBLAS_OP_N = 0, CUBLAS_OP_T = 1; op(A) is m×k, op(B) k×n, C m×n.
    const long ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    if (m < 0 || n < 0 || k < 0 || lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1))
        return INVALID_VALUE;
    if (!extent_ok("sgemm A", a, ar, ac, lda) || !extent_ok("sgemm B", b, br, bc, ldb) ||
        !extent_ok("sgemm C", c, m, n, ldc))
        return INVALID_VALUE;
    // Like cuBLAS, the order of the additions depends on the shape: a long, thin product
    // (k ≥ 1024, at most 4096 outputs) is split along k into two halves rounded to f32 and
    // added ("split-K"), so that code whose results must not depend on how many rows a rank
    // multiplies at once is caught here.
    const bool split_k = k >= 1024 && m * n <= 4096;
    for (long j = 0; j < n; ++j) {
        for (long i = 0; i < m; ++i) {
            auto dot = [&](long l0, long l1) {
                double s = 0;
                for (long l = l0; l < l1; ++l) {
                    const double av = ta ? a[l + i * lda] : a[i + l * lda];
                    const double bv = tb ? b[j + l * ldb] : b[l + j * ldb];
                    s += av * bv;
                }
                return s;
            };
            const double s = split_k ? (double)((float)dot(0, k / 2) + (float)dot(k / 2, k)) : dot(0, k);
            float& cij = c[i + j * ldc];
            cij = (float)(*alpha * s + (*beta == 0.0f ? 0.0 : (double)*beta * cij));
        }
    }
    return SUCCESS;
}
}
