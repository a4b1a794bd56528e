/* api.c -- the public entry points of fastlstm.h: argument checks, scratch allocation (once
 * per call), and the choice of instruction set. The kernels themselves are in impl/. */
#include <stdlib.h>

#include "impl/common.h"
#include "impl/dispatch.h"
#include "impl/workspace.h"

const char *fl_status_string(int status) {
    switch (status) {
    case FL_OK: return "success";
    case FL_EINVAL: return "invalid argument (size, length or NULL pointer)";
    case FL_ENOMEM: return "out of memory for the scratch space (or the one given is too small)";
    default: return "unknown fastlstm status";
    }
}

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

/* Sizes: each at least 1 (T, I, H) or 0 (B), and small enough that every buffer size below
 * fits comfortably in 63 bits (checked in floating point, which cannot overflow here). */
static int dims_ok(const fl_dims *d) {
    if (!d || d->seq_len < 1 || d->batch < 0 || d->input_size < 1 || d->hidden_size < 1) return 0;
    double biggest = (double)d->seq_len * (double)(d->batch > 0 ? d->batch : 1) *
                     (double)(d->input_size > d->hidden_size ? d->input_size + 32 : 6 * d->hidden_size + 32) * 8.0;
    double weights = (double)(4 * d->hidden_size + 32) * (double)(d->input_size + d->hidden_size) * 8.0;
    return biggest < 9.0e15 && weights < 9.0e15;
}

static int lengths_ok(const fl_dims *d, const int64_t *lengths) {
    if (!lengths) return 1;
    for (int64_t b = 0; b < d->batch; b++)
        if (lengths[b] < 1 || lengths[b] > d->seq_len) return 0;
    return 1;
}

size_t fl_lstm_reserve_bytes(const fl_dims *d, size_t elem) {
    return dims_ok(d) ? (size_t)fl_lstm_reserve_elems(d, elem) * elem : 0;
}
size_t fl_gru_reserve_bytes(const fl_dims *d, size_t elem, int lbr) {
    return dims_ok(d) ? (size_t)fl_gru_reserve_elems(d, lbr) * elem : 0;
}
size_t fl_lstm_forward_scratch_bytes(const fl_dims *d, size_t elem, int training) {
    return dims_ok(d) ? fl_ws_lstm_forward(d, elem, training).total : 0;
}
size_t fl_lstm_backward_scratch_bytes(const fl_dims *d, size_t elem) {
    return dims_ok(d) ? fl_ws_lstm_backward(d, elem).total : 0;
}
size_t fl_gru_forward_scratch_bytes(const fl_dims *d, size_t elem, int lbr) {
    return dims_ok(d) ? fl_ws_gru_forward(d, elem, lbr).total : 0;
}
size_t fl_gru_backward_scratch_bytes(const fl_dims *d, size_t elem, int lbr) {
    return dims_ok(d) ? fl_ws_gru_backward(d, elem, lbr).total : 0;
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

#define DEFINE_LSTM(R, RS)                                                                     \
    int fl_lstm_forward_##RS(const fl_dims *d, const R *x, const R *w_ih, const R *w_hh,      \
                             const R *b_ih, const R *b_hh, const R *h0, const R *c0,           \
                             const int64_t *lengths, R *y, R *h_n, R *c_n, void *reserve,      \
                             void *scratch, size_t scratch_bytes) {                            \
        if (!dims_ok(d) || !x || !w_ih || !w_hh || !b_ih || !b_hh || !y ||                    \
            !lengths_ok(d, lengths))                                                           \
            return FL_EINVAL;                                                                  \
        char *owned, *ws = scratch_get(scratch, scratch_bytes,                                 \
                                       fl_lstm_forward_scratch_bytes(d, sizeof(R), !!reserve), \
                                       &owned);                                                \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(lstm_forward, RS, d, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, y, h_n, c_n, \
                 (R *)reserve, ws);                                                            \
        free(owned);                                                                           \
        return st;                                                                             \
    }                                                                                          \
    int fl_lstm_backward_##RS(const fl_dims *d, const R *x, const R *w_ih, const R *w_hh,     \
                              const R *h0, const R *c0, const int64_t *lengths,                \
                              const void *reserve, const R *dy, const R *dh_n, const R *dc_n,  \
                              R *dx, R *dw_ih, R *dw_hh, R *db_ih, R *db_hh, R *dh0, R *dc0,   \
                              void *scratch, size_t scratch_bytes) {                           \
        if (!dims_ok(d) || !x || !w_ih || !w_hh || !reserve || !dx || !dw_ih || !dw_hh ||     \
            !db_ih || !db_hh || !dh0 || !dc0 || !lengths_ok(d, lengths))                       \
            return FL_EINVAL;                                                                  \
        char *owned, *ws = scratch_get(scratch, scratch_bytes,                                 \
                                       fl_lstm_backward_scratch_bytes(d, sizeof(R)), &owned);  \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(lstm_backward, RS, d, x, w_ih, w_hh, h0, c0, lengths, (const R *)reserve, dy, \
                 dh_n, dc_n, dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, ws);                    \
        free(owned);                                                                           \
        return st;                                                                             \
    }

