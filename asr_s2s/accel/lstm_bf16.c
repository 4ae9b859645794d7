/* Batch-1 bf16 kernels for AVX512-BF16 CPUs (see cpu_kernels.py for why and when): one LSTM layer direction
   (lstm_dir_bf16, both directions at once: lstm_bidir_bf16), and one search step of the location-attention LSTM
   decoder for N hypotheses (location_steps_bf16).

   oneDNN's LSTM at batch 1 spends ~10 us per time step on the recurrent product h @ W_hh^T, a (1 x H) x (H x 4H)
   product whose 0.5 MB of bf16 weights (H = 256) sit in L2: about twice what streaming them from L2 costs.
   Here each step reads the recurrent weights once, in the order it uses them, and applies the gates per block
   of 16 hidden units while that block's four gate sums are still in registers.

   Layouts (H a multiple of 16, K even, U = H / 16):
     packed gate weight (4H x K): [U][4 gates][K/2 pairs][16 rows][2] bf16, so that one 64-byte line holds one
                                  input pair of 16 rows: row r of unit block u and gate g is torch's row
                                  g * H + u * 16 + r (gates in torch's order i, f, g, o);
     packed weight (N x K):       [N/16][K/2 pairs][16 rows][2] bf16 (the same with one "gate");
     packed bias (4H):            the gate weight's row order, fp32 (b_ih + b_hh);
     gate scratch (T x 4H):       fp32, the same row order.
   Accumulation is in fp32; cell states are fp32; the encoder's h is rounded to bf16 before it feeds the next step
   (as oneDNN's bf16 LSTM does). Built by cpu_kernels.py with -O3 -mavx512f -mavx512bf16 -fopenmp; called through
   ctypes. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#define THREAD_NUM() omp_get_thread_num()
#else
#define THREAD_NUM() 0
#endif

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

static inline __m512 sigmoid_ps(__m512 x) { /* 1 / (1 + e^-x): rcp14 + one Newton step (~1e-7), not a divide */
    const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), x)));
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

static inline __m512 tanh_ps(__m512 x) { /* 2 sigmoid(2x) - 1: absolute error ~1e-7 */
    __m512 s = sigmoid_ps(_mm512_add_ps(x, x));
    return _mm512_sub_ps(_mm512_add_ps(s, s), _mm512_set1_ps(1.0f));
}

static inline __m512bh pair(const uint32_t *p) { return (__m512bh)_mm512_set1_epi32((int)*p); }
static inline __m512bh line(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512((const void *)p); }

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

/* acc[b] += block b's 16 dot products with x, for 4 blocks of 16 rows at once: x as P bf16 pairs, block b's
   [P][16][2] lines at w + b * P * 32 (the four gates of a unit block, or four consecutive row blocks). Two
   accumulators per block: dpbf16's latency would otherwise stall each chain. */
static inline void dot16x4(__m512 acc[4], const uint32_t *xp, int64_t P, const uint16_t *w) {
    __m512 b0 = _mm512_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
    int64_t p = 0;
    for (; p + 2 <= P; p += 2) {
        const __m512bh h0 = pair(xp + p), h1 = pair(xp + p + 1);
        acc[0] = _mm512_dpbf16_ps(acc[0], line(w + (0 * P + p) * 32), h0);
        acc[1] = _mm512_dpbf16_ps(acc[1], line(w + (1 * P + p) * 32), h0);
        acc[2] = _mm512_dpbf16_ps(acc[2], line(w + (2 * P + p) * 32), h0);
        acc[3] = _mm512_dpbf16_ps(acc[3], line(w + (3 * P + p) * 32), h0);
        b0 = _mm512_dpbf16_ps(b0, line(w + (0 * P + p + 1) * 32), h1);
        b1 = _mm512_dpbf16_ps(b1, line(w + (1 * P + p + 1) * 32), h1);
        b2 = _mm512_dpbf16_ps(b2, line(w + (2 * P + p + 1) * 32), h1);
        b3 = _mm512_dpbf16_ps(b3, line(w + (3 * P + p + 1) * 32), h1);
    }
    if (p < P) { /* an odd number of pairs */
        const __m512bh h0 = pair(xp + p);
        for (int b = 0; b < 4; ++b) acc[b] = _mm512_dpbf16_ps(acc[b], line(w + (b * P + p) * 32), h0);
    }
    acc[0] = _mm512_add_ps(acc[0], b0); acc[1] = _mm512_add_ps(acc[1], b1);
    acc[2] = _mm512_add_ps(acc[2], b2); acc[3] = _mm512_add_ps(acc[3], b3);
}

