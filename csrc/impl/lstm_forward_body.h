/* lstm_forward_body.h -- LSTM sequence forward; included once per (ISA, dtype).
 *
 * 1. Hoisted input projection: gates[TB,4H] = X W_ih^T for all steps in one parallel GEMM.
 * 2. Batch tiles run the whole time loop independently (rows never interact), one tile per
 *    thread, no barrier per step: gates_t += h_{t-1} W_hh^T with W_hh^T packed once, then the
 *    fused epilogue turns the four gate pre-activations of each row into c_t and h_t while
 *    they are in L1. Training keeps the activated gates, c_t and h_{t-1} in the reserve. */

static inline void FN(lstm_cell_row)(int64_t H, REAL *g, const REAL *restrict bias,
                                     REAL *restrict h, REAL *restrict c, REAL *restrict y) {
    REAL *gi = g, *gf = g + H, *gg = g + 2 * H, *go = g + 3 * H;
    FL_SIMD
    for (int64_t j = 0; j < H; j++) {
        REAL i = SIGMOID(gi[j] + bias[j]);
        REAL f = SIGMOID(gf[j] + bias[H + j]);
        REAL gv = TANH(gg[j] + bias[2 * H + j]);
        REAL o = SIGMOID(go[j] + bias[3 * H + j]);
        REAL cn = f * c[j] + i * gv;
        REAL hn = o * TANH(cn);
        gi[j] = i; gf[j] = f; gg[j] = gv; go[j] = o;
        c[j] = cn; h[j] = hn; y[j] = hn;
    }
}

int FN(lstm_forward)(const fl_dims *d, const REAL *x, const REAL *w_ih, const REAL *w_hh,
                     const REAL *b_ih, const REAL *b_hh, const REAL *h0, const REAL *c0,
                     const int64_t *lengths, REAL *y, REAL *h_n, REAL *c_n, REAL *reserve,
                     char *ws) {
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 4 * H, TB = T * B;
    const fl_ws w = fl_ws_lstm_forward(d, sizeof(REAL), reserve != NULL);
    REAL *bsum = (REAL *)(ws + w.bsum), *pih = (REAL *)(ws + w.pack_ih);
    REAL *phh = (REAL *)(ws + w.pack_hh);
    REAL *gates = reserve ? reserve : (REAL *)(ws + w.gbuf);
    REAL *csave = reserve ? reserve + TB * G : NULL;
    REAL *hprev = reserve ? reserve + TB * (G + H) : NULL;
    REAL *hs = (REAL *)(ws + w.st_h), *cs = (REAL *)(ws + w.st_c);
    char *tbase = ws + w.threads;
    /* row of step t, sequence b, in every [T,B,*] or [B,T,*] array */
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;

    for (int64_t j = 0; j < G; j++) bsum[j] = b_ih[j] + b_hh[j];
    FN(pack_b_par)(I, G, w_ih, 1, I, pih, w.nt); /* B(k,j) = W_ih[j,k] */
    FN(gemm_par)(TB, G, I, x, I, 1, pih, gates, G, 0, tbase, w.per_thread, w.apack, w.nt);
    FN(pack_b)(H, G, w_hh, 1, H, phh, 0, FN(panels)(G)); /* B(k,j) = W_hh[j,k] */

    const int64_t ntiles = fl_max64(1, fl_min64(w.nt, fl_cdiv(B, FL_MR)));
    FL_OMP(parallel num_threads((int)ntiles))
    {
        FL_FTZ_BEGIN
        REAL *apack = (REAL *)(tbase + (size_t)FL_THREAD_ID() * w.per_thread + w.apack);
        FL_OMP(for schedule(static, 1))
        for (int64_t tile = 0; tile < ntiles; tile++) {
            const int64_t b0 = tile * B / ntiles, b1 = (tile + 1) * B / ntiles;
            for (int64_t b = b0; b < b1; b++) {
                if (h0) memcpy(hs + b * H, h0 + b * H, (size_t)H * sizeof(REAL));
                else memset(hs + b * H, 0, (size_t)H * sizeof(REAL));
                if (c0) memcpy(cs + b * H, c0 + b * H, (size_t)H * sizeof(REAL));
                else memset(cs + b * H, 0, (size_t)H * sizeof(REAL));
            }
            for (int64_t t = 0; t < T; t++) {
                FN(gemm_pb)(b1 - b0, G, H, hs + b0 * H, H, 1, phh, H * NR,
                            gates + (t * st + b0 * sb) * G, sb * G, 1, apack);
                for (int64_t b = b0; b < b1; b++) {
                    const int64_t r = t * st + b * sb;
                    if (hprev) memcpy(hprev + r * H, hs + b * H, (size_t)H * sizeof(REAL));
                    if (lengths && t >= lengths[b]) {
                        memset(y + r * H, 0, (size_t)H * sizeof(REAL));
                        continue;
                    }
                    FN(lstm_cell_row)(H, gates + r * G, bsum, hs + b * H, cs + b * H, y + r * H);
                    if (csave) memcpy(csave + r * H, cs + b * H, (size_t)H * sizeof(REAL));
                }
            }
        }
        FL_FTZ_END
    }
    if (h_n) memcpy(h_n, hs, (size_t)(B * H) * sizeof(REAL));
    if (c_n) memcpy(c_n, cs, (size_t)(B * H) * sizeof(REAL));
    return FL_OK;
}
