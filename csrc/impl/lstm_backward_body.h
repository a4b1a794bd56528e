/* lstm_backward_body.h -- LSTM backpropagation through time; included once per (ISA, dtype).
 *
 * Phase 1, sequential in t, parallel over batch tiles: the gate gradients dG_t of every row,
 * then [dh_{t-1} | dx_t] = dG_t [W_hh | W_ih] as one product while dG_t is in cache (a small
 * batch splits the hidden units over the threads instead, lstm_backward_split). Phase 2,
 * over all T*B rows at once: [dW_ih | dW_hh | db] = dG^T [X | H_prev | 1] as one GEMM (dG is
 * read once; the ones column that carried the bias forward sums the bias gradient).
 * Each output element has one owner and a fixed summation order, so no atomics and no
 * per-thread copies. */

/* Gate gradients of one row at one step. With c = f*c_prev + i*g and h = o*tanh(c):
 *   dc_total = dc + dh * o * (1 - tanh(c)^2)
 *   d(pre_i) = dc_total * g * i(1-i)         d(pre_f) = dc_total * c_prev * f(1-f)
 *   d(pre_g) = dc_total * i * (1-g^2)        d(pre_o) = dh * tanh(c) * o(1-o)
 *   dc_prev  = dc_total * f
 * dh already holds the gradient arriving from step t+1 (or h_n); dy is added here.
 * n units from the first one each pointer points at; gate q of unit j at g[q*H + j] (and
 * dg[q*H + j]). */
static inline void FN(lstm_grad_row)(int64_t n, int64_t H, const REAL *restrict g,
                                     const REAL *restrict cn,
                                     const REAL *restrict cp, const REAL *restrict dy,
                                     const REAL *restrict dh, REAL *restrict dc,
                                     REAL *restrict dg) {
    int64_t v = 0;
#ifdef FL_REAL_IS_FLOAT
    /* float32 on whole vectors (vec_math_body.h: the tanh without per-lane masking). A row
     * split across threads is split at multiples of NR, so the scalar tail below is always
     * the same units. */
    typedef FN(uvec) U;
    for (; v + VL <= n; v += VL) {
        FN(vec) i = *(const U *)(g + v), f = *(const U *)(g + H + v);
        FN(vec) gv = *(const U *)(g + 2 * H + v), o = *(const U *)(g + 3 * H + v);
        FN(vec) dht = *(const U *)(dh + v) + *(const U *)(dy + v);
        FN(vec) tc = FN(vtanh)(*(const U *)(cn + v));
        FN(vec) dct = *(const U *)(dc + v) + dht * o * (1 - tc * tc);
        *(U *)(dg + v) = dct * gv * i * (1 - i);
        *(U *)(dg + H + v) = dct * *(const U *)(cp + v) * f * (1 - f);
        *(U *)(dg + 2 * H + v) = dct * i * (1 - gv * gv);
        *(U *)(dg + 3 * H + v) = dht * tc * o * (1 - o);
        *(U *)(dc + v) = dct * f;
    }
#endif
    FL_SIMD
    for (int64_t j = v; j < n; j++) {
        REAL i = g[j], f = g[H + j], gv = g[2 * H + j], o = g[3 * H + j];
        REAL dht = dh[j] + dy[j];
        REAL tc = TANH(cn[j]);
        REAL dct = dc[j] + dht * o * (1 - tc * tc);
        dg[j] = dct * gv * i * (1 - i);
        dg[H + j] = dct * cp[j] * f * (1 - f);
        dg[2 * H + j] = dct * i * (1 - gv * gv);
        dg[3 * H + j] = dht * tc * o * (1 - o);
        dc[j] = dct * f;
    }
}

/* The gate gradients dG_t of rows b0..b1-1 for units u0..u0+nu-1 (all four gates), from the
 * reserve and the running dh, dc of those units; rows whose sequence has ended get zeros. */
