/* layer_norm_body.h -- the layer-norm pieces of the extended LSTM (lstmx_*_body.h); included
 * once per (ISA, dtype).
 *
 *   LN(v; g) = g * vhat,   vhat = (v - mean(v)) * rs,   rs = 1 / sqrt(var(v) + FL_LN_EPS)
 *
 * over one row of n values (population variance). Each row is normalised by the one thread
 * that owns it, in a fixed order, so results do not depend on the thread count. The mean and
 * variance are summed in double for both dtypes (a float32 sum over 4H values would lose
 * ~sqrt(4H) ulps of the mean, and it is per row, not per element: cheap). */


#define FL_LN_EPS 1e-5

/* Row sums in double with FL_LN_LANES independent partial sums (lane k takes the terms
 * j = k mod FL_LN_LANES, the lanes are added in order at the end): the order depends on n only,
 * never on where the row lies in memory, and the lanes become one vector add per step. */
#define FL_LN_LANES 8
#define FL_LN_ROW_SUM(n, acc_expr, out)                                                       \
    do {                                                                                       \
        double lane_[FL_LN_LANES] = {0};                                                       \
        int64_t j = 0;                                                                         \
        for (; j + FL_LN_LANES <= (n); j += FL_LN_LANES)                                       \
            for (int64_t k_ = 0; k_ < FL_LN_LANES; k_++) {                                     \
                const int64_t jj = j + k_;                                                     \
                lane_[k_] += (acc_expr);                                                       \
            }                                                                                  \
        double s_ = 0;                                                                         \
        for (int64_t k_ = 0; k_ < FL_LN_LANES; k_++) s_ += lane_[k_];                          \
        for (; j < (n); j++) {                                                                 \
            const int64_t jj = j;                                                              \
            s_ += (acc_expr);                                                                  \
        }                                                                                      \
        (out) = s_;                                                                            \
    } while (0)

/* vhat = (v - mean) * rs into out (may be v); returns rs. */
static inline REAL FN(ln_normalize)(int64_t n, const REAL *v, REAL *out) {
    double sum, sq;
    FL_LN_ROW_SUM(n, (double)v[jj], sum);
    const double mean = sum / (double)n;
    FL_LN_ROW_SUM(n, ((double)v[jj] - mean) * ((double)v[jj] - mean), sq);
    const REAL rs = (REAL)(1.0 / sqrt(sq / (double)n + FL_LN_EPS)), mu = (REAL)mean;
    FL_SIMD
    for (int64_t j = 0; j < n; j++) out[j] = (v[j] - mu) * rs;
    return rs;
}

/* Backward of vhat -> g * vhat for one row: given dout = dL/d(g*vhat), the gradient with
 * respect to v is (with dn = dout*g, the gradient reaching vhat)
 *     dv = rs * (dn - mean(dn) - vhat * mean(dn * vhat))
 * (the mean and the variance depend on every v; these are the two terms they add).
 * dv may be dout (each element is read before it is written). */
static inline void FN(ln_backward)(int64_t n, const REAL *dout, const REAL *gain,
                                   const REAL *vhat, REAL rs, REAL *dv) {
    double s1, s2;
    FL_LN_ROW_SUM(n, (double)dout[jj] * (double)gain[jj], s1);
    FL_LN_ROW_SUM(n, (double)dout[jj] * (double)gain[jj] * (double)vhat[jj], s2);
    const REAL m1 = (REAL)(s1 / (double)n), m2 = (REAL)(s2 / (double)n);
    FL_SIMD
    for (int64_t j = 0; j < n; j++) dv[j] = rs * (dout[j] * gain[j] - m1 - vhat[j] * m2);
}

/* Column sums over `rows` rows: dot[j] = sum_r a[r,j] * v[r,j] (when dot is not NULL) and
 * sum[j] = sum_r a[r,j] (when sum is not NULL): the gradients of a gain and a bias. Threads
 * own blocks of 64 columns and sum every column over the rows in order, so each result has
 * one owner and the same order for any thread count. Call outside any parallel region. */
static void FN(colsum_par)(int64_t rows, int64_t n, const REAL *a, int64_t lda, const REAL *v,
                           int64_t ldv, REAL *dot, REAL *sum, int64_t nt) {
    const int64_t nblk = fl_cdiv(n, 64);
    if (dot) memset(dot, 0, (size_t)n * sizeof(REAL));
    if (sum) memset(sum, 0, (size_t)n * sizeof(REAL));
    nt = fl_max64(1, fl_min64(nt, fl_min64(nblk, rows * n / (1 << 16))));
    FL_OMP(parallel num_threads((int)nt))
    {
        FL_FTZ_BEGIN
        FL_OMP(for schedule(static))
        for (int64_t blk = 0; blk < nblk; blk++) {
            const int64_t j0 = blk * 64, j1 = fl_min64(n, j0 + 64);
            for (int64_t r = 0; r < rows; r++) {
                const REAL *ar = a + r * lda;
                if (dot) {
                    const REAL *vr = v + r * ldv;
                    for (int64_t j = j0; j < j1; j++) dot[j] += ar[j] * vr[j];
                }
                if (sum)
                    for (int64_t j = j0; j < j1; j++) sum[j] += ar[j];
            }
        }
        FL_FTZ_END
    }
}
