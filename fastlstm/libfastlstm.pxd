# The public C API (csrc/fastlstm.h) for Cython: the binding in _core.pyx uses it, and so can
# any other Cython module, which then links the static library the package installs:
#
#     from fastlstm.libfastlstm cimport fl_dims, fl_lstm_forward_f32
#
#     Extension(..., include_dirs=[fastlstm.get_include()],
#               library_dirs=[fastlstm.get_library_dir()], libraries=["fastlstm"],
#               extra_compile_args=["-fopenmp"], extra_link_args=["-fopenmp"])
#
# Every function is nogil and returns an fl_status (FL_OK = 0); see fastlstm.h for shapes.
from libc.stdint cimport int64_t


cdef extern from "fastlstm.h" nogil:
    ctypedef struct fl_dims:
        int64_t seq_len, batch, input_size, hidden_size
        int batch_first
        int n_threads

    ctypedef enum fl_status:
        FL_OK
        FL_EINVAL
        FL_ENOMEM

    const char *fl_status_string(fl_status status)
    const char *fl_version()
    int fl_openmp_enabled()
    int fl_default_threads()
    const char *fl_isa()

    fl_status fl_lstm_reserve_bytes(const fl_dims *d, size_t elem_size, size_t *bytes)
    fl_status fl_lstm_forward_scratch_bytes(const fl_dims *d, size_t elem_size, int training,
                                            size_t *bytes)
    fl_status fl_lstm_backward_scratch_bytes(const fl_dims *d, size_t elem_size, size_t *bytes)
    fl_status fl_gru_reserve_bytes(const fl_dims *d, size_t elem_size, int linear_before_reset,
                                   size_t *bytes)
    fl_status fl_gru_forward_scratch_bytes(const fl_dims *d, size_t elem_size,
                                           int linear_before_reset, size_t *bytes)
    fl_status fl_gru_backward_scratch_bytes(const fl_dims *d, size_t elem_size,
                                            int linear_before_reset, size_t *bytes)
    fl_status fl_lstm_forward_f32(const fl_dims *d, const float *x, const float *w_ih,
                                  const float *w_hh, const float *b_ih, const float *b_hh,
                                  const float *h0, const float *c0, const int64_t *lengths,
                                  float *y, float *h_n, float *c_n, void *reserve, void *scratch,
                                  size_t scratch_bytes)
    fl_status fl_lstm_forward_f64(const fl_dims *d, const double *x, const double *w_ih,
                                  const double *w_hh, const double *b_ih, const double *b_hh,
                                  const double *h0, const double *c0, const int64_t *lengths,
                                  double *y, double *h_n, double *c_n, void *reserve, void *scratch,
                                  size_t scratch_bytes)
    fl_status fl_lstm_backward_f32(const fl_dims *d, const float *x, const float *w_ih,
                                   const float *w_hh, const float *h0, const float *c0,
                                   const int64_t *lengths, const void *reserve, const float *dy,
                                   const float *dh_n, const float *dc_n, float *dx, float *dw_ih,
                                   float *dw_hh, float *db_ih, float *db_hh, float *dh0, float *dc0,
                                   void *scratch, size_t scratch_bytes)
    fl_status fl_lstm_backward_f64(const fl_dims *d, const double *x, const double *w_ih,
                                   const double *w_hh, const double *h0, const double *c0,
                                   const int64_t *lengths, const void *reserve, const double *dy,
                                   const double *dh_n, const double *dc_n, double *dx,
                                   double *dw_ih, double *dw_hh, double *db_ih, double *db_hh,
                                   double *dh0, double *dc0, void *scratch, size_t scratch_bytes)
    fl_status fl_gru_forward_f32(const fl_dims *d, int linear_before_reset, const float *x,
                                 const float *w_ih, const float *w_hh, const float *b_ih,
                                 const float *b_hh, const float *h0, const int64_t *lengths,
                                 float *y, float *h_n, void *reserve, void *scratch,
                                 size_t scratch_bytes)
    fl_status fl_gru_forward_f64(const fl_dims *d, int linear_before_reset, const double *x,
                                 const double *w_ih, const double *w_hh, const double *b_ih,
                                 const double *b_hh, const double *h0, const int64_t *lengths,
                                 double *y, double *h_n, void *reserve, void *scratch,
                                 size_t scratch_bytes)
    fl_status fl_gru_backward_f32(const fl_dims *d, int linear_before_reset, const float *x,
                                  const float *w_ih, const float *w_hh, const float *h0,
                                  const int64_t *lengths, const void *reserve, const float *dy,
                                  const float *dh_n, float *dx, float *dw_ih, float *dw_hh,
                                  float *db_ih, float *db_hh, float *dh0, void *scratch,
                                  size_t scratch_bytes)
    fl_status fl_gru_backward_f64(const fl_dims *d, int linear_before_reset, const double *x,
                                  const double *w_ih, const double *w_hh, const double *h0,
                                  const int64_t *lengths, const void *reserve, const double *dy,
                                  const double *dh_n, double *dx, double *dw_ih, double *dw_hh,
                                  double *db_ih, double *db_hh, double *dh0, void *scratch,
                                  size_t scratch_bytes)
    fl_status fl_lstm_cell_forward_f32(int n_threads, int64_t batch, int64_t input_size,
                                       int64_t hidden_size, const float *x, const float *h,
                                       const float *c, const float *w_ih, const float *w_hh,
                                       const float *b_ih, const float *b_hh, float *h_new,
                                       float *c_new)
    fl_status fl_lstm_cell_forward_f64(int n_threads, int64_t batch, int64_t input_size,
                                       int64_t hidden_size, const double *x, const double *h,
                                       const double *c, const double *w_ih, const double *w_hh,
                                       const double *b_ih, const double *b_hh, double *h_new,
                                       double *c_new)
    fl_status fl_lstm_cell_backward_f32(int n_threads, int64_t batch, int64_t input_size,
                                        int64_t hidden_size, const float *x, const float *h,
                                        const float *c, const float *w_ih, const float *w_hh,
                                        const float *b_ih, const float *b_hh, const float *dh_new,
                                        const float *dc_new, float *dx, float *dh, float *dc,
                                        float *dw_ih, float *dw_hh, float *db_ih, float *db_hh)
    fl_status fl_lstm_cell_backward_f64(int n_threads, int64_t batch, int64_t input_size,
                                        int64_t hidden_size, const double *x, const double *h,
                                        const double *c, const double *w_ih, const double *w_hh,
                                        const double *b_ih, const double *b_hh,
                                        const double *dh_new, const double *dc_new, double *dx,
                                        double *dh, double *dc, double *dw_ih, double *dw_hh,
                                        double *db_ih, double *db_hh)
    fl_status fl_gru_cell_forward_f32(int n_threads, int64_t batch, int64_t input_size,
                                      int64_t hidden_size, int linear_before_reset, const float *x,
                                      const float *h, const float *w_ih, const float *w_hh,
                                      const float *b_ih, const float *b_hh, float *h_new)
    fl_status fl_gru_cell_forward_f64(int n_threads, int64_t batch, int64_t input_size,
                                      int64_t hidden_size, int linear_before_reset, const double *x,
                                      const double *h, const double *w_ih, const double *w_hh,
                                      const double *b_ih, const double *b_hh, double *h_new)
    fl_status fl_gru_cell_backward_f32(int n_threads, int64_t batch, int64_t input_size,
                                       int64_t hidden_size, int linear_before_reset, const float *x,
                                       const float *h, const float *w_ih, const float *w_hh,
                                       const float *b_ih, const float *b_hh, const float *dh_new,
                                       float *dx, float *dh, float *dw_ih, float *dw_hh,
                                       float *db_ih, float *db_hh)
    fl_status fl_gru_cell_backward_f64(int n_threads, int64_t batch, int64_t input_size,
                                       int64_t hidden_size, int linear_before_reset,
                                       const double *x, const double *h, const double *w_ih,
                                       const double *w_hh, const double *b_ih, const double *b_hh,
                                       const double *dh_new, double *dx, double *dh, double *dw_ih,
                                       double *dw_hh, double *db_ih, double *db_hh)

    # The extended LSTM (projection, layer norm, recurrent mask): fastlstm.h, "Extended LSTM".
    ctypedef struct fl_lstm_ext:
        int64_t proj_size
        int layer_norm

    fl_status fl_lstmx_reserve_bytes(const fl_dims *d, const fl_lstm_ext *e, size_t elem_size,
                                     size_t *bytes)
    fl_status fl_lstmx_forward_scratch_bytes(const fl_dims *d, const fl_lstm_ext *e,
                                             size_t elem_size, int training, size_t *bytes)
    fl_status fl_lstmx_backward_scratch_bytes(const fl_dims *d, const fl_lstm_ext *e,
                                              size_t elem_size, size_t *bytes)
    fl_status fl_lstmx_forward_f32(const fl_dims *d, const fl_lstm_ext *e, const float *x,
                                   const float *w_ih, const float *w_hh, const float *b_ih,
                                   const float *b_hh, const float *w_hr, const float *ln_ih,
                                   const float *ln_hh, const float *ln_c, const float *ln_bc,
                                   const float *mask, const float *h0, const float *c0,
                                   const int64_t *lengths, float *y, float *h_n, float *c_n,
                                   void *reserve, void *scratch, size_t scratch_bytes)
    fl_status fl_lstmx_forward_f64(const fl_dims *d, const fl_lstm_ext *e, const double *x,
                                   const double *w_ih, const double *w_hh, const double *b_ih,
                                   const double *b_hh, const double *w_hr, const double *ln_ih,
                                   const double *ln_hh, const double *ln_c, const double *ln_bc,
                                   const double *mask, const double *h0, const double *c0,
                                   const int64_t *lengths, double *y, double *h_n, double *c_n,
                                   void *reserve, void *scratch, size_t scratch_bytes)
    fl_status fl_lstmx_backward_f32(const fl_dims *d, const fl_lstm_ext *e, const float *x,
                                    const float *w_ih, const float *w_hh, const float *w_hr,
                                    const float *ln_ih, const float *ln_hh, const float *ln_c,
                                    const float *mask, const float *c0, const int64_t *lengths,
                                    const void *reserve, const float *dy, const float *dh_n,
                                    const float *dc_n, float *dx, float *dw_ih, float *dw_hh,
                                    float *db_ih, float *db_hh, float *dw_hr, float *dln_ih,
                                    float *dln_hh, float *dln_c, float *dln_bc, float *dh0,
                                    float *dc0, void *scratch, size_t scratch_bytes)
    fl_status fl_lstmx_backward_f64(const fl_dims *d, const fl_lstm_ext *e, const double *x,
                                    const double *w_ih, const double *w_hh, const double *w_hr,
                                    const double *ln_ih, const double *ln_hh, const double *ln_c,
                                    const double *mask, const double *c0, const int64_t *lengths,
                                    const void *reserve, const double *dy, const double *dh_n,
                                    const double *dc_n, double *dx, double *dw_ih,
                                    double *dw_hh, double *db_ih, double *db_hh, double *dw_hr,
                                    double *dln_ih, double *dln_hh, double *dln_c,
                                    double *dln_bc, double *dh0, double *dc0, void *scratch,
                                    size_t scratch_bytes)

    # the extended GRU: layer norm and a recurrent mask (fastlstm.h, "Extended GRU")
    fl_status fl_grux_reserve_bytes(const fl_dims *d, size_t elem_size, int linear_before_reset,
                                    int layer_norm, int masked, size_t *bytes)
    fl_status fl_grux_forward_scratch_bytes(const fl_dims *d, size_t elem_size,
                                            int linear_before_reset, int layer_norm, int masked,
                                            size_t *bytes)
    fl_status fl_grux_backward_scratch_bytes(const fl_dims *d, size_t elem_size,
                                             int linear_before_reset, int layer_norm, int masked,
                                             size_t *bytes)
    fl_status fl_grux_forward_f32(const fl_dims *d, int linear_before_reset, int layer_norm,
                                  const float *x, const float *w_ih, const float *w_hh,
                                  const float *b_ih, const float *b_hh, const float *g_ih,
                                  const float *g_hh, const float *mask, const float *h0,
                                  const int64_t *lengths, float *y, float *h_n, void *reserve,
                                  void *scratch, size_t scratch_bytes)
    fl_status fl_grux_forward_f64(const fl_dims *d, int linear_before_reset, int layer_norm,
                                  const double *x, const double *w_ih, const double *w_hh,
                                  const double *b_ih, const double *b_hh, const double *g_ih,
                                  const double *g_hh, const double *mask, const double *h0,
                                  const int64_t *lengths, double *y, double *h_n, void *reserve,
                                  void *scratch, size_t scratch_bytes)
    fl_status fl_grux_backward_f32(const fl_dims *d, int linear_before_reset, int layer_norm,
                                   const float *x, const float *w_ih, const float *w_hh,
                                   const float *g_ih, const float *g_hh, const float *mask,
                                   const int64_t *lengths, const void *reserve, const float *dy,
                                   const float *dh_n, float *dx, float *dw_ih, float *dw_hh,
                                   float *db_ih, float *db_hh, float *dg_ih, float *dg_hh,
                                   float *dh0, void *scratch, size_t scratch_bytes)
    fl_status fl_grux_backward_f64(const fl_dims *d, int linear_before_reset, int layer_norm,
                                   const double *x, const double *w_ih, const double *w_hh,
                                   const double *g_ih, const double *g_hh, const double *mask,
                                   const int64_t *lengths, const void *reserve, const double *dy,
                                   const double *dh_n, double *dx, double *dw_ih, double *dw_hh,
                                   double *db_ih, double *db_hh, double *dg_ih, double *dg_hh,
                                   double *dh0, void *scratch, size_t scratch_bytes)

    # streams: weights packed once into the caller's 64-byte aligned block, one step per call
    fl_status fl_lstm_stream_bytes(int n_threads, int64_t batch, int64_t input_size,
                                   int64_t hidden_size, size_t elem_size, size_t *bytes)
    fl_status fl_lstm_stream_init_f32(void *mem, size_t bytes, int n_threads, int64_t batch,
                                      int64_t input_size, int64_t hidden_size, const float *w_ih,
                                      const float *w_hh, const float *b_ih, const float *b_hh)
    fl_status fl_lstm_stream_init_f64(void *mem, size_t bytes, int n_threads, int64_t batch,
                                      int64_t input_size, int64_t hidden_size,
                                      const double *w_ih, const double *w_hh,
                                      const double *b_ih, const double *b_hh)
    fl_status fl_lstm_stream_reset_f32(void *mem, const float *h0, const float *c0)
    fl_status fl_lstm_stream_reset_f64(void *mem, const double *h0, const double *c0)
    fl_status fl_lstm_stream_step_f32(void *mem, const float *x, float *h_out)
    fl_status fl_lstm_stream_step_f64(void *mem, const double *x, double *h_out)
    fl_status fl_lstm_stream_state_f32(const void *mem, float *h, float *c)
    fl_status fl_lstm_stream_state_f64(const void *mem, double *h, double *c)
    fl_status fl_gru_stream_bytes(int n_threads, int64_t batch, int64_t input_size,
                                  int64_t hidden_size, size_t elem_size, int linear_before_reset,
                                  size_t *bytes)
    fl_status fl_gru_stream_init_f32(void *mem, size_t bytes, int n_threads, int64_t batch,
                                     int64_t input_size, int64_t hidden_size,
                                     int linear_before_reset, const float *w_ih,
                                     const float *w_hh, const float *b_ih, const float *b_hh)
    fl_status fl_gru_stream_init_f64(void *mem, size_t bytes, int n_threads, int64_t batch,
                                     int64_t input_size, int64_t hidden_size,
                                     int linear_before_reset, const double *w_ih,
                                     const double *w_hh, const double *b_ih, const double *b_hh)
    fl_status fl_gru_stream_reset_f32(void *mem, const float *h0)
    fl_status fl_gru_stream_reset_f64(void *mem, const double *h0)
    fl_status fl_gru_stream_step_f32(void *mem, const float *x, float *h_out)
    fl_status fl_gru_stream_step_f64(void *mem, const double *x, double *h_out)
    fl_status fl_gru_stream_state_f32(const void *mem, float *h)
    fl_status fl_gru_stream_state_f64(const void *mem, double *h)
