/* gemm_body.h -- packed, register-blocked GEMM; included once per (ISA, dtype) with REAL, FN()
 * and FL_VBYTES / FL_MR defined. Internal: the RNN kernels are its only callers.
 *
 *   C[M,N] = (accumulate ? C : 0) + A[M,K] B[K,N],   A(i,k) = A[i*rsa + k*csa].
 *
 * B is packed once into panels of NR columns, Bp[panel][k][NR] (zero padded), because every
 * product here reuses its B: W_hh^T at every time step, W_ih^T across all steps. A is packed
 * per call in blocks of FL_MC rows by FL_KC depth, as MR-row slivers [k][MR]. The micro-kernel
 * keeps an MR x NR tile of C in 2*MR vector registers (8x32 floats on AVX-512, 6x16 on AVX2).
 *
 * Determinism: every C element is the sum over k in increasing order inside a block, and
 * blocks are added in increasing k0; no element depends on how rows were split across
 * threads, and edge tiles run the same micro-kernel into a temporary. */

#define NR (2 * (FL_VBYTES / (int)sizeof(REAL)))
#define VL (FL_VBYTES / (int)sizeof(REAL))

typedef REAL FN(vec) __attribute__((vector_size(FL_VBYTES)));
typedef REAL FN(uvec) __attribute__((vector_size(FL_VBYTES), aligned(sizeof(REAL))));

/* Pack B(k, j) = B[k*rsb + j*csb], k < K, j < N, into NR-column panels p0..p1 that lie bps
 * elements apart (bps > K*NR when B is the top part of a taller packed matrix). */
static void FN(pack_bs)(int64_t K, int64_t N, const REAL *B, int64_t rsb, int64_t csb,
                        REAL *Bp, int64_t bps, int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
        REAL *dst = Bp + p * bps;
        int64_t j0 = p * NR, nj = fl_min64(NR, N - j0);
        if (csb == 1 && nj == NR) {
            /* two vectors per row (a loop of variable length here became a memcpy call) */
            for (int64_t k = 0; k < K; k++) {
                const FN(uvec) *src = (const FN(uvec) *)(B + k * rsb + j0);
                FN(uvec) *row = (FN(uvec) *)(dst + k * NR);
                row[0] = src[0];
                row[1] = src[1];
            }
        } else if (csb == 1) {
            for (int64_t k = 0; k < K; k++) {
                const REAL *src = B + k * rsb + j0;
                REAL *row = dst + k * NR;
                int64_t j = 0;
                for (; j < nj; j++) row[j] = src[j];
                for (; j < NR; j++) row[j] = 0;
            }
        } else {
            /* B is a transposed matrix (W^T): read each of its source rows contiguously and
             * scatter into the panel, which stays in L1, rather than gather across rows;
             * float32 blocks of 8 rows x 8 k go through an in-register transpose */
            int64_t j = 0;
#ifdef FL_REAL_IS_FLOAT
            if (rsb == 1)
                for (; j + 8 <= nj; j += 8) {
                    int64_t k = 0;
                    for (; k + 8 <= K; k += 8)
                        fl_transpose8x8(B + (j0 + j) * csb + k, csb, dst + k * NR + j, NR);
                    for (; k < K; k++)
                        for (int64_t jj = 0; jj < 8; jj++)
                            dst[k * NR + j + jj] = B[(j0 + j + jj) * csb + k];
                }
#endif
            for (; j < nj; j++) {
                const REAL *src = B + (j0 + j) * csb;
                for (int64_t k = 0; k < K; k++) dst[k * NR + j] = src[k * rsb];
            }
            for (int64_t k = 0; k < K; k++)
                for (int64_t jj = nj; jj < NR; jj++) dst[k * NR + jj] = 0;
        }
    }
}

static void FN(pack_b)(int64_t K, int64_t N, const REAL *B, int64_t rsb, int64_t csb, REAL *Bp,
                       int64_t p0, int64_t p1) {
    FN(pack_bs)(K, N, B, rsb, csb, Bp, K * NR, p0, p1);
}

static inline int64_t FN(panels)(int64_t N) { return fl_cdiv(N, NR); }

