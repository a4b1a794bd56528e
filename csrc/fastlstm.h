/* fastlstm.h -- the public C API of fastlstm: fused LSTM and GRU kernels, forward and
 * backpropagation through time, float32 and float64, parallel across the batch with OpenMP.
 *
 * Linking: the Python package installs this header and the static library libfastlstm.a
 * (fastlstm.get_include(), fastlstm.get_library_dir()):
 *     cc prog.c -I<include> -L<libdir> -lfastlstm -fopenmp -lm
 * From a checkout, `make -C csrc` builds the same library (csrc/README.md: the map of csrc/).
 *
 * Conventions (every function):
 *   - Arrays are C-contiguous, row-major; shapes are given in [brackets], rightmost fastest.
 *     T steps, B batch, I input features, H hidden units.
 *   - Sequence arrays (x, y, dy, dx) are [T,B,*] (time-major) or [B,T,*] when batch_first.
 *   - Weights use PyTorch's layout and gate order: LSTM w_ih [4H,I], w_hh [4H,H], b_ih, b_hh [4H],
 *     gate rows i,f,g,o; GRU w_ih [3H,I], w_hh [3H,H], b_ih, b_hh [3H], gate rows r,z,n.
 *   - Sizes: T, I, H >= 1; B >= 0. B = 0 is valid: nothing is read or written except the
 *     weight gradients of a backward call, which are set to zero.
 *   - No pointer may be NULL unless marked "may be NULL". Outputs never alias inputs.
 *   - Functions keep no global state and are reentrant; they allocate only once per call (the
 *     scratch space, when the caller passes none), never inside the time loop.
 *   - Results are bitwise identical for any n_threads and from run to run on one machine
 *     (each output element has one owner and a fixed reduction order).
 *   - Every function that can fail returns an fl_status: FL_OK, or the codes its comment
 *     lists; fl_status_string() gives the text. A failed call has written nothing it was not
 *     given (outputs may be partly written).
 *
 * Equations. LSTM:  i,f,o = sigmoid(.), g = tanh(.) of W_ih x + b_ih + W_hh h + b_hh;
 *                   c' = f*c + i*g;  h' = o*tanh(c').
 * GRU:  r,z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z});  h' = (1-z)*n + z*h;
 *   linear_before_reset=1:  n = tanh(W_in x + b_in + r*(W_hn h + b_hn))     (PyTorch, cuDNN)
 *   linear_before_reset=0:  n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)     (original GRU)
 *
 * lengths [B] (may be NULL = all T): sequence b runs only its first lengths[b] steps
 * (1 <= lengths[b] <= T); its outputs past the end are 0 and its final state is the state
 * after its own last step (PyTorch's packed-sequence semantics).
 */
#ifndef FASTLSTM_H
#define FASTLSTM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The package version; the one place it is written (setup.py reads it from here). */
#define FASTLSTM_VERSION "0.1.0"

typedef enum {
    FL_OK = 0,
    FL_EINVAL = 1, /* a size out of range, elem_size not 4 or 8, a length out of 1..T, or a
                    * required pointer NULL */
    FL_ENOMEM = 2, /* the scratch space could not be allocated (or the one given is too small) */
} fl_status;

/* The text of a status (never NULL; "unknown fastlstm status" for other values). */
const char *fl_status_string(fl_status status);

/* FASTLSTM_VERSION of the compiled library (may differ from the header's if mixed up). */
const char *fl_version(void);
/* 1 when built with OpenMP, else 0. */
int fl_openmp_enabled(void);
/* OpenMP's default team size (omp_get_max_threads), 1 without OpenMP. */
int fl_default_threads(void);
/* The instruction set the kernels dispatch to on this CPU: "avx512", "avx2" or "generic".
 * The environment variable FASTLSTM_ISA=generic or avx2 selects a lower one (for testing). */
const char *fl_isa(void);

