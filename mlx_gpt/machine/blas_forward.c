/* mlx-gpt's BLAS forwarder (Linux): gives MLX the OpenBLAS of the scipy-openblas32 wheel.
 *
 * MLX's CPU backend calls cblas_sgemm, cblas_dgemm and cblas_cgemm by name. The
 * scipy-openblas32 wheel (the OpenBLAS inside NumPy's and SciPy's wheels: kernels
 * chosen at run time for the CPU it finds, no Fortran runtime needed) exports them with
 * a `scipy_` prefix, so the dynamic linker would never hand them to MLX. This library
 * exports the plain names and calls the prefixed ones. mlx_gpt/machine/linux_blas.py compiles
 * it on first import, links it to the wheel's library and loads it into the global
 * symbol scope before mlx.core, where it wins the lookup over MLX's reference BLAS.
 *
 * The prototypes are written out rather than taken from the wheel's cblas.h: they are
 * the standard CBLAS ABI (enums passed as int) with scipy-openblas32's 32-bit integers.
 */

typedef int blasint; /* scipy-openblas32 is the 32-bit-integer (LP64) build */

void scipy_cblas_sgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k,
                       float alpha, const float *a, blasint lda, const float *b, blasint ldb,
                       float beta, float *c, blasint ldc);
void scipy_cblas_dgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k,
                       double alpha, const double *a, blasint lda, const double *b,
                       blasint ldb, double beta, double *c, blasint ldc);
void scipy_cblas_cgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k,
                       const void *alpha, const void *a, blasint lda, const void *b,
                       blasint ldb, const void *beta, void *c, blasint ldc);

void cblas_sgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k,
                 float alpha, const float *a, blasint lda, const float *b, blasint ldb,
                 float beta, float *c, blasint ldc) {
  scipy_cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_dgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k,
                 double alpha, const double *a, blasint lda, const double *b, blasint ldb,
                 double beta, double *c, blasint ldc) {
  scipy_cblas_dgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_cgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k,
                 const void *alpha, const void *a, blasint lda, const void *b, blasint ldb,
                 const void *beta, void *c, blasint ldc) {
  scipy_cblas_cgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
