/* grux_backward_body.h -- backpropagation through time of the extended GRU (layer norm,
 * recurrent mask); included once per (ISA, dtype), after gru_backward_body.h, whose row
 * gradients it reuses (they see only the gates and h_{t-1}, which the extensions leave as
 * they are).
 *
 * Phase 1, sequential in t, parallel over batch tiles (each row has one owner): the
 * pre-activation gradients dA of every row (gru_grad_row_lbr / _nz give d a_x and d a_h),
 * then, with layer norm, their image through the layer norm's backward, dG; then
 * d(hm) = dG_h W_hh and dh_{t-1} = dh' z + m * d(hm): the mask multiplies the gradient of the
 * recurrent product exactly as it multiplied h going in; and dx_t = dG_x W_ih while dG_x is in
 * cache (as the GRU does; measured no slower than one product over all rows after the loop).
 *   layer norm backward (v -> xhat -> g xhat + b, N = 3H, population variance):
 *     e = g * dA,  dv = rstd (e - mean(e) - xhat mean(e xhat)),
 *     d g = sum over rows of dA * xhat,  d b = sum over rows of dA.
 *   lbr=0: d(r*hm) = dA_n W_hn; dA_r = d(r*hm) hm r(1-r); d(hm) += d(r*hm) r + [dA_r dA_z] W_h{r,z}.
 * Phase 2, after the loop, over all T*B rows at once: dW_ih = dG_x^T X and dW_hh = dG_h^T Hm
 * (gemm_tn_par: each thread owns whole panels of output rows), and the bias and gain
 * gradients as column sums in a fixed row order (threads own columns). Every element has one
 * owner and one summation order (a row's dx and dh are the same whichever tile holds it), so
 * the results are bitwise the same for any thread count. */

/* dv = rstd * (e - mean(e) - xhat * mean(e * xhat)) with e = g * da, over N entries. */
static inline void FN(grux_ln_back_row)(int64_t N, const REAL *restrict da,
                                        const REAL *restrict xhat, const REAL *restrict g,
                                        REAL rstd, REAL *restrict dv) {
    REAL s1 = 0, s2 = 0;
    FL_PRAGMA(omp simd reduction(+ : s1, s2))
    for (int64_t j = 0; j < N; j++) {
        s1 += g[j] * da[j];
        s2 += g[j] * da[j] * xhat[j];
    }
    const REAL m1 = s1 / (REAL)N, m2 = s2 / (REAL)N;
    FL_SIMD
    for (int64_t j = 0; j < N; j++) dv[j] = rstd * (g[j] * da[j] - m1 - xhat[j] * m2);
}

/* sum_a[j] = sum of A[r*N + j] and, when W is given, sum_aw[j] = sum of A[r*N + j] W[r*N + j],
 * over the rows r = t*st + b*sb of every step each sequence ran, in the order t, then b: the
 * same order for any thread count (threads own blocks of columns). Rows past a sequence's
 * end are skipped, not added as zeros: their saved values were never written. */
static void FN(grux_colsum)(int64_t T, int64_t B, int64_t st, int64_t sb,
                            const int64_t *lengths, int64_t N, const REAL *A, const REAL *W,
                            REAL *sum_a, REAL *sum_aw, int64_t nt) {
    enum { CHUNK = 64 };
    const int64_t nchunks = fl_cdiv(N, CHUNK);
    nt = fl_max64(1, fl_min64(nt, fl_min64(nchunks, T * B * N / (1 << 16))));
    FL_OMP(parallel for num_threads((int)nt) schedule(static))
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t j0 = c * CHUNK, nj = fl_min64(N, j0 + CHUNK) - j0;
        REAL sa[CHUNK], saw[CHUNK];
        for (int64_t j = 0; j < nj; j++) sa[j] = saw[j] = 0;
        for (int64_t t = 0; t < T; t++)
            for (int64_t b = 0; b < B; b++) {
                if (lengths && t >= lengths[b]) continue;
                const int64_t r = t * st + b * sb;
                const REAL *a = A + r * N + j0;
                for (int64_t j = 0; j < nj; j++) sa[j] += a[j];
                if (W) {
                    const REAL *wr = W + r * N + j0;
                    for (int64_t j = 0; j < nj; j++) saw[j] += a[j] * wr[j];
                }
            }
        for (int64_t j = 0; j < nj; j++) sum_a[j0 + j] = sa[j];
        if (W)
            for (int64_t j = 0; j < nj; j++) sum_aw[j0 + j] = saw[j];
    }
}