/* Problem size shared by the sequence functions. */
typedef struct {
    int64_t seq_len, batch, input_size, hidden_size; /* T, B, I, H */
    int batch_first;  /* 0: sequences are [T,B,*]; 1: [B,T,*] */
    int n_threads;    /* <= 0: fl_default_threads(); at most 256 are used */
} fl_dims;

/* ------------------------------------------------------------------------------------------
 * Sizes. The "reserve" is what a training forward saves for backward (cuDNN's word): pass
 * the same reserve, unchanged, to the backward call. The "scratch" is temporary space for
 * one call; pass NULL and 0 to let the function allocate it once per call. Scratch sizes
 * depend on d->n_threads; "training" is whether a reserve will be passed to the forward.
 * elem_size is sizeof(float) or sizeof(double). Each writes the size in bytes to *bytes
 * (0 is a valid size: the reserve of B = 0) and returns FL_OK, or FL_EINVAL when d is out of
 * range, elem_size is not 4 or 8, or bytes is NULL.
 * Speed: let outputs and the reserve start on a 64-byte cache line. Threads write
 * neighbouring parts of each row (small batches split the hidden units at multiples of 16
 * elements), and a line shared by two threads measured ~20% slower at batch 1.
 * ------------------------------------------------------------------------------------------ */
fl_status fl_lstm_reserve_bytes(const fl_dims *d, size_t elem_size, size_t *bytes);
fl_status fl_lstm_forward_scratch_bytes(const fl_dims *d, size_t elem_size, int training,
                                        size_t *bytes);
fl_status fl_lstm_backward_scratch_bytes(const fl_dims *d, size_t elem_size, size_t *bytes);
fl_status fl_gru_reserve_bytes(const fl_dims *d, size_t elem_size, int linear_before_reset,
                               size_t *bytes);
fl_status fl_gru_forward_scratch_bytes(const fl_dims *d, size_t elem_size,
                                       int linear_before_reset, size_t *bytes);
fl_status fl_gru_backward_scratch_bytes(const fl_dims *d, size_t elem_size,
                                        int linear_before_reset, size_t *bytes);

/* ------------------------------------------------------------------------------------------
 * LSTM sequence forward.
 *   x [T,B,I]; h0, c0 [B,H] (may be NULL = zeros); lengths [B] (may be NULL).
 *   y [T,B,H]; h_n, c_n [B,H] (may be NULL).
 *   reserve: fl_lstm_reserve_bytes() bytes (aligned for the dtype) for training; NULL = inference
 *   (nothing is saved and backward cannot be called).
 *   scratch: fl_lstm_forward_scratch_bytes() bytes, or NULL and 0.
 * Returns FL_OK, FL_EINVAL (sizes, lengths or a NULL pointer), FL_ENOMEM.
 * ------------------------------------------------------------------------------------------ */
fl_status fl_lstm_forward_f32(const fl_dims *d, const float *x, const float *w_ih,
                              const float *w_hh, const float *b_ih, const float *b_hh,
                              const float *h0, const float *c0, const int64_t *lengths,
                              float *y, float *h_n, float *c_n, void *reserve, void *scratch,
                              size_t scratch_bytes);
fl_status fl_lstm_forward_f64(const fl_dims *d, const double *x, const double *w_ih,
                              const double *w_hh, const double *b_ih, const double *b_hh,
                              const double *h0, const double *c0, const int64_t *lengths,
                              double *y, double *h_n, double *c_n, void *reserve, void *scratch,
                              size_t scratch_bytes);

/* LSTM sequence backward (BPTT). Same d, x, weights, h0, c0, lengths and the reserve filled by
 * the training forward. dy [T,B,H], dh_n, dc_n [B,H]: gradients of the loss with respect to
 * y, h_n, c_n (each may be NULL = zero). Outputs (overwritten, not accumulated): dx [T,B,I],
 * dw_ih [4H,I], dw_hh [4H,H], db_ih, db_hh [4H], dh0, dc0 [B,H].
 * scratch: fl_lstm_backward_scratch_bytes() bytes, or NULL and 0.
 * Returns FL_OK, FL_EINVAL (sizes, lengths or a NULL pointer), FL_ENOMEM. */