/* Pack an mc x kc block of A into MR-row slivers [k][MR], zero padding the last sliver. */
static void FN(pack_a)(int64_t mc, int64_t kc, const REAL *A, int64_t rsa, int64_t csa,
                       REAL *Ap) {
    for (int64_t i0 = 0; i0 < mc; i0 += FL_MR) {
        int64_t mr = fl_min64(FL_MR, mc - i0);
        REAL *dst = Ap + i0 * kc;
        if (csa == 1) {
            int64_t k = 0;
#ifdef FL_REAL_IS_FLOAT
            /* a full float32 sliver of 8 rows: 8 x 8 blocks through an in-register transpose */
            if (FL_MR == 8 && mr == 8)
                for (; k + 8 <= kc; k += 8)
                    fl_transpose8x8(A + i0 * rsa + k, rsa, dst + k * FL_MR, FL_MR);
#endif
            for (; k < kc; k++) {
                for (int64_t i = 0; i < mr; i++) dst[k * FL_MR + i] = A[(i0 + i) * rsa + k];
                for (int64_t i = mr; i < FL_MR; i++) dst[k * FL_MR + i] = 0;
            }
        } else {
            for (int64_t k = 0; k < kc; k++) {
                const REAL *src = A + i0 * rsa + k * csa;
                for (int64_t i = 0; i < mr; i++) dst[k * FL_MR + i] = src[i * rsa];
                for (int64_t i = mr; i < FL_MR; i++) dst[k * FL_MR + i] = 0;
            }
        }
    }
}

/* C tile (mr x nr valid of MR x NR) (+)= A sliver x Bp panel slice [kc][NR], where the
 * sliver's MR values for depth k are ap[k*ask .. k*ask + MR): a packed sliver (ask = MR) or,
 * when A's rows are contiguous in memory for each k (A = dG^T), A itself (ask = its stride). */
static inline void FN(micro)(int64_t kc, const REAL *restrict ap, int64_t ask,
                             const REAL *restrict bp, REAL *restrict C, int64_t ldc, int64_t mr,
                             int64_t nr, int acc) {
    FN(vec) c0[FL_MR], c1[FL_MR];
#pragma GCC unroll 16
    for (int i = 0; i < FL_MR; i++) { c0[i] = (FN(vec)){0}; c1[i] = (FN(vec)){0}; }
    for (int64_t k = 0; k < kc; k++) {
        FN(vec) b0 = *(const FN(uvec) *)(bp + k * NR);
        FN(vec) b1 = *(const FN(uvec) *)(bp + k * NR + VL);
        const REAL *a = ap + k * ask;
#pragma GCC unroll 16
        for (int i = 0; i < FL_MR; i++) {
            REAL ai = a[i];
            c0[i] += ai * b0;
            c1[i] += ai * b1;
        }
    }
    if (mr == FL_MR && nr == NR) {
#pragma GCC unroll 16
        for (int i = 0; i < FL_MR; i++) {
            FN(uvec) *r0 = (FN(uvec) *)(C + i * ldc), *r1 = (FN(uvec) *)(C + i * ldc + VL);
            if (acc) { *r0 = *r0 + c0[i]; *r1 = *r1 + c1[i]; }
            else { *r0 = c0[i]; *r1 = c1[i]; }
        }
    } else {
        REAL tile[FL_MR][NR];
        for (int i = 0; i < FL_MR; i++) {
            *(FN(uvec) *)&tile[i][0] = c0[i];
            *(FN(uvec) *)&tile[i][VL] = c1[i];
        }
        for (int64_t i = 0; i < mr; i++)
            for (int64_t j = 0; j < nr; j++)
                C[i * ldc + j] = acc ? C[i * ldc + j] + tile[i][j] : tile[i][j];
    }
}

/* One row of C over NP consecutive panels (panel stride bps): the kernel for the few rows
 * that do not fill an MR sliver (B = 1 above all), where the MR x NR kernel would compute
 * MR - mr rows of padding. Each element is accumulated exactly as in micro() (one sum over k
 * in order, starting from 0), so which kernel computes a row never changes its bits. */
#define FL_ROW_KERNEL(NP)                                                                       \
    static inline void FN(micro_row##NP)(int64_t kc, const REAL *restrict a, int64_t ask,       \
                                         const REAL *restrict bp, int64_t bps,                  \
                                         REAL *restrict C, int64_t ncols, int acc) {            \
        FN(vec) c[2 * NP];                                                                       \
        for (int p = 0; p < 2 * NP; p++) c[p] = (FN(vec)){0};                                    \
        for (int64_t k = 0; k < kc; k++) {                                                       \
            REAL ak = a[k * ask];                                                                \
            _Pragma("GCC unroll 8") for (int p = 0; p < NP; p++) {                              \
                c[2 * p] += ak * *(const FN(uvec) *)(bp + p * bps + k * NR);                     \
                c[2 * p + 1] += ak * *(const FN(uvec) *)(bp + p * bps + k * NR + VL);            \
            }                                                                                    \
        }                                                                                        \
        REAL row[NP * NR];                                                                       \
        for (int p = 0; p < 2 * NP; p++) *(FN(uvec) *)&row[p * VL] = c[p];                       \
        int64_t n = ncols < NP * NR ? ncols : NP * NR;                                           \
        if (acc) for (int64_t j = 0; j < n; j++) C[j] += row[j];                                 \
        else for (int64_t j = 0; j < n; j++) C[j] = row[j];                                      \
    }