int FN(grux_backward)(const fl_dims *d, int lbr, int ln, const REAL *x, const REAL *w_ih,
                      const REAL *w_hh, const REAL *g_ih, const REAL *g_hh, const REAL *mask,
                      const int64_t *lengths, const REAL *reserve, const REAL *dy,
                      const REAL *dh_n, REAL *dx, REAL *dw_ih, REAL *dw_hh, REAL *db_ih,
                      REAL *db_hh, REAL *dg_ih, REAL *dg_hh, REAL *dh0, char *ws) {
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 3 * H, TB = T * B;
    const int masked = mask != NULL;
    const fl_grux_backward_ws w = fl_ws_grux_backward(d, sizeof(REAL), lbr, ln, masked);
    const fl_grux_reserve rl = fl_grux_reserve_layout(d, lbr, ln, masked);
    const REAL *act = reserve + rl.act, *hprev = reserve + rl.hprev, *hmsave = reserve + rl.hm;
    REAL *dgx = (REAL *)(ws + w.dgates_x), *dgh = lbr ? (REAL *)(ws + w.dgates_h) : dgx;
    /* the pre-activation gradients: their own buffers under layer norm, else they are dG */
    REAL *dax = ln ? (REAL *)(ws + w.dpre_x) : dgx, *dah = ln ? (REAL *)(ws + w.dpre_h) : dgh;
    REAL *phh = (REAL *)(ws + w.w_hh_packed), *pih = (REAL *)(ws + w.w_ih_packed);
    REAL *pbig = (REAL *)(ws + w.seq_packed), *ct = (REAL *)(ws + w.ct);
    REAL *dh = (REAL *)(ws + w.dh), *zero = (REAL *)(ws + w.zeros);
    char *tbase = ws + w.threads;
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;

    memset(zero, 0, (size_t)H * sizeof(REAL));
    FN(pack_b)(G, H, w_hh, H, 1, phh, 0, FN(panels)(H)); /* B(k,j) = W_hh[k,j] */
    FN(pack_b)(G, I, w_ih, I, 1, pih, 0, FN(panels)(I));  /* B(k,j) = W_ih[k,j] */

    const int64_t ntiles = fl_max64(1, fl_min64(w.nt, fl_cdiv(B, FL_MR)));
    FL_OMP(parallel num_threads((int)ntiles))
    {
        FL_FTZ_BEGIN
        char *mine = tbase + (size_t)FL_THREAD_ID() * w.per_thread;
        REAL *apack = (REAL *)(mine + w.t_apack), *dhm = (REAL *)(mine + w.t_dhm);
        REAL *drh = (REAL *)(mine + w.t_drh);
        FL_OMP(for schedule(static, 1))
        for (int64_t tile = 0; tile < ntiles; tile++) {
            const int64_t b0 = tile * B / ntiles, b1 = (tile + 1) * B / ntiles, nb = b1 - b0;
            for (int64_t b = b0; b < b1; b++) {
                if (dh_n) memcpy(dh + b * H, dh_n + b * H, (size_t)H * sizeof(REAL));
                else memset(dh + b * H, 0, (size_t)H * sizeof(REAL));
            }
            for (int64_t t = T - 1; t >= 0; t--) {
                const int64_t rt = t * st + b0 * sb;
                for (int64_t b = b0; b < b1; b++) {
                    const int64_t r = t * st + b * sb;
                    if (lengths && t >= lengths[b]) { /* exact zeros: they enter the GEMMs */
                        memset(dgx + r * G, 0, (size_t)G * sizeof(REAL));
                        if (lbr) memset(dgh + r * G, 0, (size_t)G * sizeof(REAL));
                        continue;
                    }
                    const REAL *dyr = dy ? dy + r * H : zero;
                    if (!lbr) {
                        FN(gru_grad_row_nz)(H, act + r * 4 * H, hprev + r * H, dyr, dh + b * H,
                                            dgx + r * G);
                        continue;
                    }
                    FN(gru_grad_row_lbr)(H, act + r * 4 * H, hprev + r * H, dyr, dh + b * H,
                                         dax + r * G, dah + r * G);
                    if (ln) {
                        const REAL *rs = reserve + rl.rstd + 2 * r;
                        FN(grux_ln_back_row)(G, dax + r * G, reserve + rl.xhat_ih + r * G, g_ih,
                                             rs[0], dgx + r * G);
                        FN(grux_ln_back_row)(G, dah + r * G, reserve + rl.xhat_hh + r * G, g_hh,
                                             rs[1], dgh + r * G);
                    }
                }
                if (lbr) {
                    FN(gemm_pb)(nb, H, G, dgh + rt * G, sb * G, 1, phh, G * NR, dhm, H, 0, apack);
                } else {
                    /* d(r*hm) = dA_n W_hn: rows 2H.. of W_hh, a K-slice of the packing */
                    FN(gemm_pb)(nb, H, H, dgx + rt * G + 2 * H, sb * G, 1, phh + 2 * H * NR,
                                G * NR, drh, H, 0, apack);
                    for (int64_t b = b0; b < b1; b++) {
                        const int64_t r = t * st + b * sb;
                        memset(dhm + (b - b0) * H, 0, (size_t)H * sizeof(REAL));
                        if (lengths && t >= lengths[b]) continue;
                        /* dA_r into dgx, and d(hm) = d(r*hm) * r */
                        FN(gru_grad_row_r)(H, act + r * 4 * H, hmsave + r * H,
                                           drh + (b - b0) * H, dhm + (b - b0) * H, dgx + r * G);
                    }
                    FN(gemm_pb)(nb, H, 2 * H, dgx + rt * G, sb * G, 1, phh, G * NR, dhm, H, 1,
                                apack);
                }
                /* dx_t = dG_x,t W_ih while dG_x,t is in cache */
                FN(gemm_pb)(nb, I, G, dgx + rt * G, sb * G, 1, pih, G * NR, dx + rt * I, sb * I, 0,
                            apack);
                for (int64_t b = b0; b < b1; b++) {
                    if (lengths && t >= lengths[b]) continue; /* its dh passes through */
                    const REAL *src = dhm + (b - b0) * H;
                    REAL *dst = dh + b * H;
                    if (masked) {
                        const REAL *mb = mask + b * H;
                        FL_SIMD
                        for (int64_t j = 0; j < H; j++) dst[j] += mb[j] * src[j];
                    } else {
                        FL_SIMD
                        for (int64_t j = 0; j < H; j++) dst[j] += src[j];
                    }
                }
            }
        }
        FL_FTZ_END
    }
    memcpy(dh0, dh, (size_t)(B * H) * sizeof(REAL));

    /* dW_ih = dG_x^T X (x rows past a sequence's end packed as zeros: they may be padding) */
    FN(pack_seq_par)(T, B, st, sb, lengths, I, x, pbig, w.nt);
    FN(gemm_tn_par)(G, I, TB, dgx, G, pbig, dw_ih, I, ct, tbase, w.per_thread, w.t_apack, w.nt);
    FN(pack_b_par)(TB, H, hmsave, H, 1, pbig, w.nt);
    if (lbr) { /* dW_hh = dG_h^T Hm */
        FN(gemm_tn_par)(G, H, TB, dgh, G, pbig, dw_hh, H, ct, tbase, w.per_thread, w.t_apack,
                        w.nt);
    } else { /* dW_h{r,z} = dA_{r,z}^T Hm, dW_hn = dA_n^T (R * Hm) */
        FN(gemm_tn_par)(2 * H, H, TB, dgx, G, pbig, dw_hh, H, ct, tbase, w.per_thread,
                        w.t_apack, w.nt);
        FN(pack_b_par)(TB, H, reserve + rl.rhm, H, 1, pbig, w.nt);
        FN(gemm_tn_par)(H, H, TB, dgx + 2 * H, G, pbig, dw_hh + 2 * H * H, H, ct, tbase,
                        w.per_thread, w.t_apack, w.nt);
    }
    /* d b = colsum(dA) and, with layer norm, d g = colsum(dA * xhat), in one pass each */
    FN(grux_colsum)(T, B, st, sb, lengths, G, dax, ln ? reserve + rl.xhat_ih : NULL, db_ih,
                    dg_ih, w.nt);
    if (lbr)
        FN(grux_colsum)(T, B, st, sb, lengths, G, dah, ln ? reserve + rl.xhat_hh : NULL, db_hh,
                        dg_hh, w.nt);
    else
        memcpy(db_hh, db_ih, (size_t)G * sizeof(REAL)); /* the same gradients reach b_hh */
    return FL_OK;
}
