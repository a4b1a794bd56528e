/* lstmx_args.h -- the argument lists of the extended LSTM (fastlstm.h, fl_lstmx_*), written
 * once: the public functions in api.c, their per-ISA kernels (dispatch.h) and the kernel
 * bodies (lstmx_*_body.h) all expand these, and the _NAMES lists pass them on. */
#ifndef FL_IMPL_LSTMX_ARGS_H
#define FL_IMPL_LSTMX_ARGS_H

#define FL_LSTMX_FORWARD_ARGS(R)                                                              \
    const fl_dims *d, const fl_lstm_ext *e, const R *x, const R *w_ih, const R *w_hh,         \
        const R *b_ih, const R *b_hh, const R *w_hr, const R *ln_ih, const R *ln_hh,          \
        const R *ln_c, const R *ln_bc, const R *mask, const R *h0, const R *c0,               \
        const int64_t *lengths, R *y, R *h_n, R *c_n
#define FL_LSTMX_FORWARD_NAMES                                                                \
    d, e, x, w_ih, w_hh, b_ih, b_hh, w_hr, ln_ih, ln_hh, ln_c, ln_bc, mask, h0, c0, lengths,  \
        y, h_n, c_n

/* backward: the inputs (before the reserve in the public functions), then the outputs */
#define FL_LSTMX_BACKWARD_IN(R)                                                               \
    const fl_dims *d, const fl_lstm_ext *e, const R *x, const R *w_ih, const R *w_hh,         \
        const R *w_hr, const R *ln_ih, const R *ln_hh, const R *ln_c, const R *mask,          \
        const R *c0, const int64_t *lengths
#define FL_LSTMX_BACKWARD_IN_NAMES d, e, x, w_ih, w_hh, w_hr, ln_ih, ln_hh, ln_c, mask, c0, lengths
#define FL_LSTMX_BACKWARD_OUT(R)                                                              \
    const R *dy, const R *dh_n, const R *dc_n, R *dx, R *dw_ih, R *dw_hh, R *db_ih,           \
        R *db_hh, R *dw_hr, R *dln_ih, R *dln_hh, R *dln_c, R *dln_bc, R *dh0, R *dc0
#define FL_LSTMX_BACKWARD_OUT_NAMES                                                           \
    dy, dh_n, dc_n, dx, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dln_ih, dln_hh, dln_c, dln_bc,     \
        dh0, dc0

#endif