FL_ROW_KERNEL(4)
FL_ROW_KERNEL(1)
#undef FL_ROW_KERNEL

/* Serial GEMM with B prepacked (panel stride bps elements; a K-slice of a taller packed
 * matrix is Bp + k_offset*NR). apack: FL_MC*FL_KC elements. */
static void FN(gemm_pb)(int64_t M, int64_t N, int64_t K, const REAL *A, int64_t rsa,
                        int64_t csa, const REAL *Bp, int64_t bps, REAL *C, int64_t ldc,
                        int accumulate, REAL *apack) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate)
            for (int64_t i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof(REAL));
        return;
    }
    for (int64_t i0 = 0; i0 < M; i0 += FL_MC) {
        int64_t mc = fl_min64(FL_MC, M - i0);
        /* A transposed in memory (rsa == 1): full slivers are read in place, only a partial
         * last sliver is packed (reading MR rows there would run past A's end). A block of
         * fewer than MR/2 rows goes to the row kernel, which reads row-major A in place. */
        int direct = rsa == 1;
        int64_t packed_from = direct ? mc / FL_MR * FL_MR : 0;
        if (csa == 1 && 2 * mc < FL_MR) packed_from = mc;
        for (int64_t k0 = 0; k0 < K; k0 += FL_KC) {
            int64_t kc = fl_min64(FL_KC, K - k0);
            int acc = accumulate || k0 > 0;
            const REAL *ablk = A + i0 * rsa + k0 * csa;
            if (packed_from < mc)
                FN(pack_a)(mc - packed_from, kc, ablk + packed_from * rsa, rsa, csa, apack);
            /* a last sliver of fewer than MR/2 rows goes row by row */
            int64_t rem = mc % FL_MR, full = 2 * rem < FL_MR ? mc - rem : mc;
            for (int64_t j0 = 0; j0 < N; j0 += NR) {
                const REAL *bp = Bp + (j0 / NR) * bps + k0 * NR;
                int64_t nr = fl_min64(NR, N - j0);
                for (int64_t ii = 0; ii < full; ii += FL_MR) {
                    const REAL *ap = ii < packed_from ? ablk + ii * rsa : apack + (ii - packed_from) * kc;
                    int64_t ask = ii < packed_from ? csa : FL_MR;
                    FN(micro)(kc, ap, ask, bp, C + (i0 + ii) * ldc + j0, ldc,
                              fl_min64(FL_MR, mc - ii), nr, acc);
                }
            }
            for (int64_t i = full; i < mc; i++) {
                const REAL *a = i < packed_from ? ablk + i * rsa
                                : apack + (i - packed_from) / FL_MR * FL_MR * kc + (i - packed_from) % FL_MR;
                int64_t ask = i < packed_from ? csa : FL_MR;
                REAL *crow = C + (i0 + i) * ldc;
                int64_t j0 = 0;
                for (; j0 + 4 * NR <= N; j0 += 4 * NR)
                    FN(micro_row4)(kc, a, ask, Bp + (j0 / NR) * bps + k0 * NR, bps, crow + j0, N - j0, acc);
                for (; j0 < N; j0 += NR)
                    FN(micro_row1)(kc, a, ask, Bp + (j0 / NR) * bps + k0 * NR, bps, crow + j0, N - j0, acc);
            }
        }
    }
}

/* Pack B(k, j) = B[k*rsb + j*csb] (K x N) into panels at Bp, in parallel over panels. */
static void FN(pack_b_par)(int64_t K, int64_t N, const REAL *B, int64_t rsb, int64_t csb,
                           REAL *Bp, int64_t nt) {
    int64_t np = FN(panels)(N);
    nt = fl_max64(1, fl_min64(nt, fl_min64(np, K * N / (1 << 16))));
    FL_OMP(parallel for num_threads((int)nt) schedule(static))
    for (int64_t p = 0; p < np; p++) FN(pack_b)(K, N, B, rsb, csb, Bp, p, p + 1);
}

