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

/* Each kernel's scratch has its own layout struct below: byte offsets from the start of the
 * scratch space, each buffer aligned to FL_ALIGN, and `total` bytes in all. The last part is
 * one block per thread (nt blocks of per_thread bytes from `threads` on); the t_* fields are
 * offsets inside a thread's block, which always starts with the packed-A block of gemm_pb
 * (t_apack) followed by the kernel's tile temporaries, tile_rows batch rows each. Scratch is
 * sized for nt threads; a team OpenMP grants smaller only leaves blocks unused. */

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

/* The thread count the scratch is sized for, and the most batch rows one tile can have. */
static inline void fl_ws_team(const fl_dims *d, int64_t *nt, int64_t *tile_rows) {
    *nt = fl_resolve_threads(d->n_threads);
    *tile_rows = fl_rup(fl_cdiv(d->batch > 0 ? d->batch : 1, *nt), FL_MR_MAX);
}

/* The packed-A block at the start of every thread's block (FL_MC x FL_KC). */
static inline size_t fl_take_apack(size_t *cursor, size_t elem) {
    return fl_take(cursor, (size_t)FL_MC * FL_KC * elem);
}

/* ------------------------------------------------------------------------- LSTM forward */

typedef struct {
    int64_t nt;        /* threads the scratch is sized for (fl_resolve_threads) */
    int64_t tile_rows; /* upper bound on the batch rows of one tile */
    size_t t_apack;    /* per thread: packed-A block of gemm_pb */
    size_t t_gates;    /* per thread: gate pre-activations, then activations, of a tile's rows,
                        * tile_rows x 4H (inference only: training writes them into the
                        * reserve); in the unit split, B rows of the thread's 4 gate segments */
    size_t t_xh;       /* per thread: the tile's [x_t | h_{t-1} | 1] rows, tile_rows x (I+H+1) */
    size_t per_thread; /* bytes of one thread's block */
    size_t bias_sum;   /* b_ih + b_hh, 4H */
    size_t w_packed;   /* B operand of the step product (batch-tile path): [W_ih | W_hh | b]^T,
                        * panels of NR gate columns, depth I+H+1 */
    size_t w_split;    /* the unit split's weights: each thread's own gate columns (i, f, g, o
                        * of its units, each segment padded to a panel), depth I+H+1 */
    size_t xh_pair;    /* the unit split's two shared [x_t | h | 1] buffers, 2 x B x (I+H+1):
                        * step t reads one and writes h_t into the other */
    size_t c;          /* running cell state c, B x H */
    size_t threads;    /* the per-thread blocks, nt x per_thread */
    size_t total;
} fl_lstm_forward_ws;

