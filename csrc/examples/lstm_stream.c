/* lstm_stream.c -- a plain C program that runs an LSTM one step at a time through a stream
 * (fl_lstm_stream_*: the weights packed once into memory this program owns).
 *
 * Build as lstm_forward.c (see there), or `make -C csrc example` (csrc/build/lstm_stream).
 *
 * Usage: lstm_stream T B I H THREADS IN OUT [REPEAT]
 *   IN  holds float32 x [T,B,I], w_ih [4H,I], w_hh [4H,H], b_ih [4H], b_hh [4H], in that order
 *       (lstm_forward's input);
 *   OUT receives float32 y [T,B,H] (the h of every step), then the final h and c [B,H]:
 *       the bits of fl_lstm_forward_f32 on the same input with the same THREADS.
 *   REPEAT (optional): then time REPEAT more steps and print the median microseconds per
 *       step over 15 batches of REPEAT/15 steps.
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fastlstm.h"

static float *read_floats(FILE *f, size_t n) {
    float *a = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64 + 64);
    if (a && fread(a, sizeof(float), n, f) != n) {
        free(a);
        return NULL;
    }
    return a;
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define CHECK(call)                                                                      \
    do {                                                                                 \
        fl_status st_ = (call);                                                          \
        if (st_ != FL_OK) {                                                              \
            fprintf(stderr, "%s: %s\n", #call, fl_status_string(st_));                   \
            return 1;                                                                    \
        }                                                                                \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: %s T B I H THREADS IN OUT [REPEAT]\n", argv[0]);
        return 2;
    }
    const int64_t T = atoll(argv[1]), B = atoll(argv[2]), In = atoll(argv[3]), H = atoll(argv[4]);
    const int threads = atoi(argv[5]);
    const long repeat = argc == 9 ? atol(argv[8]) : 0;
    const size_t G = 4 * (size_t)H, BH = (size_t)(B * H);

    FILE *in = fopen(argv[6], "rb");
    if (!in) {
        perror(argv[6]);
        return 1;
    }
    float *x = read_floats(in, (size_t)(T * B * In)), *w_ih = read_floats(in, G * (size_t)In);
    float *w_hh = read_floats(in, G * (size_t)H), *b_ih = read_floats(in, G);
    float *b_hh = read_floats(in, G);
    fclose(in);
    float *y = malloc((size_t)T * BH * sizeof(float) + 1), *h = malloc(BH * sizeof(float) + 1);
    float *c = malloc(BH * sizeof(float) + 1);
    if (!x || !w_ih || !w_hh || !b_ih || !b_hh || !y || !h || !c) {
        fprintf(stderr, "%s: short input file or out of memory\n", argv[6]);
        return 1;
    }

    /* The stream's memory: the size the library asks for, on a 64-byte boundary. */
    size_t bytes = 0;
    CHECK(fl_lstm_stream_bytes(threads, B, In, H, sizeof(float), &bytes));
    void *stream = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!stream) return 1;
    CHECK(fl_lstm_stream_init_f32(stream, bytes, threads, B, In, H, w_ih, w_hh, b_ih, b_hh));
    free(w_ih), free(w_hh), free(b_ih), free(b_hh); /* the stream keeps its own packed copy */

    for (int64_t t = 0; t < T; t++) /* state zeros after init, as after reset(NULL, NULL) */
        CHECK(fl_lstm_stream_step_f32(stream, x + t * B * In, y + t * BH));
    CHECK(fl_lstm_stream_state_f32(stream, h, c));

    FILE *out = fopen(argv[7], "wb");
    if (!out || fwrite(y, sizeof(float), (size_t)T * BH, out) != (size_t)T * BH ||
        fwrite(h, sizeof(float), BH, out) != BH || fwrite(c, sizeof(float), BH, out) != BH ||
        fclose(out) != 0) {
        perror(argv[7]);
        return 1;
    }
    printf("fastlstm %s openmp %d isa %s\n", fl_version(), fl_openmp_enabled(), fl_isa());

    if (repeat >= 15) {
        double per[15];
        const long n = repeat / 15;
        for (int r = 0; r < 15; r++) {
            double t0 = now_us();
            for (long i = 0; i < n; i++) CHECK(fl_lstm_stream_step_f32(stream, x, h));
            per[r] = (now_us() - t0) / (double)n;
        }
        qsort(per, 15, sizeof(double), cmp_double);
        printf("step_us median %.3f min %.3f\n", per[7], per[0]);
    }
    free(stream), free(x), free(y), free(h), free(c);
    return 0;
}
