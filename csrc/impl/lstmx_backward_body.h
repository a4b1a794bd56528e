/* lstmx_backward_body.h -- backpropagation through time of the extended LSTM
 * (lstmx_forward_body.h); included once per (ISA, dtype).
 *
 * Phase 1, sequential in t, parallel over batch tiles (rows never interact): per step a tile
 * forms dL/dh_t (dy_t plus what came back from step t+1), with a projection
 * dL/dr_t = dL/dh_t W_hr (one gemm_pb), the row epilogue back to dL/dpre (through the cell's
 * and the gates' layer norms), and dL/d(m*h_{t-1}) = dA_h W_hh (one gemm_pb), masked by m.
 * It keeps dL/dpre (and dA_h, dL/dLN(c), dL/dh_t where they differ) for every row.
 * Phase 2, over all T*B rows at once, off the recurrence: the layer-norm gain and bias
 * gradients as column sums, dA_x from dL/dpre (the input-side layer norm), dx = dA_x W_ih, and
 * the weight gradients as single GEMMs, dW_ih = dA_x^T X, dW_hh = dA_h^T (m*H_prev),
 * dW_hr = dH^T R. Each output element has one owner and a fixed summation order, so results
 * are bitwise identical for any thread count. */

/* dL/dpre of one active row, and dL/dc_{t-1} in place of dL/dc_t in dc. With
 * r = o * tanh(u), u = c (or LN(c; g_c) + b_c), c = f*c_prev + i*g:
 *   du = dr * o * (1 - tanh(u)^2);  dc_total = dc + du (or LN's backward of du)
 *   d(pre_i) = dc_total * g * i(1-i)     d(pre_f) = dc_total * c_prev * f(1-f)
 *   d(pre_g) = dc_total * i * (1-g^2)    d(pre_o) = dr * tanh(u) * o(1-o)
 *   dc_prev  = dc_total * f
 * ln: du is kept in dcn (the gain and bias gradients of the cell norm come from it) and its
 * backward through the norm goes to tmp (H). */
static void FN(lstmx_grad_row)(int64_t H, int ln, const REAL *g, const REAL *cp, const REAL *tc,
                               const REAL *chat, REAL rs_c, const REAL *g_c, const REAL *dr,
                               REAL *dc, REAL *dcn, REAL *tmp, REAL *dpre) {
    const REAL *o = g + 3 * H;
    if (ln) {
        FL_SIMD
        for (int64_t j = 0; j < H; j++) dcn[j] = dr[j] * o[j] * (1 - tc[j] * tc[j]);
        FN(ln_backward)(H, dcn, g_c, chat, rs_c, tmp);
    }
    FL_SIMD
    for (int64_t j = 0; j < H; j++) {
        const REAL i = g[j], f = g[H + j], gv = g[2 * H + j];
        const REAL du = ln ? tmp[j] : dr[j] * o[j] * (1 - tc[j] * tc[j]);
        const REAL dct = dc[j] + du;
        dpre[j] = dct * gv * i * (1 - i);
        dpre[H + j] = dct * cp[j] * f * (1 - f);
        dpre[2 * H + j] = dct * i * (1 - gv * gv);
        dpre[3 * H + j] = dr[j] * tc[j] * o[j] * (1 - o[j]);
        dc[j] = dct * f;
    }
}

