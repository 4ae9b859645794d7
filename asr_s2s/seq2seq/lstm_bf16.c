/* One LSTM layer direction at batch 1 in bf16 on AVX512-BF16 CPUs (see cpu_kernels.py for why and when).

   oneDNN's LSTM at batch 1 spends ~10 us per time step on the recurrent product h @ W_hh^T, a (1 x H) x (H x 4H)
   product whose 0.5 MB of bf16 weights (H = 256) sit in L2: about twice what streaming them from L2 costs.
   Here each step reads the recurrent weights once, in the order it uses them, and applies the gates per block
   of 16 hidden units while that block's four gate sums are still in registers.

   Layouts (H a multiple of 16, K even, U = H / 16):
     packed weight (4H x K):  [U][4 gates][K/2 pairs][16 rows][2] bf16, so that one 64-byte line holds one
                              input pair of 16 rows: row r of unit block u and gate g is torch's row
                              g * H + u * 16 + r (gates in torch's order i, f, g, o);
     packed bias (4H):        the same row order, fp32 (b_ih + b_hh);
     gate scratch (T x 4H):   fp32, the same row order.
   Accumulation is in fp32; the state c is fp32, h is rounded to bf16 before it feeds the next step (as oneDNN's
   bf16 LSTM does). Built by cpu_kernels.py with -O3 -mavx512f -mavx512bf16; called through ctypes. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* exp on 16 floats: Cephes' expf polynomial (~1 ulp) on the reduced argument, scaled by 2^n. */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static inline __m512 sigmoid_ps(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

static inline __m512 tanh_ps(__m512 x) { /* 2 sigmoid(2x) - 1: absolute error ~1e-7 */
    __m512 s = sigmoid_ps(_mm512_add_ps(x, x));
    return _mm512_sub_ps(_mm512_add_ps(s, s), _mm512_set1_ps(1.0f));
}

static inline __m512bh pair(const uint32_t *p) { return (__m512bh)_mm512_set1_epi32((int)*p); }
static inline __m512bh line(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512((const void *)p); }

/* gates (T x N) = x (T x K, rows x_stride elements apart) @ W^T + bias, W packed as above (N = 4H rows). Tiles of
   8 time steps x 32 rows keep 16 accumulators in registers and reuse each weight line 8 times. */
static void project(const uint16_t *x, int64_t T, int64_t K, int64_t x_stride, const uint16_t *w,
                    const float *bias, int64_t N, float *gates) {
    const int64_t P = K / 2;
    for (int64_t nb = 0; nb < N / 32; ++nb) {
        const uint16_t *w0 = w + 2 * nb * P * 32, *w1 = w0 + P * 32;
        const __m512 b0 = _mm512_loadu_ps(bias + 32 * nb), b1 = _mm512_loadu_ps(bias + 32 * nb + 16);
        for (int64_t t0 = 0; t0 < T; t0 += 8) {
            const int m = T - t0 < 8 ? (int)(T - t0) : 8;
            __m512 acc[8][2];
            for (int i = 0; i < 8; ++i) { acc[i][0] = b0; acc[i][1] = b1; }
            for (int64_t p = 0; p < P; ++p) {
                const __m512bh wa = line(w0 + p * 32), wb = line(w1 + p * 32);
                for (int i = 0; i < 8; ++i) {
                    if (i < m) {
                        const __m512bh xv = pair((const uint32_t *)(x + (t0 + i) * x_stride) + p);
                        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], wa, xv);
                        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], wb, xv);
                    }
                }
            }
            for (int i = 0; i < m; ++i) {
                _mm512_storeu_ps(gates + (t0 + i) * N + 32 * nb, acc[i][0]);
                _mm512_storeu_ps(gates + (t0 + i) * N + 32 * nb + 16, acc[i][1]);
            }
        }
    }
}

/* One direction of an LSTM layer from the zero state, batch 1.
   x: (T x K) bf16, rows x_stride apart; w_ih (4H x K), w_hh (4H x H) packed; bias (4H) packed fp32;
   gates: (T x 4H) fp32 scratch; hbuf: (2 x H) bf16 scratch;
   out: (T x H) bf16, rows out_stride apart (h_t at row t also in reverse); h_n, c_n: (H) fp32 finals. */