fl_status fl_lstm_backward_f32(const fl_dims *d, const float *x, const float *w_ih,
                               const float *w_hh, const float *h0, const float *c0,
                               const int64_t *lengths, const void *reserve, const float *dy,
                               const float *dh_n, const float *dc_n, float *dx, float *dw_ih,
                               float *dw_hh, float *db_ih, float *db_hh, float *dh0, float *dc0,
                               void *scratch, size_t scratch_bytes);
fl_status fl_lstm_backward_f64(const fl_dims *d, const double *x, const double *w_ih,
                               const double *w_hh, const double *h0, const double *c0,
                               const int64_t *lengths, const void *reserve, const double *dy,
                               const double *dh_n, const double *dc_n, double *dx,
                               double *dw_ih, double *dw_hh, double *db_ih, double *db_hh,
                               double *dh0, double *dc0, void *scratch, size_t scratch_bytes);

/* GRU sequence forward and backward: as the LSTM, without the cell state; the reserve and
 * scratch sizes come from the fl_gru_* size functions with the same linear_before_reset.
 * Each returns FL_OK, FL_EINVAL (sizes, lengths or a NULL pointer), FL_ENOMEM. */
fl_status fl_gru_forward_f32(const fl_dims *d, int linear_before_reset, const float *x,
                             const float *w_ih, const float *w_hh, const float *b_ih,
                             const float *b_hh, const float *h0, const int64_t *lengths,
                             float *y, float *h_n, void *reserve, void *scratch,
                             size_t scratch_bytes);
fl_status fl_gru_forward_f64(const fl_dims *d, int linear_before_reset, const double *x,
                             const double *w_ih, const double *w_hh, const double *b_ih,
                             const double *b_hh, const double *h0, const int64_t *lengths,
                             double *y, double *h_n, void *reserve, void *scratch,
                             size_t scratch_bytes);
fl_status fl_gru_backward_f32(const fl_dims *d, int linear_before_reset, const float *x,
                              const float *w_ih, const float *w_hh, const float *h0,
                              const int64_t *lengths, const void *reserve, const float *dy,
                              const float *dh_n, float *dx, float *dw_ih, float *dw_hh,
                              float *db_ih, float *db_hh, float *dh0, void *scratch,
                              size_t scratch_bytes);
fl_status fl_gru_backward_f64(const fl_dims *d, int linear_before_reset, const double *x,
                              const double *w_ih, const double *w_hh, const double *h0,
                              const int64_t *lengths, const void *reserve, const double *dy,
                              const double *dh_n, double *dx, double *dw_ih, double *dw_hh,
                              double *db_ih, double *db_hh, double *dh0, void *scratch,
                              size_t scratch_bytes);

/* ------------------------------------------------------------------------------------------
 * Single steps ("fused cell step"), for callers that drive the time loop themselves.
 * x [batch,input_size], h, c [batch,hidden_size] -> h_new, c_new [batch,hidden_size].
 * Backward recomputes the gates from the inputs: dh_new, dc_new (may be NULL = zero) ->
 * dx, dh, dc and the weight gradients (overwritten). n_threads <= 0 means
 * fl_default_threads(). Each allocates its scratch once per call.
 * Each returns FL_OK, FL_EINVAL (sizes or a NULL pointer), FL_ENOMEM.
 * ------------------------------------------------------------------------------------------ */
fl_status fl_lstm_cell_forward_f32(int n_threads, int64_t batch, int64_t input_size,
                                   int64_t hidden_size, const float *x, const float *h,
                                   const float *c, const float *w_ih, const float *w_hh,
                                   const float *b_ih, const float *b_hh, float *h_new,
                                   float *c_new);
