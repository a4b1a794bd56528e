/* lstmx_forward_body.h -- the extended LSTM forward (projection, layer norm, recurrent mask in
 * any combination; fastlstm.h gives the equations); included once per (ISA, dtype).
 *
 * Batch tiles run the whole time loop independently, one tile per thread, no barrier per
 * step. Per step a tile copies [x_t | m*h_{t-1}] into one row buffer and multiplies it by
 * [W_ih | W_hh]^T, packed once: without layer norm as one product of depth I+R, which gives
 * a_x + a_h directly (x folded into the step, as lstm_forward_body.h does: for small I this
 * keeps everything in L2, where a GEMM hoisted over all steps would stream a [T*B, 4H]
 * buffer through memory: measured ~1.4x slower here); with layer norm, which needs a_x and a_h
 * apart, as two products over the two K-slices of the same packed matrix. Then the fused row
 * epilogue (layer norms, gates, cell, r_t) and, with a projection, h_t = r_t W_hr^T as a
 * second gemm_pb. Each row is computed by one thread from start to end in a fixed order, so
 * results do not depend on the thread count. */

/* Pointers to one row's parts of the reserve, or to temporaries in inference. */
typedef struct {
    REAL *gates, *c, *tc, *xn, *hn, *cn, *stats;
} FN(lstmx_row);

/* out = tanh(gain * a + bias), or tanh(a) when gain is NULL (out may be a). */
static inline void FN(lstmx_tanh)(int64_t n, const REAL *a, const REAL *gain, const REAL *bias,
                                  REAL *out) {
    int64_t v = 0;
#ifdef FL_REAL_IS_FLOAT
    typedef FN(uvec) U;
    for (; v + VL <= n; v += VL) {
        FN(vec) u = *(const U *)(a + v);
        if (gain) u = *(const U *)(gain + v) * u + *(const U *)(bias + v);
        *(U *)(out + v) = FN(vtanh)(u);
    }
#endif
    for (int64_t j = v; j < n; j++) out[j] = TANH(gain ? gain[j] * a[j] + bias[j] : a[j]);
}

/* The epilogue of one active row. With layer norm ax = W_ih x_t and ah = W_hh (m*h) (both
 * overwritten in inference); without, ah = their sum and ax is unused. c is the running cell
 * state (updated), r_t is written to r. The row has one owner and every loop runs over its
 * units in one fixed way, so a unit's bits never depend on the thread count. */
static void FN(lstmx_cell_row)(int64_t H, int ln, REAL *ax, REAL *ah, const REAL *bsum,
                               const REAL *g_ih, const REAL *g_hh, const REAL *g_c,
                               const REAL *b_c, REAL *c, const FN(lstmx_row) *o, REAL *r) {
    const int64_t G = 4 * H;
    REAL *g = o->gates;
    if (ln) {
        o->stats[0] = FN(ln_normalize)(G, ax, o->xn);
        o->stats[1] = FN(ln_normalize)(G, ah, o->hn);
        FL_SIMD
        for (int64_t j = 0; j < G; j++) g[j] = g_ih[j] * o->xn[j] + g_hh[j] * o->hn[j] + bsum[j];
    } else {
        FL_SIMD
        for (int64_t j = 0; j < G; j++) g[j] = ah[j] + bsum[j];
    }
    int64_t v = 0;
#ifdef FL_REAL_IS_FLOAT
    /* float32 on whole vectors (vec_math_body.h: `omp simd` over the scalar functions measured
     * ~1.5x slower); the tail below is always the same units of a row */
    typedef FN(uvec) U;
    for (; v + VL <= H; v += VL) {
        FN(vec) i = FN(vsigmoid)(*(U *)(g + v)), f = FN(vsigmoid)(*(U *)(g + H + v));
        FN(vec) gv = FN(vtanh)(*(U *)(g + 2 * H + v));
        *(U *)(g + 3 * H + v) = FN(vsigmoid)(*(U *)(g + 3 * H + v));
        *(U *)(g + v) = i; *(U *)(g + H + v) = f; *(U *)(g + 2 * H + v) = gv;
        FN(vec) cn = f * *(U *)(c + v) + i * gv;
        *(U *)(c + v) = cn; *(U *)(o->c + v) = cn;
    }
#endif
    for (int64_t j = v; j < H; j++) {
        const REAL i = SIGMOID(g[j]), f = SIGMOID(g[H + j]), gv = TANH(g[2 * H + j]);
        g[j] = i; g[H + j] = f; g[2 * H + j] = gv; g[3 * H + j] = SIGMOID(g[3 * H + j]);
        c[j] = f * c[j] + i * gv;
        o->c[j] = c[j];
    }
    if (ln) {
        o->stats[2] = FN(ln_normalize)(H, c, o->cn);
        FN(lstmx_tanh)(H, o->cn, g_c, b_c, o->tc);
    } else {
        FN(lstmx_tanh)(H, c, NULL, NULL, o->tc);
    }
    FL_SIMD
    for (int64_t j = 0; j < H; j++) r[j] = g[3 * H + j] * o->tc[j];
}