/* The LSTM cell for one unit block from its four gate sums (i, f, g, o): c' = sigmoid(f) c + sigmoid(i) tanh(g),
   h' = sigmoid(o) tanh(c'). Returns h'; stores c' at c_out (which may be c). */
static inline __m512 cell_block(const __m512 a[4], const float *c, float *c_out) {
    const __m512 cc = _mm512_fmadd_ps(sigmoid_ps(a[1]), _mm512_loadu_ps(c),
                                      _mm512_mul_ps(sigmoid_ps(a[0]), tanh_ps(a[2])));
    _mm512_storeu_ps(c_out, cc);
    return _mm512_mul_ps(sigmoid_ps(a[3]), tanh_ps(cc));
}

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
            __m512 a[4] = {_mm512_loadu_ps(g), _mm512_loadu_ps(g + 16), _mm512_loadu_ps(g + 32),
                           _mm512_loadu_ps(g + 48)};
            if (s > 0) dot16x4(a, hp, P, w_hh + u * 4 * P * 32); /* h_(-1) = 0: no recurrent term at first */
            const __m512 h = cell_block(a, c_n + u * 16, c_n + u * 16);
            _mm512_storeu_ps(h_n + u * 16, h);
            const __m256i hb = (__m256i)_mm512_cvtneps_pbh(h);
            _mm256_storeu_si256((__m256i *)(hn + u * 16), hb);
            _mm256_storeu_si256((__m256i *)(out + t * out_stride + u * 16), hb);
        }
    }
}

/* Both directions of a layer, the backward one on a second OpenMP thread where `threads` > 1. Built with
   -fopenmp, this library needs libgomp.so.1, which the dynamic loader resolves to the copy torch has already
   loaded (torch's Linux wheels ship it under that name; elsewhere a second OpenMP runtime loads, which works but
   keeps threads of its own): this region runs on torch's own OpenMP threads. (A thread of our own would share the
   second core with torch's worker, which spins for a while after each of torch's parallel regions: measured no
   faster than one thread.)
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

/* out (N) = W x + bias (bias may be NULL), tanh applied where `act_tanh`: W (N x K) packed in blocks of 16 rows
   ([N/16][K/2][16][2]: the gate layout with one gate), N a multiple of 16, x given as K/2 bf16 pairs. */
static void gemv16(const uint32_t *xp, int64_t P, const uint16_t *w, int64_t N, const float *bias, int act_tanh,
                   float *out) {
    for (int64_t r = 0; r < N; r += 64) {
        const int nb = N - r >= 64 ? 4 : (int)((N - r) / 16);
        __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int b = 0; b < nb; ++b)
            if (bias) a[b] = _mm512_loadu_ps(bias + r + 16 * b);
        if (nb == 4) {
            dot16x4(a, xp, P, w + r * P * 2);
        } else { /* the last 1-3 blocks, one at a time */
            for (int b = 0; b < nb; ++b)
                for (int64_t p = 0; p < P; ++p)
                    a[b] = _mm512_dpbf16_ps(a[b], line(w + (r + 16 * b) * P * 2 + p * 32), pair(xp + p));
        }
        for (int b = 0; b < nb; ++b) _mm512_storeu_ps(out + r + 16 * b, act_tanh ? tanh_ps(a[b]) : a[b]);
    }
}

/* Rows of a product, n rows at once (n <= 16, a compile-time constant in each copy, so that the accumulators
   stay in registers): out[r][0..15] = init[r][0..15] (0 where init is NULL) + block . x_r, for one block of 16
   weight rows (its [P][16][2] lines at w) and rows x_r = x + r * xs (P bf16 pairs each). */
