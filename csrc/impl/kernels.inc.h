/* kernels.inc.h -- instantiates every kernel body for float32 and float64 under the ISA that
 * the including file selected (FL_ISA, FL_VBYTES, FL_MR and a `#pragma GCC target`). */
#include "impl/common.h"
#include "impl/activations.h"
#include "impl/workspace.h"
#include "impl/lstmx_args.h"

#define FN(name) FL_CAT3(name, RS, FL_ISA)

#define REAL float
#define FL_REAL_IS_FLOAT 1
#define RS f32
#define SIGMOID fl_sigmoidf
#define TANH fl_tanhf
#include "impl/gemm_body.h"
#include "impl/vec_math_body.h"
#include "impl/lstm_forward_body.h"
#include "impl/lstm_backward_body.h"
#include "impl/gru_forward_body.h"
#include "impl/gru_backward_body.h"
/* the extended LSTM (projection, layer norm, recurrent mask) */
#include "impl/layer_norm_body.h"
#include "impl/lstmx_forward_body.h"
#include "impl/lstmx_backward_body.h"
#include "impl/grux_forward_body.h"
#include "impl/grux_backward_body.h"
/* streaming steps (the sequence kernels' step, weights packed once) */
#include "impl/stream_body.h"
#undef NR
#undef VL
#undef REAL
#undef FL_REAL_IS_FLOAT
#undef RS
#undef SIGMOID
#undef TANH

#define REAL double
#define RS f64
#define SIGMOID fl_sigmoid
#define TANH fl_tanh
#include "impl/gemm_body.h"
#include "impl/lstm_forward_body.h"
#include "impl/lstm_backward_body.h"
/* the extended LSTM (projection, layer norm, recurrent mask) */
#include "impl/layer_norm_body.h"
#include "impl/lstmx_forward_body.h"
#include "impl/lstmx_backward_body.h"
#include "impl/gru_forward_body.h"
#include "impl/gru_backward_body.h"
#include "impl/grux_forward_body.h"
#include "impl/grux_backward_body.h"
/* streaming steps (the sequence kernels' step, weights packed once) */
#include "impl/stream_body.h"
#undef NR
#undef VL
#undef REAL
#undef RS
#undef SIGMOID
#undef TANH