int FN(lstmx_forward)(FL_LSTMX_FORWARD_ARGS(REAL), REAL *reserve, char *ws) {
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 4 * H, TB = T * B, P = e->proj_size, R = P > 0 ? P : H, K = I + R;
    const int ln = !!e->layer_norm;
    const fl_lstmx_forward_ws w = fl_ws_lstmx_forward(d, e, sizeof(REAL));
    const fl_lstmx_reserve L = fl_lstmx_reserve_layout(d, e);
    REAL *bsum = (REAL *)(ws + w.bias_sum), *cs = (REAL *)(ws + w.c);
    REAL *pw = (REAL *)(ws + w.w_packed), *pwr = (REAL *)(ws + w.w_hr_packed);
    char *tbase = ws + w.threads;
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;
    if (B == 0) return FL_OK;

    for (int64_t j = 0; j < G; j++) bsum[j] = b_ih[j] + b_hh[j];
    /* B(k, j) = W_ih[j, k] for k < I, then W_hh[j, k - I]: depth I+R */
    FN(pack_bs)(I, G, w_ih, 1, I, pw, K * NR, 0, FN(panels)(G));
    FN(pack_bs)(R, G, w_hh, 1, R, pw + I * NR, K * NR, 0, FN(panels)(G));
    if (P > 0) FN(pack_b_par)(H, P, w_hr, 1, H, pwr, w.nt);

    const int64_t ntiles = fl_max64(1, fl_min64(w.nt, fl_cdiv(B, FL_MR)));
    FL_OMP(parallel num_threads((int)ntiles))
    {
        FL_FTZ_BEGIN
        char *mine = tbase + (size_t)FL_THREAD_ID() * w.per_thread;
        REAL *apack = (REAL *)(mine + w.t_apack), *aht = (REAL *)(mine + w.t_ah);
        REAL *xht = (REAL *)(mine + w.t_xh), *axt = (REAL *)(mine + w.t_ax);
        REAL *ht = (REAL *)(mine + w.t_h), *rt = (REAL *)(mine + w.t_r);
        REAL *hpt = (REAL *)(mine + w.t_hp), *tmp = (REAL *)(mine + w.t_row);
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
                /* [x_t | m * h_{t-1}]; m*h also into the reserve (the operand of dW_hh) */
                for (int64_t b = b0; b < b1; b++) {
                    const int64_t r = t * st + b * sb;
                    REAL *row = xht + (b - b0) * K;
                    const REAL *hr = ht + (b - b0) * R, *m = mask ? mask + b * R : NULL;
                    FN(lstm_load_x)(I, x + r * I, !lengths || t < lengths[b], row);
                    if (m) for (int64_t j = 0; j < R; j++) row[I + j] = m[j] * hr[j];
                    else memcpy(row + I, hr, (size_t)R * sizeof(REAL));
                    if (reserve)
                        memcpy(reserve + L.hm * TB + r * R, row + I, (size_t)R * sizeof(REAL));
                }
                if (ln) { /* a_x and a_h apart: the two K-slices of [W_ih | W_hh]^T */
                    FN(gemm_pb)(nb, G, I, xht, K, 1, pw, K * NR, axt, G, 0, apack);
                    FN(gemm_pb)(nb, G, R, xht + I, K, 1, pw + I * NR, K * NR, aht, G, 0, apack);
                } else { /* a_x + a_h in one product */
                    FN(gemm_pb)(nb, G, K, xht, K, 1, pw, K * NR, aht, G, 0, apack);
                }
                for (int64_t b = b0; b < b1; b++) {
                    const int64_t r = t * st + b * sb;
                    REAL *rrow = rt + (b - b0) * H, *ah = aht + (b - b0) * G;
                    REAL *ax = ln ? axt + (b - b0) * G : NULL;
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
                        o.gates = ah;
                        o.c = tmp; o.tc = tmp; o.cn = tmp + H;
                        o.xn = ax; o.hn = ah;
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
                    FN(lstmx_cell_row)(H, ln, ax, ah, bsum, ln_ih, ln_hh, ln_c, ln_bc,
                                       cs + b * H, &o, rrow);
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
