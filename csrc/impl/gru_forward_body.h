/* gru_forward_body.h -- GRU sequence forward, both variants; included once per (ISA, dtype).
 * Same structure as the LSTM forward: hoisted X W_ih^T, batch tiles over the whole time loop,
 * fused epilogue. h W_hh^T goes to a per-thread tile rather than onto the projection, because
 * the n gate needs W_hn h (+ b_hn) on its own: it is multiplied by r before the tanh.
 * With linear_before_reset=0 the n gate sees W_hn (r*h), so each step runs two products:
 * r,z from h first, then W_hn (r*h).
 * The reserve keeps, per row, r, z, n and (W_hn h + b_hn) | h_{t-1} | r*h_{t-1} (lbr=0). */

/* The GRU epilogues below run float32 on whole vectors (vec_math_body.h) and the rest unit by
 * unit; a row is never split across threads, so the same units always take the same path. */

#ifdef FL_REAL_IS_FLOAT
#define FL_LDU(p) (*(const FN(uvec) *)(p))
/* r and z of VL units (each pointer already offset to the first unit) */
static inline void FN(gru_rz_vec)(int64_t H, const REAL *gx, const REAL *gh, const REAL *bi,
                                  const REAL *bh, FN(vec) *r, FN(vec) *z) {
    *r = FN(vsigmoid)(FL_LDU(gx) + FL_LDU(bi) + FL_LDU(gh) + FL_LDU(bh));
    *z = FN(vsigmoid)(FL_LDU(gx + H) + FL_LDU(bi + H) + FL_LDU(gh + H) + FL_LDU(bh + H));
}
#endif

/* linear_before_reset=1: r, z, n and h_t from both projections. Outputs may alias the inputs
 * element by element (inference writes the gates over the projection row). */
static inline void FN(gru_row_lbr)(int64_t H, const REAL *gx, const REAL *gh,
                                   const REAL *restrict bi, const REAL *restrict bh,
                                   REAL *restrict h, REAL *a3, REAL *ghn_out, REAL *restrict y) {
    int64_t v = 0;
#ifdef FL_REAL_IS_FLOAT
    typedef FN(uvec) U;
    for (; v + VL <= H; v += VL) {
        FN(vec) r, z;
        FN(gru_rz_vec)(H, gx + v, gh + v, bi + v, bh + v, &r, &z);
        FN(vec) hn = FL_LDU(gh + 2 * H + v) + FL_LDU(bh + 2 * H + v);
        FN(vec) n = FN(vtanh)(FL_LDU(gx + 2 * H + v) + FL_LDU(bi + 2 * H + v) + r * hn);
        FN(vec) ht = (1 - z) * n + z * FL_LDU(h + v);
        *(U *)(a3 + v) = r; *(U *)(a3 + H + v) = z; *(U *)(a3 + 2 * H + v) = n;
        *(U *)(ghn_out + v) = hn; *(U *)(h + v) = ht; *(U *)(y + v) = ht;
    }
#endif
    FL_SIMD
    for (int64_t j = v; j < H; j++) {
        REAL r = SIGMOID(gx[j] + bi[j] + gh[j] + bh[j]);
        REAL z = SIGMOID(gx[H + j] + bi[H + j] + gh[H + j] + bh[H + j]);
        REAL hn = gh[2 * H + j] + bh[2 * H + j];
        REAL n = TANH(gx[2 * H + j] + bi[2 * H + j] + r * hn);
        REAL ht = (1 - z) * n + z * h[j];
        a3[j] = r; a3[H + j] = z; a3[2 * H + j] = n; ghn_out[j] = hn;
        h[j] = ht; y[j] = ht;
    }
}

/* linear_before_reset=0, first half: r and z (written over gh[0:2H]) and r*h. */
static inline void FN(gru_row_rz)(int64_t H, const REAL *restrict gx, REAL *restrict gh,
                                  const REAL *restrict bi, const REAL *restrict bh,
                                  const REAL *restrict h, REAL *restrict rh) {
    int64_t v = 0;
#ifdef FL_REAL_IS_FLOAT
    typedef FN(uvec) U;
    for (; v + VL <= H; v += VL) {
        FN(vec) r, z;
        FN(gru_rz_vec)(H, gx + v, gh + v, bi + v, bh + v, &r, &z);
        *(U *)(gh + v) = r; *(U *)(gh + H + v) = z; *(U *)(rh + v) = r * FL_LDU(h + v);
    }
#endif
    FL_SIMD
    for (int64_t j = v; j < H; j++) {
        REAL r = SIGMOID(gx[j] + bi[j] + gh[j] + bh[j]);
        REAL z = SIGMOID(gx[H + j] + bi[H + j] + gh[H + j] + bh[H + j]);
        gh[j] = r; gh[H + j] = z; rh[j] = r * h[j];
    }
}

