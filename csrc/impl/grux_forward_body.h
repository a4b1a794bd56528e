/* grux_forward_body.h -- the extended GRU forward: layer normalisation and a recurrent
 * (variational dropout) mask, in any combination; included once per (ISA, dtype), after
 * gru_forward_body.h, whose row epilogues it reuses.
 *
 * With m the mask row of sequence b (1 when none) and hm = m * h_{t-1}:
 *   lbr=1:  a_x = W_ih x + b_ih,  a_h = W_hh hm + b_hh        (no layer norm)
 *           a_x = LN(W_ih x; g_ih) + b_ih,  a_h = LN(W_hh hm; g_hh) + b_hh   (layer norm)
 *           r = sigmoid(a_x_r + a_h_r), z = sigmoid(a_x_z + a_h_z), n = tanh(a_x_n + r a_h_n)
 *   lbr=0:  r, z as above (no layer norm), n = tanh(W_in x + b_in + W_hn (r*hm) + b_hn)
 *   h_t = (1-z) n + z h_{t-1}   (the unmasked h: the mask only enters the products)
 * LN(v; g) = g (v - mean v) / sqrt(var v + eps) over the whole 3H row (haste's LayerNormGRU).
 *
 * Structure as the GRU's: X W_ih^T hoisted before the loop, batch tiles over the whole time
 * loop, the recurrent product per tile with gemm_pb. The layer norms run in the epilogue on
 * the raw product rows, in place, leaving g * xhat: the GRU's own epilogue (gru_row_lbr) then
 * adds the biases, so a layer-norm row goes through the very same gate code as a plain one.
 * Reserve: fl_grux_reserve_layout (workspace.h). */

/* v <- g * xhat with xhat = (v - mean v) / sqrt(var v + eps) over the N entries (population
 * variance, two passes: the mean first, so no cancellation); xhat is saved and 1/sqrt(var +
 * eps) returned. One row is always computed by one thread in one order. */
static inline REAL FN(grux_ln_row)(int64_t N, REAL *restrict v, const REAL *restrict g,
                                   REAL *restrict xhat) {
    REAL s = 0, q = 0;
    FL_PRAGMA(omp simd reduction(+ : s))
    for (int64_t j = 0; j < N; j++) s += v[j];
    const REAL mean = s / (REAL)N;
    FL_PRAGMA(omp simd reduction(+ : q))
    for (int64_t j = 0; j < N; j++) q += (v[j] - mean) * (v[j] - mean);
    const REAL rstd = (REAL)(1.0 / sqrt((double)(q / (REAL)N) + FL_LN_EPS));
    FL_SIMD
    for (int64_t j = 0; j < N; j++) {
        const REAL xh = (v[j] - mean) * rstd;
        xhat[j] = xh;
        v[j] = g[j] * xh;
    }
    return rstd;
}

