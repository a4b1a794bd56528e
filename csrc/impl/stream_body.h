/* stream_body.h -- streaming steps (fl_lstm_stream_*, fl_gru_stream_*): the weights packed
 * once into the caller's block, then one time step per call; included once per (ISA, dtype)
 * after lstm_forward_body.h and gru_forward_body.h, whose epilogues it calls.
 *
 * Bitwise the sequence kernels' step. Each step computes every element exactly as
 * lstm_forward / gru_forward do at the same step: the same packed B operand (so the same
 * products, summed over k in the same order by gemm_pb, whichever rows share the call), the
 * same bias handling (the LSTM's b_ih + b_hh as the last row of its packed weights, the GRU's
 * two biases added in its epilogue) and the same fused epilogues. So T steps of a stream give
 * the bits of fastlstm.lstm / gru over the same T steps.
 *
 * Threads split the batch rows into tiles, as the sequence kernels' tile path does. At B = 1
 * (a tile is at least MR rows) a step runs on the calling thread with no parallel region:
 * the fork and join of a team costs more than a small step's arithmetic. */

/* Pack the weights (after the header and layout are written). */
int FN(lstm_stream_pack)(void *mem, const REAL *w_ih, const REAL *w_hh, const REAL *b_ih,
                         const REAL *b_hh) {
    fl_stream_header *s = (fl_stream_header *)mem;
    const int64_t I = s->input_size, H = s->hidden_size, G = 4 * H, K = I + H + 1;
    REAL *pw = (REAL *)((char *)mem + s->w.w_packed);
    /* the bias row: b_ih + b_hh summed first, as lstm_forward does (in the gate buffer, free
     * until the first step) */
    REAL *bsum = (REAL *)((char *)mem + s->w.gates);
    for (int64_t j = 0; j < G; j++) bsum[j] = b_ih[j] + b_hh[j];
    FN(pack_bs)(I, G, w_ih, 1, I, pw, K * NR, 0, FN(panels)(G));
    FN(pack_bs)(H, G, w_hh, 1, H, pw + I * NR, K * NR, 0, FN(panels)(G));
    FN(pack_bs)(1, G, bsum, G, 1, pw + (I + H) * NR, K * NR, 0, FN(panels)(G));
    return FL_OK;
}

int FN(gru_stream_pack)(void *mem, const REAL *w_ih, const REAL *w_hh, const REAL *b_ih,
                        const REAL *b_hh) {
    fl_stream_header *s = (fl_stream_header *)mem;
    const int64_t I = s->input_size, H = s->hidden_size, G = 3 * H;
    char *base = (char *)mem;
    FN(pack_b)(I, G, w_ih, 1, I, (REAL *)(base + s->w.w_packed), 0, FN(panels)(G));
    if (s->lbr) {
        FN(pack_b)(H, G, w_hh, 1, H, (REAL *)(base + s->w.w_hh_packed), 0, FN(panels)(G));
    } else {
        FN(pack_b)(H, 2 * H, w_hh, 1, H, (REAL *)(base + s->w.w_hh_packed), 0,
                   FN(panels)(2 * H));
        FN(pack_b)(H, H, w_hh + 2 * H * H, 1, H, (REAL *)(base + s->w.w_hn_packed), 0,
                   FN(panels)(H));
    }
    memcpy(base + s->w.b_ih, b_ih, (size_t)G * sizeof(REAL));
    memcpy(base + s->w.b_hh, b_hh, (size_t)G * sizeof(REAL));
    return FL_OK;
}

/* One step of rows [b0, b1): x_t into the rows [x_t | h | 1], their product with the packed
 * weights, then lstm_forward's epilogue (h into the rows, c in place, the output y). */
static void FN(lstm_stream_rows)(const fl_stream_header *s, char *base, int64_t b0, int64_t b1,
                                 const REAL *x, REAL *y, REAL *apack) {
    const int64_t I = s->input_size, H = s->hidden_size, G = 4 * H, K = I + H + 1;
    REAL *xh = (REAL *)(base + s->w.state), *cs = (REAL *)(base + s->w.c);
    REAL *gt = (REAL *)(base + s->w.gates);
    for (int64_t b = b0; b < b1; b++) memcpy(xh + b * K, x + b * I, (size_t)I * sizeof(REAL));
    FN(gemm_pb)(b1 - b0, G, K, xh + b0 * K, K, 1, (const REAL *)(base + s->w.w_packed), K * NR,
                gt + b0 * G, G, 0, apack);
    for (int64_t b = b0; b < b1; b++) {
        REAL *g = gt + b * G;
        FN(lstm_cell_units)(H, g, H, g, H, xh + b * K + I, cs + b * H, y + b * H);
    }
}