/* linear_before_reset=0, second half: n from gh[2H:3H] = W_hn (r*h), then h_t. */
static inline void FN(gru_row_n)(int64_t H, const REAL *gx, const REAL *restrict gh,
                                 const REAL *restrict bi, const REAL *restrict bh,
                                 REAL *restrict h, REAL *a3, REAL *restrict y) {
    int64_t v = 0;
#ifdef FL_REAL_IS_FLOAT
    typedef FN(uvec) U;
    for (; v + VL <= H; v += VL) {
        FN(vec) r = FL_LDU(gh + v), z = FL_LDU(gh + H + v);
        FN(vec) n = FN(vtanh)(FL_LDU(gx + 2 * H + v) + FL_LDU(bi + 2 * H + v) +
                              FL_LDU(gh + 2 * H + v) + FL_LDU(bh + 2 * H + v));
        FN(vec) ht = (1 - z) * n + z * FL_LDU(h + v);
        *(U *)(a3 + v) = r; *(U *)(a3 + H + v) = z; *(U *)(a3 + 2 * H + v) = n;
        *(U *)(h + v) = ht; *(U *)(y + v) = ht;
    }
#endif
    FL_SIMD
    for (int64_t j = v; j < H; j++) {
        REAL r = gh[j], z = gh[H + j];
        REAL n = TANH(gx[2 * H + j] + bi[2 * H + j] + gh[2 * H + j] + bh[2 * H + j]);
        REAL ht = (1 - z) * n + z * h[j];
        a3[j] = r; a3[H + j] = z; a3[2 * H + j] = n;
        h[j] = ht; y[j] = ht;
    }
}

#ifdef FL_REAL_IS_FLOAT
#undef FL_LDU
#endif

int FN(gru_forward)(const fl_dims *d, int lbr, const REAL *x, const REAL *w_ih,
                    const REAL *w_hh, const REAL *b_ih, const REAL *b_hh, const REAL *h0,
                    const int64_t *lengths, REAL *y, REAL *h_n, REAL *reserve, char *ws) {
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 3 * H, TB = T * B;
    const fl_gru_forward_ws w = fl_ws_gru_forward(d, sizeof(REAL), lbr);
    REAL *pih = (REAL *)(ws + w.w_ih_packed), *phh = (REAL *)(ws + w.w_hh_packed);
    REAL *phn = (REAL *)(ws + w.w_hn_packed), *gx = (REAL *)(ws + w.x_proj);
    REAL *hs = (REAL *)(ws + w.h);
    REAL *act = reserve, *hprev = reserve ? reserve + TB * 4 * H : NULL;
    REAL *rhsave = (reserve && !lbr) ? reserve + TB * 5 * H : NULL;
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
        REAL *rh = (REAL *)(mine + w.t_rh);
        FL_OMP(for schedule(static, 1))
        for (int64_t tile = 0; tile < ntiles; tile++) {
            const int64_t b0 = tile * B / ntiles, b1 = (tile + 1) * B / ntiles, nb = b1 - b0;
            for (int64_t b = b0; b < b1; b++) {
                if (h0) memcpy(hs + b * H, h0 + b * H, (size_t)H * sizeof(REAL));
                else memset(hs + b * H, 0, (size_t)H * sizeof(REAL));
            }
            for (int64_t t = 0; t < T; t++) {
                if (lbr) {
                    FN(gemm_pb)(nb, G, H, hs + b0 * H, H, 1, phh, H * NR, gh, G, 0, apack);
                } else {
                    FN(gemm_pb)(nb, 2 * H, H, hs + b0 * H, H, 1, phh, H * NR, gh, G, 0, apack);
                    for (int64_t b = b0; b < b1; b++) {
                        const int64_t r = t * st + b * sb;
                        if (lengths && t >= lengths[b]) /* finished: its x may be padding */
                            memset(rh + (b - b0) * H, 0, (size_t)H * sizeof(REAL));
                        else
                            FN(gru_row_rz)(H, gx + r * G, gh + (b - b0) * G, b_ih, b_hh,
                                           hs + b * H, rh + (b - b0) * H);
                    }
                    FN(gemm_pb)(nb, H, H, rh, H, 1, phn, H * NR, gh + 2 * H, G, 0, apack);
                }
                for (int64_t b = b0; b < b1; b++) {
                    const int64_t r = t * st + b * sb;
                    if (hprev) memcpy(hprev + r * H, hs + b * H, (size_t)H * sizeof(REAL));
                    if (rhsave) memcpy(rhsave + r * H, rh + (b - b0) * H, (size_t)H * sizeof(REAL));
                    if (lengths && t >= lengths[b]) {
                        memset(y + r * H, 0, (size_t)H * sizeof(REAL));
                        continue;
                    }
                    REAL *ghrow = gh + (b - b0) * G;
                    REAL *a3 = act ? act + r * 4 * H : gx + r * G;
                    if (lbr)
                        FN(gru_row_lbr)(H, gx + r * G, ghrow, b_ih, b_hh, hs + b * H, a3,
                                        act ? a3 + 3 * H : ghrow + 2 * H, y + r * H);
                    else
                        FN(gru_row_n)(H, gx + r * G, ghrow, b_ih, b_hh, hs + b * H, a3, y + r * H);
                }
            }
        }
        FL_FTZ_END
    }
    if (h_n) memcpy(h_n, hs, (size_t)(B * H) * sizeof(REAL));
    return FL_OK;
}
