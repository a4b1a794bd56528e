/* lstm_forward_body.h -- LSTM sequence forward; included once per (ISA, dtype).
 *
 * Batch tiles run the whole time loop independently (rows never interact), one tile per
 * thread, no barrier per step. Each step is one GEMM of depth I+H,
 *     gates_t = [x_t | h_{t-1}] [W_ih | W_hh]^T,
 * with the two weight matrices packed once into one, then the fused epilogue turns the four
 * gate pre-activations of each row into c_t and h_t while they are in cache.
 * Why not hoist X W_ih^T into one GEMM before the loop (cuDNN's choice)? For the small input
 * sizes this library targets (I = 28 for row-MNIST) that GEMM is short and memory bound: it
 * writes a [T*B, 4H] buffer that every step then reads and writes again. Folding x_t into the
 * step keeps everything in L2 and gives the step a deeper, more efficient product.
 * Training keeps the activated gates, c_t and the [x_t | h_{t-1} | 1] rows in the reserve:
 * the last are exactly the operand of [dW_ih | dW_hh | db] = dG^T [X | H_prev | 1]. */

#ifdef FL_REAL_IS_FLOAT
/* The epilogue for VL units: gate q's pre-activations at gin[q*sin], activations to
 * gout[q*sout] (may be gin); c updated in place, h and y written. */
static inline void FN(lstm_cell_vec)(const REAL *gin, int64_t sin, REAL *gout, int64_t sout,
                                     REAL *h, REAL *c, REAL *y) {
    typedef FN(uvec) U;
    FN(vec) i = FN(vsigmoid)(*(const U *)gin);
    FN(vec) f = FN(vsigmoid)(*(const U *)(gin + sin));
    FN(vec) gv = FN(vtanh)(*(const U *)(gin + 2 * sin));
    FN(vec) o = FN(vsigmoid)(*(const U *)(gin + 3 * sin));
    FN(vec) cn = f * *(U *)c + i * gv;
    FN(vec) hn = o * FN(vtanh)(cn);
    *(U *)gout = i; *(U *)(gout + sout) = f; *(U *)(gout + 2 * sout) = gv;
    *(U *)(gout + 3 * sout) = o;
    *(U *)c = cn; *(U *)h = hn; *(U *)y = hn;
}
#endif

/* The fused epilogue for n hidden units of one row: gate pre-activations gin (gate q at
 * gin[q*sin + j]) become activations at gout (gate q at gout[q*sout + j], may be gin), and
 * c, h and the output y are updated. */
static inline void FN(lstm_cell_units)(int64_t n, const REAL *gin, int64_t sin, REAL *gout,
                                       int64_t sout, REAL *restrict h, REAL *restrict c,
                                       REAL *restrict y) {
#ifdef FL_REAL_IS_FLOAT
    /* float32 on whole vectors (vec_math_body.h). The last n % VL units go through the same
     * vector code on zero-padded copies: a unit gets the same bits in any position, whatever
     * the compiler would contract differently in a scalar loop, so results cannot depend on
     * how the units were split across threads. */
    int64_t v = 0;
    for (; v + VL <= n; v += VL)
        FN(lstm_cell_vec)(gin + v, sin, gout + v, sout, h + v, c + v, y + v);
    if (v < n) {
        const int64_t r = n - v;
        REAL g[4 * VL] = {0}, cc[VL] = {0}, hh[VL], yy[VL];
        for (int q = 0; q < 4; q++) memcpy(g + q * VL, gin + q * sin + v, (size_t)r * sizeof(REAL));
        memcpy(cc, c + v, (size_t)r * sizeof(REAL));
        FN(lstm_cell_vec)(g, VL, g, VL, hh, cc, yy);
        for (int q = 0; q < 4; q++) memcpy(gout + q * sout + v, g + q * VL, (size_t)r * sizeof(REAL));
        memcpy(c + v, cc, (size_t)r * sizeof(REAL));
        memcpy(h + v, hh, (size_t)r * sizeof(REAL));
        memcpy(y + v, yy, (size_t)r * sizeof(REAL));
    }
#else
    FL_SIMD
    for (int64_t j = 0; j < n; j++) {
        REAL i = SIGMOID(gin[j]);
        REAL f = SIGMOID(gin[sin + j]);
        REAL gv = TANH(gin[2 * sin + j]);
        REAL o = SIGMOID(gin[3 * sin + j]);
        REAL cn = f * c[j] + i * gv;
        REAL hn = o * TANH(cn);
        gout[j] = i; gout[sout + j] = f; gout[2 * sout + j] = gv; gout[3 * sout + j] = o;
        c[j] = cn; h[j] = hn; y[j] = hn;
    }
#endif
}

