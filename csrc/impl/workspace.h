/* workspace.h -- how each kernel carves its scratch space, shared by the size queries in
 * api.c and the kernels themselves so the two can never disagree. Sizes are conservative over
 * the instruction sets (panels padded to the widest NR, tiles to the largest MR). */
#ifndef FL_IMPL_WORKSPACE_H
#define FL_IMPL_WORKSPACE_H

#include "impl/common.h"
#include "impl/threads.h"

#define FL_NR_BYTES 128 /* widest GEMM panel: two AVX-512 vectors */
#define FL_MR_MAX 12    /* no ISA's MR is larger */
#define FL_MC 192       /* rows of A packed at once (a multiple of every MR; a 128-row tile
                         * in one block: 1-2% faster at 1 thread than 96) */
#define FL_KC 256       /* depth of one packed block */
#define FL_ALIGN 64
#define FL_MAX_UNIT_SPLIT 16 /* threads sharing one small batch's hidden units */

typedef struct {
    int64_t nt;        /* threads */
    int64_t tr;        /* upper bound on batch rows per tile */
    size_t apack;      /* per-thread packed-A block (FL_MC x FL_KC) */
    size_t tile_a;     /* per-thread tile temporaries */
    size_t tile_b;
    size_t per_thread; /* bytes per thread of the three above */
    size_t ct;         /* C^T of the weight-gradient GEMM (gemm_tn_par) */
    size_t bsum, pack_ih, pack_hh, pack_hh2, pack_big, gbuf, gbuf2, st_h, st_c, zero, threads;
    size_t total;
} fl_ws;

static inline size_t fl_take(size_t *cursor, size_t bytes) {
    size_t at = *cursor;
    *cursor += (bytes + FL_ALIGN - 1) / FL_ALIGN * FL_ALIGN;
    return at;
}

static inline int64_t fl_pad_n(int64_t n, size_t elem) {
    return fl_rup(n, (int64_t)(FL_NR_BYTES / elem));
}

/* Bytes of gemm_tn_par's C^T for an M x N weight gradient: rup(N, MR) rows of a padded M,
 * plus a vector (conservative over every ISA's MR, NR and vector length). */
static inline size_t fl_tn_ct_bytes(int64_t M, int64_t N, size_t elem) {
    return (size_t)((N + FL_MR_MAX) * (fl_pad_n(M, elem) + (int64_t)(FL_NR_BYTES / elem))) * elem;
}

static inline void fl_ws_threads(fl_ws *w, const fl_dims *d) {
    int64_t nt = fl_resolve_threads(d->n_threads);
    w->nt = nt;
    w->tr = fl_rup(fl_cdiv(d->batch > 0 ? d->batch : 1, nt), FL_MR_MAX);
}

/* Per-thread block: packed A, then two tile temporaries of tile_a/tile_b elements per row. */
static inline void fl_ws_per_thread(fl_ws *w, size_t elem, int64_t cols_a, int64_t cols_b) {
    size_t c = 0;
    w->apack = fl_take(&c, (size_t)FL_MC * FL_KC * elem);
    w->tile_a = fl_take(&c, (size_t)(w->tr * cols_a) * elem);
    w->tile_b = fl_take(&c, (size_t)(w->tr * cols_b) * elem);
    w->per_thread = c;
}

/* LSTM forward: gate bias sum, [W_ih | W_hh | b]^T packed as one matrix of depth I+H+1, the
 * running c; per thread, the gates of a tile (inference; training writes them into the
 * reserve) and the tile's [x_t | h_{t-1} | 1] rows; for small batches split over the hidden
 * units, the per-thread weights and the shared [x | h | 1] buffers. */