void lstm_dir_bf16(const uint16_t *x, int64_t T, int64_t K, int64_t x_stride, const uint16_t *w_ih,
                   const uint16_t *w_hh, const float *bias, int64_t H, int reverse, float *gates, uint16_t *hbuf,
                   uint16_t *out, int64_t out_stride, float *h_n, float *c_n) {
    const int64_t U = H / 16, P = H / 2;
    project(x, T, K, x_stride, w_ih, bias, 4 * H, gates);
    memset(c_n, 0, (size_t)H * sizeof(float));
    memset(h_n, 0, (size_t)H * sizeof(float));
    for (int64_t s = 0; s < T; ++s) {
        const int64_t t = reverse ? T - 1 - s : s;
        const uint32_t *hp = (const uint32_t *)(hbuf + (s & 1) * H); /* h_(s-1) as bf16 pairs */
        uint16_t *hn = hbuf + ((s + 1) & 1) * H;
        for (int64_t u = 0; u < U; ++u) {
            const float *g = gates + t * 4 * H + u * 64;
            __m512 a0 = _mm512_loadu_ps(g), a1 = _mm512_loadu_ps(g + 16);
            __m512 a2 = _mm512_loadu_ps(g + 32), a3 = _mm512_loadu_ps(g + 48);
            if (s > 0) { /* h_(-1) = 0: the first step has no recurrent term */
                /* Two accumulators per gate: dpbf16's latency would otherwise stall each chain. */
                __m512 b0 = _mm512_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
                const uint16_t *wu = w_hh + u * 4 * P * 32;
                for (int64_t p = 0; p < P; p += 2) {
                    const __m512bh h0 = pair(hp + p), h1 = pair(hp + p + 1);
                    a0 = _mm512_dpbf16_ps(a0, line(wu + (0 * P + p) * 32), h0);
                    a1 = _mm512_dpbf16_ps(a1, line(wu + (1 * P + p) * 32), h0);
                    a2 = _mm512_dpbf16_ps(a2, line(wu + (2 * P + p) * 32), h0);
                    a3 = _mm512_dpbf16_ps(a3, line(wu + (3 * P + p) * 32), h0);
                    b0 = _mm512_dpbf16_ps(b0, line(wu + (0 * P + p + 1) * 32), h1);
                    b1 = _mm512_dpbf16_ps(b1, line(wu + (1 * P + p + 1) * 32), h1);
                    b2 = _mm512_dpbf16_ps(b2, line(wu + (2 * P + p + 1) * 32), h1);
                    b3 = _mm512_dpbf16_ps(b3, line(wu + (3 * P + p + 1) * 32), h1);
                }
                a0 = _mm512_add_ps(a0, b0); a1 = _mm512_add_ps(a1, b1);
                a2 = _mm512_add_ps(a2, b2); a3 = _mm512_add_ps(a3, b3);
            }
            const __m512 c = _mm512_fmadd_ps(sigmoid_ps(a1), _mm512_loadu_ps(c_n + u * 16),
                                             _mm512_mul_ps(sigmoid_ps(a0), tanh_ps(a2)));
            const __m512 h = _mm512_mul_ps(sigmoid_ps(a3), tanh_ps(c));
            _mm512_storeu_ps(c_n + u * 16, c);
            _mm512_storeu_ps(h_n + u * 16, h);
            const __m256i hb = (__m256i)_mm512_cvtneps_pbh(h);
            _mm256_storeu_si256((__m256i *)(hn + u * 16), hb);
            _mm256_storeu_si256((__m256i *)(out + t * out_stride + u * 16), hb);
        }
    }
}

/* Both directions of a layer, the backward one on a second OpenMP thread where `threads` > 1. Built with
   -fopenmp, this library needs libgomp.so.1, which the dynamic loader resolves to the copy torch has already
   loaded: this region runs on torch's own OpenMP threads. (A thread of our own would share the second core with
   torch's worker, which spins for a while after each of torch's parallel regions: measured no faster than one
   thread.)
   x (T x K) bf16; per direction: w_ih, w_hh, bias packed, gates (T x 4H) fp32 and hbuf (2 x H) bf16 scratch,
   h_n, c_n (H) fp32; out (T x 2H) bf16, the forward direction in columns 0..H-1, the backward in H..2H-1. */
void lstm_bidir_bf16(const uint16_t *x, int64_t T, int64_t K, int64_t x_stride, const uint16_t *w_ih_f,
                     const uint16_t *w_hh_f, const float *bias_f, const uint16_t *w_ih_b, const uint16_t *w_hh_b,
                     const float *bias_b, int64_t H, float *gates_f, float *gates_b, uint16_t *hbuf_f,
                     uint16_t *hbuf_b, uint16_t *out, float *h_f, float *c_f, float *h_b, float *c_b, int threads) {
#pragma omp parallel for num_threads(threads > 1 ? 2 : 1) schedule(static, 1)
    for (int d = 0; d < 2; ++d) {
        if (d == 0)
            lstm_dir_bf16(x, T, K, x_stride, w_ih_f, w_hh_f, bias_f, H, 0, gates_f, hbuf_f, out, 2 * H, h_f, c_f);
        else
            lstm_dir_bf16(x, T, K, x_stride, w_ih_b, w_hh_b, bias_b, H, 1, gates_b, hbuf_b, out + H, 2 * H, h_b,
                          c_b);
    }
}