int FN(grux_forward)(const fl_dims *d, int lbr, int ln, const REAL *x, const REAL *w_ih,
                     const REAL *w_hh, const REAL *b_ih, const REAL *b_hh, const REAL *g_ih,
                     const REAL *g_hh, const REAL *mask, const REAL *h0, const int64_t *lengths,
                     REAL *y, REAL *h_n, REAL *reserve, char *ws) {
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 3 * H, TB = T * B;
    const int masked = mask != NULL;
    const fl_grux_forward_ws w = fl_ws_grux_forward(d, sizeof(REAL), lbr, ln, masked);
    const fl_grux_reserve rl = fl_grux_reserve_layout(d, lbr, ln, masked);
    REAL *pih = (REAL *)(ws + w.w_ih_packed), *phh = (REAL *)(ws + w.w_hh_packed);
    REAL *phn = (REAL *)(ws + w.w_hn_packed), *gx = (REAL *)(ws + w.x_proj);
    REAL *hs = (REAL *)(ws + w.h);
    char *tbase = ws + w.threads;
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;

    FN(pack_b_par)(I, G, w_ih, 1, I, pih, w.nt); /* B(k,j) = W_ih[j,k] */
    FN(gemm_par)(TB, G, I, x, I, 1, pih, gx, G, 0, tbase, w.per_thread, w.t_apack, w.nt);
    if (lbr) {
        FN(pack_b)(H, G, w_hh, 1, H, phh, 0, FN(panels)(G));
    } else {
        FN(pack_b)(H, 2 * H, w_hh, 1, H, phh, 0, FN(panels)(2 * H));
        FN(pack_b)(H, H, w_hh + 2 * H * H, 1, H, phn, 0, FN(panels)(H));
    }

    const int64_t ntiles = fl_max64(1, fl_min64(w.nt, fl_cdiv(B, FL_MR)));
    FL_OMP(parallel num_threads((int)ntiles))
    {
        FL_FTZ_BEGIN
        char *mine = tbase + (size_t)FL_THREAD_ID() * w.per_thread;
        REAL *apack = (REAL *)(mine + w.t_apack), *gh = (REAL *)(mine + w.t_gh);
        REAL *hmt = (REAL *)(mine + w.t_hm), *rh = (REAL *)(mine + w.t_rh);
        REAL *row = (REAL *)(mine + w.t_row);
        FL_OMP(for schedule(static, 1))
        for (int64_t tile = 0; tile < ntiles; tile++) {
            const int64_t b0 = tile * B / ntiles, b1 = (tile + 1) * B / ntiles, nb = b1 - b0;
            for (int64_t b = b0; b < b1; b++) {
                if (h0) memcpy(hs + b * H, h0 + b * H, (size_t)H * sizeof(REAL));
                else memset(hs + b * H, 0, (size_t)H * sizeof(REAL));
            }
            /* the recurrent products' operand: hm rows (masked) or h itself */
            const REAL *hm = masked ? hmt : hs + b0 * H;
            for (int64_t t = 0; t < T; t++) {
                if (masked)
                    for (int64_t b = b0; b < b1; b++) {
                        const REAL *mb = mask + b * H, *hb = hs + b * H;
                        REAL *dst = hmt + (b - b0) * H;
                        FL_SIMD
                        for (int64_t j = 0; j < H; j++) dst[j] = mb[j] * hb[j];
                    }
                FN(gemm_pb)(nb, lbr ? G : 2 * H, H, hm, H, 1, phh, H * NR, gh, G, 0, apack);
                if (!lbr) {
                    for (int64_t b = b0; b < b1; b++) {
                        const int64_t r = t * st + b * sb;
                        if (lengths && t >= lengths[b]) /* finished: its x may be padding */
                            memset(rh + (b - b0) * H, 0, (size_t)H * sizeof(REAL));
                        else
                            FN(gru_row_rz)(H, gx + r * G, gh + (b - b0) * G, b_ih, b_hh,
                                           hm + (b - b0) * H, rh + (b - b0) * H);
                    }
                    FN(gemm_pb)(nb, H, H, rh, H, 1, phn, H * NR, gh + 2 * H, G, 0, apack);
                }
                for (int64_t b = b0; b < b1; b++) {
                    const int64_t r = t * st + b * sb;
                    if (reserve) {
                        memcpy(reserve + rl.hprev + r * H, hs + b * H, (size_t)H * sizeof(REAL));
                        if (masked)
                            memcpy(reserve + rl.hm + r * H, hm + (b - b0) * H,
                                   (size_t)H * sizeof(REAL));
                        if (!lbr)
                            memcpy(reserve + rl.rhm + r * H, rh + (b - b0) * H,
                                   (size_t)H * sizeof(REAL));
                    }
                    if (lengths && t >= lengths[b]) {
                        memset(y + r * H, 0, (size_t)H * sizeof(REAL));
                        continue;
                    }
                    REAL *ghrow = gh + (b - b0) * G, *gxrow = gx + r * G;
                    REAL *a4 = reserve ? reserve + rl.act + r * 4 * H : row;
                    if (!lbr) {
                        FN(gru_row_n)(H, gxrow, ghrow, b_ih, b_hh, hs + b * H, a4, y + r * H);
                        continue;
                    }
                    if (ln) {
                        REAL *xi = reserve ? reserve + rl.xhat_ih + r * G : row + 4 * H;
                        REAL *xh = reserve ? reserve + rl.xhat_hh + r * G : row + 7 * H;
                        REAL s_ih = FN(grux_ln_row)(G, gxrow, g_ih, xi);
                        REAL s_hh = FN(grux_ln_row)(G, ghrow, g_hh, xh);
                        if (reserve) {
                            reserve[rl.rstd + 2 * r] = s_ih;
                            reserve[rl.rstd + 2 * r + 1] = s_hh;
                        }
                    }
                    FN(gru_row_lbr)(H, gxrow, ghrow, b_ih, b_hh, hs + b * H, a4, a4 + 3 * H,
                                    y + r * H);
                }
            }
        }
        FL_FTZ_END
    }
    if (h_n) memcpy(h_n, hs, (size_t)(B * H) * sizeof(REAL));
    return FL_OK;
}