#define ROWS_DOT(NR)                                                                                               \
    static void rows_dot_##NR(const uint32_t *x, int64_t xs, int64_t P, const uint16_t *w, const float *init,    \
                              int64_t init_stride, float *out, int64_t out_stride) {                             \
        __m512 acc[NR];                                                                                          \
        for (int r = 0; r < NR; ++r) acc[r] = init ? _mm512_loadu_ps(init + r * init_stride) : _mm512_setzero_ps(); \
        for (int64_t p = 0; p < P; ++p) {                                                                        \
            const __m512bh wl = line(w + p * 32);                                                                \
            for (int r = 0; r < NR; ++r) acc[r] = _mm512_dpbf16_ps(acc[r], wl, pair(x + r * xs + p));          \
        }                                                                                                        \
        for (int r = 0; r < NR; ++r) _mm512_storeu_ps(out + r * out_stride, acc[r]);                             \
    }
ROWS_DOT(2) ROWS_DOT(3) ROWS_DOT(4) ROWS_DOT(5) ROWS_DOT(6) ROWS_DOT(7) ROWS_DOT(8) ROWS_DOT(9) ROWS_DOT(10)
ROWS_DOT(11) ROWS_DOT(12) ROWS_DOT(13) ROWS_DOT(14) ROWS_DOT(15) ROWS_DOT(16)

typedef void (*rows_dot_fn)(const uint32_t *, int64_t, int64_t, const uint16_t *, const float *, int64_t, float *,
                            int64_t);
static const rows_dot_fn ROWS_DOT_N[17] = {NULL, NULL, rows_dot_2, rows_dot_3, rows_dot_4, rows_dot_5, rows_dot_6,
                                          rows_dot_7, rows_dot_8, rows_dot_9, rows_dot_10, rows_dot_11, rows_dot_12,
                                          rows_dot_13, rows_dot_14, rows_dot_15, rows_dot_16};

/* The attention of one hypothesis, given its query term q (A): location features f (C x T scratch) = conv(att)
   with zero padding (as axpys over t, which vectorize), energies e (T scratch) = v2 . sigmoid(keys[t] + q +
   loc2^T f[:, t]) (see attention._energies: the 2s make it v . tanh(...) up to a constant), the softmax over the
   first L frames (padding gets exactly 0) -> w (T), att_out (2 x T) = [w; cumulative + w], ctx (V) = w @ values. */
static void attend_row(int64_t T, int64_t L, int64_t A, int64_t V, int64_t C, int64_t KW, const float *conv,
                       const float *loc2, const float *v2, const float *keys, const float *values, const float *q,
                       const float *att, float *f, float *e, float *w, float *att_out, float *ctx) {
    const int64_t half = KW / 2;
    memset(f, 0, (size_t)(C * T) * sizeof(float));
    for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t i = 0; i < 2; ++i)
            for (int64_t j = 0; j < KW; ++j) {
                const float k = conv[(ch * 2 + i) * KW + j];
                const int64_t shift = j - half, t0 = shift < 0 ? -shift : 0, t1 = shift > 0 ? T - shift : T;
                float *fc = f + ch * T;
                const float *a = att + i * T + shift;
                for (int64_t t = t0; t < t1; ++t) fc[t] += k * a[t];
            }
    for (int64_t t = 0; t < L; ++t) {
        __m512 dot = _mm512_setzero_ps();
        for (int64_t a = 0; a < A; a += 16) {
            __m512 pre = _mm512_add_ps(_mm512_loadu_ps(keys + t * A + a), _mm512_loadu_ps(q + a));
            for (int64_t ch = 0; ch < C; ++ch)
                pre = _mm512_fmadd_ps(_mm512_set1_ps(f[ch * T + t]), _mm512_loadu_ps(loc2 + ch * A + a), pre);
            dot = _mm512_fmadd_ps(sigmoid_ps(pre), _mm512_loadu_ps(v2 + a), dot);
        }
        e[t] = _mm512_reduce_add_ps(dot);
    }
    float mx = e[0];
    for (int64_t t = 1; t < L; ++t) mx = e[t] > mx ? e[t] : mx;
    float total = 0.0f;
    for (int64_t t = 0; t < L; ++t) {
        e[t] = expf(e[t] - mx);
        total += e[t];
    }
    for (int64_t t = 0; t < T; ++t) {
        w[t] = t < L ? e[t] / total : 0.0f;
        att_out[t] = w[t];
        att_out[T + t] = att[T + t] + w[t];
    }
    for (int64_t v = 0; v < V; ++v) ctx[v] = 0.0f;
    for (int64_t t = 0; t < L; ++t) {
        const __m512 wt = _mm512_set1_ps(w[t]);
        int64_t v = 0;
        for (; v + 16 <= V; v += 16)
            _mm512_storeu_ps(ctx + v, _mm512_fmadd_ps(wt, _mm512_loadu_ps(values + t * V + v),
                                                      _mm512_loadu_ps(ctx + v)));
        for (; v < V; ++v) ctx[v] += w[t] * values[t * V + v];
    }
}

