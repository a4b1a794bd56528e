/* gru_backward_body.h -- GRU backpropagation through time, both variants; included once per
 * (ISA, dtype). Two phases as in the LSTM backward.
 *
 * With h' = (1-z)*n + z*h and dh' the incoming gradient:
 *   dn = dh' (1-z),  dz = dh' (h - n),  dh (direct) = dh' z,  d(pre_n) = dn (1 - n^2)
 *   d(pre_z) = dz z(1-z),  d(pre_r) = dr r(1-r)
 * linear_before_reset=1 (n = tanh(xn + r*hn), hn = W_hn h + b_hn):
 *   dr = d(pre_n) hn; the gradient reaching hn (so W_hn, b_hn and h) is r d(pre_n), the one
 *   reaching W_in x + b_in is d(pre_n): two gate-gradient buffers, dGx and dGh.
 * linear_before_reset=0 (n = tanh(xn + W_hn (r*h) + b_hn)):
 *   d(r*h) = d(pre_n) W_hn (a product inside the step), dr = d(r*h) h, dh += d(r*h) r;
 *   W_hn's gradient is d(pre_n)^T (r*h): one buffer, and r*h saved by the forward. */

static inline void FN(gru_grad_row_lbr)(int64_t H, const REAL *restrict a,
                                        const REAL *restrict hp, const REAL *restrict dy,
                                        REAL *restrict dh, REAL *restrict dgx,
                                        REAL *restrict dgh) {
    FL_SIMD
    for (int64_t j = 0; j < H; j++) {
        REAL r = a[j], z = a[H + j], n = a[2 * H + j], hn = a[3 * H + j];
        REAL dht = dh[j] + dy[j];
        REAL dpn = dht * (1 - z) * (1 - n * n);
        REAL dpz = dht * (hp[j] - n) * z * (1 - z);
        REAL dpr = dpn * hn * r * (1 - r);
        dgx[j] = dpr; dgx[H + j] = dpz; dgx[2 * H + j] = dpn;
        dgh[j] = dpr; dgh[H + j] = dpz; dgh[2 * H + j] = dpn * r;
        dh[j] = dht * z;
    }
}

/* lbr=0, first half: d(pre_n), d(pre_z), and the direct part of dh. */
static inline void FN(gru_grad_row_nz)(int64_t H, const REAL *restrict a,
                                       const REAL *restrict hp, const REAL *restrict dy,
                                       REAL *restrict dh, REAL *restrict dg) {
    FL_SIMD
    for (int64_t j = 0; j < H; j++) {
        REAL z = a[H + j], n = a[2 * H + j];
        REAL dht = dh[j] + dy[j];
        dg[H + j] = dht * (hp[j] - n) * z * (1 - z);
        dg[2 * H + j] = dht * (1 - z) * (1 - n * n);
        dh[j] = dht * z;
    }
}

/* lbr=0, second half: with drh = d(r*h): d(pre_r) and dh += drh * r. */
static inline void FN(gru_grad_row_r)(int64_t H, const REAL *restrict a,
                                      const REAL *restrict hp, const REAL *restrict drh,
                                      REAL *restrict dh, REAL *restrict dg) {
    FL_SIMD
    for (int64_t j = 0; j < H; j++) {
        REAL r = a[j];
        dg[j] = drh[j] * hp[j] * r * (1 - r);
        dh[j] += drh[j] * r;
    }
}

