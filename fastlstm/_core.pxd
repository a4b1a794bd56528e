# Declarations of the public C API (csrc/fastlstm.h), for the binding in _core.pyx and for
# other Cython code: `from fastlstm._core cimport *` with fastlstm.get_include() on the
# include path gives the same functions without the GIL.
from libc.stdint cimport int64_t


cdef extern from "fastlstm.h" nogil:
    ctypedef struct fl_dims:
        int64_t seq_len, batch, input_size, hidden_size
        int batch_first
        int n_threads

    int FL_OK, FL_EINVAL, FL_ENOMEM
    const char *fl_status_string(int status)
    int fl_openmp_enabled()
    int fl_default_threads()
    const char *fl_isa()

    size_t fl_lstm_reserve_bytes(const fl_dims *d, size_t elem_size)
    size_t fl_gru_reserve_bytes(const fl_dims *d, size_t elem_size, int linear_before_reset)
    size_t fl_lstm_forward_scratch_bytes(const fl_dims *d, size_t elem_size, int training)
    size_t fl_lstm_backward_scratch_bytes(const fl_dims *d, size_t elem_size)
    size_t fl_gru_forward_scratch_bytes(const fl_dims *d, size_t elem_size,
                                        int linear_before_reset)
    size_t fl_gru_backward_scratch_bytes(const fl_dims *d, size_t elem_size,
                                         int linear_before_reset)

    int fl_lstm_forward_f32(const fl_dims *d, const float *x, const float *w_ih,
                            const float *w_hh, const float *b_ih, const float *b_hh,
                            const float *h0, const float *c0, const int64_t *lengths, float *y,
                            float *h_n, float *c_n, void *reserve, void *scratch,
                            size_t scratch_bytes)
    int fl_lstm_forward_f64(const fl_dims *d, const double *x, const double *w_ih,
                            const double *w_hh, const double *b_ih, const double *b_hh,
                            const double *h0, const double *c0, const int64_t *lengths,
                            double *y, double *h_n, double *c_n, void *reserve, void *scratch,
                            size_t scratch_bytes)
    int fl_lstm_backward_f32(const fl_dims *d, const float *x, const float *w_ih,
                             const float *w_hh, const float *h0, const float *c0,
                             const int64_t *lengths, const void *reserve, const float *dy,
                             const float *dh_n, const float *dc_n, float *dx, float *dw_ih,
                             float *dw_hh, float *db_ih, float *db_hh, float *dh0, float *dc0,
                             void *scratch, size_t scratch_bytes)
    int fl_lstm_backward_f64(const fl_dims *d, const double *x, const double *w_ih,
                             const double *w_hh, const double *h0, const double *c0,
                             const int64_t *lengths, const void *reserve, const double *dy,
                             const double *dh_n, const double *dc_n, double *dx, double *dw_ih,
                             double *dw_hh, double *db_ih, double *db_hh, double *dh0,
                             double *dc0, void *scratch, size_t scratch_bytes)
    int fl_gru_forward_f32(const fl_dims *d, int linear_before_reset, const float *x,
                           const float *w_ih, const float *w_hh, const float *b_ih,
                           const float *b_hh, const float *h0, const int64_t *lengths, float *y,
                           float *h_n, void *reserve, void *scratch, size_t scratch_bytes)
    int fl_gru_forward_f64(const fl_dims *d, int linear_before_reset, const double *x,
                           const double *w_ih, const double *w_hh, const double *b_ih,
                           const double *b_hh, const double *h0, const int64_t *lengths,
                           double *y, double *h_n, void *reserve, void *scratch,
                           size_t scratch_bytes)
    int fl_gru_backward_f32(const fl_dims *d, int linear_before_reset, const float *x,
                            const float *w_ih, const float *w_hh, const float *h0,
                            const int64_t *lengths, const void *reserve, const float *dy,
                            const float *dh_n, float *dx, float *dw_ih, float *dw_hh,
                            float *db_ih, float *db_hh, float *dh0, void *scratch,
                            size_t scratch_bytes)
    int fl_gru_backward_f64(const fl_dims *d, int linear_before_reset, const double *x,
                            const double *w_ih, const double *w_hh, const double *h0,
                            const int64_t *lengths, const void *reserve, const double *dy,
                            const double *dh_n, double *dx, double *dw_ih, double *dw_hh,
                            double *db_ih, double *db_hh, double *dh0, void *scratch,
                            size_t scratch_bytes)

    int fl_lstm_cell_forward_f32(int n_threads, int64_t B, int64_t I, int64_t H, const float *x,
                                 const float *h, const float *c, const float *w_ih,
                                 const float *w_hh, const float *b_ih, const float *b_hh,
                                 float *h_new, float *c_new)
    int fl_lstm_cell_forward_f64(int n_threads, int64_t B, int64_t I, int64_t H,
                                 const double *x, const double *h, const double *c,
                                 const double *w_ih, const double *w_hh, const double *b_ih,
                                 const double *b_hh, double *h_new, double *c_new)
    int fl_lstm_cell_backward_f32(int n_threads, int64_t B, int64_t I, int64_t H,
                                  const float *x, const float *h, const float *c,
                                  const float *w_ih, const float *w_hh, const float *b_ih,
                                  const float *b_hh, const float *dh_new, const float *dc_new,
                                  float *dx, float *dh, float *dc, float *dw_ih, float *dw_hh,
                                  float *db_ih, float *db_hh)
    int fl_lstm_cell_backward_f64(int n_threads, int64_t B, int64_t I, int64_t H,
                                  const double *x, const double *h, const double *c,
                                  const double *w_ih, const double *w_hh, const double *b_ih,
                                  const double *b_hh, const double *dh_new,
                                  const double *dc_new, double *dx, double *dh, double *dc,
                                  double *dw_ih, double *dw_hh, double *db_ih, double *db_hh)
    int fl_gru_cell_forward_f32(int n_threads, int64_t B, int64_t I, int64_t H,
                                int linear_before_reset, const float *x, const float *h,
                                const float *w_ih, const float *w_hh, const float *b_ih,
                                const float *b_hh, float *h_new)
    int fl_gru_cell_forward_f64(int n_threads, int64_t B, int64_t I, int64_t H,
                                int linear_before_reset, const double *x, const double *h,
                                const double *w_ih, const double *w_hh, const double *b_ih,
                                const double *b_hh, double *h_new)
    int fl_gru_cell_backward_f32(int n_threads, int64_t B, int64_t I, int64_t H,
                                 int linear_before_reset, const float *x, const float *h,
                                 const float *w_ih, const float *w_hh, const float *b_ih,
                                 const float *b_hh, const float *dh_new, float *dx, float *dh,
                                 float *dw_ih, float *dw_hh, float *db_ih, float *db_hh)
    int fl_gru_cell_backward_f64(int n_threads, int64_t B, int64_t I, int64_t H,
                                 int linear_before_reset, const double *x, const double *h,
                                 const double *w_ih, const double *w_hh, const double *b_ih,
                                 const double *b_hh, const double *dh_new, double *dx,
                                 double *dh, double *dw_ih, double *dw_hh, double *db_ih,
                                 double *db_hh)