static inline fl_lstm_forward_ws fl_ws_lstm_forward(const fl_dims *d, size_t elem,
                                                    int training) {
    fl_lstm_forward_ws w; memset(&w, 0, sizeof w);
    fl_ws_team(d, &w.nt, &w.tile_rows);
    int64_t B = d->batch, I = d->input_size, H = d->hidden_size, G = 4 * H, K = I + H + 1;
    (void)training;
    size_t t = 0;
    w.t_apack = fl_take_apack(&t, elem);
    w.t_gates = fl_take(&t, (size_t)(w.tile_rows * G) * elem);
    w.t_xh = fl_take(&t, (size_t)(w.tile_rows * K) * elem);
    w.per_thread = t;
    size_t c = 0;
    int64_t split = w.nt < FL_MAX_UNIT_SPLIT ? w.nt : FL_MAX_UNIT_SPLIT;
    w.bias_sum = fl_take(&c, (size_t)G * elem);
    w.w_packed = fl_take(&c, (size_t)(fl_pad_n(G, elem) * K) * elem);
    w.w_split = fl_take(&c, (size_t)((G + 4 * split * ((int64_t)(FL_NR_BYTES / elem) + 16)) * K) *
                                elem);
    w.xh_pair = fl_take(&c, (size_t)(2 * B * K) * elem);
    w.c = fl_take(&c, (size_t)(B * H) * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

/* ------------------------------------------------------------------------ LSTM backward */

typedef struct {
    int64_t nt;        /* threads the scratch is sized for (fl_resolve_threads) */
    int64_t tile_rows; /* upper bound on the batch rows of one tile */
    size_t t_apack;    /* per thread: packed-A block of gemm_pb */
    size_t t_dhx;      /* per thread: [dh_{t-1} | dx_t] of a tile's rows, tile_rows x
                        * (pad(H) + I); in the unit split, dh_{t-1} of the thread's units */
    size_t per_thread; /* bytes of one thread's block */
    size_t dgates;     /* gate gradients dG of every row of every step, T*B x 4H */
    size_t dw_cat;     /* [dW_ih | dW_hh | db] as one product, 4H x (I+H+1) */
    size_t dw_cat_t;   /* its transpose C^T, as gemm_tn_par accumulates it */
    size_t w_packed;   /* B operand of dG_t [W_hh | W_ih]: W_hh's panels, then W_ih's, depth 4H */
    size_t dh;         /* running dh, B x H */
    size_t dc;         /* running dc, B x H */
    size_t zeros;      /* H zeros (no dy, no c0) */
    size_t threads;    /* the per-thread blocks, nt x per_thread */
    size_t total;
} fl_lstm_backward_ws;

static inline fl_lstm_backward_ws fl_ws_lstm_backward(const fl_dims *d, size_t elem) {
    fl_lstm_backward_ws w; memset(&w, 0, sizeof w);
    fl_ws_team(d, &w.nt, &w.tile_rows);
    int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 4 * H;
    int64_t cat = I + H + 1;
    size_t t = 0;
    w.t_apack = fl_take_apack(&t, elem);
    w.t_dhx = fl_take(&t, (size_t)(w.tile_rows * (fl_pad_n(H, elem) + I)) * elem);
    w.per_thread = t;
    size_t c = 0;
    w.dgates = fl_take(&c, (size_t)(T * B * G) * elem);
    w.dw_cat = fl_take(&c, (size_t)(G * cat) * elem);
    w.dw_cat_t = fl_take(&c, fl_tn_ct_bytes(G, cat, elem));
    w.w_packed = fl_take(&c, (size_t)((fl_pad_n(H, elem) + fl_pad_n(I, elem)) * G) * elem);
    w.dh = fl_take(&c, (size_t)(B * H) * elem);
    w.dc = fl_take(&c, (size_t)(B * H) * elem);
    w.zeros = fl_take(&c, (size_t)H * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

/* -------------------------------------------------------------------------- GRU forward */

typedef struct {
    int64_t nt;        /* threads the scratch is sized for (fl_resolve_threads) */
    int64_t tile_rows; /* upper bound on the batch rows of one tile */
    size_t t_apack;    /* per thread: packed-A block of gemm_pb */
    size_t t_gh;       /* per thread: h_{t-1} W_hh^T of a tile's rows, tile_rows x 3H (lbr=0:
                        * r, z written over its first 2H, W_hn (r*h) in the last H) */
    size_t t_rh;       /* per thread: r*h_{t-1} of a tile's rows, tile_rows x H (lbr=0) */
    size_t per_thread; /* bytes of one thread's block */
    size_t w_ih_packed; /* B operand of X W_ih^T: panels of 3H columns, depth I */
    size_t w_hh_packed; /* B operand of h W_hh^T: all 3H rows of W_hh (lbr=1), or the r, z rows
                         * only (lbr=0) */
    size_t w_hn_packed; /* lbr=0: W_hn packed on its own, for W_hn (r*h); 0 bytes for lbr=1 */
    size_t x_proj;     /* X W_ih^T for every row of every step, T*B x 3H (inference writes the
                        * activated gates over it) */
    size_t h;          /* running h, B x H */
    size_t threads;    /* the per-thread blocks, nt x per_thread */
    size_t total;
} fl_gru_forward_ws;

static inline fl_gru_forward_ws fl_ws_gru_forward(const fl_dims *d, size_t elem, int lbr) {
    fl_gru_forward_ws w; memset(&w, 0, sizeof w);
    fl_ws_team(d, &w.nt, &w.tile_rows);
    int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 3 * H;
    size_t t = 0;
    w.t_apack = fl_take_apack(&t, elem);
    w.t_gh = fl_take(&t, (size_t)(w.tile_rows * G) * elem);
    w.t_rh = fl_take(&t, (size_t)(w.tile_rows * H) * elem);
    w.per_thread = t;
    size_t c = 0;
    w.w_ih_packed = fl_take(&c, (size_t)(fl_pad_n(G, elem) * I) * elem);
    if (lbr) {
        w.w_hh_packed = fl_take(&c, (size_t)(fl_pad_n(G, elem) * H) * elem);
    } else {
        w.w_hh_packed = fl_take(&c, (size_t)(fl_pad_n(2 * H, elem) * H) * elem);
        w.w_hn_packed = fl_take(&c, (size_t)(fl_pad_n(H, elem) * H) * elem);
    }
    w.x_proj = fl_take(&c, (size_t)(T * B * G) * elem);
    w.h = fl_take(&c, (size_t)(B * H) * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

/* ------------------------------------------------------------------------- GRU backward */

typedef struct {
    int64_t nt;        /* threads the scratch is sized for (fl_resolve_threads) */
    int64_t tile_rows; /* upper bound on the batch rows of one tile */
    size_t t_apack;    /* per thread: packed-A block of gemm_pb */
    size_t t_drh;      /* per thread: d(r*h_{t-1}) of a tile's rows, tile_rows x H (lbr=0) */
    size_t per_thread; /* bytes of one thread's block */
    size_t dgates_x;   /* gate gradients reaching W_ih, b_ih and x, T*B x 3H (lbr=0: also
                        * W_hh's, they are the same) */
    size_t dgates_h;   /* lbr=1: gate gradients reaching W_hh, b_hh and h (the n gate's is r
                        * times dgates_x's), T*B x 3H; 0 bytes for lbr=0 */
    size_t w_hh_packed; /* B operand of dG_t W_hh: panels of H columns, depth 3H */
    size_t w_ih_packed; /* B operand of dG_t W_ih: panels of I columns, depth 3H */
    size_t seq_packed; /* B operand of the weight-gradient products, T*B rows: [X | 1], then
                        * [H_prev | 1], then (lbr=0) r*H_prev, packed in turn */
    size_t dw_cat;     /* [dW_ih | db_ih], then (lbr=1) [dW_hh | db_hh], 3H x (max(H, I) + 1) */
    size_t dw_cat_t;   /* C^T of those products, as gemm_tn_par accumulates it */
    size_t dh;         /* running dh, B x H */
    size_t zeros;      /* H zeros (no dy) */
    size_t threads;    /* the per-thread blocks, nt x per_thread */
    size_t total;
} fl_gru_backward_ws;

static inline fl_gru_backward_ws fl_ws_gru_backward(const fl_dims *d, size_t elem, int lbr) {
    fl_gru_backward_ws w; memset(&w, 0, sizeof w);
    fl_ws_team(d, &w.nt, &w.tile_rows);
    int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 3 * H;
    int64_t cols = (H > I ? H : I) + 1;
    size_t t = 0;
    w.t_apack = fl_take_apack(&t, elem);
    w.t_drh = fl_take(&t, (size_t)(w.tile_rows * H) * elem);
    w.per_thread = t;
    size_t c = 0;
    w.dgates_x = fl_take(&c, (size_t)(T * B * G) * elem);
    w.dgates_h = fl_take(&c, lbr ? (size_t)(T * B * G) * elem : 0);
    w.w_hh_packed = fl_take(&c, (size_t)(fl_pad_n(H, elem) * G) * elem);
    w.w_ih_packed = fl_take(&c, (size_t)(fl_pad_n(I, elem) * G) * elem);
    w.seq_packed = fl_take(&c, (size_t)(fl_pad_n(cols, elem) * T * B) * elem);
    w.dw_cat = fl_take(&c, (size_t)(G * cols) * elem);
    w.dw_cat_t = fl_take(&c, fl_tn_ct_bytes(G, cols, elem));
    w.dh = fl_take(&c, (size_t)(B * H) * elem);
    w.zeros = fl_take(&c, (size_t)H * elem);
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


/* ------------------------------------------------ extended GRU (layer norm, recurrent mask) */
/* The grux kernels (grux_forward_body.h, grux_backward_body.h). `ln` is the layer-norm flag,
 * `masked` whether a recurrent mask is given, `lbr` linear_before_reset (ln needs lbr). */

#define FL_LN_EPS 1e-5 /* layer norm: var + eps under the square root (haste's value) */

/* Reserve layout, in elements of the dtype: each part holds one row per (step, sequence),
 * TB rows, at these offsets (a part that is absent has 0 elements and aliases the next).
 *   act [TB,4H]      r, z, n and (lbr) the n gate's hidden-side pre-activation a_h_n
 *   hprev [TB,H]     h_{t-1} (unmasked: the z*h term and dz use it)
 *   hm [TB,H]        m * h_{t-1}, the operand of the recurrent products (masked only; else
 *                    it is hprev)
 *   rhm [TB,H]       r * hm (lbr=0 only): W_hn's operand
 *   xhat_ih, xhat_hh [TB,3H]   the normalised W_ih x and W_hh hm (ln only)
 *   rstd [TB,2]      1/sqrt(var + eps) of each of the two (ln only) */
typedef struct {
    int64_t act, hprev, hm, rhm, xhat_ih, xhat_hh, rstd, total;
} fl_grux_reserve;

static inline fl_grux_reserve fl_grux_reserve_layout(const fl_dims *d, int lbr, int ln,
                                                     int masked) {
    fl_grux_reserve r;
    const int64_t TB = d->seq_len * d->batch, H = d->hidden_size;
    int64_t at = 0;
    r.act = at; at += TB * 4 * H;
    r.hprev = at; at += TB * H;
    r.hm = masked ? at : r.hprev; at += masked ? TB * H : 0;
    r.rhm = at; at += lbr ? 0 : TB * H;
    r.xhat_ih = at; at += ln ? TB * 3 * H : 0;
    r.xhat_hh = at; at += ln ? TB * 3 * H : 0;
    r.rstd = at; at += ln ? TB * 2 : 0;
    r.total = at;
    return r;
}

typedef struct {
    int64_t nt;         /* threads the scratch is sized for (fl_resolve_threads) */
    int64_t tile_rows;  /* upper bound on the batch rows of one tile */
    size_t t_apack;     /* per thread: packed-A block of gemm_pb */
    size_t t_gh;        /* per thread: hm W_hh^T of a tile's rows, tile_rows x 3H (as the GRU's) */
    size_t t_hm;        /* per thread: m * h_{t-1} of a tile's rows, tile_rows x H (masked) */
    size_t t_rh;        /* per thread: r * hm of a tile's rows, tile_rows x H (lbr=0) */
    size_t t_row;       /* per thread, inference: one row's act (4H), xhat_ih, xhat_hh (3H each) */
    size_t per_thread;  /* bytes of one thread's block */
    size_t w_ih_packed; /* B operand of X W_ih^T: panels of 3H columns, depth I */
    size_t w_hh_packed; /* B operand of hm W_hh^T: all 3H rows (lbr=1), the r, z rows (lbr=0) */
    size_t w_hn_packed; /* lbr=0: W_hn on its own, for W_hn (r*hm) */
    size_t x_proj;      /* X W_ih^T for every row of every step, T*B x 3H */
    size_t h;           /* running h, B x H */
    size_t threads;     /* the per-thread blocks, nt x per_thread */
    size_t total;
} fl_grux_forward_ws;

static inline fl_grux_forward_ws fl_ws_grux_forward(const fl_dims *d, size_t elem, int lbr,
                                                    int ln, int masked) {
    fl_grux_forward_ws w; memset(&w, 0, sizeof w);
    fl_ws_team(d, &w.nt, &w.tile_rows);
    int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 3 * H;
    size_t t = 0;
    w.t_apack = fl_take_apack(&t, elem);
    w.t_gh = fl_take(&t, (size_t)(w.tile_rows * G) * elem);
    w.t_hm = fl_take(&t, masked ? (size_t)(w.tile_rows * H) * elem : 0);
    w.t_rh = fl_take(&t, lbr ? 0 : (size_t)(w.tile_rows * H) * elem);
    w.t_row = fl_take(&t, (size_t)((ln ? 10 : 4) * H) * elem);
    w.per_thread = t;
    size_t c = 0;
    w.w_ih_packed = fl_take(&c, (size_t)(fl_pad_n(G, elem) * I) * elem);
    w.w_hh_packed = fl_take(&c, (size_t)(fl_pad_n(lbr ? G : 2 * H, elem) * H) * elem);
    w.w_hn_packed = fl_take(&c, lbr ? 0 : (size_t)(fl_pad_n(H, elem) * H) * elem);
    w.x_proj = fl_take(&c, (size_t)(T * B * G) * elem);
    w.h = fl_take(&c, (size_t)(B * H) * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

typedef struct {
    int64_t nt;         /* threads the scratch is sized for (fl_resolve_threads) */
    int64_t tile_rows;  /* upper bound on the batch rows of one tile */
    size_t t_apack;     /* per thread: packed-A block of gemm_pb */
    size_t t_dhm;       /* per thread: d(hm) of a tile's rows, tile_rows x H (the mask applies
                         * to it before it joins dh) */
    size_t t_drh;       /* per thread: d(r*hm) of a tile's rows, tile_rows x H (lbr=0) */
    size_t per_thread;  /* bytes of one thread's block */
    size_t dgates_x;    /* gradients reaching W_ih x (after the layer norm's backward), T*B x 3H;
                         * lbr=0: also W_hh's */
    size_t dgates_h;    /* lbr=1: gradients reaching W_hh hm, T*B x 3H */
    size_t dpre_x;      /* ln: gradients of the pre-activations a_x (before the layer norm's
                         * backward: b_ih's and g_ih's come from them), T*B x 3H */
    size_t dpre_h;      /* ln: the same for a_h, T*B x 3H */
    size_t w_hh_packed; /* B operand of dG_t W_hh: panels of H columns, depth 3H */
    size_t w_ih_packed; /* B operand of dX = dGx W_ih: panels of I columns, depth 3H */
    size_t seq_packed;  /* B operand of the weight-gradient products, T*B rows: X, then hm,
                         * then (lbr=0) r*hm, packed in turn */
    size_t ct;          /* C^T of those products, as gemm_tn_par accumulates it */
    size_t dh;          /* running dh, B x H */
    size_t zeros;       /* H zeros (no dy) */
    size_t threads;     /* the per-thread blocks, nt x per_thread */
    size_t total;
} fl_grux_backward_ws;

static inline fl_grux_backward_ws fl_ws_grux_backward(const fl_dims *d, size_t elem, int lbr,
                                                      int ln, int masked) {
    fl_grux_backward_ws w; memset(&w, 0, sizeof w);
    fl_ws_team(d, &w.nt, &w.tile_rows);
    int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size, G = 3 * H;
    int64_t cols = H > I ? H : I;
    size_t tbg = (size_t)(T * B * G) * elem;
    (void)masked;
    size_t t = 0;
    w.t_apack = fl_take_apack(&t, elem);
    w.t_dhm = fl_take(&t, (size_t)(w.tile_rows * H) * elem);
    w.t_drh = fl_take(&t, lbr ? 0 : (size_t)(w.tile_rows * H) * elem);
    w.per_thread = t;
    size_t c = 0;
    w.dgates_x = fl_take(&c, tbg);
    w.dgates_h = fl_take(&c, lbr ? tbg : 0);
    w.dpre_x = fl_take(&c, ln ? tbg : 0);
    w.dpre_h = fl_take(&c, ln ? tbg : 0);
    w.w_hh_packed = fl_take(&c, (size_t)(fl_pad_n(H, elem) * G) * elem);
    w.w_ih_packed = fl_take(&c, (size_t)(fl_pad_n(I, elem) * G) * elem);
    w.seq_packed = fl_take(&c, (size_t)(fl_pad_n(cols, elem) * T * B) * elem);
    w.ct = fl_take(&c, fl_tn_ct_bytes(G, cols, elem));
    w.dh = fl_take(&c, (size_t)(B * H) * elem);
    w.zeros = fl_take(&c, (size_t)H * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

/* ------------------------------------------------------------- extended LSTM (lstmx) */

/* The reserve of the extended LSTM: arrays of TB rows, each starting at TB * offset elements
 * (offsets here are widths summed): gates [TB,4H] (activated i,f,g,o) | c_t [TB,H] |
 * tanh of the (normalised) cell [TB,H] | m*h_{t-1} [TB,R] (the operand of dW_hh) |
 * with projection, r_t [TB,H] (the operand of dW_hr) | with layer norm, the normalised
 * a_x [TB,4H], a_h [TB,4H], c_t [TB,H] and their 1/sqrt(var+eps) [TB,3]. Rows of steps past a
 * sequence's end hold zeros (m*h there: the held state), so every product over all rows in
 * backward reads finite values. */
typedef struct {
    int64_t gates, c, tc, hm, r, xn, hn, cn, stats; /* offsets, in rows of TB elements */
    int64_t width;                                  /* total elements per row */
} fl_lstmx_reserve;

static inline int64_t fl_lstmx_rsize(const fl_dims *d, const fl_lstm_ext *e) {
    return e->proj_size > 0 ? e->proj_size : d->hidden_size;
}

static inline fl_lstmx_reserve fl_lstmx_reserve_layout(const fl_dims *d, const fl_lstm_ext *e) {
    const int64_t H = d->hidden_size, G = 4 * H, R = fl_lstmx_rsize(d, e);
    fl_lstmx_reserve r; int64_t at = 0;
    r.gates = at; at += G;
    r.c = at; at += H;
    r.tc = at; at += H;
    r.hm = at; at += R;
    r.r = at; at += e->proj_size > 0 ? H : 0;
    r.xn = at; at += e->layer_norm ? G : 0;
    r.hn = at; at += e->layer_norm ? G : 0;
    r.cn = at; at += e->layer_norm ? H : 0;
    r.stats = at; at += e->layer_norm ? 3 : 0;
    r.width = at;
    return r;
}

static inline int64_t fl_lstmx_reserve_elems(const fl_dims *d, const fl_lstm_ext *e) {
    return d->seq_len * d->batch * fl_lstmx_reserve_layout(d, e).width;
}

typedef struct {
    int64_t nt, tile_rows;
    size_t t_apack;    /* per thread: packed-A block of gemm_pb */
    size_t t_xh;       /* per thread: [x_t | m*h_{t-1}] of the tile's rows, tile_rows x (I+R) */
    size_t t_ax;       /* per thread: W_ih x_t of the tile's rows (layer norm), x 4H */
    size_t t_ah;       /* per thread: W_hh (m*h) (+ W_ih x_t without layer norm), x 4H */
    size_t t_h;        /* per thread: the tile's running h, tile_rows x R */
    size_t t_r;        /* per thread: r_t of the tile's rows, tile_rows x H */
    size_t t_hp;       /* per thread: W_hr r_t of the tile's rows, tile_rows x P */
    size_t t_row;      /* per thread: one row's temporaries in inference (tanh, LN(c)), 2H */
    size_t per_thread;
    size_t bias_sum;   /* b_ih + b_hh, 4H */
    size_t w_packed;   /* B operand of [x | m*h] [W_ih | W_hh]^T: panels of 4H columns, depth
                        * I+R (layer norm multiplies its two K-slices apart) */
    size_t w_hr_packed; /* B operand of r W_hr^T: panels of P columns, depth H */
    size_t c;          /* running cell state, B x H */
    size_t threads;
    size_t total;
} fl_lstmx_forward_ws;

static inline fl_lstmx_forward_ws fl_ws_lstmx_forward(const fl_dims *d, const fl_lstm_ext *e,
                                                      size_t elem) {
    fl_lstmx_forward_ws w; memset(&w, 0, sizeof w);
    fl_ws_team(d, &w.nt, &w.tile_rows);
    const int64_t B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 4 * H, R = fl_lstmx_rsize(d, e), P = e->proj_size, n = w.tile_rows;
    size_t t = 0;
    w.t_apack = fl_take_apack(&t, elem);
    w.t_xh = fl_take(&t, (size_t)(n * (I + R)) * elem);
    w.t_ax = fl_take(&t, (size_t)(e->layer_norm ? n * G : 0) * elem);
    w.t_ah = fl_take(&t, (size_t)(n * G) * elem);
    w.t_h = fl_take(&t, (size_t)(n * R) * elem);
    w.t_r = fl_take(&t, (size_t)(n * H) * elem);
    w.t_hp = fl_take(&t, (size_t)(n * P) * elem);
    w.t_row = fl_take(&t, (size_t)(2 * H) * elem);
    w.per_thread = t;
    size_t c = 0;
    w.bias_sum = fl_take(&c, (size_t)G * elem);
    w.w_packed = fl_take(&c, (size_t)(fl_pad_n(G, elem) * (I + R)) * elem);
    w.w_hr_packed = fl_take(&c, (size_t)(P > 0 ? fl_pad_n(P, elem) * H : 0) * elem);
    w.c = fl_take(&c, (size_t)(B * H) * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

typedef struct {
    int64_t nt, tile_rows;
    size_t t_apack;    /* per thread: packed-A block of gemm_pb */
    size_t t_dh;       /* per thread: dL/dh_t of the tile's rows (dy + the running dh), x R */
    size_t t_dr;       /* per thread: dL/dr_t of the tile's rows (projection), x H */
    size_t t_dhm;      /* per thread: dL/d(m*h_{t-1}) of the tile's rows, x R */
    size_t t_row;      /* per thread: one row's dL/dc_t through the cell's layer norm, H */
    size_t per_thread;
    size_t w_hh_packed; /* B operand of dA_h W_hh: panels of R columns, depth 4H */
    size_t w_ih_packed; /* B operand of dA_x W_ih: panels of I columns, depth 4H */
    size_t w_hr_packed; /* B operand of dh W_hr: panels of H columns, depth P */
    size_t dpre;       /* dL/dpre of every row, T*B x 4H; with layer norm turned into dA_x
                        * after the loop (without, dA_x = dA_h = dpre) */
    size_t dah;        /* layer norm: dL/da_h, T*B x 4H */
    size_t dcn;        /* layer norm: dL/d(LN(c)+b_c), T*B x H */
    size_t dhp;        /* projection: dL/dh_t of every row, T*B x P */
    size_t seq_packed; /* B operand of the weight gradients: X, then m*H_prev, then R packed */
    size_t ct;         /* gemm_tn_par's C^T, the largest of the three products */
    size_t dh, dc;     /* running dh (B x R), dc (B x H) */
    size_t zeros;      /* max(R, H) zeros */
    size_t threads;
    size_t total;
} fl_lstmx_backward_ws;

static inline fl_lstmx_backward_ws fl_ws_lstmx_backward(const fl_dims *d, const fl_lstm_ext *e,
                                                        size_t elem) {
    fl_lstmx_backward_ws w; memset(&w, 0, sizeof w);
    fl_ws_team(d, &w.nt, &w.tile_rows);
    const int64_t T = d->seq_len, B = d->batch, I = d->input_size, H = d->hidden_size;
    const int64_t G = 4 * H, R = fl_lstmx_rsize(d, e), P = e->proj_size, n = w.tile_rows;
    const int64_t TB = T * B, ln = e->layer_norm;
    size_t t = 0;
    w.t_apack = fl_take_apack(&t, elem);
    w.t_dh = fl_take(&t, (size_t)(n * R) * elem);
    w.t_dr = fl_take(&t, (size_t)(n * H) * elem);
    w.t_dhm = fl_take(&t, (size_t)(n * R) * elem);
    w.t_row = fl_take(&t, (size_t)H * elem);
    w.per_thread = t;
    size_t c = 0;
    w.w_hh_packed = fl_take(&c, (size_t)(fl_pad_n(R, elem) * G) * elem);
    w.w_ih_packed = fl_take(&c, (size_t)(fl_pad_n(I, elem) * G) * elem);
    w.w_hr_packed = fl_take(&c, (size_t)(P > 0 ? fl_pad_n(H, elem) * P : 0) * elem);
    w.dpre = fl_take(&c, (size_t)(TB * G) * elem);
    w.dah = fl_take(&c, (size_t)(ln ? TB * G : 0) * elem);
    w.dcn = fl_take(&c, (size_t)(ln ? TB * H : 0) * elem);
    w.dhp = fl_take(&c, (size_t)(TB * P) * elem);
    int64_t cols = fl_max64(I, R), ctb = (int64_t)fl_tn_ct_bytes(G, fl_max64(I, R), elem);
    if (P > 0) {
        cols = fl_max64(cols, H);
        ctb = fl_max64(ctb, (int64_t)fl_tn_ct_bytes(P, H, elem));
    }
    w.seq_packed = fl_take(&c, (size_t)(fl_pad_n(cols, elem) * TB) * elem);
    w.ct = fl_take(&c, (size_t)ctb);
    w.dh = fl_take(&c, (size_t)(B * R) * elem);
    w.dc = fl_take(&c, (size_t)(B * H) * elem);
    w.zeros = fl_take(&c, (size_t)fl_max64(R, H) * elem);
    w.threads = fl_take(&c, w.per_thread * (size_t)w.nt);
    w.total = c;
    return w;
}

/* ---------------------------------------------------------------- streams (one step a call) */

/* A stream (fl_lstm_stream_*, fl_gru_stream_*) lives in one caller-provided block: this header
 * at its start, then the buffers below at the byte offsets of fl_stream_layout. The block
 * holds offsets, never pointers, so it is valid wherever it is (a copy to another 64-byte
 * aligned block is an independent stream in the same state). */
#define FL_STREAM_MAGIC 0x6d61657274736c66ULL /* "flstream" */
enum { FL_STREAM_LSTM = 1, FL_STREAM_GRU = 2 };

typedef struct {
    size_t w_packed;    /* LSTM: [W_ih | W_hh | b_ih + b_hh]^T, panels of 4H gate columns, depth
                         * I+H+1 (the sequence kernel's layout); GRU: W_ih^T, panels of 3H, depth I */
    size_t w_hh_packed; /* GRU: W_hh^T, all 3H rows (lbr=1) or the r, z rows (lbr=0) */
    size_t w_hn_packed; /* GRU lbr=0: W_hn^T on its own, for W_hn (r*h) */
    size_t b_ih, b_hh;  /* GRU: the biases, 3H each (its epilogue adds them) */
    size_t state;       /* LSTM: the rows [x_t | h | 1], B x (I+H+1); GRU: h, B x H */
    size_t c;           /* LSTM: the cell state, B x H */
    size_t gates;       /* LSTM: gate pre-activations, B x 4H; GRU: x_t W_ih^T, B x 3H (at
                         * least one row: the LSTM's init sums its two biases there) */
    size_t gh;          /* GRU: h W_hh^T, B x 3H */
    size_t rh;          /* GRU lbr=0: r*h, B x H */
    size_t y;           /* the new h when the caller passes no h_out, B x H */
    size_t per_thread;  /* bytes of one thread's block: the packed-A block of gemm_pb */
    size_t threads;     /* nt x per_thread */
    size_t total;
} fl_stream_layout;

typedef struct {
    uint64_t magic;      /* FL_STREAM_MAGIC once initialised */
    int32_t kind;        /* FL_STREAM_LSTM or FL_STREAM_GRU */
    int32_t lbr;         /* GRU: linear_before_reset (0 or 1) */
    int32_t elem;        /* sizeof the element type */
    int32_t isa;         /* the instruction set the weights were packed for (its panel width) */
    int64_t nt;          /* threads the block is sized for */
    int64_t batch, input_size, hidden_size; /* B, I, H */
    fl_stream_layout w;
} fl_stream_header;

/* nt: fl_resolve_threads() of the caller's n_threads. The packed-A block of gemm_pb holds a
 * tile's rows (at most min(B, FL_MC)) padded to the ISA's MR, by FL_KC. */
static inline fl_stream_layout fl_ws_stream(int kind, int lbr, int64_t nt, int64_t B,
                                            int64_t I, int64_t H, size_t elem) {
    fl_stream_layout w; memset(&w, 0, sizeof w);
    const int lstm = kind == FL_STREAM_LSTM;
    const int64_t G = (lstm ? 4 : 3) * H, K = I + H + 1;
    size_t c = 0;
    (void)fl_take(&c, sizeof(fl_stream_header));
    if (lstm) {
        w.w_packed = fl_take(&c, (size_t)(fl_pad_n(G, elem) * K) * elem);
        w.state = fl_take(&c, (size_t)(B * K) * elem);
        w.c = fl_take(&c, (size_t)(B * H) * elem);
    } else {
        w.w_packed = fl_take(&c, (size_t)(fl_pad_n(G, elem) * I) * elem);
        w.w_hh_packed = fl_take(&c, (size_t)(fl_pad_n(lbr ? G : 2 * H, elem) * H) * elem);
        if (!lbr) w.w_hn_packed = fl_take(&c, (size_t)(fl_pad_n(H, elem) * H) * elem);
        w.b_ih = fl_take(&c, (size_t)G * elem);
        w.b_hh = fl_take(&c, (size_t)G * elem);
        w.state = fl_take(&c, (size_t)(B * H) * elem);
        w.gh = fl_take(&c, (size_t)(B * G) * elem);
        if (!lbr) w.rh = fl_take(&c, (size_t)(B * H) * elem);
    }
    w.gates = fl_take(&c, (size_t)(fl_max64(B, 1) * G) * elem);
    w.y = fl_take(&c, (size_t)(B * H) * elem);
    w.per_thread = (size_t)((fl_min64(B, FL_MC) + FL_MR_MAX) * FL_KC) * elem;
    w.threads = fl_take(&c, w.per_thread * (size_t)nt);
    w.total = c;
    return w;
}

#endif