/* n floats -> bf16, rounding to nearest even (as torch's .bfloat16()). */
static void to_bf16(const float *src, int64_t n, uint16_t *dst) {
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        _mm256_storeu_si256((__m256i *)(dst + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + k)));
    if (k < n) {
        const __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        _mm256_mask_storeu_epi16(dst + k, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + k)));
    }
}

/* One LSTM cell step for one row, as the decoder's search step takes it: gates = W [x1; x2] + add, then
   c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c').
   x1 (K1), x2 (K2) fp32 (rounded to bf16 here, as a bf16 product rounds its input), K = K1 + K2 even; w (4H x K)
   packed as above; add (4H) fp32 in torch's gate order (the embedding's share and the biases); c (H) fp32;
   xb: (K) bf16 scratch; -> h_out, c_out (H) fp32 (c_out may be c). */
void lstm_cell_bf16(const float *x1, int64_t K1, const float *x2, int64_t K2, const uint16_t *w, const float *add,
                    int64_t H, const float *c, uint16_t *xb, float *h_out, float *c_out) {
    const int64_t K = K1 + K2, U = H / 16, P = K / 2;
    to_bf16(x1, K1, xb);
    to_bf16(x2, K2, xb + K1);
    const uint32_t *xp = (const uint32_t *)xb;
    for (int64_t u = 0; u < U; ++u) {
        __m512 a0 = _mm512_loadu_ps(add + 0 * H + u * 16), a1 = _mm512_loadu_ps(add + 1 * H + u * 16);
        __m512 a2 = _mm512_loadu_ps(add + 2 * H + u * 16), a3 = _mm512_loadu_ps(add + 3 * H + u * 16);
        __m512 b0 = _mm512_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
        const uint16_t *wu = w + u * 4 * P * 32;
        int64_t p = 0;
        for (; p + 2 <= P; p += 2) {
            const __m512bh h0 = pair(xp + p), h1 = pair(xp + p + 1);
            a0 = _mm512_dpbf16_ps(a0, line(wu + (0 * P + p) * 32), h0);
            a1 = _mm512_dpbf16_ps(a1, line(wu + (1 * P + p) * 32), h0);
            a2 = _mm512_dpbf16_ps(a2, line(wu + (2 * P + p) * 32), h0);
            a3 = _mm512_dpbf16_ps(a3, line(wu + (3 * P + p) * 32), h0);
            b0 = _mm512_dpbf16_ps(b0, line(wu + (0 * P + p + 1) * 32), h1);
            b1 = _mm512_dpbf16_ps(b1, line(wu + (1 * P + p + 1) * 32), h1);
            b2 = _mm512_dpbf16_ps(b2, line(wu + (2 * P + p + 1) * 32), h1);
            b3 = _mm512_dpbf16_ps(b3, line(wu + (3 * P + p + 1) * 32), h1);
        }
        if (p < P) { /* an odd number of input pairs */
            const __m512bh h0 = pair(xp + p);
            a0 = _mm512_dpbf16_ps(a0, line(wu + (0 * P + p) * 32), h0);
            a1 = _mm512_dpbf16_ps(a1, line(wu + (1 * P + p) * 32), h0);
            a2 = _mm512_dpbf16_ps(a2, line(wu + (2 * P + p) * 32), h0);
            a3 = _mm512_dpbf16_ps(a3, line(wu + (3 * P + p) * 32), h0);
        }
        a0 = _mm512_add_ps(a0, b0); a1 = _mm512_add_ps(a1, b1);
        a2 = _mm512_add_ps(a2, b2); a3 = _mm512_add_ps(a3, b3);
        const __m512 cc = _mm512_fmadd_ps(sigmoid_ps(a1), _mm512_loadu_ps(c + u * 16),
                                          _mm512_mul_ps(sigmoid_ps(a0), tanh_ps(a2)));
        _mm512_storeu_ps(c_out + u * 16, cc);
        _mm512_storeu_ps(h_out + u * 16, _mm512_mul_ps(sigmoid_ps(a3), tanh_ps(cc)));
    }
}