int FN(gru_backward)(const fl_dims *d, int lbr, const REAL *x, const REAL *w_ih,
                     const REAL *w_hh, const REAL *h0, const int64_t *lengths,
                     const REAL *reserve, const REAL *dy, const REAL *dh_n, REAL *dx,
                     REAL *dw_ih, REAL *dw_hh, REAL *db_ih, REAL *db_hh, REAL *dh0, char *ws) {
    (void)h0;
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 3 * H, TB = T * B;
    const fl_gru_backward_ws w = fl_ws_gru_backward(d, sizeof(REAL), lbr);
    const REAL *act = reserve, *hprev = reserve + TB * 4 * H, *rhsave = reserve + TB * 5 * H;
    REAL *dgx = (REAL *)(ws + w.dgates_x), *dgh = lbr ? (REAL *)(ws + w.dgates_h) : dgx;
    REAL *phh = (REAL *)(ws + w.w_hh_packed), *pih = (REAL *)(ws + w.w_ih_packed);
    REAL *pbig = (REAL *)(ws + w.seq_packed), *dh = (REAL *)(ws + w.dh);
    REAL *zero = (REAL *)(ws + w.zeros);
    char *tbase = ws + w.threads;
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;

    memset(zero, 0, (size_t)H * sizeof(REAL));
    FN(pack_b)(G, H, w_hh, H, 1, phh, 0, FN(panels)(H)); /* B(k,j) = W_hh[k,j] */
    FN(pack_b)(G, I, w_ih, I, 1, pih, 0, FN(panels)(I)); /* B(k,j) = W_ih[k,j] */

    const int64_t ntiles = fl_max64(1, fl_min64(w.nt, fl_cdiv(B, FL_MR)));
    FL_OMP(parallel num_threads((int)ntiles))
    {
        FL_FTZ_BEGIN
        char *mine = tbase + (size_t)FL_THREAD_ID() * w.per_thread;
        REAL *apack = (REAL *)(mine + w.t_apack), *drh = (REAL *)(mine + w.t_drh);
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
                    if (lengths && t >= lengths[b]) {
                        memset(dgx + r * G, 0, (size_t)G * sizeof(REAL));
                        if (lbr) memset(dgh + r * G, 0, (size_t)G * sizeof(REAL));
                        continue;
                    }
                    const REAL *dyr = dy ? dy + r * H : zero;
                    if (lbr)
                        FN(gru_grad_row_lbr)(H, act + r * 4 * H, hprev + r * H, dyr, dh + b * H,
                                             dgx + r * G, dgh + r * G);
                    else
                        FN(gru_grad_row_nz)(H, act + r * 4 * H, hprev + r * H, dyr, dh + b * H,
                                            dgx + r * G);
                }
                if (!lbr) {
                    /* d(r*h) = d(pre_n) W_hn: rows 2H.. of W_hh, a K-slice of the packing */
                    FN(gemm_pb)(nb, H, H, dgx + rt * G + 2 * H, sb * G, 1, phh + 2 * H * NR,
                                G * NR, drh, H, 0, apack);
                    for (int64_t b = b0; b < b1; b++) {
                        const int64_t r = t * st + b * sb;
                        if (lengths && t >= lengths[b]) continue;
                        FN(gru_grad_row_r)(H, act + r * 4 * H, hprev + r * H, drh + (b - b0) * H,
                                           dh + b * H, dgx + r * G);
                    }
                    /* dh += [d(pre_r), d(pre_z)] W_h{r,z}; finished rows add exact zeros */
                    FN(gemm_pb)(nb, H, 2 * H, dgx + rt * G, sb * G, 1, phh, G * NR, dh + b0 * H, H,
                                1, apack);
                } else {
                    FN(gemm_pb)(nb, H, G, dgh + rt * G, sb * G, 1, phh, G * NR, dh + b0 * H, H, 1,
                                apack);
                }
                /* dx_t = dGx_t W_ih while dGx_t is in cache */
                FN(gemm_pb)(nb, I, G, dgx + rt * G, sb * G, 1, pih, G * NR, dx + rt * I, sb * I, 0,
                            apack);
            }
        }
        FL_FTZ_END
    }
    memcpy(dh0, dh, (size_t)(B * H) * sizeof(REAL));

    /* [dW_ih | db_ih] = dGx^T [X | 1]; [dW_hh | db_hh] = dGh^T [H_prev | 1]: the ones column
     * sums the bias gradient in the same pass over the gate gradients */
    REAL *cat = (REAL *)(ws + w.dw_cat);
    FN(pack_seq_par)(T, B, st, sb, lengths, I, x, pbig, w.nt);
    FN(pack_ones_column)(TB, I, pbig);
    REAL *ct = (REAL *)(ws + w.dw_cat_t);
    FN(gemm_tn_par)(G, I + 1, TB, dgx, G, pbig, cat, I + 1, ct, tbase, w.per_thread, w.t_apack,
                    w.nt);
    for (int64_t i = 0; i < G; i++) {
        memcpy(dw_ih + i * I, cat + i * (I + 1), (size_t)I * sizeof(REAL));
        db_ih[i] = cat[i * (I + 1) + I];
    }
    FN(pack_b_par)(TB, H, hprev, H, 1, pbig, w.nt);
    if (lbr) {
        FN(pack_ones_column)(TB, H, pbig);
        FN(gemm_tn_par)(G, H + 1, TB, dgh, G, pbig, cat, H + 1, ct, tbase, w.per_thread, w.t_apack,
                        w.nt);
        for (int64_t i = 0; i < G; i++) {
            memcpy(dw_hh + i * H, cat + i * (H + 1), (size_t)H * sizeof(REAL));
            db_hh[i] = cat[i * (H + 1) + H];
        }
    } else { /* the same gate gradients reach b_hh as b_ih */
        FN(gemm_tn_par)(2 * H, H, TB, dgx, G, pbig, dw_hh, H, ct, tbase, w.per_thread, w.t_apack,
                        w.nt);
        FN(pack_b_par)(TB, H, rhsave, H, 1, pbig, w.nt);
        FN(gemm_tn_par)(H, H, TB, dgx + 2 * H, G, pbig, dw_hh + 2 * H * H, H, ct, tbase,
                        w.per_thread, w.t_apack, w.nt);
        memcpy(db_hh, db_ih, (size_t)G * sizeof(REAL));
    }
    return FL_OK;
}