#define DEFINE_GRU(R, RS)                                                                      \
    int fl_gru_forward_##RS(const fl_dims *d, int lbr, const R *x, const R *w_ih,             \
                            const R *w_hh, const R *b_ih, const R *b_hh, const R *h0,          \
                            const int64_t *lengths, R *y, R *h_n, void *reserve,               \
                            void *scratch, size_t scratch_bytes) {                             \
        if (!dims_ok(d) || !x || !w_ih || !w_hh || !b_ih || !b_hh || !y ||                    \
            !lengths_ok(d, lengths))                                                           \
            return FL_EINVAL;                                                                  \
        lbr = !!lbr;                                                                           \
        char *owned, *ws = scratch_get(scratch, scratch_bytes,                                 \
                                       fl_gru_forward_scratch_bytes(d, sizeof(R), lbr),        \
                                       &owned);                                                \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(gru_forward, RS, d, lbr, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, y, h_n,      \
                 (R *)reserve, ws);                                                            \
        free(owned);                                                                           \
        return st;                                                                             \
    }                                                                                          \
    int fl_gru_backward_##RS(const fl_dims *d, int lbr, const R *x, const R *w_ih,            \
                             const R *w_hh, const R *h0, const int64_t *lengths,               \
                             const void *reserve, const R *dy, const R *dh_n, R *dx,           \
                             R *dw_ih, R *dw_hh, R *db_ih, R *db_hh, R *dh0, void *scratch,    \
                             size_t scratch_bytes) {                                           \
        if (!dims_ok(d) || !x || !w_ih || !w_hh || !reserve || !dx || !dw_ih || !dw_hh ||     \
            !db_ih || !db_hh || !dh0 || !lengths_ok(d, lengths))                               \
            return FL_EINVAL;                                                                  \
        lbr = !!lbr;                                                                           \
        char *owned, *ws = scratch_get(scratch, scratch_bytes,                                 \
                                       fl_gru_backward_scratch_bytes(d, sizeof(R), lbr),       \
                                       &owned);                                                \
        if (!ws) return FL_ENOMEM;                                                             \
        int st;                                                                                \
        DISPATCH(gru_backward, RS, d, lbr, x, w_ih, w_hh, h0, lengths, (const R *)reserve, dy, \
                 dh_n, dx, dw_ih, dw_hh, db_ih, db_hh, dh0, ws);                               \
        free(owned);                                                                           \
        return st;                                                                             \
    }

DEFINE_LSTM(float, f32)
DEFINE_LSTM(double, f64)
DEFINE_GRU(float, f32)
DEFINE_GRU(double, f64)

/* ------------------------------------------------------------ single steps (T = 1 calls) */