fl_status fl_lstm_cell_forward_f64(int n_threads, int64_t batch, int64_t input_size,
                                   int64_t hidden_size, const double *x, const double *h,
                                   const double *c, const double *w_ih, const double *w_hh,
                                   const double *b_ih, const double *b_hh, double *h_new,
                                   double *c_new);
fl_status fl_lstm_cell_backward_f32(int n_threads, int64_t batch, int64_t input_size,
                                    int64_t hidden_size, const float *x, const float *h,
                                    const float *c, const float *w_ih, const float *w_hh,
                                    const float *b_ih, const float *b_hh, const float *dh_new,
                                    const float *dc_new, float *dx, float *dh, float *dc,
                                    float *dw_ih, float *dw_hh, float *db_ih, float *db_hh);
fl_status fl_lstm_cell_backward_f64(int n_threads, int64_t batch, int64_t input_size,
                                    int64_t hidden_size, const double *x, const double *h,
                                    const double *c, const double *w_ih, const double *w_hh,
                                    const double *b_ih, const double *b_hh,
                                    const double *dh_new, const double *dc_new, double *dx,
                                    double *dh, double *dc, double *dw_ih, double *dw_hh,
                                    double *db_ih, double *db_hh);
fl_status fl_gru_cell_forward_f32(int n_threads, int64_t batch, int64_t input_size,
                                  int64_t hidden_size, int linear_before_reset, const float *x,
                                  const float *h, const float *w_ih, const float *w_hh,
                                  const float *b_ih, const float *b_hh, float *h_new);
fl_status fl_gru_cell_forward_f64(int n_threads, int64_t batch, int64_t input_size,
                                  int64_t hidden_size, int linear_before_reset, const double *x,
                                  const double *h, const double *w_ih, const double *w_hh,
                                  const double *b_ih, const double *b_hh, double *h_new);
fl_status fl_gru_cell_backward_f32(int n_threads, int64_t batch, int64_t input_size,
                                   int64_t hidden_size, int linear_before_reset, const float *x,
                                   const float *h, const float *w_ih, const float *w_hh,
                                   const float *b_ih, const float *b_hh, const float *dh_new,
                                   float *dx, float *dh, float *dw_ih, float *dw_hh,
                                   float *db_ih, float *db_hh);
fl_status fl_gru_cell_backward_f64(int n_threads, int64_t batch, int64_t input_size,
                                   int64_t hidden_size, int linear_before_reset,
                                   const double *x, const double *h, const double *w_ih,
                                   const double *w_hh, const double *b_ih, const double *b_hh,
                                   const double *dh_new, double *dx, double *dh, double *dw_ih,
                                   double *dw_hh, double *db_ih, double *db_hh);

/* ------------------------------------------------------------------------------------------
 * Streams: one time step per call, for input that arrives step by step (control loops, audio
 * frames, online prediction). init packs the weights once into a block of memory the caller
 * provides (nothing is allocated, the weight arrays are not kept) and the block keeps the
 * state (h, and c for the LSTM); a step then costs its arithmetic only, where a cell call
 * above checks, allocates and packs the weights every time.
 *
 * A stream's steps give the sequence functions' bits: T steps from (h0, c0) give y[0..T-1]
 * of fl_lstm_forward / fl_gru_forward over the same T inputs from the same (h0, c0), for
 * the same n_threads on the same machine.
 *
 *   The block: *_stream_bytes() bytes for the same n_threads, sizes, elem_size (and GRU
 *     variant), starting on a 64-byte boundary. It holds no pointers: a copy of an
 *     initialised block (to another 64-byte aligned block) is an independent stream in the
 *     same state. The weights are packed for the instruction set chosen at init (fl_isa()),
 *     so a block is for the machine that made it. Calls on one block must not overlap in
 *     time (one block per thread); different blocks are independent.
 *   n_threads (<= 0: fl_default_threads()): threads split the batch rows into tiles of at
 *     least MR (4 to 8) rows, so small batches step on the calling thread alone, without a
 *     parallel region: at B = 1 a team's fork and join would cost more than the step.
 *   init: w_ih [G,I], w_hh [G,H], b_ih, b_hh [G] (G = 4H LSTM, 3H GRU); the state becomes
 *     zeros. Returns FL_OK, FL_EINVAL (sizes, elem_size, a NULL pointer, mem not 64-byte
 *     aligned), FL_ENOMEM (bytes below the size query's).
 *   reset: h0 [B,H] and c0 [B,H] become the state (each may be NULL = zeros).
 *   step: x [B,I], the input of one step -> the new h in h_out [B,H] (may be NULL: the state
 *     advances all the same). h_out must not overlap x.
 *   state: copies the current h (and c) into h, c [B,H] (each may be NULL).
 *   reset, step, state return FL_OK, or FL_EINVAL when mem is not a block initialised by the
 *     same kind and dtype (or not 64-byte aligned) or x is NULL.
 * ------------------------------------------------------------------------------------------ */