# The same kernels as cdef functions exported by this module (scipy's cython_blas pattern):
# `from fastlstm._core cimport lstm_forward_f32` in another Cython module calls them
# through a capsule at import time, with no linking against fastlstm and without the GIL.
cdef int lstm_forward_f32(const fl_dims *d, const float *x, const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh, const float *h0, const float *c0, const int64_t *lengths, float *y, float *h_n, float *c_n, void *reserve, void *scratch, size_t scratch_bytes) noexcept nogil
cdef int lstm_forward_f64(const fl_dims *d, const double *x, const double *w_ih, const double *w_hh, const double *b_ih, const double *b_hh, const double *h0, const double *c0, const int64_t *lengths, double *y, double *h_n, double *c_n, void *reserve, void *scratch, size_t scratch_bytes) noexcept nogil
cdef int lstm_backward_f32(const fl_dims *d, const float *x, const float *w_ih, const float *w_hh, const float *h0, const float *c0, const int64_t *lengths, const void *reserve, const float *dy, const float *dh_n, const float *dc_n, float *dx, float *dw_ih, float *dw_hh, float *db_ih, float *db_hh, float *dh0, float *dc0, void *scratch, size_t scratch_bytes) noexcept nogil
cdef int lstm_backward_f64(const fl_dims *d, const double *x, const double *w_ih, const double *w_hh, const double *h0, const double *c0, const int64_t *lengths, const void *reserve, const double *dy, const double *dh_n, const double *dc_n, double *dx, double *dw_ih, double *dw_hh, double *db_ih, double *db_hh, double *dh0, double *dc0, void *scratch, size_t scratch_bytes) noexcept nogil
cdef int gru_forward_f32(const fl_dims *d, int linear_before_reset, const float *x, const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh, const float *h0, const int64_t *lengths, float *y, float *h_n, void *reserve, void *scratch, size_t scratch_bytes) noexcept nogil
cdef int gru_forward_f64(const fl_dims *d, int linear_before_reset, const double *x, const double *w_ih, const double *w_hh, const double *b_ih, const double *b_hh, const double *h0, const int64_t *lengths, double *y, double *h_n, void *reserve, void *scratch, size_t scratch_bytes) noexcept nogil
cdef int gru_backward_f32(const fl_dims *d, int linear_before_reset, const float *x, const float *w_ih, const float *w_hh, const float *h0, const int64_t *lengths, const void *reserve, const float *dy, const float *dh_n, float *dx, float *dw_ih, float *dw_hh, float *db_ih, float *db_hh, float *dh0, void *scratch, size_t scratch_bytes) noexcept nogil
cdef int gru_backward_f64(const fl_dims *d, int linear_before_reset, const double *x, const double *w_ih, const double *w_hh, const double *h0, const int64_t *lengths, const void *reserve, const double *dy, const double *dh_n, double *dx, double *dw_ih, double *dw_hh, double *db_ih, double *db_hh, double *dh0, void *scratch, size_t scratch_bytes) noexcept nogil
cdef int lstm_cell_forward_f32(int n_threads, int64_t B, int64_t I, int64_t H, const float *x, const float *h, const float *c, const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh, float *h_new, float *c_new) noexcept nogil
cdef int lstm_cell_forward_f64(int n_threads, int64_t B, int64_t I, int64_t H, const double *x, const double *h, const double *c, const double *w_ih, const double *w_hh, const double *b_ih, const double *b_hh, double *h_new, double *c_new) noexcept nogil
cdef int lstm_cell_backward_f32(int n_threads, int64_t B, int64_t I, int64_t H, const float *x, const float *h, const float *c, const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh, const float *dh_new, const float *dc_new, float *dx, float *dh, float *dc, float *dw_ih, float *dw_hh, float *db_ih, float *db_hh) noexcept nogil
cdef int lstm_cell_backward_f64(int n_threads, int64_t B, int64_t I, int64_t H, const double *x, const double *h, const double *c, const double *w_ih, const double *w_hh, const double *b_ih, const double *b_hh, const double *dh_new, const double *dc_new, double *dx, double *dh, double *dc, double *dw_ih, double *dw_hh, double *db_ih, double *db_hh) noexcept nogil
cdef int gru_cell_forward_f32(int n_threads, int64_t B, int64_t I, int64_t H, int linear_before_reset, const float *x, const float *h, const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh, float *h_new) noexcept nogil
cdef int gru_cell_forward_f64(int n_threads, int64_t B, int64_t I, int64_t H, int linear_before_reset, const double *x, const double *h, const double *w_ih, const double *w_hh, const double *b_ih, const double *b_hh, double *h_new) noexcept nogil
cdef int gru_cell_backward_f32(int n_threads, int64_t B, int64_t I, int64_t H, int linear_before_reset, const float *x, const float *h, const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh, const float *dh_new, float *dx, float *dh, float *dw_ih, float *dw_hh, float *db_ih, float *db_hh) noexcept nogil
cdef int gru_cell_backward_f64(int n_threads, int64_t B, int64_t I, int64_t H, int linear_before_reset, const double *x, const double *h, const double *w_ih, const double *w_hh, const double *b_ih, const double *b_hh, const double *dh_new, double *dx, double *dh, double *dw_ih, double *dw_hh, double *db_ih, double *db_hh) noexcept nogil
cdef size_t lstm_reserve_bytes(const fl_dims *d, size_t elem_size) noexcept nogil
cdef size_t gru_reserve_bytes(const fl_dims *d, size_t elem_size, int linear_before_reset) noexcept nogil
cdef const char *status_string(int status) noexcept nogil