/* Copy row r of x into [x | h | 1] (zeros past the sequence's end, where x may be padding:
 * the saved row feeds the weight gradient even where dG is 0), and save the row, packed, for
 * the weight gradient. */
static inline void FN(lstm_load_x)(int64_t I, const REAL *xr, int active, REAL *xh) {
    if (active) memcpy(xh, xr, (size_t)I * sizeof(REAL));
    else memset(xh, 0, (size_t)I * sizeof(REAL));
}

static inline void FN(lstm_save_xh)(int64_t K, int64_t TB, int64_t r, const REAL *xh,
                                    REAL *xhpack) {
    for (int64_t p = 0; p < FN(panels)(K); p++) {
        REAL *dst = xhpack + (p * TB + r) * NR;
        int64_t n = fl_min64(NR, K - p * NR);
        memcpy(dst, xh + p * NR, (size_t)n * sizeof(REAL));
        if (n < NR) memset(dst + n, 0, (size_t)(NR - n) * sizeof(REAL));
    }
}

/* Small batch (one tile): the threads split the hidden units instead, one barrier per step.
 * Thread s owns units [u0, u1) and packs its own gate columns (i, f, g, o of those units, each
 * segment padded to a panel), so its product and its epilogue need nothing from the others;
 * h goes to the other of two [x | h | 1] buffers, read by everyone after the barrier. Every
 * element is computed exactly as in the batch-tile path (same k order, same epilogue), so
 * the results do not depend on the split. The units are divided among the team OpenMP
 * grants, which may be smaller than nsplit (down to one thread doing it all); the weight
 * buffer pwall, sized for nsplit shares, holds any smaller number of (larger) shares. */