fl_status fl_lstm_stream_bytes(int n_threads, int64_t batch, int64_t input_size,
                               int64_t hidden_size, size_t elem_size, size_t *bytes);
fl_status fl_lstm_stream_init_f32(void *mem, size_t bytes, int n_threads, int64_t batch,
                                  int64_t input_size, int64_t hidden_size, const float *w_ih,
                                  const float *w_hh, const float *b_ih, const float *b_hh);
fl_status fl_lstm_stream_init_f64(void *mem, size_t bytes, int n_threads, int64_t batch,
                                  int64_t input_size, int64_t hidden_size, const double *w_ih,
                                  const double *w_hh, const double *b_ih, const double *b_hh);
fl_status fl_lstm_stream_reset_f32(void *mem, const float *h0, const float *c0);
fl_status fl_lstm_stream_reset_f64(void *mem, const double *h0, const double *c0);
fl_status fl_lstm_stream_step_f32(void *mem, const float *x, float *h_out);
fl_status fl_lstm_stream_step_f64(void *mem, const double *x, double *h_out);
fl_status fl_lstm_stream_state_f32(const void *mem, float *h, float *c);
fl_status fl_lstm_stream_state_f64(const void *mem, double *h, double *c);

fl_status fl_gru_stream_bytes(int n_threads, int64_t batch, int64_t input_size,
                              int64_t hidden_size, size_t elem_size, int linear_before_reset,
                              size_t *bytes);
fl_status fl_gru_stream_init_f32(void *mem, size_t bytes, int n_threads, int64_t batch,
                                 int64_t input_size, int64_t hidden_size,
                                 int linear_before_reset, const float *w_ih, const float *w_hh,
                                 const float *b_ih, const float *b_hh);
fl_status fl_gru_stream_init_f64(void *mem, size_t bytes, int n_threads, int64_t batch,
                                 int64_t input_size, int64_t hidden_size,
                                 int linear_before_reset, const double *w_ih,
                                 const double *w_hh, const double *b_ih, const double *b_hh);
fl_status fl_gru_stream_reset_f32(void *mem, const float *h0);
fl_status fl_gru_stream_reset_f64(void *mem, const double *h0);
fl_status fl_gru_stream_step_f32(void *mem, const float *x, float *h_out);
fl_status fl_gru_stream_step_f64(void *mem, const double *x, double *h_out);
fl_status fl_gru_stream_state_f32(const void *mem, float *h);
fl_status fl_gru_stream_state_f64(const void *mem, double *h);

