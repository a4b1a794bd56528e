/* dispatch.h -- prototypes of the per-ISA kernel instances that api.c chooses between. */
#ifndef FL_IMPL_DISPATCH_H
#define FL_IMPL_DISPATCH_H

#include "fastlstm.h"
#include "impl/lstmx_args.h"

#define FL_DECLARE_DTYPE(R, RS, ISA)                                                          \
    int lstm_forward_##RS##_##ISA(const fl_dims *d, const R *x, const R *w_ih, const R *w_hh,  \
                                  const R *b_ih, const R *b_hh, const R *h0, const R *c0,      \
                                  const int64_t *lengths, R *y, R *h_n, R *c_n, R *reserve,    \
                                  char *ws);                                                   \
    int lstm_backward_##RS##_##ISA(const fl_dims *d, const R *x, const R *w_ih,                \
                                   const R *w_hh, const R *h0, const R *c0,                    \
                                   const int64_t *lengths, const R *reserve, const R *dy,      \
                                   const R *dh_n, const R *dc_n, R *dx, R *dw_ih, R *dw_hh,    \
                                   R *db_ih, R *db_hh, R *dh0, R *dc0, char *ws);              \
    int gru_forward_##RS##_##ISA(const fl_dims *d, int lbr, const R *x, const R *w_ih,         \
                                 const R *w_hh, const R *b_ih, const R *b_hh, const R *h0,     \
                                 const int64_t *lengths, R *y, R *h_n, R *reserve, char *ws);  \
    int gru_backward_##RS##_##ISA(const fl_dims *d, int lbr, const R *x, const R *w_ih,        \
                                  const R *w_hh, const R *h0, const int64_t *lengths,          \
                                  const R *reserve, const R *dy, const R *dh_n, R *dx,         \
                                  R *dw_ih, R *dw_hh, R *db_ih, R *db_hh, R *dh0, char *ws); \
    int lstmx_forward_##RS##_##ISA(FL_LSTMX_FORWARD_ARGS(R), R *reserve, char *ws);          \
    int lstmx_backward_##RS##_##ISA(FL_LSTMX_BACKWARD_IN(R), FL_LSTMX_BACKWARD_OUT(R),      \
                                    const R *reserve, char *ws);

/* the extended GRU (grux_*_body.h): layer norm and a recurrent mask */
#define FL_DECLARE_GRUX(R, RS, ISA)                                                           \
    int grux_forward_##RS##_##ISA(const fl_dims *d, int lbr, int ln, const R *x,               \
                                  const R *w_ih, const R *w_hh, const R *b_ih, const R *b_hh,  \
                                  const R *g_ih, const R *g_hh, const R *mask, const R *h0,    \
                                  const int64_t *lengths, R *y, R *h_n, R *reserve, char *ws); \
    int grux_backward_##RS##_##ISA(const fl_dims *d, int lbr, int ln, const R *x,              \
                                   const R *w_ih, const R *w_hh, const R *g_ih, const R *g_hh, \
                                   const R *mask, const int64_t *lengths, const R *reserve,    \
                                   const R *dy, const R *dh_n, R *dx, R *dw_ih, R *dw_hh,      \
                                   R *db_ih, R *db_hh, R *dg_ih, R *dg_hh, R *dh0, char *ws);

/* streams (stream_body.h): pack the weights into an initialised block; one step */
#define FL_DECLARE_STREAM(R, RS, ISA)                                                         \
    int lstm_stream_pack_##RS##_##ISA(void *mem, const R *w_ih, const R *w_hh, const R *b_ih, \
                                      const R *b_hh);                                         \
    int gru_stream_pack_##RS##_##ISA(void *mem, const R *w_ih, const R *w_hh, const R *b_ih,  \
                                     const R *b_hh);                                          \
    int lstm_stream_step_##RS##_##ISA(void *mem, const R *x, R *h_out);                       \
    int gru_stream_step_##RS##_##ISA(void *mem, const R *x, R *h_out);

#define FL_DECLARE_ISA(ISA)             \
    FL_DECLARE_DTYPE(float, f32, ISA)   \
    FL_DECLARE_DTYPE(double, f64, ISA)  \
    FL_DECLARE_GRUX(float, f32, ISA)    \
    FL_DECLARE_GRUX(double, f64, ISA)   \
    FL_DECLARE_STREAM(float, f32, ISA)  \
    FL_DECLARE_STREAM(double, f64, ISA)

FL_DECLARE_ISA(generic)
#if defined(__x86_64__) && defined(__GNUC__)
#define FL_HAVE_X86_DISPATCH 1
FL_DECLARE_ISA(avx2)
FL_DECLARE_ISA(avx512)
#endif

#endif