static void FN(lstm_forward_split)(const fl_dims *d, const fl_lstm_forward_ws *w, int64_t nsplit,
                                   const REAL *x, const REAL *w_ih, const REAL *w_hh,
                                   const REAL *bsum, const int64_t *lengths, REAL *y,
                                   REAL *cs, REAL *gsave, REAL *csave, REAL *xhpack,
                                   REAL *xhbuf, REAL *pwall, char *tbase) {
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 4 * H, K = I + H + 1, TB = T * B;
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;
    FL_OMP(parallel num_threads((int)nsplit))
    {
        FL_FTZ_BEGIN
        const int64_t s = FL_THREAD_ID(), ns = FL_TEAM_SIZE();
        const int64_t u0 = s * H / ns / 16 * 16, u1 = s + 1 == ns ? H : (s + 1) * H / ns / 16 * 16;
        const int64_t nu = u1 - u0, nup = fl_rup(nu, NR);
        char *mine = tbase + (size_t)s * w->per_thread;
        REAL *apack = (REAL *)(mine + w->t_apack), *gt = (REAL *)(mine + w->t_gates);
        REAL *pw = pwall + s * 4 * (H / ns + NR + 16) * K;
        for (int64_t q = 0; q < 4; q++) { /* B(k, j) as in the tile path, own columns only */
            REAL *seg = pw + q * (nup / NR) * K * NR;
            FN(pack_bs)(I, nu, w_ih + (q * H + u0) * I, 1, I, seg, K * NR, 0, FN(panels)(nu));
            FN(pack_bs)(H, nu, w_hh + (q * H + u0) * H, 1, H, seg + I * NR, K * NR, 0,
                        FN(panels)(nu));
            FN(pack_bs)(1, nu, bsum + q * H + u0, nu, 1, seg + (I + H) * NR, K * NR, 0,
                        FN(panels)(nu));
        }
        for (int64_t t = 0; t < T; t++) {
            REAL *cur = xhbuf + (t & 1) * B * K, *nxt = xhbuf + ((t + 1) & 1) * B * K;
            if (xhpack && s == 0)
                for (int64_t b = 0; b < B; b++)
                    FN(lstm_save_xh)(K, TB, t * st + b * sb, cur + b * K, xhpack);
            FN(gemm_pb)(B, 4 * nup, K, cur, K, 1, pw, K * NR, gt, 4 * nup, 0, apack);
            for (int64_t b = 0; b < B; b++) {
                const int64_t r = t * st + b * sb;
                REAL *hnext = nxt + b * K + I + u0;
                if (lengths && t >= lengths[b]) {
                    memcpy(hnext, cur + b * K + I + u0, (size_t)nu * sizeof(REAL));
                    memset(y + r * H + u0, 0, (size_t)nu * sizeof(REAL));
                    continue;
                }
                REAL *g = gt + b * 4 * nup;
                FN(lstm_cell_units)(nu, g, nup, gsave ? gsave + r * G + u0 : g,
                                    gsave ? H : nup, hnext, cs + b * H + u0, y + r * H + u0);
                if (csave)
                    memcpy(csave + r * H + u0, cs + b * H + u0, (size_t)nu * sizeof(REAL));
            }
            if (s == 0 && t + 1 < T)
                for (int64_t b = 0; b < B; b++)
                    FN(lstm_load_x)(I, x + ((t + 1) * st + b * sb) * I,
                                    !lengths || t + 1 < lengths[b], nxt + b * K);
            FL_OMP(barrier)
        }
        FL_FTZ_END
    }
}

