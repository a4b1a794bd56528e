/* lstm_forward.c -- a plain C program that runs one LSTM forward through libfastlstm.
 *
 * Against the installed Python package:
 *   inc=$(python -c 'import fastlstm; print(fastlstm.get_include())')
 *   lib=$(python -c 'import fastlstm; print(fastlstm.get_library_dir())')
 *   cc lstm_forward.c -I"$inc" -L"$lib" -lfastlstm -fopenmp -lm -o lstm_forward
 * Against a checkout: make -C csrc example   (builds csrc/build/lstm_forward)
 *
 * Usage: lstm_forward T B I H THREADS IN OUT
 *   IN  holds float32 x [T,B,I], w_ih [4H,I], w_hh [4H,H], b_ih [4H], b_hh [4H], in that order;
 *   OUT receives float32 y [T,B,H], h_n [B,H], c_n [B,H].
 * It prints the library's version, whether it has OpenMP, and its instruction set.
 */
#include <complex.h> /* first on purpose: it defines the macro I, which fastlstm.h must survive */
#include <stdio.h>
#include <stdlib.h>

#include "fastlstm.h"

static float *read_floats(FILE *f, size_t n) {
    float *a = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64 + 64);
    if (a && fread(a, sizeof(float), n, f) != n) {
        free(a);
        return NULL;
    }
    return a;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s T B I H THREADS IN OUT\n", argv[0]);
        return 2;
    }
    fl_dims d = {0};
    d.seq_len = atoll(argv[1]);
    d.batch = atoll(argv[2]);
    d.input_size = atoll(argv[3]);
    d.hidden_size = atoll(argv[4]);
    d.n_threads = atoi(argv[5]);
    const size_t T = (size_t)d.seq_len, B = (size_t)d.batch, In = (size_t)d.input_size,
                 H = (size_t)d.hidden_size, G = 4 * H;

    FILE *in = fopen(argv[6], "rb");
    if (!in) {
        perror(argv[6]);
        return 1;
    }
    float *x = read_floats(in, T * B * In), *w_ih = read_floats(in, G * In);
    float *w_hh = read_floats(in, G * H), *b_ih = read_floats(in, G), *b_hh = read_floats(in, G);
    fclose(in);
    float *y = aligned_alloc(64, (T * B * H * sizeof(float) + 63) / 64 * 64 + 64);
    float *h_n = aligned_alloc(64, (B * H * sizeof(float) + 63) / 64 * 64 + 64);
    float *c_n = aligned_alloc(64, (B * H * sizeof(float) + 63) / 64 * 64 + 64);
    if (!x || !w_ih || !w_hh || !b_ih || !b_hh || !y || !h_n || !c_n) {
        fprintf(stderr, "%s: short input file or out of memory\n", argv[6]);
        return 1;
    }

    /* Inference: no reserve; the library allocates its scratch space once for the call. */
    fl_status st = fl_lstm_forward_f32(&d, x, w_ih, w_hh, b_ih, b_hh, NULL, NULL, NULL, y, h_n,
                                       c_n, NULL, NULL, 0);
    if (st != FL_OK) {
        fprintf(stderr, "fl_lstm_forward_f32: %s\n", fl_status_string(st));
        return 1;
    }
    FILE *out = fopen(argv[7], "wb");
    if (!out || fwrite(y, sizeof(float), T * B * H, out) != T * B * H ||
        fwrite(h_n, sizeof(float), B * H, out) != B * H ||
        fwrite(c_n, sizeof(float), B * H, out) != B * H || fclose(out) != 0) {
        perror(argv[7]);
        return 1;
    }
    printf("fastlstm %s openmp %d isa %s\n", fl_version(), fl_openmp_enabled(), fl_isa());
    free(x), free(w_ih), free(w_hh), free(b_ih), free(b_hh), free(y), free(h_n), free(c_n);
    return 0;
}