typedef struct { /* sizes and weights of location_steps_bf16 (see there) */
    int64_t T, A, V, H, D, C, KW;
    const uint16_t *wq, *wg, *wc;
    const float *bc, *conv, *loc2, *v2;
} step_weights;

/* Rows [0, n) of a step (pointers already at the first row; row strides from the sizes); scratch: xb
   (n x (H + V)) bf16, q (n x A), g (n x 64), f (C x T), e (T) fp32. */
static void step_rows(const step_weights *m, int64_t n, const int64_t *lengths, const float *keys,
                      const float *values, const float *h, const float *c, const float *att, const float *add,
                      uint16_t *xb, float *q, float *g, float *f, float *e, float *w, float *att_out, float *ctx,
                      float *h_out, float *c_out, float *feats) {
    const int64_t T = m->T, A = m->A, V = m->V, H = m->H, D = m->D, K = H + V, P = K / 2;
    const uint32_t *xp = (const uint32_t *)xb;
    const rows_dot_fn dot = ROWS_DOT_N[n];
    /* query terms q_r = 2 W_s h_r (rows K apart in xb: the same buffer holds [ctx; h] later) */
    for (int64_t r = 0; r < n; ++r) to_bf16(h + r * H, H, xb + r * K);
    if (n == 1) {
        gemv16(xp, H / 2, m->wq, A, NULL, 0, q);
    } else {
        for (int64_t b = 0; b < A / 16; ++b) dot(xp, P, H / 2, m->wq + b * (H / 2) * 32, NULL, 0, q + b * 16, A);
    }
    for (int64_t r = 0; r < n; ++r)
        attend_row(T, lengths[r], A, V, m->C, m->KW, m->conv, m->loc2, m->v2, keys + r * T * A, values + r * T * V,
                   q + r * A, att + r * 2 * T, f, e, w + r * T, att_out + r * 2 * T, ctx + r * V);
    /* the cell on [ctx; h], then feats = tanh(Wc [h_out; ctx] + bc) */
    for (int64_t r = 0; r < n; ++r) {
        to_bf16(ctx + r * V, V, xb + r * K);
        to_bf16(h + r * H, H, xb + r * K + V);
    }
    for (int64_t u = 0; u < H / 16; ++u) {
        const uint16_t *wu = m->wg + u * 4 * P * 32;
        if (n == 1) {
            __m512 a[4];
            for (int gt = 0; gt < 4; ++gt) a[gt] = _mm512_loadu_ps(add + gt * H + u * 16);
            dot16x4(a, xp, P, wu);
            _mm512_storeu_ps(h_out + u * 16, cell_block(a, c + u * 16, c_out + u * 16));
            continue;
        }
        for (int gt = 0; gt < 4; ++gt) dot(xp, P, P, wu + gt * P * 32, add + gt * H + u * 16, 4 * H, g + gt * 16, 64);
        for (int64_t r = 0; r < n; ++r) {
            const __m512 a[4] = {_mm512_loadu_ps(g + r * 64), _mm512_loadu_ps(g + r * 64 + 16),
                                 _mm512_loadu_ps(g + r * 64 + 32), _mm512_loadu_ps(g + r * 64 + 48)};
            _mm512_storeu_ps(h_out + r * H + u * 16, cell_block(a, c + r * H + u * 16, c_out + r * H + u * 16));
        }
    }
    for (int64_t r = 0; r < n; ++r) {
        to_bf16(h_out + r * H, H, xb + r * K);
        to_bf16(ctx + r * V, V, xb + r * K + H);
    }
    if (n == 1) {
        gemv16(xp, P, m->wc, D, m->bc, 1, feats);
        return;
    }
    for (int64_t b = 0; b < D / 16; ++b) dot(xp, P, P, m->wc + b * P * 32, m->bc + b * 16, 0, feats + b * 16, D);
    for (int64_t r = 0; r < n; ++r)
        for (int64_t d = 0; d < D; d += 16)
            _mm512_storeu_ps(feats + r * D + d, tanh_ps(_mm512_loadu_ps(feats + r * D + d)));
}