static inline void FN(lstm_grad_step)(const fl_dims *d, int64_t t, int64_t b0, int64_t b1,
                                      int64_t u0, int64_t nu, const int64_t *lengths,
                                      const REAL *c0, const REAL *gates, const REAL *csave,
                                      const REAL *dy, const REAL *zero, REAL *dh, REAL *dc,
                                      REAL *dG) {
    const int64_t B = d->batch, H = d->hidden_size, G = 4 * H;
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? d->seq_len : 1;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t r = t * st + b * sb;
        if (lengths && t >= lengths[b]) {
            for (int64_t q = 0; q < 4; q++)
                memset(dG + r * G + q * H + u0, 0, (size_t)nu * sizeof(REAL));
            continue;
        }
        const REAL *cp = t > 0 ? csave + (r - st) * H : (c0 ? c0 + b * H : zero);
        FN(lstm_grad_row)(nu, H, gates + r * G + u0, csave + r * H + u0, cp + u0,
                          (dy ? dy + r * H : zero) + u0, dh + b * H + u0, dc + b * H + u0,
                          dG + r * G + u0);
    }
}

/* Phase 1 for a small batch (one row tile): the threads split the hidden units instead, at
 * multiples of NR. Each computes the gate gradients of its units (all four gates), waits at
 * the one barrier of the step until dG_t is complete, then dh_{t-1} for the same units from
 * its own panels of W_hh: so dh and dc of a unit are only ever touched by one thread. dx, off
 * the recurrence, is left to one GEMM over all steps afterwards. Every element is computed
 * as in the batch-tile path (same products in the same order), so results do not depend on
 * the split. The units are divided among the team OpenMP grants (at most nsplit threads,
 * possibly fewer, down to one doing it all). */
static void FN(lstm_backward_split)(const fl_dims *d, const fl_lstm_backward_ws *w,
                                    int64_t nsplit,
                                    const REAL *c0, const int64_t *lengths, const REAL *gates,
                                    const REAL *csave, const REAL *dy, const REAL *pw,
                                    const REAL *zero, REAL *dG, REAL *dh, REAL *dc,
                                    char *tbase) {
    const int64_t T = d->seq_len, B = d->batch, H = d->hidden_size, G = 4 * H;
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;
    FL_OMP(parallel num_threads((int)nsplit))
    {
        FL_FTZ_BEGIN
        const int64_t s = FL_THREAD_ID(), ns = FL_TEAM_SIZE();
        const int64_t u0 = s * H / ns / NR * NR;
        const int64_t u1 = s + 1 == ns ? H : (s + 1) * H / ns / NR * NR, nu = u1 - u0;
        char *mine = tbase + (size_t)s * w->per_thread;
        REAL *apack = (REAL *)(mine + w->t_apack), *dht = (REAL *)(mine + w->t_dhx);
        for (int64_t t = T - 1; t >= 0; t--) {
            FN(lstm_grad_step)(d, t, 0, B, u0, nu, lengths, c0, gates, csave, dy, zero, dh, dc,
                               dG);
            FL_OMP(barrier)
            FN(gemm_pb)(B, nu, G, dG + t * st * G, sb * G, 1, pw + u0 * G, G * NR, dht, nu, 0,
                        apack);
            for (int64_t b = 0; b < B; b++)
                if (!lengths || t < lengths[b])
                    memcpy(dh + b * H + u0, dht + b * nu, (size_t)nu * sizeof(REAL));
        }
        FL_FTZ_END
    }
}

