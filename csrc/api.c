/* api.c -- the public entry points of fastlstm.h: argument checks, scratch allocation (once
 * per call), and the choice of instruction set. The kernels themselves are in impl/. */
#include <stdlib.h>

#include "impl/common.h"
#include "impl/dispatch.h"
#include "impl/workspace.h"

const char *fl_status_string(fl_status status) {
    switch (status) {
    case FL_OK: return "success";
    case FL_EINVAL: return "invalid argument (size, length or NULL pointer)";
    case FL_ENOMEM: return "out of memory for the scratch space (or the one given is too small)";
    default: return "unknown fastlstm status";
    }
}

const char *fl_version(void) { return FASTLSTM_VERSION; }

int fl_openmp_enabled(void) {
#ifdef FASTLSTM_OPENMP
    return 1;
#else
    return 0;
#endif
}

enum { ISA_GENERIC = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

static int cpu_isa_level(void) {
#ifdef FL_HAVE_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
        return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
#endif
    return ISA_GENERIC;
}

/* The CPU's best instruction set, or a lower one named by FASTLSTM_ISA (generic, avx2), so
 * that every code path can be tested on one machine. */
static int isa_level(void) {
    int level = cpu_isa_level();
    const char *want = getenv("FASTLSTM_ISA");
    if (want && strcmp(want, "generic") == 0) return ISA_GENERIC;
    if (want && strcmp(want, "avx2") == 0 && level > ISA_AVX2) return ISA_AVX2;
    return level;
}

const char *fl_isa(void) {
    static const char *names[] = {"generic", "avx2", "avx512"};
    return names[isa_level()];
}

#ifdef FL_HAVE_X86_DISPATCH
#define DISPATCH(name, RS, ...)                                                 \
    do {                                                                         \
        int lvl_ = isa_level();                                                  \
        if (lvl_ == ISA_AVX512) st = name##_##RS##_avx512(__VA_ARGS__);          \
        else if (lvl_ == ISA_AVX2) st = name##_##RS##_avx2(__VA_ARGS__);         \
        else st = name##_##RS##_generic(__VA_ARGS__);                            \
    } while (0)
#else
#define DISPATCH(name, RS, ...) st = name##_##RS##_generic(__VA_ARGS__)
#endif

/* Sizes: each at least 1 (T, I, H) or 0 (B), and small enough that every buffer size the
 * kernels compute in int64_t or size_t is far from overflowing. The bounds are evaluated in
 * double from the converted sizes (int64_t sums such as 4*H or I+H could themselves
 * overflow): each product stays below 2^53, so it is exact enough and its int64_t
 * counterpart in the kernels is at least 1000x below 2^63. */
static int dims_ok(const fl_dims *d) {
    if (!d || d->seq_len < 1 || d->batch < 0 || d->input_size < 1 || d->hidden_size < 1) return 0;
    const double T = (double)d->seq_len, B = (double)(d->batch > 0 ? d->batch : 1);
    const double I = (double)d->input_size, H = (double)d->hidden_size, limit = 9.0e15;
    double sequence = T * B * (I + 6.0 * H + 64.0) * 8.0; /* reserve, x, y and gate buffers */
    double weights = (4.0 * H + 64.0) * (I + H + 64.0) * 8.0 * 4.0; /* packed copies */
    return sequence < limit && weights < limit;
}

static int elem_ok(size_t elem) { return elem == sizeof(float) || elem == sizeof(double); }

static int lengths_ok(const fl_dims *d, const int64_t *lengths) {
    if (!lengths) return 1;
    for (int64_t b = 0; b < d->batch; b++)
        if (lengths[b] < 1 || lengths[b] > d->seq_len) return 0;
    return 1;
}

/* The size functions: the workspace.h layouts behind a range check. */
#define SIZE_QUERY(d, elem, bytes, expr)                                                       \
    do {                                                                                       \
        if (!bytes || !dims_ok(d) || !elem_ok(elem)) return FL_EINVAL;                         \
        *(bytes) = (expr);                                                                     \
        return FL_OK;                                                                          \
    } while (0)

fl_status fl_lstm_reserve_bytes(const fl_dims *d, size_t elem, size_t *bytes) {
    SIZE_QUERY(d, elem, bytes, (size_t)fl_lstm_reserve_elems(d, elem) * elem);
}
fl_status fl_gru_reserve_bytes(const fl_dims *d, size_t elem, int lbr, size_t *bytes) {
    SIZE_QUERY(d, elem, bytes, (size_t)fl_gru_reserve_elems(d, !!lbr) * elem);
}
fl_status fl_lstm_forward_scratch_bytes(const fl_dims *d, size_t elem, int training,
                                        size_t *bytes) {
    SIZE_QUERY(d, elem, bytes, fl_ws_lstm_forward(d, elem, training).total);
}
fl_status fl_lstm_backward_scratch_bytes(const fl_dims *d, size_t elem, size_t *bytes) {
    SIZE_QUERY(d, elem, bytes, fl_ws_lstm_backward(d, elem).total);
}
fl_status fl_gru_forward_scratch_bytes(const fl_dims *d, size_t elem, int lbr, size_t *bytes) {
    SIZE_QUERY(d, elem, bytes, fl_ws_gru_forward(d, elem, !!lbr).total);
}
fl_status fl_gru_backward_scratch_bytes(const fl_dims *d, size_t elem, int lbr, size_t *bytes) {
    SIZE_QUERY(d, elem, bytes, fl_ws_gru_backward(d, elem, !!lbr).total);
}

/* Use the caller's scratch if it is big enough, else allocate once for this call. */
static char *scratch_get(void *given, size_t given_bytes, size_t need, char **owned) {
    *owned = NULL;
    if (given) return given_bytes >= need ? (char *)given : NULL;
    size_t bytes = (need + FL_ALIGN - 1) / FL_ALIGN * FL_ALIGN;
    *owned = aligned_alloc(FL_ALIGN, bytes ? bytes : FL_ALIGN);
    return *owned;
}

/* ---------------------------------------------------------------------- sequence kernels */
/* Each public function is instantiated below with its full name (so that grepping for it
 * finds this file): checks, scratch, then the kernel of the CPU's instruction set. */

#define DEFINE_LSTM_FORWARD(NAME, R, RS)                                                       \
    fl_status NAME(const fl_dims *d, const R *x, const R *w_ih, const R *w_hh, const R *b_ih,  \
                   const R *b_hh, const R *h0, const R *c0, const int64_t *lengths, R *y,      \
                   R *h_n, R *c_n, void *reserve, void *scratch, size_t scratch_bytes) {       \
        if (!dims_ok(d) || !x || !w_ih || !w_hh || !b_ih || !b_hh || !y ||                    \
            !lengths_ok(d, lengths))                                                           \
            return FL_EINVAL;                                                                  \
        char *owned, *ws = scratch_get(scratch, scratch_bytes,                                 \
                                       fl_ws_lstm_forward(d, sizeof(R), !!reserve).total,      \
                                       &owned);                                                \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(lstm_forward, RS, d, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, y, h_n, c_n, \
                 (R *)reserve, ws);                                                            \
        free(owned);                                                                           \
        return (fl_status)st;                                                                  \
    }

#define DEFINE_LSTM_BACKWARD(NAME, R, RS)                                                      \
    fl_status NAME(const fl_dims *d, const R *x, const R *w_ih, const R *w_hh, const R *h0,    \
                   const R *c0, const int64_t *lengths, const void *reserve, const R *dy,      \
                   const R *dh_n, const R *dc_n, R *dx, R *dw_ih, R *dw_hh, R *db_ih,          \
                   R *db_hh, R *dh0, R *dc0, void *scratch, size_t scratch_bytes) {            \
        if (!dims_ok(d) || !x || !w_ih || !w_hh || !reserve || !dx || !dw_ih || !dw_hh ||     \
            !db_ih || !db_hh || !dh0 || !dc0 || !lengths_ok(d, lengths))                       \
            return FL_EINVAL;                                                                  \
        char *owned, *ws = scratch_get(scratch, scratch_bytes,                                 \
                                       fl_ws_lstm_backward(d, sizeof(R)).total, &owned);       \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(lstm_backward, RS, d, x, w_ih, w_hh, h0, c0, lengths, (const R *)reserve, dy, \
                 dh_n, dc_n, dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, ws);                    \
        free(owned);                                                                           \
        return (fl_status)st;                                                                  \
    }

#define DEFINE_GRU_FORWARD(NAME, R, RS)                                                        \
    fl_status NAME(const fl_dims *d, int lbr, const R *x, const R *w_ih, const R *w_hh,        \
                   const R *b_ih, const R *b_hh, const R *h0, const int64_t *lengths, R *y,    \
                   R *h_n, void *reserve, void *scratch, size_t scratch_bytes) {               \
        if (!dims_ok(d) || !x || !w_ih || !w_hh || !b_ih || !b_hh || !y ||                    \
            !lengths_ok(d, lengths))                                                           \
            return FL_EINVAL;                                                                  \
        lbr = !!lbr;                                                                           \
        char *owned, *ws = scratch_get(scratch, scratch_bytes,                                 \
                                       fl_ws_gru_forward(d, sizeof(R), lbr).total, &owned);    \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(gru_forward, RS, d, lbr, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, y, h_n,      \
                 (R *)reserve, ws);                                                            \
        free(owned);                                                                           \
        return (fl_status)st;                                                                  \
    }

#define DEFINE_GRU_BACKWARD(NAME, R, RS)                                                       \
    fl_status NAME(const fl_dims *d, int lbr, const R *x, const R *w_ih, const R *w_hh,        \
                   const R *h0, const int64_t *lengths, const void *reserve, const R *dy,      \
                   const R *dh_n, R *dx, R *dw_ih, R *dw_hh, R *db_ih, R *db_hh, R *dh0,       \
                   void *scratch, size_t scratch_bytes) {                                      \
        if (!dims_ok(d) || !x || !w_ih || !w_hh || !reserve || !dx || !dw_ih || !dw_hh ||     \
            !db_ih || !db_hh || !dh0 || !lengths_ok(d, lengths))                               \
            return FL_EINVAL;                                                                  \
        lbr = !!lbr;                                                                           \
        char *owned, *ws = scratch_get(scratch, scratch_bytes,                                 \
                                       fl_ws_gru_backward(d, sizeof(R), lbr).total, &owned);   \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(gru_backward, RS, d, lbr, x, w_ih, w_hh, h0, lengths, (const R *)reserve, dy, \
                 dh_n, dx, dw_ih, dw_hh, db_ih, db_hh, dh0, ws);                               \
        free(owned);                                                                           \
        return (fl_status)st;                                                                  \
    }

DEFINE_LSTM_FORWARD(fl_lstm_forward_f32, float, f32)
DEFINE_LSTM_FORWARD(fl_lstm_forward_f64, double, f64)
DEFINE_LSTM_BACKWARD(fl_lstm_backward_f32, float, f32)
DEFINE_LSTM_BACKWARD(fl_lstm_backward_f64, double, f64)
DEFINE_GRU_FORWARD(fl_gru_forward_f32, float, f32)
DEFINE_GRU_FORWARD(fl_gru_forward_f64, double, f64)
DEFINE_GRU_BACKWARD(fl_gru_backward_f32, float, f32)
DEFINE_GRU_BACKWARD(fl_gru_backward_f64, double, f64)

/* ------------------------------------------------------------ single steps (T = 1 calls) */
/* A cell step is the sequence kernel with T = 1; its backward runs a training forward into a
 * private reserve (the gates are not kept between calls), then the sequence backward. */

/* One 64-byte-aligned block: the reserve, then the T = 1 output the forward must write. */
static char *cell_reserve_alloc(size_t reserve_bytes, size_t out_bytes, size_t *out_at) {
    *out_at = (reserve_bytes + FL_ALIGN - 1) / FL_ALIGN * FL_ALIGN;
    size_t total = (*out_at + out_bytes + FL_ALIGN - 1) / FL_ALIGN * FL_ALIGN;
    return aligned_alloc(FL_ALIGN, total ? total : FL_ALIGN);
}

#define DEFINE_LSTM_CELL_FORWARD(NAME, SEQ, R)                                                 \
    fl_status NAME(int n_threads, int64_t batch, int64_t input_size, int64_t hidden_size,      \
                   const R *x, const R *h, const R *c, const R *w_ih, const R *w_hh,           \
                   const R *b_ih, const R *b_hh, R *h_new, R *c_new) {                         \
        fl_dims d = {1, batch, input_size, hidden_size, 0, n_threads};                          \
        if (!c_new) return FL_EINVAL;                                                           \
        return SEQ(&d, x, w_ih, w_hh, b_ih, b_hh, h, c, NULL, h_new, NULL, c_new, NULL, NULL,  \
                   0);                                                                          \
    }

#define DEFINE_LSTM_CELL_BACKWARD(NAME, SEQ_FWD, SEQ_BWD, R)                                   \
    fl_status NAME(int n_threads, int64_t batch, int64_t input_size, int64_t hidden_size,      \
                   const R *x, const R *h, const R *c, const R *w_ih, const R *w_hh,           \
                   const R *b_ih, const R *b_hh, const R *dh_new, const R *dc_new, R *dx,      \
                   R *dh, R *dc, R *dw_ih, R *dw_hh, R *db_ih, R *db_hh) {                      \
        fl_dims d = {1, batch, input_size, hidden_size, 0, n_threads};                          \
        if (!dims_ok(&d)) return FL_EINVAL;                                                     \
        size_t y_at, reserve = (size_t)fl_lstm_reserve_elems(&d, sizeof(R)) * sizeof(R);        \
        char *buf = cell_reserve_alloc(reserve, (size_t)(batch * hidden_size) * sizeof(R),     \
                                       &y_at);                                                  \
        if (!buf) return FL_ENOMEM;                                                             \
        fl_status st = SEQ_FWD(&d, x, w_ih, w_hh, b_ih, b_hh, h, c, NULL, (R *)(buf + y_at),    \
                               NULL, NULL, buf, NULL, 0);                                       \
        if (st == FL_OK)                                                                        \
            st = SEQ_BWD(&d, x, w_ih, w_hh, h, c, NULL, buf, NULL, dh_new, dc_new, dx, dw_ih,   \
                         dw_hh, db_ih, db_hh, dh, dc, NULL, 0);                                 \
        free(buf);                                                                              \
        return st;                                                                              \
    }

#define DEFINE_GRU_CELL_FORWARD(NAME, SEQ, R)                                                  \
    fl_status NAME(int n_threads, int64_t batch, int64_t input_size, int64_t hidden_size,      \
                   int lbr, const R *x, const R *h, const R *w_ih, const R *w_hh,              \
                   const R *b_ih, const R *b_hh, R *h_new) {                                    \
        fl_dims d = {1, batch, input_size, hidden_size, 0, n_threads};                          \
        return SEQ(&d, lbr, x, w_ih, w_hh, b_ih, b_hh, h, NULL, h_new, NULL, NULL, NULL, 0);    \
    }

#define DEFINE_GRU_CELL_BACKWARD(NAME, SEQ_FWD, SEQ_BWD, R)                                    \
    fl_status NAME(int n_threads, int64_t batch, int64_t input_size, int64_t hidden_size,      \
                   int lbr, const R *x, const R *h, const R *w_ih, const R *w_hh,              \
                   const R *b_ih, const R *b_hh, const R *dh_new, R *dx, R *dh, R *dw_ih,      \
                   R *dw_hh, R *db_ih, R *db_hh) {                                              \
        fl_dims d = {1, batch, input_size, hidden_size, 0, n_threads};                          \
        if (!dims_ok(&d)) return FL_EINVAL;                                                     \
        size_t y_at, reserve = (size_t)fl_gru_reserve_elems(&d, !!lbr) * sizeof(R);             \
        char *buf = cell_reserve_alloc(reserve, (size_t)(batch * hidden_size) * sizeof(R),     \
                                       &y_at);                                                  \
        if (!buf) return FL_ENOMEM;                                                             \
        fl_status st = SEQ_FWD(&d, lbr, x, w_ih, w_hh, b_ih, b_hh, h, NULL, (R *)(buf + y_at),  \
                               NULL, buf, NULL, 0);                                             \
        if (st == FL_OK)                                                                        \
            st = SEQ_BWD(&d, lbr, x, w_ih, w_hh, h, NULL, buf, NULL, dh_new, dx, dw_ih, dw_hh,  \
                         db_ih, db_hh, dh, NULL, 0);                                            \
        free(buf);                                                                              \
        return st;                                                                              \
    }

DEFINE_LSTM_CELL_FORWARD(fl_lstm_cell_forward_f32, fl_lstm_forward_f32, float)
DEFINE_LSTM_CELL_FORWARD(fl_lstm_cell_forward_f64, fl_lstm_forward_f64, double)
DEFINE_LSTM_CELL_BACKWARD(fl_lstm_cell_backward_f32, fl_lstm_forward_f32, fl_lstm_backward_f32,
                          float)
DEFINE_LSTM_CELL_BACKWARD(fl_lstm_cell_backward_f64, fl_lstm_forward_f64, fl_lstm_backward_f64,
                          double)
DEFINE_GRU_CELL_FORWARD(fl_gru_cell_forward_f32, fl_gru_forward_f32, float)
DEFINE_GRU_CELL_FORWARD(fl_gru_cell_forward_f64, fl_gru_forward_f64, double)
DEFINE_GRU_CELL_BACKWARD(fl_gru_cell_backward_f32, fl_gru_forward_f32, fl_gru_backward_f32,
                         float)
DEFINE_GRU_CELL_BACKWARD(fl_gru_cell_backward_f64, fl_gru_forward_f64, fl_gru_backward_f64,
                         double)

/* ------------------------------------------------- extended LSTM (projection, layer norm, mask) */

/* The sizes of the plain LSTM, the extension's own (0 <= P, bounded like H: a P far beyond
 * the others would overflow the reserve as H would) and the pointers that must be NULL
 * exactly when a feature is off: `given` counts the non-NULL pointers of a feature's group. */
static int lstmx_dims_ok(const fl_dims *d, const fl_lstm_ext *e) {
    if (!dims_ok(d) || !e || e->proj_size < 0) return 0;
    const double T = (double)d->seq_len, B = (double)(d->batch > 0 ? d->batch : 1);
    const double P = (double)e->proj_size, H = (double)d->hidden_size, limit = 9.0e15;
    return T * B * (P + 16.0 * H + 64.0) * 8.0 < limit && (4.0 * H + P + 64.0) * (P + 64.0) * 8.0 * 4.0 < limit;
}
static int lstmx_group_ok(int on, int given, int size) { return on ? given == size : given == 0; }

fl_status fl_lstmx_reserve_bytes(const fl_dims *d, const fl_lstm_ext *e, size_t elem,
                                 size_t *bytes) {
    if (!lstmx_dims_ok(d, e)) return FL_EINVAL;
    SIZE_QUERY(d, elem, bytes, (size_t)fl_lstmx_reserve_elems(d, e) * elem);
}
fl_status fl_lstmx_forward_scratch_bytes(const fl_dims *d, const fl_lstm_ext *e, size_t elem,
                                         int training, size_t *bytes) {
    (void)training; /* the forward's scratch is the same either way */
    if (!lstmx_dims_ok(d, e)) return FL_EINVAL;
    SIZE_QUERY(d, elem, bytes, fl_ws_lstmx_forward(d, e, elem).total);
}
fl_status fl_lstmx_backward_scratch_bytes(const fl_dims *d, const fl_lstm_ext *e, size_t elem,
                                          size_t *bytes) {
    if (!lstmx_dims_ok(d, e)) return FL_EINVAL;
    SIZE_QUERY(d, elem, bytes, fl_ws_lstmx_backward(d, e, elem).total);
}

#define DEFINE_LSTMX_FORWARD(NAME, R, RS)                                                      \
    fl_status NAME(FL_LSTMX_FORWARD_ARGS(R), void *reserve, void *scratch,                     \
                   size_t scratch_bytes) {                                                     \
        if (!lstmx_dims_ok(d, e) || !x || !w_ih || !w_hh || !b_ih || !b_hh || !y ||           \
            !lengths_ok(d, lengths) || !lstmx_group_ok(e->proj_size > 0, !!w_hr, 1) ||         \
            !lstmx_group_ok(e->layer_norm, !!ln_ih + !!ln_hh + !!ln_c + !!ln_bc, 4))           \
            return FL_EINVAL;                                                                  \
        char *owned, *ws = scratch_get(scratch, scratch_bytes,                                 \
                                       fl_ws_lstmx_forward(d, e, sizeof(R)).total, &owned);    \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(lstmx_forward, RS, FL_LSTMX_FORWARD_NAMES, (R *)reserve, ws);                 \
        free(owned);                                                                           \
        return (fl_status)st;                                                                  \
    }

#define DEFINE_LSTMX_BACKWARD(NAME, R, RS)                                                     \
    fl_status NAME(FL_LSTMX_BACKWARD_IN(R), const void *reserve, FL_LSTMX_BACKWARD_OUT(R),     \
                   void *scratch, size_t scratch_bytes) {                                      \
        if (!lstmx_dims_ok(d, e) || !x || !w_ih || !w_hh || !reserve || !dx || !dw_ih ||      \
            !dw_hh || !db_ih || !db_hh || !dh0 || !dc0 || !lengths_ok(d, lengths) ||           \
            !lstmx_group_ok(e->proj_size > 0, !!w_hr + !!dw_hr, 2) ||                          \
            !lstmx_group_ok(e->layer_norm, !!ln_ih + !!ln_hh + !!ln_c + !!dln_ih + !!dln_hh +  \
                                               !!dln_c + !!dln_bc, 7))                         \
            return FL_EINVAL;                                                                  \
        char *owned, *ws = scratch_get(scratch, scratch_bytes,                                 \
                                       fl_ws_lstmx_backward(d, e, sizeof(R)).total, &owned);   \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(lstmx_backward, RS, FL_LSTMX_BACKWARD_IN_NAMES, FL_LSTMX_BACKWARD_OUT_NAMES,  \
                 (const R *)reserve, ws);                                                      \
        free(owned);                                                                           \
        return (fl_status)st;                                                                  \
    }

DEFINE_LSTMX_FORWARD(fl_lstmx_forward_f32, float, f32)
DEFINE_LSTMX_FORWARD(fl_lstmx_forward_f64, double, f64)
DEFINE_LSTMX_BACKWARD(fl_lstmx_backward_f32, float, f32)
DEFINE_LSTMX_BACKWARD(fl_lstmx_backward_f64, double, f64)

/* -------------------------------------------- extended GRU (layer norm, recurrent mask) */
/* Layer norm exists for linear_before_reset=1 only; the gains are given iff it is on. */
static int grux_flags_ok(int lbr, int ln) { return !ln || lbr; }
static int grux_gains_ok(int ln, const void *a, const void *b) {
    return ln ? (a && b) : (!a && !b);
}

fl_status fl_grux_reserve_bytes(const fl_dims *d, size_t elem, int lbr, int ln, int masked,
                                size_t *bytes) {
    if (!grux_flags_ok(lbr, ln)) return FL_EINVAL;
    SIZE_QUERY(d, elem, bytes,
               (size_t)fl_grux_reserve_layout(d, !!lbr, !!ln, !!masked).total * elem);
}
fl_status fl_grux_forward_scratch_bytes(const fl_dims *d, size_t elem, int lbr, int ln,
                                        int masked, size_t *bytes) {
    if (!grux_flags_ok(lbr, ln)) return FL_EINVAL;
    SIZE_QUERY(d, elem, bytes, fl_ws_grux_forward(d, elem, !!lbr, !!ln, !!masked).total);
}
fl_status fl_grux_backward_scratch_bytes(const fl_dims *d, size_t elem, int lbr, int ln,
                                         int masked, size_t *bytes) {
    if (!grux_flags_ok(lbr, ln)) return FL_EINVAL;
    SIZE_QUERY(d, elem, bytes, fl_ws_grux_backward(d, elem, !!lbr, !!ln, !!masked).total);
}

#define DEFINE_GRUX_FORWARD(NAME, R, RS)                                                       \
    fl_status NAME(const fl_dims *d, int lbr, int ln, const R *x, const R *w_ih,               \
                   const R *w_hh, const R *b_ih, const R *b_hh, const R *g_ih, const R *g_hh,  \
                   const R *mask, const R *h0, const int64_t *lengths, R *y, R *h_n,           \
                   void *reserve, void *scratch, size_t scratch_bytes) {                       \
        lbr = !!lbr; ln = !!ln;                                                                \
        if (!dims_ok(d) || !x || !w_ih || !w_hh || !b_ih || !b_hh || !y ||                    \
            !grux_flags_ok(lbr, ln) || !grux_gains_ok(ln, g_ih, g_hh) ||                       \
            !lengths_ok(d, lengths))                                                           \
            return FL_EINVAL;                                                                  \
        char *owned, *ws = scratch_get(                                                        \
            scratch, scratch_bytes, fl_ws_grux_forward(d, sizeof(R), lbr, ln, !!mask).total,   \
            &owned);                                                                           \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(grux_forward, RS, d, lbr, ln, x, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, mask,    \
                 h0, lengths, y, h_n, (R *)reserve, ws);                                       \
        free(owned);                                                                           \
        return (fl_status)st;                                                                  \
    }

#define DEFINE_GRUX_BACKWARD(NAME, R, RS)                                                      \
    fl_status NAME(const fl_dims *d, int lbr, int ln, const R *x, const R *w_ih,               \
                   const R *w_hh, const R *g_ih, const R *g_hh, const R *mask,                 \
                   const int64_t *lengths, const void *reserve, const R *dy, const R *dh_n,    \
                   R *dx, R *dw_ih, R *dw_hh, R *db_ih, R *db_hh, R *dg_ih, R *dg_hh, R *dh0,  \
                   void *scratch, size_t scratch_bytes) {                                      \
        lbr = !!lbr; ln = !!ln;                                                                \
        if (!dims_ok(d) || !x || !w_ih || !w_hh || !reserve || !dx || !dw_ih || !dw_hh ||     \
            !db_ih || !db_hh || !dh0 || !grux_flags_ok(lbr, ln) ||                             \
            !grux_gains_ok(ln, g_ih, g_hh) || !grux_gains_ok(ln, dg_ih, dg_hh) ||              \
            !lengths_ok(d, lengths))                                                           \
            return FL_EINVAL;                                                                  \
        char *owned, *ws = scratch_get(                                                        \
            scratch, scratch_bytes, fl_ws_grux_backward(d, sizeof(R), lbr, ln, !!mask).total,  \
            &owned);                                                                           \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(grux_backward, RS, d, lbr, ln, x, w_ih, w_hh, g_ih, g_hh, mask, lengths,      \
                 (const R *)reserve, dy, dh_n, dx, dw_ih, dw_hh, db_ih, db_hh, dg_ih, dg_hh,   \
                 dh0, ws);                                                                     \
        free(owned);                                                                           \
        return (fl_status)st;                                                                  \
    }

DEFINE_GRUX_FORWARD(fl_grux_forward_f32, float, f32)
DEFINE_GRUX_FORWARD(fl_grux_forward_f64, double, f64)
DEFINE_GRUX_BACKWARD(fl_grux_backward_f32, float, f32)
DEFINE_GRUX_BACKWARD(fl_grux_backward_f64, double, f64)

/* ------------------------------------------------------------- streams (one step a call) */
/* The block's header (workspace.h) says what it holds; init writes it, packs the weights with
 * the CPU's instruction set of that moment and keeps that choice: the packed panels are as
 * wide as that instruction set's, so every later step must run its kernels. */

static fl_status stream_bytes(int n_threads, int kind, int lbr, int64_t B, int64_t I, int64_t H,
                              size_t elem, size_t *bytes) {
    const fl_dims d = {1, B, I, H, 0, n_threads};
    if (!bytes || !dims_ok(&d) || !elem_ok(elem)) return FL_EINVAL;
    *bytes = fl_ws_stream(kind, !!lbr, fl_resolve_threads(n_threads), B, I, H, elem).total;
    return FL_OK;
}

fl_status fl_lstm_stream_bytes(int n_threads, int64_t batch, int64_t input_size,
                               int64_t hidden_size, size_t elem_size, size_t *bytes) {
    return stream_bytes(n_threads, FL_STREAM_LSTM, 0, batch, input_size, hidden_size, elem_size,
                        bytes);
}
fl_status fl_gru_stream_bytes(int n_threads, int64_t batch, int64_t input_size,
                              int64_t hidden_size, size_t elem_size, int linear_before_reset,
                              size_t *bytes) {
    return stream_bytes(n_threads, FL_STREAM_GRU, linear_before_reset, batch, input_size,
                        hidden_size, elem_size, bytes);
}

/* mem as an initialised stream of this kind and element size, or NULL. */
static fl_stream_header *stream_of(const void *mem, int kind, size_t elem) {
    fl_stream_header *s = (fl_stream_header *)mem;
    if (!mem || (uintptr_t)mem % FL_ALIGN != 0 || s->magic != FL_STREAM_MAGIC ||
        s->kind != kind || s->elem != (int32_t)elem)
        return NULL;
    return s;
}

/* Check the arguments and write the header of a stream (not yet valid: no magic). */
static fl_stream_header *stream_begin(void *mem, size_t bytes, int n_threads, int kind, int lbr,
                                      int64_t B, int64_t I, int64_t H, size_t elem,
                                      const void *w_ih, const void *w_hh, const void *b_ih,
                                      const void *b_hh, fl_status *st) {
    const fl_dims d = {1, B, I, H, 0, n_threads};
    *st = FL_EINVAL;
    if (!mem || (uintptr_t)mem % FL_ALIGN != 0 || !dims_ok(&d) || !w_ih || !w_hh || !b_ih ||
        !b_hh)
        return NULL;
    const int64_t nt = fl_resolve_threads(n_threads);
    const fl_stream_layout w = fl_ws_stream(kind, !!lbr, nt, B, I, H, elem);
    *st = FL_ENOMEM;
    if (bytes < w.total) return NULL;
    fl_stream_header *s = (fl_stream_header *)mem;
    memset(s, 0, sizeof *s);
    s->kind = kind; s->lbr = !!lbr; s->elem = (int32_t)elem; s->isa = isa_level();
    s->nt = nt; s->batch = B; s->input_size = I; s->hidden_size = H; s->w = w;
    *st = FL_OK;
    return s;
}

/* h (and c) to the given rows or zeros; the LSTM's rows [x | h | 1] get their 1. */
static void stream_set_state(fl_stream_header *s, const void *h0, const void *c0) {
    char *base = (char *)s;
    const size_t e = (size_t)s->elem;
    const int64_t B = s->batch, I = s->input_size, H = s->hidden_size;
    const size_t hb = (size_t)H * e;
    if (s->kind == FL_STREAM_LSTM) {
        const int64_t K = I + H + 1;
        for (int64_t b = 0; b < B; b++) {
            char *row = base + s->w.state + (size_t)(b * K) * e;
            memset(row, 0, (size_t)I * e); /* x: written by each step before it is read */
            if (h0) memcpy(row + (size_t)I * e, (const char *)h0 + b * hb, hb);
            else memset(row + (size_t)I * e, 0, hb);
            if (e == sizeof(float)) ((float *)row)[I + H] = 1;
            else ((double *)row)[I + H] = 1;
        }
        if (c0) memcpy(base + s->w.c, c0, (size_t)B * hb);
        else memset(base + s->w.c, 0, (size_t)B * hb);
    } else {
        if (h0) memcpy(base + s->w.state, h0, (size_t)B * hb);
        else memset(base + s->w.state, 0, (size_t)B * hb);
    }
}

/* Copy the state out: h (and c), each may be NULL. */
static void stream_get_state(const fl_stream_header *s, void *h, void *c) {
    const char *base = (const char *)s;
    const size_t e = (size_t)s->elem;
    const int64_t B = s->batch, I = s->input_size, H = s->hidden_size;
    const size_t hb = (size_t)H * e;
    if (s->kind == FL_STREAM_LSTM) {
        const int64_t K = I + H + 1;
        if (h)
            for (int64_t b = 0; b < B; b++)
                memcpy((char *)h + b * hb, base + s->w.state + (size_t)(b * K + I) * e, hb);
        if (c) memcpy(c, base + s->w.c, (size_t)B * hb);
    } else if (h) {
        memcpy(h, base + s->w.state, (size_t)B * hb);
    }
}

/* The kernel of the instruction set the block was packed for. */
#ifdef FL_HAVE_X86_DISPATCH
#define STREAM_DISPATCH(s, name, RS, ...)                                        \
    do {                                                                          \
        if ((s)->isa == ISA_AVX512) st = name##_##RS##_avx512(__VA_ARGS__);       \
        else if ((s)->isa == ISA_AVX2) st = name##_##RS##_avx2(__VA_ARGS__);      \
        else st = name##_##RS##_generic(__VA_ARGS__);                             \
    } while (0)
#else
#define STREAM_DISPATCH(s, name, RS, ...) st = name##_##RS##_generic(__VA_ARGS__)
#endif

/* init: the header, the packed weights, a zero state, and only then the magic. */
#define DEFINE_STREAM_INIT(NAME, KIND, LBR_ARG, LBR, PACK, R, RS)                             \
    fl_status NAME(void *mem, size_t bytes, int n_threads, int64_t batch, int64_t input_size, \
                   int64_t hidden_size, LBR_ARG const R *w_ih, const R *w_hh, const R *b_ih,  \
                   const R *b_hh) {                                                            \
        int st;                                                                                \
        fl_status bad;                                                                         \
        fl_stream_header *s = stream_begin(mem, bytes, n_threads, KIND, LBR, batch,           \
                                           input_size, hidden_size, sizeof(R), w_ih, w_hh,    \
                                           b_ih, b_hh, &bad);                                  \
        if (!s) return bad;                                                                    \
        STREAM_DISPATCH(s, PACK, RS, mem, w_ih, w_hh, b_ih, b_hh);                             \
        stream_set_state(s, NULL, NULL);                                                       \
        s->magic = FL_STREAM_MAGIC;                                                            \
        return (fl_status)st;                                                                  \
    }

#define DEFINE_STREAM_STEP(NAME, KIND, STEP, R, RS)                                           \
    fl_status NAME(void *mem, const R *x, R *h_out) {                                          \
        fl_stream_header *s = stream_of(mem, KIND, sizeof(R));                                 \
        if (!s || !x) return FL_EINVAL;                                                        \
        int st;                                                                                \
        STREAM_DISPATCH(s, STEP, RS, mem, x, h_out);                                           \
        return (fl_status)st;                                                                  \
    }

#define DEFINE_LSTM_STREAM_STATE(RESET, STATE, R)                                             \
    fl_status RESET(void *mem, const R *h0, const R *c0) {                                     \
        fl_stream_header *s = stream_of(mem, FL_STREAM_LSTM, sizeof(R));                       \
        if (!s) return FL_EINVAL;                                                              \
        stream_set_state(s, h0, c0);                                                           \
        return FL_OK;                                                                          \
    }                                                                                          \
    fl_status STATE(const void *mem, R *h, R *c) {                                             \
        const fl_stream_header *s = stream_of(mem, FL_STREAM_LSTM, sizeof(R));                 \
        if (!s) return FL_EINVAL;                                                              \
        stream_get_state(s, h, c);                                                             \
        return FL_OK;                                                                          \
    }

#define DEFINE_GRU_STREAM_STATE(RESET, STATE, R)                                              \
    fl_status RESET(void *mem, const R *h0) {                                                  \
        fl_stream_header *s = stream_of(mem, FL_STREAM_GRU, sizeof(R));                        \
        if (!s) return FL_EINVAL;                                                              \
        stream_set_state(s, h0, NULL);                                                         \
        return FL_OK;                                                                          \
    }                                                                                          \
    fl_status STATE(const void *mem, R *h) {                                                   \
        const fl_stream_header *s = stream_of(mem, FL_STREAM_GRU, sizeof(R));                  \
        if (!s) return FL_EINVAL;                                                              \
        stream_get_state(s, h, NULL);                                                          \
        return FL_OK;                                                                          \
    }

#define FL_NO_ARG
#define FL_LBR_PARAM int linear_before_reset,
DEFINE_STREAM_INIT(fl_lstm_stream_init_f32, FL_STREAM_LSTM, FL_NO_ARG, 0, lstm_stream_pack,
                   float, f32)
DEFINE_STREAM_INIT(fl_lstm_stream_init_f64, FL_STREAM_LSTM, FL_NO_ARG, 0, lstm_stream_pack,
                   double, f64)
DEFINE_STREAM_INIT(fl_gru_stream_init_f32, FL_STREAM_GRU, FL_LBR_PARAM, linear_before_reset,
                   gru_stream_pack, float, f32)
DEFINE_STREAM_INIT(fl_gru_stream_init_f64, FL_STREAM_GRU, FL_LBR_PARAM, linear_before_reset,
                   gru_stream_pack, double, f64)
DEFINE_STREAM_STEP(fl_lstm_stream_step_f32, FL_STREAM_LSTM, lstm_stream_step, float, f32)
DEFINE_STREAM_STEP(fl_lstm_stream_step_f64, FL_STREAM_LSTM, lstm_stream_step, double, f64)
DEFINE_STREAM_STEP(fl_gru_stream_step_f32, FL_STREAM_GRU, gru_stream_step, float, f32)
DEFINE_STREAM_STEP(fl_gru_stream_step_f64, FL_STREAM_GRU, gru_stream_step, double, f64)
DEFINE_LSTM_STREAM_STATE(fl_lstm_stream_reset_f32, fl_lstm_stream_state_f32, float)
DEFINE_LSTM_STREAM_STATE(fl_lstm_stream_reset_f64, fl_lstm_stream_state_f64, double)
DEFINE_GRU_STREAM_STATE(fl_gru_stream_reset_f32, fl_gru_stream_state_f32, float)
DEFINE_GRU_STREAM_STATE(fl_gru_stream_reset_f64, fl_gru_stream_state_f64, double)
