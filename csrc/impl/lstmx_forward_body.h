/* lstmx_forward_body.h -- the extended LSTM forward (projection, layer norm, recurrent mask in
 * any combination; fastlstm.h gives the equations); included once per (ISA, dtype).
 *
 * Before the time loop, one GEMM over all T*B rows: A_x = X W_ih^T. Layer norm needs a_x on
 * its own (it is normalised apart from a_h), so x cannot be folded into the step's product as
 * in lstm_forward_body.h; without layer norm the hoisted GEMM is still the larger, more
 * efficient product. Then batch tiles run the whole time loop independently, one tile per
 * thread, no barrier per step: per step a tile computes (m*h_{t-1}) W_hh^T with the packed
 * gemm_pb, the fused row epilogue (layer norms, gates, cell, r_t), and with a projection
 * h_t = r_t W_hr^T with a second gemm_pb. Each row is computed by one thread from start to
 * end in a fixed order, so results do not depend on the thread count. */

/* Pointers to one row's parts of the reserve, or to temporaries in inference. */
typedef struct {
    REAL *gates, *c, *tc, *xn, *hn, *cn, *stats;
} FN(lstmx_row);

/* The epilogue of one active row: ax = W_ih x_t (overwritten in inference), ah = W_hh (m*h)
 * (likewise), c the running cell state (updated), r_t written to r. */
static void FN(lstmx_cell_row)(int64_t H, int ln, REAL *ax, REAL *ah, const REAL *bsum,
                               const REAL *g_ih, const REAL *g_hh, const REAL *g_c,
                               const REAL *b_c, REAL *c, const FN(lstmx_row) *o, REAL *r) {
    const int64_t G = 4 * H;
    REAL *g = o->gates;
    if (ln) {
        o->stats[0] = FN(ln_normalize)(G, ax, o->xn);
        o->stats[1] = FN(ln_normalize)(G, ah, o->hn);
        for (int64_t j = 0; j < G; j++) g[j] = g_ih[j] * o->xn[j] + g_hh[j] * o->hn[j] + bsum[j];
    } else {
        for (int64_t j = 0; j < G; j++) g[j] = ax[j] + ah[j] + bsum[j];
    }
    for (int64_t j = 0; j < H; j++) {
        const REAL i = SIGMOID(g[j]), f = SIGMOID(g[H + j]), gv = TANH(g[2 * H + j]);
        g[j] = i; g[H + j] = f; g[2 * H + j] = gv; g[3 * H + j] = SIGMOID(g[3 * H + j]);
        c[j] = f * c[j] + i * gv;
        o->c[j] = c[j];
    }
    if (ln) {
        o->stats[2] = FN(ln_normalize)(H, c, o->cn);
        for (int64_t j = 0; j < H; j++) o->tc[j] = TANH(g_c[j] * o->cn[j] + b_c[j]);
    } else {
        for (int64_t j = 0; j < H; j++) o->tc[j] = TANH(c[j]);
    }
    for (int64_t j = 0; j < H; j++) r[j] = g[3 * H + j] * o->tc[j];
}