/* pack_b_par for a sequence operand whose rows past a sequence's end must read as zeros
 * (x there may be padding, NaN included, and 0 * NaN would reach the weight gradient).
 * Row r is step t of sequence b: r = t*st + b*sb. */
static void FN(pack_seq_par)(int64_t T, int64_t B, int64_t st, int64_t sb,
                             const int64_t *lengths, int64_t N, const REAL *X, REAL *Bp,
                             int64_t nt) {
    const int64_t K = T * B, np = FN(panels)(N);
    FN(pack_b_par)(K, N, X, N, 1, Bp, nt);
    if (!lengths) return;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = lengths[b]; t < T; t++)
            for (int64_t p = 0; p < np; p++)
                memset(Bp + p * K * NR + (t * st + b * sb) * NR, 0, NR * sizeof(REAL));
}

/* Append a column of ones (column N) to a packed K x N matrix, so that dG^T [X | 1] gives
 * the bias gradient colsum(dG) in the same pass over dG as the weight gradient. */
static void FN(pack_ones_column)(int64_t K, int64_t N, REAL *Bp) {
    REAL *panel = Bp + (N / NR) * K * NR;
    if (N % NR == 0) memset(panel, 0, (size_t)(K * NR) * sizeof(REAL));
    for (int64_t k = 0; k < K; k++) panel[k * NR + N % NR] = 1;
}

/* Parallel GEMM for the large products outside the time loop, B already packed (panel stride
 * K*NR): row blocks of FL_MC go to threads. Call outside any parallel region. apacks: one
 * block per thread at thread_base + tid*per_thread + apack_off. */
static void FN(gemm_par)(int64_t M, int64_t N, int64_t K, const REAL *A, int64_t rsa,
                         int64_t csa, const REAL *Bp, REAL *C, int64_t ldc, int accumulate,
                         char *thread_base, size_t per_thread, size_t apack_off, int64_t nt) {
    if (M <= 0 || N <= 0) return;
    /* A thread that has no work only spins at the barriers (and, on a busy machine, takes a
     * core from one that has): at most one thread per MR rows and per ~1M multiply-adds.
     * Each thread of the team OpenMP grants (at most nt) takes one contiguous, equal share of
     * the rows; a row's result does not depend on which share it is in. */
    nt = fl_max64(1, fl_min64(nt, fl_min64(fl_cdiv(M, FL_MR), M * N * K / (1 << 20))));
    FL_OMP(parallel num_threads((int)nt))
    {
        FL_FTZ_BEGIN
        const int64_t tid = FL_THREAD_ID();
        const int64_t share = fl_rup(fl_cdiv(M, FL_TEAM_SIZE()), FL_MR);
        REAL *apack = (REAL *)(thread_base + (size_t)tid * per_thread + apack_off);
        const int64_t i0 = tid * share, i1 = fl_min64(M, i0 + share);
        if (i0 < i1)
            FN(gemm_pb)(i1 - i0, N, K, A + i0 * rsa, rsa, csa, Bp, K * NR, C + i0 * ldc, ldc,
                        accumulate, apack);
        FL_FTZ_END
    }
}

/* Weight-gradient GEMM, C[M,N] = A^T B (ldc), where A is K x M row-major (row stride lda; the
 * gate gradients dG, K = T*B rows) and B is K x N, packed (panel stride K*NR).
 *
 * gemm_par can read A^T in place (rsa = 1), but then every element of a sliver is a row of dG
 * apart (2 KiB at H = 128): that ran at ~80% of the micro-kernel's speed at T*B = 3584. Here
 * the roles swap, C^T = B^T A: the A operand's slivers are B's packed panels, read in place
 * (stride NR), and the B operand is a kc x NR slice of dG, packed once and reused by every
 * sliver. K goes in chunks of FL_TN_CHUNK rows, so that the chunk of B stays in L2 while every
 * panel of A passes over it, and C^T accumulates in `ct` (rup(N, MR) rows x ldct >= M: the
 * rows are padded by a vector, since a stride of a power of two would map a tile's rows to a
 * few L1 sets). Each thread owns whole NR-column panels of dG (rows of C) and writes them out
 * transposed at the end. The products and their order (blocks of FL_KC in increasing k, each
 * summed from zero and added) are gemm_par's, so the result is bitwise the same. Where MR does
 * not divide NR (AVX2) a sliver would straddle two panels: that build keeps gemm_par. */