int FN(lstm_forward)(const fl_dims *d, const REAL *x, const REAL *w_ih, const REAL *w_hh,
                     const REAL *b_ih, const REAL *b_hh, const REAL *h0, const REAL *c0,
                     const int64_t *lengths, REAL *y, REAL *h_n, REAL *c_n, REAL *reserve,
                     char *ws) {
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 4 * H, K = I + H + 1, TB = T * B;
    const fl_lstm_forward_ws w = fl_ws_lstm_forward(d, sizeof(REAL), reserve != NULL);
    REAL *bsum = (REAL *)(ws + w.bias_sum), *pw = (REAL *)(ws + w.w_packed);
    REAL *cs = (REAL *)(ws + w.c);
    REAL *gsave = reserve, *csave = reserve ? reserve + TB * G : NULL;
    REAL *xhpack = reserve ? reserve + TB * (G + H) : NULL; /* panels [TB][NR] */
    char *tbase = ws + w.threads;
    /* row of step t, sequence b, in every [T,B,*] or [B,T,*] array */
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;

    for (int64_t j = 0; j < G; j++) bsum[j] = b_ih[j] + b_hh[j];

    const int64_t ntiles = fl_max64(1, fl_min64(w.nt, fl_cdiv(B, FL_MR)));
    const int64_t nsplit = fl_min64(fl_min64(w.nt, FL_MAX_UNIT_SPLIT), H / 32);
    if (ntiles == 1 && nsplit >= 2 && B > 0) {
        REAL *xhbuf = (REAL *)(ws + w.xh_pair);
        for (int64_t b = 0; b < B; b++) {
            REAL *row = xhbuf + b * K;
            FN(lstm_load_x)(I, x + b * sb * I, 1, row); /* every sequence has step 0 */
            if (h0) memcpy(row + I, h0 + b * H, (size_t)H * sizeof(REAL));
            else memset(row + I, 0, (size_t)H * sizeof(REAL));
            row[I + H] = xhbuf[(B + b) * K + I + H] = 1;
            if (c0) memcpy(cs + b * H, c0 + b * H, (size_t)H * sizeof(REAL));
            else memset(cs + b * H, 0, (size_t)H * sizeof(REAL));
        }
        FN(lstm_forward_split)(d, &w, nsplit, x, w_ih, w_hh, bsum, lengths, y, cs, gsave, csave,
                               xhpack, xhbuf, (REAL *)(ws + w.w_split), tbase);
        const REAL *last = xhbuf + (T & 1) * B * K;
        if (h_n)
            for (int64_t b = 0; b < B; b++)
                memcpy(h_n + b * H, last + b * K + I, (size_t)H * sizeof(REAL));
        if (c_n) memcpy(c_n, cs, (size_t)(B * H) * sizeof(REAL));
        return FL_OK;
    }
    /* B(k, j) = W_ih[j, k] for k < I, then W_hh[j, k - I], then the bias: depth I+H+1 (the
     * split path above packs its own columns instead) */
    FN(pack_bs)(I, G, w_ih, 1, I, pw, K * NR, 0, FN(panels)(G));
    FN(pack_bs)(H, G, w_hh, 1, H, pw + I * NR, K * NR, 0, FN(panels)(G));
    FN(pack_bs)(1, G, bsum, G, 1, pw + (I + H) * NR, K * NR, 0, FN(panels)(G));
    FL_OMP(parallel num_threads((int)ntiles))
    {
        FL_FTZ_BEGIN
        char *mine = tbase + (size_t)FL_THREAD_ID() * w.per_thread;
        REAL *apack = (REAL *)(mine + w.t_apack), *gtile = (REAL *)(mine + w.t_gates);
        REAL *xh = (REAL *)(mine + w.t_xh); /* [x_t | h | 1] of the tile's rows */
        FL_OMP(for schedule(static, 1))
        for (int64_t tile = 0; tile < ntiles; tile++) {
            const int64_t b0 = tile * B / ntiles, b1 = (tile + 1) * B / ntiles, nb = b1 - b0;
            for (int64_t b = b0; b < b1; b++) {
                REAL *hrow = xh + (b - b0) * K + I;
                if (h0) memcpy(hrow, h0 + b * H, (size_t)H * sizeof(REAL));
                else memset(hrow, 0, (size_t)H * sizeof(REAL));
                hrow[H] = 1;
                if (c0) memcpy(cs + b * H, c0 + b * H, (size_t)H * sizeof(REAL));
                else memset(cs + b * H, 0, (size_t)H * sizeof(REAL));
            }
            for (int64_t t = 0; t < T; t++) {
                const int64_t rt = t * st + b0 * sb;
                for (int64_t b = b0; b < b1; b++) {
                    const int64_t r = t * st + b * sb;
                    FN(lstm_load_x)(I, x + r * I, !lengths || t < lengths[b], xh + (b - b0) * K);
                    if (xhpack) FN(lstm_save_xh)(K, TB, r, xh + (b - b0) * K, xhpack);
                }
                REAL *gt = gsave ? gsave + rt * G : gtile;
                const int64_t ldg = gsave ? sb * G : G;
                FN(gemm_pb)(nb, G, K, xh, K, 1, pw, K * NR, gt, ldg, 0, apack);
                for (int64_t b = b0; b < b1; b++) {
                    const int64_t r = t * st + b * sb;
                    if (lengths && t >= lengths[b]) {
                        memset(y + r * H, 0, (size_t)H * sizeof(REAL));
                        continue;
                    }
                    REAL *g = gt + (b - b0) * ldg;
                    FN(lstm_cell_units)(H, g, H, g, H, xh + (b - b0) * K + I, cs + b * H,
                                        y + r * H);
                    if (csave) memcpy(csave + r * H, cs + b * H, (size_t)H * sizeof(REAL));
                }
            }
            if (h_n)
                for (int64_t b = b0; b < b1; b++)
                    memcpy(h_n + b * H, xh + (b - b0) * K + I, (size_t)H * sizeof(REAL));
        }
        FL_FTZ_END
    }
    if (c_n) memcpy(c_n, cs, (size_t)(B * H) * sizeof(REAL));
    return FL_OK;
}