#define DEFINE_CELLS(R, RS)                                                                     \
    int fl_lstm_cell_forward_##RS(int n_threads, int64_t B, int64_t I, int64_t H, const R *x,  \
                                  const R *h, const R *c, const R *w_ih, const R *w_hh,        \
                                  const R *b_ih, const R *b_hh, R *h_new, R *c_new) {          \
        fl_dims d = {1, B, I, H, 0, n_threads};                                                 \
        if (!c_new) return FL_EINVAL;                                                           \
        return fl_lstm_forward_##RS(&d, x, w_ih, w_hh, b_ih, b_hh, h, c, NULL, h_new, NULL,     \
                                    c_new, NULL, NULL, 0);                                      \
    }                                                                                           \
    int fl_lstm_cell_backward_##RS(int n_threads, int64_t B, int64_t I, int64_t H, const R *x, \
                                   const R *h, const R *c, const R *w_ih, const R *w_hh,       \
                                   const R *b_ih, const R *b_hh, const R *dh_new,              \
                                   const R *dc_new, R *dx, R *dh, R *dc, R *dw_ih, R *dw_hh,   \
                                   R *db_ih, R *db_hh) {                                        \
        fl_dims d = {1, B, I, H, 0, n_threads};                                                 \
        if (!dims_ok(&d)) return FL_EINVAL;                                                     \
        size_t ybytes = ((size_t)(B * H) * sizeof(R) + FL_ALIGN - 1) / FL_ALIGN * FL_ALIGN;     \
        size_t rbytes = (fl_lstm_reserve_bytes(&d, sizeof(R)) + FL_ALIGN - 1) / FL_ALIGN *      \
                        FL_ALIGN;                                                               \
        char *buf = aligned_alloc(FL_ALIGN, rbytes + ybytes + FL_ALIGN); /* a multiple of 64 */ \
        if (!buf) return FL_ENOMEM;                                                             \
        int st = fl_lstm_forward_##RS(&d, x, w_ih, w_hh, b_ih, b_hh, h, c, NULL,                \
                                      (R *)(buf + rbytes), NULL, NULL, buf, NULL, 0);           \
        if (st == FL_OK)                                                                        \
            st = fl_lstm_backward_##RS(&d, x, w_ih, w_hh, h, c, NULL, buf, NULL, dh_new,        \
                                       dc_new, dx, dw_ih, dw_hh, db_ih, db_hh, dh, dc, NULL,    \
                                       0);                                                      \
        free(buf);                                                                              \
        return st;                                                                              \
    }                                                                                           \
    int fl_gru_cell_forward_##RS(int n_threads, int64_t B, int64_t I, int64_t H, int lbr,      \
                                 const R *x, const R *h, const R *w_ih, const R *w_hh,         \
                                 const R *b_ih, const R *b_hh, R *h_new) {                      \
        fl_dims d = {1, B, I, H, 0, n_threads};                                                 \
        return fl_gru_forward_##RS(&d, lbr, x, w_ih, w_hh, b_ih, b_hh, h, NULL, h_new, NULL,    \
                                   NULL, NULL, 0);                                              \
    }                                                                                           \
    int fl_gru_cell_backward_##RS(int n_threads, int64_t B, int64_t I, int64_t H, int lbr,     \
                                  const R *x, const R *h, const R *w_ih, const R *w_hh,        \
                                  const R *b_ih, const R *b_hh, const R *dh_new, R *dx, R *dh, \
                                  R *dw_ih, R *dw_hh, R *db_ih, R *db_hh) {                     \
        fl_dims d = {1, B, I, H, 0, n_threads};                                                 \
        if (!dims_ok(&d)) return FL_EINVAL;                                                     \
        size_t ybytes = ((size_t)(B * H) * sizeof(R) + FL_ALIGN - 1) / FL_ALIGN * FL_ALIGN;     \
        size_t rbytes = (fl_gru_reserve_bytes(&d, sizeof(R), lbr) + FL_ALIGN - 1) / FL_ALIGN *  \
                        FL_ALIGN;                                                               \
        char *buf = aligned_alloc(FL_ALIGN, rbytes + ybytes + FL_ALIGN); /* a multiple of 64 */ \
        if (!buf) return FL_ENOMEM;                                                             \
        int st = fl_gru_forward_##RS(&d, lbr, x, w_ih, w_hh, b_ih, b_hh, h, NULL,               \
                                     (R *)(buf + rbytes), NULL, buf, NULL, 0);                  \
        if (st == FL_OK)                                                                        \
            st = fl_gru_backward_##RS(&d, lbr, x, w_ih, w_hh, h, NULL, buf, NULL, dh_new, dx,   \
                                      dw_ih, dw_hh, db_ih, db_hh, dh, NULL, 0);                 \
        free(buf);                                                                              \
        return st;                                                                              \
    }

DEFINE_CELLS(float, f32)
DEFINE_CELLS(double, f64)