#define FL_TN_CHUNK (2 * FL_KC)

/* C[m*ldc + i] = ct[i*ldct + m] for m < M, i < N: float32 in 8 x 8 register transposes, the
 * edges (and float64) one element at a time. */
static void FN(transpose_out)(int64_t M, int64_t N, const REAL *ct, int64_t ldct, REAL *C,
                              int64_t ldc) {
    int64_t m0 = 0;
#ifdef FL_REAL_IS_FLOAT
    int64_t i0 = 0;
    for (; m0 + 8 <= M; m0 += 8)
        for (i0 = 0; i0 + 8 <= N; i0 += 8)
            fl_transpose8x8(ct + i0 * ldct + m0, ldct, C + m0 * ldc + i0, ldc);
    /* what is left: the columns i0.. of every full block of rows, then the last rows */
    for (int64_t m = 0; m < m0; m++)
        for (int64_t i = i0; i < N; i++) C[m * ldc + i] = ct[i * ldct + m];
#endif
    for (int64_t m = m0; m < M; m++)
        for (int64_t i = 0; i < N; i++) C[m * ldc + i] = ct[i * ldct + m];
}
static inline int64_t FN(tn_ldct)(int64_t M) { return FN(panels)(M) * NR + VL; }

static void FN(gemm_tn_par)(int64_t M, int64_t N, int64_t K, const REAL *A, int64_t lda,
                            const REAL *Bp, REAL *C, int64_t ldc, REAL *ct, char *thread_base,
                            size_t per_thread, size_t apack_off, int64_t nt) {
    /* below one depth block dG spans few rows, and the transposed write-out would cost more
     * than the strided reads it saves (B = 1: K = T) */
    if (NR % FL_MR != 0 || K < FL_KC) {
        FN(gemm_par)(M, N, K, A, 1, lda, Bp, C, ldc, 0, thread_base, per_thread, apack_off, nt);
        return;
    }
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof(REAL));
        return;
    }
    const int64_t np = FN(panels)(M), nslv = fl_rup(N, FL_MR), ldct = FN(tn_ldct)(M);
    nt = fl_max64(1, fl_min64(nt, fl_min64(np, M * N * K / (1 << 20))));
    FL_OMP(parallel num_threads((int)nt))
    {
        FL_FTZ_BEGIN
        /* panels shared among the team OpenMP grants (at most nt threads) */
        const int64_t tid = FL_THREAD_ID(), share = fl_cdiv(np, FL_TEAM_SIZE());
        const int64_t p0 = fl_min64(np, tid * share), p1 = fl_min64(np, p0 + share);
        REAL *apack = (REAL *)(thread_base + (size_t)tid * per_thread + apack_off);
        for (int64_t c0 = 0; c0 < K; c0 += FL_TN_CHUNK) {
            const int64_t c1 = fl_min64(K, c0 + FL_TN_CHUNK);
            for (int64_t p = p0; p < p1; p++) {
                const int64_t m0 = p * NR, nm = fl_min64(NR, M - m0);
                for (int64_t k0 = c0; k0 < c1; k0 += FL_KC) {
                    const int64_t kc = fl_min64(FL_KC, c1 - k0);
                    /* dG[k0 : k0+kc, m0 : m0+nm] as one [k][NR] panel slice, zero padded */
                    for (int64_t k = 0; k < kc; k++) {
                        const REAL *src = A + (k0 + k) * lda + m0;
                        REAL *dst = apack + k * NR;
                        if (nm == NR) {
                            for (int64_t j = 0; j < NR; j++) dst[j] = src[j];
                        } else {
                            int64_t j = 0;
                            for (; j < nm; j++) dst[j] = src[j];
                            for (; j < NR; j++) dst[j] = 0;
                        }
                    }
                    /* rows of C^T in slivers of MR, each inside one panel of B (MR divides
                     * NR; rows past N read the panels' zero padding) */
                    for (int64_t i = 0; i < nslv; i += FL_MR)
                        FN(micro)(kc, Bp + (i / NR) * K * NR + k0 * NR + i % NR, NR, apack,
                                  ct + i * ldct + m0, ldct, FL_MR, NR, k0 > 0);
                }
            }
        }
        FN(transpose_out)(fl_min64(M, p1 * NR) - p0 * NR, N, ct + p0 * NR, ldct,
                          C + p0 * NR * ldc, ldc);
        FL_FTZ_END
    }
}