int FN(lstmx_forward)(FL_LSTMX_FORWARD_ARGS(REAL), REAL *reserve, char *ws) {
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 4 * H, TB = T * B, P = e->proj_size, R = P > 0 ? P : H;
    const int ln = !!e->layer_norm;
    const fl_lstmx_forward_ws w = fl_ws_lstmx_forward(d, e, sizeof(REAL));
    const fl_lstmx_reserve L = fl_lstmx_reserve_layout(d, e);
    REAL *bsum = (REAL *)(ws + w.bias_sum), *ax = (REAL *)(ws + w.ax), *cs = (REAL *)(ws + w.c);
    REAL *pwi = (REAL *)(ws + w.w_ih_packed), *pwh = (REAL *)(ws + w.w_hh_packed);
    REAL *pwr = (REAL *)(ws + w.w_hr_packed);
    char *tbase = ws + w.threads;
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;
    if (B == 0) return FL_OK;

    for (int64_t j = 0; j < G; j++) bsum[j] = b_ih[j] + b_hh[j];
    /* B(k, j) = W[j, k]: the transposed weights as packed panels */
    FN(pack_b_par)(I, G, w_ih, 1, I, pwi, w.nt);
    FN(pack_b_par)(R, G, w_hh, 1, R, pwh, w.nt);
    if (P > 0) FN(pack_b_par)(H, P, w_hr, 1, H, pwr, w.nt);
    /* A_x = X W_ih^T for every row (rows past a sequence's end are computed and never read) */
    FN(gemm_par)(TB, G, I, x, I, 1, pwi, ax, G, 0, tbase, w.per_thread, w.t_apack, w.nt);

    const int64_t ntiles = fl_max64(1, fl_min64(w.nt, fl_cdiv(B, FL_MR)));
    FL_OMP(parallel num_threads((int)ntiles))
    {
        FL_FTZ_BEGIN
        char *mine = tbase + (size_t)FL_THREAD_ID() * w.per_thread;
        REAL *apack = (REAL *)(mine + w.t_apack), *aht = (REAL *)(mine + w.t_ah);
        REAL *ht = (REAL *)(mine + w.t_h), *hmt = (REAL *)(mine + w.t_hm);
        REAL *rt = (REAL *)(mine + w.t_r), *hpt = (REAL *)(mine + w.t_hp);
        REAL *tmp = (REAL *)(mine + w.t_row);
        REAL stats_tmp[3];
        FL_OMP(for schedule(static, 1))
        for (int64_t tile = 0; tile < ntiles; tile++) {
            const int64_t b0 = tile * B / ntiles, b1 = (tile + 1) * B / ntiles, nb = b1 - b0;
            for (int64_t b = b0; b < b1; b++) {
                if (h0) memcpy(ht + (b - b0) * R, h0 + b * R, (size_t)R * sizeof(REAL));
                else memset(ht + (b - b0) * R, 0, (size_t)R * sizeof(REAL));
                if (c0) memcpy(cs + b * H, c0 + b * H, (size_t)H * sizeof(REAL));
                else memset(cs + b * H, 0, (size_t)H * sizeof(REAL));
            }
            for (int64_t t = 0; t < T; t++) {
                const int64_t rt0 = t * st + b0 * sb;
                /* m * h_{t-1}: into the reserve (the operand of dW_hh), or a temporary */
                REAL *hm = reserve ? reserve + L.hm * TB + rt0 * R : (mask ? hmt : ht);
                const int64_t ldm = reserve ? sb * R : R;
                if (reserve || mask)
                    for (int64_t b = b0; b < b1; b++) {
                        const REAL *hr = ht + (b - b0) * R, *mr = mask ? mask + b * R : NULL;
                        REAL *dst = hm + (b - b0) * ldm;
                        if (mr) for (int64_t j = 0; j < R; j++) dst[j] = mr[j] * hr[j];
                        else memcpy(dst, hr, (size_t)R * sizeof(REAL));
                    }
                FN(gemm_pb)(nb, G, R, hm, ldm, 1, pwh, R * NR, aht, G, 0, apack);
                for (int64_t b = b0; b < b1; b++) {
                    const int64_t r = t * st + b * sb;
                    REAL *rrow = rt + (b - b0) * H;
                    FN(lstmx_row) o;
                    if (reserve) {
                        o.gates = reserve + L.gates * TB + r * G;
                        o.c = reserve + L.c * TB + r * H;
                        o.tc = reserve + L.tc * TB + r * H;
                        o.xn = reserve + L.xn * TB + r * G;
                        o.hn = reserve + L.hn * TB + r * G;
                        o.cn = reserve + L.cn * TB + r * H;
                        o.stats = reserve + L.stats * TB + r * 3;
                    } else { /* in place over a_x and a_h; c and tanh into temporaries */
                        o.gates = aht + (b - b0) * G;
                        o.c = tmp; o.tc = tmp; o.cn = tmp + H;
                        o.xn = ax + r * G; o.hn = aht + (b - b0) * G;
                        o.stats = stats_tmp;
                    }
                    if (lengths && t >= lengths[b]) {
                        /* past the end: zero output, the state held, zeros in the reserve */
                        memset(y + r * R, 0, (size_t)R * sizeof(REAL));
                        memset(rrow, 0, (size_t)H * sizeof(REAL));
                        if (reserve) {
                            memset(o.gates, 0, (size_t)G * sizeof(REAL));
                            memset(o.c, 0, (size_t)H * sizeof(REAL));
                            memset(o.tc, 0, (size_t)H * sizeof(REAL));
                            if (P > 0)
                                memset(reserve + L.r * TB + r * H, 0, (size_t)H * sizeof(REAL));
                            if (ln) {
                                memset(o.xn, 0, (size_t)G * sizeof(REAL));
                                memset(o.hn, 0, (size_t)G * sizeof(REAL));
                                memset(o.cn, 0, (size_t)H * sizeof(REAL));
                                memset(o.stats, 0, 3 * sizeof(REAL));
                            }
                        }
                        continue;
                    }
                    FN(lstmx_cell_row)(H, ln, ax + r * G, aht + (b - b0) * G, bsum, ln_ih,
                                       ln_hh, ln_c, ln_bc, cs + b * H, &o, rrow);
                    if (P > 0) {
                        if (reserve)
                            memcpy(reserve + L.r * TB + r * H, rrow, (size_t)H * sizeof(REAL));
                    } else {
                        memcpy(ht + (b - b0) * R, rrow, (size_t)H * sizeof(REAL));
                        memcpy(y + r * R, rrow, (size_t)H * sizeof(REAL));
                    }
                }
                if (P > 0) { /* h_t = r_t W_hr^T; rows past their end keep their h */
                    FN(gemm_pb)(nb, P, H, rt, H, 1, pwr, H * NR, hpt, P, 0, apack);
                    for (int64_t b = b0; b < b1; b++) {
                        if (lengths && t >= lengths[b]) continue;
                        const REAL *hp = hpt + (b - b0) * P;
                        memcpy(ht + (b - b0) * R, hp, (size_t)P * sizeof(REAL));
                        memcpy(y + (t * st + b * sb) * R, hp, (size_t)P * sizeof(REAL));
                    }
                }
            }
            if (h_n)
                for (int64_t b = b0; b < b1; b++)
                    memcpy(h_n + b * R, ht + (b - b0) * R, (size_t)R * sizeof(REAL));
        }
        FL_FTZ_END
    }
    if (c_n) memcpy(c_n, cs, (size_t)(B * H) * sizeof(REAL));
    return FL_OK;
}