/* ------------------------------------------------------------------------------------------
 * Extended GRU ("grux"): layer normalisation and a recurrent (variational dropout) mask, in
 * any combination, forward and backward. The fl_gru_* functions above stay the fast path for
 * calls that use neither. With m = mask[b] (1 when mask is NULL) and hm = m * h_{t-1}:
 *   linear_before_reset=1:  a_x = W_ih x + b_ih,  a_h = W_hh hm + b_hh;
 *       r = sigmoid(a_x_r + a_h_r),  z = sigmoid(a_x_z + a_h_z),  n = tanh(a_x_n + r * a_h_n)
 *   linear_before_reset=0:  r, z as above,  n = tanh(W_in x + b_in + W_hn (r * hm) + b_hn)
 *   layer_norm=1 (linear_before_reset=1 only):
 *       a_x = LN(W_ih x; g_ih) + b_ih,  a_h = LN(W_hh hm; g_hh) + b_hh
 *   h_t = (1-z) * n + z * h_{t-1}   (the unmasked h: the mask enters only the products)
 *   LN(v; g) = g * (v - mean(v)) / sqrt(var(v) + 1e-5) over the whole 3H row, population
 *   variance (haste's LayerNormGRU normalises W x and R h so, separately).
 * The mask is one [B,H] array for the whole sequence (variational dropout, Keras'
 * recurrent_dropout), with values already scaled by the caller (0 or 1/(1-p), say).
 *
 * Arguments as fl_gru_*, plus:
 *   layer_norm   0 or 1; 1 with linear_before_reset=0 is FL_EINVAL.
 *   g_ih, g_hh   [3H] the layer-norm gains: given iff layer_norm (else FL_EINVAL).
 *   mask         [B,H] (may be NULL = no mask).
 *   masked       (size functions) whether the calls will pass a mask.
 * The size functions take the same flags as the calls they size, and return FL_EINVAL also
 * for layer_norm with linear_before_reset=0. A backward call takes the same d, flags, x,
 * weights, gains, mask and lengths as the training forward whose reserve it gets.
 * Backward outputs (overwritten): dx, dw_ih, dw_hh, db_ih, db_hh, dh0 as fl_gru_backward_*,
 * and dg_ih, dg_hh [3H], the gains' gradients: given iff layer_norm. The mask gets none.
 * Each call returns FL_OK, FL_EINVAL (sizes, lengths, flags or a NULL rule), FL_ENOMEM.
 * ------------------------------------------------------------------------------------------ */
fl_status fl_grux_reserve_bytes(const fl_dims *d, size_t elem_size, int linear_before_reset,
                                int layer_norm, int masked, size_t *bytes);
fl_status fl_grux_forward_scratch_bytes(const fl_dims *d, size_t elem_size,
                                        int linear_before_reset, int layer_norm, int masked,
                                        size_t *bytes);
fl_status fl_grux_backward_scratch_bytes(const fl_dims *d, size_t elem_size,
                                         int linear_before_reset, int layer_norm, int masked,
                                         size_t *bytes);
fl_status fl_grux_forward_f32(const fl_dims *d, int linear_before_reset, int layer_norm,
                              const float *x, const float *w_ih, const float *w_hh,
                              const float *b_ih, const float *b_hh, const float *g_ih,
                              const float *g_hh, const float *mask, const float *h0,
                              const int64_t *lengths, float *y, float *h_n, void *reserve,
                              void *scratch, size_t scratch_bytes);
fl_status fl_grux_forward_f64(const fl_dims *d, int linear_before_reset, int layer_norm,
                              const double *x, const double *w_ih, const double *w_hh,
                              const double *b_ih, const double *b_hh, const double *g_ih,
                              const double *g_hh, const double *mask, const double *h0,
                              const int64_t *lengths, double *y, double *h_n, void *reserve,
                              void *scratch, size_t scratch_bytes);
fl_status fl_grux_backward_f32(const fl_dims *d, int linear_before_reset, int layer_norm,
                               const float *x, const float *w_ih, const float *w_hh,
                               const float *g_ih, const float *g_hh, const float *mask,
                               const int64_t *lengths, const void *reserve, const float *dy,
                               const float *dh_n, float *dx, float *dw_ih, float *dw_hh,
                               float *db_ih, float *db_hh, float *dg_ih, float *dg_hh,
                               float *dh0, void *scratch, size_t scratch_bytes);