/* The same for the GRU: x_t W_ih^T and h W_hh^T, then gru_forward's epilogue (lbr=0: r and z
 * first, then W_hn (r*h)). */
static void FN(gru_stream_rows)(const fl_stream_header *s, char *base, int64_t b0, int64_t b1,
                                const REAL *x, REAL *y, REAL *apack) {
    const int64_t I = s->input_size, H = s->hidden_size, G = 3 * H, nb = b1 - b0;
    REAL *hs = (REAL *)(base + s->w.state), *gx = (REAL *)(base + s->w.gates);
    REAL *gh = (REAL *)(base + s->w.gh), *rh = (REAL *)(base + s->w.rh);
    const REAL *bi = (const REAL *)(base + s->w.b_ih), *bh = (const REAL *)(base + s->w.b_hh);
    const REAL *phh = (const REAL *)(base + s->w.w_hh_packed);
    FN(gemm_pb)(nb, G, I, x + b0 * I, I, 1, (const REAL *)(base + s->w.w_packed), I * NR,
                gx + b0 * G, G, 0, apack);
    if (s->lbr) {
        FN(gemm_pb)(nb, G, H, hs + b0 * H, H, 1, phh, H * NR, gh + b0 * G, G, 0, apack);
        for (int64_t b = b0; b < b1; b++)
            FN(gru_row_lbr)(H, gx + b * G, gh + b * G, bi, bh, hs + b * H, gx + b * G,
                            gh + b * G + 2 * H, y + b * H);
    } else {
        FN(gemm_pb)(nb, 2 * H, H, hs + b0 * H, H, 1, phh, H * NR, gh + b0 * G, G, 0, apack);
        for (int64_t b = b0; b < b1; b++)
            FN(gru_row_rz)(H, gx + b * G, gh + b * G, bi, bh, hs + b * H, rh + b * H);
        FN(gemm_pb)(nb, H, H, rh + b0 * H, H, 1, (const REAL *)(base + s->w.w_hn_packed),
                    H * NR, gh + b0 * G + 2 * H, G, 0, apack);
        for (int64_t b = b0; b < b1; b++)
            FN(gru_row_n)(H, gx + b * G, gh + b * G, bi, bh, hs + b * H, gx + b * G, y + b * H);
    }
}

/* One step: tiles of batch rows over the threads, or the calling thread alone when there is
 * one tile (no parallel region then). The team is the one the block was sized for, as
 * fl_resolve_threads allows now (1 in a forked child); tiles are shared by the team granted. */
static void FN(stream_step)(void *mem, const REAL *x, REAL *h_out,
                            void (*rows)(const fl_stream_header *, char *, int64_t, int64_t,
                                         const REAL *, REAL *, REAL *)) {
    const fl_stream_header *s = (const fl_stream_header *)mem;
    char *base = (char *)mem;
    const int64_t B = s->batch;
    REAL *y = h_out ? h_out : (REAL *)(base + s->w.y);
    char *tbase = base + s->w.threads;
    int64_t nt = s->nt > 1 ? fl_min64(s->nt, fl_resolve_threads((int)s->nt)) : 1;
    const int64_t ntiles = fl_max64(1, fl_min64(nt, fl_cdiv(B, FL_MR)));
    if (B < 1) return;
    if (ntiles == 1) {
        FL_FTZ_BEGIN
        rows(s, base, 0, B, x, y, (REAL *)tbase);
        FL_FTZ_END
        return;
    }
    FL_OMP(parallel num_threads((int)ntiles))
    {
        FL_FTZ_BEGIN
        REAL *apack = (REAL *)(tbase + (size_t)FL_THREAD_ID() * s->w.per_thread);
        FL_OMP(for schedule(static, 1))
        for (int64_t tile = 0; tile < ntiles; tile++)
            rows(s, base, tile * B / ntiles, (tile + 1) * B / ntiles, x, y, apack);
        FL_FTZ_END
    }
}

int FN(lstm_stream_step)(void *mem, const REAL *x, REAL *h_out) {
    FN(stream_step)(mem, x, h_out, FN(lstm_stream_rows));
    return FL_OK;
}

int FN(gru_stream_step)(void *mem, const REAL *x, REAL *h_out) {
    FN(stream_step)(mem, x, h_out, FN(gru_stream_rows));
    return FL_OK;
}
