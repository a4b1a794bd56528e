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

static inline void FN(lstm_cell_row)(int64_t H, REAL *g, REAL *restrict h, REAL *restrict c,
                                     REAL *restrict y) {
    REAL *gi = g, *gf = g + H, *gg = g + 2 * H, *go = g + 3 * H;
    FL_SIMD
    for (int64_t j = 0; j < H; j++) {
        REAL i = SIGMOID(gi[j]);
        REAL f = SIGMOID(gf[j]);
        REAL gv = TANH(gg[j]);
        REAL o = SIGMOID(go[j]);
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
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 4 * H, K = I + H + 1, TB = T * B;
    const fl_ws w = fl_ws_lstm_forward(d, sizeof(REAL), reserve != NULL);
    REAL *bsum = (REAL *)(ws + w.bsum), *pw = (REAL *)(ws + w.pack_ih);
    REAL *cs = (REAL *)(ws + w.st_c);
    REAL *gsave = reserve, *csave = reserve ? reserve + TB * G : NULL;
    REAL *xhpack = reserve ? reserve + TB * (G + H) : NULL; /* panels [TB][NR] */
    const int64_t kpanels = FN(panels)(K);
    char *tbase = ws + w.threads;
    /* row of step t, sequence b, in every [T,B,*] or [B,T,*] array */
    const int64_t st = d->batch_first ? 1 : B, sb = d->batch_first ? T : 1;

    for (int64_t j = 0; j < G; j++) bsum[j] = b_ih[j] + b_hh[j];
    /* B(k, j) = W_ih[j, k] for k < I, then W_hh[j, k - I], then the bias: depth I+H+1 */
    FN(pack_bs)(I, G, w_ih, 1, I, pw, K * NR, 0, FN(panels)(G));
    FN(pack_bs)(H, G, w_hh, 1, H, pw + I * NR, K * NR, 0, FN(panels)(G));
    FN(pack_bs)(1, G, bsum, G, 1, pw + (I + H) * NR, K * NR, 0, FN(panels)(G));

    const int64_t ntiles = fl_max64(1, fl_min64(w.nt, fl_cdiv(B, FL_MR)));
    FL_OMP(parallel num_threads((int)ntiles))
    {
        FL_FTZ_BEGIN
        char *mine = tbase + (size_t)FL_THREAD_ID() * w.per_thread;
        REAL *apack = (REAL *)(mine + w.apack), *gtile = (REAL *)(mine + w.tile_a);
        REAL *xh = (REAL *)(mine + w.tile_b); /* [x_t | h | 1] of the tile's rows */
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
                    /* x past a sequence's end is never read: it may be padding (NaN, inf), and
                     * the saved row feeds the weight gradient even where dG is 0 */
                    if (lengths && t >= lengths[b])
                        memset(xh + (b - b0) * K, 0, (size_t)I * sizeof(REAL));
                    else
                        memcpy(xh + (b - b0) * K, x + r * I, (size_t)I * sizeof(REAL));
                    if (xhpack) /* saved straight into the weight-gradient GEMM's layout */
                        for (int64_t p = 0; p < kpanels; p++) {
                            REAL *dst = xhpack + (p * TB + r) * NR;
                            int64_t n = fl_min64(NR, K - p * NR);
                            memcpy(dst, xh + (b - b0) * K + p * NR, (size_t)n * sizeof(REAL));
                            if (n < NR) memset(dst + n, 0, (size_t)(NR - n) * sizeof(REAL));
                        }
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
                    FN(lstm_cell_row)(H, gt + (b - b0) * ldg, xh + (b - b0) * K + I, cs + b * H,
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