fl_status fl_grux_backward_f64(const fl_dims *d, int linear_before_reset, int layer_norm,
                               const double *x, const double *w_ih, const double *w_hh,
                               const double *g_ih, const double *g_hh, const double *mask,
                               const int64_t *lengths, const void *reserve, const double *dy,
                               const double *dh_n, double *dx, double *dw_ih, double *dw_hh,
                               double *db_ih, double *db_hh, double *dg_ih, double *dg_hh,
                               double *dh0, void *scratch, size_t scratch_bytes);

/* ------------------------------------------------------------------------------------------
 * Extended LSTM ("lstmx"): any combination of a projection (LSTMP, PyTorch's proj_size), layer
 * normalisation (haste's LayerNormLSTM) and a recurrent dropout mask. With none of the three,
 * call fl_lstm_forward/backward: they are the faster kernels for that case.
 *
 * P = e->proj_size (0: no projection), R = P if P > 0 else H (the width of h), G = 4H:
 *   a_x = W_ih x_t                 a_h = W_hh (m * h_{t-1})     W_ih [G,I], W_hh [G,R]
 *   pre = a_x + a_h + b_ih + b_hh                                   (no layer norm)
 *   pre = LN(a_x; g_ih) + LN(a_h; g_hh) + b_ih + b_hh                (layer norm)
 *   i, f, o = sigmoid(pre_i, pre_f, pre_o), g = tanh(pre_g);   c_t = f*c_{t-1} + i*g
 *   r_t = o * tanh(c_t)  or, with layer norm, o * tanh(LN(c_t; g_c) + b_c)
 *   h_t = W_hr r_t (W_hr [P,H]) with a projection, else r_t;   y_t = h_t
 *   LN(v; g) = g * (v - mean(v)) / sqrt(var(v) + 1e-5) over the whole vector (all 4H gate
 *   pre-activations at once, H for the cell), population variance.
 * The mask m [B,R] (may be NULL = ones) multiplies h_{t-1} only inside the recurrent product
 * (variational recurrent dropout: one mask per sequence, every step; pass values already
 * scaled, e.g. 0 or 1/(1-p)). The state keeps the un-normalised c.
 * Shapes as PyTorch's nn.LSTM(proj_size=P): h0, h_n [B,R], c0, c_n [B,H], y [T,B,R].
 * Layer-norm parameters: ln_ih, ln_hh [G] (g_ih, g_hh), ln_c, ln_bc [H] (g_c, b_c).
 * Small batches (one tile of rows) run the time loop on one thread (no unit split here).
 * ------------------------------------------------------------------------------------------ */
typedef struct {
    int64_t proj_size; /* P >= 0; 0 = no projection */
    int layer_norm;    /* 0 or 1 */
} fl_lstm_ext;

/* Sizes, as the fl_lstm_* size functions; FL_EINVAL also when e is NULL or proj_size < 0. */
fl_status fl_lstmx_reserve_bytes(const fl_dims *d, const fl_lstm_ext *e, size_t elem_size,
                                 size_t *bytes);
fl_status fl_lstmx_forward_scratch_bytes(const fl_dims *d, const fl_lstm_ext *e,
                                         size_t elem_size, int training, size_t *bytes);
fl_status fl_lstmx_backward_scratch_bytes(const fl_dims *d, const fl_lstm_ext *e,
                                          size_t elem_size, size_t *bytes);

/* Extended LSTM forward. As fl_lstm_forward, plus: w_hr [P,H] (NULL iff proj_size == 0);
 * ln_ih, ln_hh [4H], ln_c, ln_bc [H] (all NULL iff !layer_norm); mask [B,R] (may be NULL).
 * w_hh is [4H,R], h0 [B,R], c0 [B,H] (each may be NULL = zeros); y [T,B,R], h_n [B,R],
 * c_n [B,H] (h_n, c_n may be NULL). reserve: fl_lstmx_reserve_bytes() bytes or NULL
 * (inference); scratch: fl_lstmx_forward_scratch_bytes() bytes, or NULL and 0.
 * Returns FL_OK, FL_EINVAL (sizes, lengths, a NULL pointer or a pointer that must be NULL),
 * FL_ENOMEM. */