static inline fl_ws fl_ws_lstm_forward(const fl_dims *d, size_t elem, int training) {
    fl_ws w; memset(&w, 0, sizeof w);
    fl_ws_threads(&w, d);
    int64_t B = d->batch, I = d->input_size, H = d->hidden_size, G = 4 * H;
    (void)training;
    fl_ws_per_thread(&w, elem, G, I + H + 1);
    size_t c = 0;
    int64_t split = w.nt < FL_MAX_UNIT_SPLIT ? w.nt : FL_MAX_UNIT_SPLIT;
    w.bsum = fl_take(&c, (size_t)G * elem);
    w.pack_ih = fl_take(&c, (size_t)(fl_pad_n(G, elem) * (I + H + 1)) * elem);
    /* small batches: each thread's own gate columns (4 segments, each padded to a panel) and
     * two [x | h | 1] buffers that the threads swap every step */
    w.pack_hh2 = fl_take(&c, (size_t)((G + 4 * split * ((int64_t)(FL_NR_BYTES / elem) + 16)) *
                                      (I + H + 1)) * elem);
    w.gbuf2 = fl_take(&c, (size_t)(2 * B * (I + H + 1)) * elem);
    w.st_c = fl_take(&c, (size_t)(B * H) * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

/* LSTM backward: gate gradients dG for all steps, [dW_ih | dW_hh | db] as one product,
 * [W_hh | W_ih] packed side by side for dG @ W, running dh and dc, and a per-thread tile for
 * [dh_{t-1} | dx_t]. */
static inline fl_ws fl_ws_lstm_backward(const fl_dims *d, size_t elem) {
    fl_ws w; memset(&w, 0, sizeof w);
    fl_ws_threads(&w, d);
    int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 4 * H;
    fl_ws_per_thread(&w, elem, fl_pad_n(H, elem) + I, 0);
    size_t c = 0;
    int64_t cat = I + H + 1;
    w.gbuf = fl_take(&c, (size_t)(T * B * G) * elem);
    w.gbuf2 = fl_take(&c, (size_t)(G * cat) * elem);
    w.ct = fl_take(&c, fl_tn_ct_bytes(G, cat, elem));
    w.pack_hh = fl_take(&c, (size_t)((fl_pad_n(H, elem) + fl_pad_n(I, elem)) * G) * elem);
    w.st_h = fl_take(&c, (size_t)(B * H) * elem);
    w.st_c = fl_take(&c, (size_t)(B * H) * elem);
    w.zero = fl_take(&c, (size_t)H * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

/* GRU forward: packed weights (for linear_before_reset=0, W_hh's r,z rows and n rows are packed
 * apart: n multiplies r*h, not h), the projection X W_ih^T, the running h, and per-thread tiles
 * for h W_hh^T (3H) and r*h (H). */
static inline fl_ws fl_ws_gru_forward(const fl_dims *d, size_t elem, int lbr) {
    fl_ws w; memset(&w, 0, sizeof w);
    fl_ws_threads(&w, d);
    int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 3 * H;
    fl_ws_per_thread(&w, elem, G, H);
    size_t c = 0;
    w.pack_ih = fl_take(&c, (size_t)(fl_pad_n(G, elem) * I) * elem);
    if (lbr) {
        w.pack_hh = fl_take(&c, (size_t)(fl_pad_n(G, elem) * H) * elem);
    } else {
        w.pack_hh = fl_take(&c, (size_t)(fl_pad_n(2 * H, elem) * H) * elem);
        w.pack_hh2 = fl_take(&c, (size_t)(fl_pad_n(H, elem) * H) * elem);
    }
    w.gbuf = fl_take(&c, (size_t)(T * B * G) * elem);
    w.st_h = fl_take(&c, (size_t)(B * H) * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

/* GRU backward: gate gradients (two buffers with linear_before_reset=1, where the gradient
 * that reaches W_hn is r times the one that reaches W_in), W_hh and W_ih packed for dG @ W,
 * the big panel buffer, the running dh, and a per-thread tile. */
static inline fl_ws fl_ws_gru_backward(const fl_dims *d, size_t elem, int lbr) {
    fl_ws w; memset(&w, 0, sizeof w);
    fl_ws_threads(&w, d);
    int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 3 * H;
    fl_ws_per_thread(&w, elem, H, 0);
    size_t c = 0;
    w.gbuf = fl_take(&c, (size_t)(T * B * G) * elem);
    w.gbuf2 = fl_take(&c, lbr ? (size_t)(T * B * G) * elem : 0);
    w.pack_hh = fl_take(&c, (size_t)(fl_pad_n(H, elem) * G) * elem);
    w.pack_ih = fl_take(&c, (size_t)(fl_pad_n(I, elem) * G) * elem);
    w.pack_big = fl_take(&c, (size_t)(fl_pad_n((H > I ? H : I) + 1, elem) * T * B) * elem);
    w.pack_hh2 = fl_take(&c, (size_t)(G * ((H > I ? H : I) + 1)) * elem);
    w.ct = fl_take(&c, fl_tn_ct_bytes(G, (H > I ? H : I) + 1, elem));
    w.st_h = fl_take(&c, (size_t)(B * H) * elem);
    w.zero = fl_take(&c, (size_t)H * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

/* Reserve (what training forward saves for backward), in elements of the dtype:
 *   LSTM: gates [TB,4H] (activated i,f,g,o) | c_t [TB,H] | [x_t | h_{t-1} | 1] rows, already
 *         packed as the B operand of the weight-gradient GEMM (panels of NR columns)
 *   GRU:  gates [TB,4H] (r, z, n, and W_hn h + b_hn for lbr=1; unused for lbr=0) | h_{t-1} [TB,H]
 *         | r*h_{t-1} [TB,H] (lbr=0 only) */
static inline int64_t fl_lstm_reserve_elems(const fl_dims *d, size_t elem) {
    return d->seq_len * d->batch *
           (5 * d->hidden_size + fl_pad_n(d->input_size + d->hidden_size + 1, elem));
}
static inline int64_t fl_gru_reserve_elems(const fl_dims *d, int lbr) {
    return d->seq_len * d->batch * (lbr ? 5 : 6) * d->hidden_size;
}

#endif