/* One search step of the location-attention LSTM decoder (decoder.Decoder._search_step) for N hypotheses, up to
   its output layer. Sizes: T frames (row r's first lengths[r] real), A attention dim, V encoder state dim, H
   decoder hidden, D combine dim, C location channels, KW location kernel width (odd); A, D and H multiples of 16,
   V even.
   Weights: wq (A x H) = 2 W_query, wg (4H x (V + H)) the gate product's [context; h] part, wc (D x (H + V)) the
   combine layer, all bf16 packed in blocks of 16 rows (wg with the gate layout); bc (D) fp32; conv (C x 2 x KW),
   loc2 (C x A) = 2 W_loc^T, v2 (A) = 2 v fp32.
   Per hypothesis (row-major, N rows): keys (T x A) doubled keys, values (T x V), h, c (H), att (2 x T)
   [previous; cumulative alignment], add (4H): the token's row of the gate table.
   Scratch: per thread `scratch_floats` floats at scratch + i * scratch_floats, of at least
   16 * (A + 64 + (H + V + 1) / 2) + C * T + T.
   Out (N rows): w (T) the alignment, att_out (2 x T), ctx (V), h_out, c_out (H), feats (D) = tanh(Wc [h_out; ctx]
   + bc). Rows go to `threads` threads in groups of at most 16 (a group of one takes the one-row products).
   Products on bf16 inputs and weights with fp32 sums; the attention and the cell in fp32. */
void location_steps_bf16(int64_t N, int64_t T, int64_t A, int64_t V, int64_t H, int64_t D, int64_t C, int64_t KW,
                         const uint16_t *wq, const uint16_t *wg, const uint16_t *wc, const float *bc,
                         const float *conv, const float *loc2, const float *v2, const int64_t *lengths,
                         const float *keys, const float *values, const float *h, const float *c, const float *att,
                         const float *add, float *scratch, int64_t scratch_floats, float *w, float *att_out,
                         float *ctx, float *h_out, float *c_out, float *feats, int threads) {
    const step_weights m = {T, A, V, H, D, C, KW, wq, wg, wc, bc, conv, loc2, v2};
    const int nt = threads > 1 && N > 1 ? 2 : 1;
    int64_t per = (N + nt - 1) / nt;
    per = per > 16 ? 16 : per;
    const int64_t groups = (N + per - 1) / per;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t gi = 0; gi < groups; ++gi) {
        const int64_t r0 = gi * per, n = N - r0 < per ? N - r0 : per;
        float *s = scratch + (int64_t)THREAD_NUM() * scratch_floats;
        uint16_t *xb = (uint16_t *)s;
        float *q = s + 16 * ((H + V + 1) / 2), *g = q + 16 * A, *f = g + 16 * 64, *e = f + C * T;
        step_rows(&m, n, lengths + r0, keys + r0 * T * A, values + r0 * T * V, h + r0 * H, c + r0 * H,
                  att + r0 * 2 * T, add + r0 * 4 * H, xb, q, g, f, e, w + r0 * T, att_out + r0 * 2 * T, ctx + r0 * V,
                  h_out + r0 * H, c_out + r0 * H, feats + r0 * D);
    }
}