fl_status fl_lstmx_forward_f32(const fl_dims *d, const fl_lstm_ext *e, const float *x,
                               const float *w_ih, const float *w_hh, const float *b_ih,
                               const float *b_hh, const float *w_hr, const float *ln_ih,
                               const float *ln_hh, const float *ln_c, const float *ln_bc,
                               const float *mask, const float *h0, const float *c0,
                               const int64_t *lengths, float *y, float *h_n, float *c_n,
                               void *reserve, void *scratch, size_t scratch_bytes);
fl_status fl_lstmx_forward_f64(const fl_dims *d, const fl_lstm_ext *e, const double *x,
                               const double *w_ih, const double *w_hh, const double *b_ih,
                               const double *b_hh, const double *w_hr, const double *ln_ih,
                               const double *ln_hh, const double *ln_c, const double *ln_bc,
                               const double *mask, const double *h0, const double *c0,
                               const int64_t *lengths, double *y, double *h_n, double *c_n,
                               void *reserve, void *scratch, size_t scratch_bytes);

/* Extended LSTM backward: the exact gradient of the forward above for the same mask. Same d, e,
 * and, as given to the forward, the inputs it reads again (x, w_ih, w_hh, w_hr, the gains
 * ln_ih, ln_hh, ln_c, the mask, c0, lengths; h0, the biases and ln_bc are not needed), and
 * the forward's reserve, unchanged. dy [T,B,R], dh_n [B,R], dc_n [B,H]
 * (each may be NULL = zero). Outputs (overwritten): dx [T,B,I], dw_ih [4H,I], dw_hh [4H,R],
 * db_ih, db_hh [4H], dh0 [B,R], dc0 [B,H]; dw_hr [P,H] (NULL iff proj_size == 0);
 * dln_ih, dln_hh [4H], dln_c, dln_bc [H] (all NULL iff !layer_norm).
 * scratch: fl_lstmx_backward_scratch_bytes() bytes, or NULL and 0.
 * Returns FL_OK, FL_EINVAL, FL_ENOMEM. */
fl_status fl_lstmx_backward_f32(const fl_dims *d, const fl_lstm_ext *e, const float *x,
                                const float *w_ih, const float *w_hh, const float *w_hr,
                                const float *ln_ih, const float *ln_hh, const float *ln_c,
                                const float *mask, const float *c0, const int64_t *lengths,
                                const void *reserve, const float *dy, const float *dh_n,
                                const float *dc_n, float *dx, float *dw_ih, float *dw_hh,
                                float *db_ih, float *db_hh, float *dw_hr, float *dln_ih,
                                float *dln_hh, float *dln_c, float *dln_bc, float *dh0,
                                float *dc0, void *scratch, size_t scratch_bytes);
fl_status fl_lstmx_backward_f64(const fl_dims *d, const fl_lstm_ext *e, const double *x,
                                const double *w_ih, const double *w_hh, const double *w_hr,
                                const double *ln_ih, const double *ln_hh, const double *ln_c,
                                const double *mask, const double *c0, const int64_t *lengths,
                                const void *reserve, const double *dy, const double *dh_n,
                                const double *dc_n, double *dx, double *dw_ih, double *dw_hh,
                                double *db_ih, double *db_hh, double *dw_hr, double *dln_ih,
                                double *dln_hh, double *dln_c, double *dln_bc, double *dh0,
                                double *dc0, void *scratch, size_t scratch_bytes);

#ifdef __cplusplus
}
#endif
#endif /* FASTLSTM_H */