int FN(lstm_backward)(const fl_dims *d, const REAL *x, const REAL *w_ih, const REAL *w_hh,
                      const REAL *h0, const REAL *c0, const int64_t *lengths,
                      const REAL *reserve, const REAL *dy, const REAL *dh_n, const REAL *dc_n,
                      REAL *dx, REAL *dw_ih, REAL *dw_hh, REAL *db_ih, REAL *db_hh, REAL *dh0,
                      REAL *dc0, char *ws) {
    (void)x, (void)h0; /* the reserve holds every [x_t | h_{t-1} | 1] row, packed */
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 4 * H, TB = T * B;
    const fl_lstm_backward_ws w = fl_ws_lstm_backward(d, sizeof(REAL));
    const REAL *gates = reserve, *csave = reserve + TB * G, *xhpack = reserve + TB * (G + H);
    REAL *dG = (REAL *)(ws + w.dgates), *dwcat = (REAL *)(ws + w.dw_cat);
    REAL *pw = (REAL *)(ws + w.w_packed);
    REAL *dh = (REAL *)(ws + w.dh), *dc = (REAL *)(ws + w.dc);
    REAL *zero = (REAL *)(ws + w.zeros);
    char *tbase = ws + w.threads;
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;

    memset(zero, 0, (size_t)H * sizeof(REAL));
    /* B = [W_hh | W_ih] (K = 4H): W_hh's panels, then W_ih's from column HP on */
    const int64_t HP = FN(panels)(H) * NR, NW = HP + I;
    FN(pack_b)(G, H, w_hh, H, 1, pw, 0, FN(panels)(H));
    FN(pack_b)(G, I, w_ih, I, 1, pw + HP * G, 0, FN(panels)(I));

    if (dh_n) memcpy(dh, dh_n, (size_t)(B * H) * sizeof(REAL));
    else memset(dh, 0, (size_t)(B * H) * sizeof(REAL));
    if (dc_n) memcpy(dc, dc_n, (size_t)(B * H) * sizeof(REAL));
    else memset(dc, 0, (size_t)(B * H) * sizeof(REAL));

    const int64_t ntiles = fl_max64(1, fl_min64(w.nt, fl_cdiv(B, FL_MR)));
    const int64_t nsplit = fl_min64(fl_min64(w.nt, FL_MAX_UNIT_SPLIT), H / NR);
    if (ntiles == 1 && nsplit >= 2 && B > 0) {
        FN(lstm_backward_split)(d, &w, nsplit, c0, lengths, gates, csave, dy, pw, zero, dG, dh,
                                dc, tbase);
        /* dx_t = dG_t W_ih, all steps in one product */
        FN(gemm_par)(TB, I, G, dG, G, 1, pw + HP * G, dx, I, 0, tbase, w.per_thread, w.t_apack,
                     w.nt);
    } else {
        FL_OMP(parallel num_threads((int)ntiles))
        {
            FL_FTZ_BEGIN
            char *mine = tbase + (size_t)FL_THREAD_ID() * w.per_thread;
            REAL *apack = (REAL *)(mine + w.t_apack), *dhx = (REAL *)(mine + w.t_dhx);
            FL_OMP(for schedule(static, 1))
            for (int64_t tile = 0; tile < ntiles; tile++) {
                const int64_t b0 = tile * B / ntiles, b1 = (tile + 1) * B / ntiles;
                for (int64_t t = T - 1; t >= 0; t--) {
                    FN(lstm_grad_step)(d, t, b0, b1, 0, H, lengths, c0, gates, csave, dy, zero,
                                       dh, dc, dG);
                    const int64_t rt = t * st + b0 * sb;
                    FN(gemm_pb)(b1 - b0, NW, G, dG + rt * G, sb * G, 1, pw, G * NR, dhx, NW, 0,
                                apack);
                    for (int64_t b = b0; b < b1; b++) {
                        const REAL *row = dhx + (b - b0) * NW;
                        memcpy(dx + (t * st + b * sb) * I, row + HP, (size_t)I * sizeof(REAL));
                        if (!lengths || t < lengths[b])
                            memcpy(dh + b * H, row, (size_t)H * sizeof(REAL));
                    }
                }
            }
            FL_FTZ_END
        }
    }
    memcpy(dh0, dh, (size_t)(B * H) * sizeof(REAL));
    memcpy(dc0, dc, (size_t)(B * H) * sizeof(REAL));

    /* [dW_ih | dW_hh | db] = dG^T [X | H_prev | 1]: the forward saved the second operand
     * already packed */
    const int64_t K = I + H + 1;
    FN(gemm_tn_par)(G, K, TB, dG, G, xhpack, dwcat, K, (REAL *)(ws + w.dw_cat_t), tbase,
                    w.per_thread, w.t_apack, w.nt);
    for (int64_t i = 0; i < G; i++) {
        memcpy(dw_ih + i * I, dwcat + i * K, (size_t)I * sizeof(REAL));
        memcpy(dw_hh + i * H, dwcat + i * K + I, (size_t)H * sizeof(REAL));
        db_ih[i] = db_hh[i] = dwcat[i * K + I + H];
    }
    return FL_OK;
}