int FN(lstmx_backward)(FL_LSTMX_BACKWARD_IN(REAL), FL_LSTMX_BACKWARD_OUT(REAL),
                       const REAL *reserve, char *ws) {
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 4 * H, TB = T * B, P = e->proj_size, R = P > 0 ? P : H;
    const int ln = !!e->layer_norm;
    const fl_lstmx_backward_ws w = fl_ws_lstmx_backward(d, e, sizeof(REAL));
    const fl_lstmx_reserve L = fl_lstmx_reserve_layout(d, e);
    REAL *pwh = (REAL *)(ws + w.w_hh_packed), *pwi = (REAL *)(ws + w.w_ih_packed);
    REAL *pwr = (REAL *)(ws + w.w_hr_packed);
    REAL *dpre = (REAL *)(ws + w.dpre), *dcn = (REAL *)(ws + w.dcn), *dhp = (REAL *)(ws + w.dhp);
    REAL *dah = ln ? (REAL *)(ws + w.dah) : dpre; /* without layer norm dA_h = dL/dpre */
    REAL *seqp = (REAL *)(ws + w.seq_packed), *ct = (REAL *)(ws + w.ct);
    REAL *dh = (REAL *)(ws + w.dh), *dc = (REAL *)(ws + w.dc), *zero = (REAL *)(ws + w.zeros);
    char *tbase = ws + w.threads;
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;
    const REAL *gates = reserve + L.gates * TB, *csave = reserve + L.c * TB;
    const REAL *tcs = reserve + L.tc * TB, *hms = reserve + L.hm * TB, *rsave = reserve + L.r * TB;
    const REAL *xn = reserve + L.xn * TB, *hn = reserve + L.hn * TB, *cn = reserve + L.cn * TB;
    const REAL *stats = reserve + L.stats * TB;

    memset(zero, 0, (size_t)fl_max64(R, H) * sizeof(REAL));
    FN(pack_b_par)(G, R, w_hh, R, 1, pwh, w.nt);   /* B(k, j) = W_hh[k, j], depth 4H */
    FN(pack_b_par)(G, I, w_ih, I, 1, pwi, w.nt);
    if (P > 0) FN(pack_b_par)(P, H, w_hr, H, 1, pwr, w.nt);
    if (dh_n) memcpy(dh, dh_n, (size_t)(B * R) * sizeof(REAL));
    else memset(dh, 0, (size_t)(B * R) * sizeof(REAL));
    if (dc_n) memcpy(dc, dc_n, (size_t)(B * H) * sizeof(REAL));
    else memset(dc, 0, (size_t)(B * H) * sizeof(REAL));

    const int64_t ntiles = fl_max64(1, fl_min64(w.nt, fl_cdiv(B, FL_MR)));
    if (B > 0) {
        FL_OMP(parallel num_threads((int)ntiles))
        {
            FL_FTZ_BEGIN
            char *mine = tbase + (size_t)FL_THREAD_ID() * w.per_thread;
            REAL *apack = (REAL *)(mine + w.t_apack), *dht = (REAL *)(mine + w.t_dh);
            REAL *drt = (REAL *)(mine + w.t_dr), *dhmt = (REAL *)(mine + w.t_dhm);
            REAL *tmp = (REAL *)(mine + w.t_row);
            FL_OMP(for schedule(static, 1))
            for (int64_t tile = 0; tile < ntiles; tile++) {
                const int64_t b0 = tile * B / ntiles, b1 = (tile + 1) * B / ntiles, nb = b1 - b0;
                for (int64_t t = T - 1; t >= 0; t--) {
                    const int64_t rt0 = t * st + b0 * sb;
                    /* dL/dh_t: dy_t plus the gradient from step t+1 (0 past the end) */
                    for (int64_t b = b0; b < b1; b++) {
                        const int64_t r = t * st + b * sb;
                        REAL *row = dht + (b - b0) * R;
                        if (lengths && t >= lengths[b]) memset(row, 0, (size_t)R * sizeof(REAL));
                        else
                            for (int64_t j = 0; j < R; j++)
                                row[j] = dh[b * R + j] + (dy ? dy[r * R + j] : 0);
                        if (P > 0) memcpy(dhp + r * P, row, (size_t)P * sizeof(REAL));
                    }
                    /* h_t = W_hr r_t: dL/dr_t = dL/dh_t W_hr */
                    if (P > 0) FN(gemm_pb)(nb, H, P, dht, P, 1, pwr, P * NR, drt, H, 0, apack);
                    const REAL *dr = P > 0 ? drt : dht;
                    for (int64_t b = b0; b < b1; b++) {
                        const int64_t r = t * st + b * sb;
                        if (lengths && t >= lengths[b]) {
                            memset(dpre + r * G, 0, (size_t)G * sizeof(REAL));
                            if (ln) {
                                memset(dah + r * G, 0, (size_t)G * sizeof(REAL));
                                memset(dcn + r * H, 0, (size_t)H * sizeof(REAL));
                            }
                            continue;
                        }
                        const REAL *cp = t > 0 ? csave + (r - st) * H : (c0 ? c0 + b * H : zero);
                        FN(lstmx_grad_row)(H, ln, gates + r * G, cp, tcs + r * H, cn + r * H,
                                           ln ? stats[r * 3 + 2] : 0, ln_c, dr + (b - b0) * H,
                                           dc + b * H, dcn + r * H, tmp, dpre + r * G);
                        if (ln) /* a_h enters pre through LN(a_h; g_hh) */
                            FN(ln_backward)(G, dpre + r * G, ln_hh, hn + r * G, stats[r * 3 + 1],
                                            dah + r * G);
                    }
                    /* dL/d(m*h_{t-1}) = dA_h W_hh, then through the mask */
                    FN(gemm_pb)(nb, R, G, dah + rt0 * G, sb * G, 1, pwh, G * NR, dhmt, R, 0,
                                apack);
                    for (int64_t b = b0; b < b1; b++) {
                        if (lengths && t >= lengths[b]) continue;
                        const REAL *src = dhmt + (b - b0) * R, *m = mask ? mask + b * R : NULL;
                        if (m) for (int64_t j = 0; j < R; j++) dh[b * R + j] = m[j] * src[j];
                        else memcpy(dh + b * R, src, (size_t)R * sizeof(REAL));
                    }
                }
            }
            FL_FTZ_END
        }
    }
    memcpy(dh0, dh, (size_t)(B * R) * sizeof(REAL));
    memcpy(dc0, dc, (size_t)(B * H) * sizeof(REAL));

    /* Phase 2. Gain and bias gradients: column sums over every row (rows past an end hold
     * zeros in dpre and in the reserve) */
    if (ln) {
        FN(colsum_par)(TB, G, dpre, G, xn, G, dln_ih, db_ih, w.nt);
        FN(colsum_par)(TB, G, dpre, G, hn, G, dln_hh, NULL, w.nt);
        FN(colsum_par)(TB, H, dcn, H, cn, H, dln_c, dln_bc, w.nt);
        /* a_x enters pre through LN(a_x; g_ih): dA_x over dpre, row by row */
        const int64_t nt = fl_max64(1, fl_min64(w.nt, TB * G / (1 << 14)));
        FL_OMP(parallel num_threads((int)nt))
        {
            FL_FTZ_BEGIN
            FL_OMP(for schedule(static))
            for (int64_t r = 0; r < TB; r++)
                FN(ln_backward)(G, dpre + r * G, ln_ih, xn + r * G, stats[r * 3], dpre + r * G);
            FL_FTZ_END
        }
    } else {
        FN(colsum_par)(TB, G, dpre, G, NULL, 0, NULL, db_ih, w.nt);
    }
    memcpy(db_hh, db_ih, (size_t)G * sizeof(REAL));
    /* dx = dA_x W_ih; dW_ih = dA_x^T X (x past an end may be padding: packed as zeros) */
    FN(gemm_par)(TB, I, G, dpre, G, 1, pwi, dx, I, 0, tbase, w.per_thread, w.t_apack, w.nt);
    FN(pack_seq_par)(T, B, st, sb, lengths, I, x, seqp, w.nt);
    FN(gemm_tn_par)(G, I, TB, dpre, G, seqp, dw_ih, I, ct, tbase, w.per_thread, w.t_apack, w.nt);
    /* dW_hh = dA_h^T (m * H_prev) */
    FN(pack_b_par)(TB, R, hms, R, 1, seqp, w.nt);
    FN(gemm_tn_par)(G, R, TB, dah, G, seqp, dw_hh, R, ct, tbase, w.per_thread, w.t_apack, w.nt);
    /* dW_hr = dH^T R */
    if (P > 0) {
        FN(pack_b_par)(TB, H, rsave, H, 1, seqp, w.nt);
        FN(gemm_tn_par)(P, H, TB, dhp, P, seqp, dw_hr, H, ct, tbase, w.per_thread, w.t_apack,
                        w.nt);
    }
    return FL_OK;
}
