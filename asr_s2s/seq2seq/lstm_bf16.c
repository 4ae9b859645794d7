/* Batch-1 bf16 kernels for AVX512-BF16 CPUs (see cpu_kernels.py for why and when): one LSTM layer direction
   (lstm_dir_bf16, both directions at once: lstm_bidir_bf16), and one search step of the location-attention LSTM
   decoder (location_step_bf16).

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

/* One search step of the location-attention LSTM decoder (decoder.Decoder._search_step) for one hypothesis, up
   to its output layer. Sizes: T frames (the first L real), A attention dim, V encoder state dim, H decoder
   hidden, D combine dim, C location channels, KW location kernel width (odd); A, D and H multiples
   of 16, V even.
   Weights: wq (A x H) = 2 W_query, wg (4H x (V + H)) the gate product's [context; h] part, wc (D x (H + V)) the
   combine layer, all bf16 packed in blocks of 16 rows (wg with the gate layout); bc (D) fp32; conv (C x 2 x KW),
   loc2 (C x A) = 2 W_loc^T, v2 (A) = 2 v fp32; keys (T x A) doubled keys, values (T x V) fp32.
   State: h, c (H), att (2 x T) [previous; cumulative alignment]; add (4H): the token's row of the gate table.
   Scratch: xb (H + V) bf16, f (C x T), e (T), q (A) fp32.
   Out: w (T) the alignment, att_out (2 x T), ctx (V), h_out, c_out (H), feats (D) = tanh(Wc [h_out; ctx] + bc).
   Products on bf16 inputs and weights with fp32 sums; the attention and the cell in fp32. */
void location_step_bf16(int64_t T, int64_t L, int64_t A, int64_t V, int64_t H, int64_t D, int64_t C, int64_t KW,
                        const uint16_t *wq, const uint16_t *wg, const uint16_t *wc, const float *bc,
                        const float *conv, const float *loc2, const float *v2, const float *keys,
                        const float *values, const float *h, const float *c, const float *att, const float *add,
                        uint16_t *xb, float *f, float *e, float *q, float *w, float *att_out, float *ctx,
                        float *h_out, float *c_out, float *feats) {
    const uint32_t *xp = (const uint32_t *)xb;
    /* query term: q = 2 W_s h */
    to_bf16(h, H, xb);
    gemv16(xp, H / 2, wq, A, NULL, 0, q);
    /* location features f[ch][t] = conv(att) with zero padding, as axpys over t (which vectorize) */
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
    /* the energies e[t] = v2 . sigmoid(keys[t] + q + loc2^T f[:, t]) (see attention._energies: the 2s make it
       v . tanh(...) up to a constant) */
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
    /* softmax over the real frames; padding gets exactly 0 */
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
    /* context = w @ values */
    for (int64_t v = 0; v < V; ++v) ctx[v] = 0.0f;
    for (int64_t t = 0; t < L; ++t) {
        const __m512 wt = _mm512_set1_ps(w[t]);
        int64_t v = 0;
        for (; v + 16 <= V; v += 16)
            _mm512_storeu_ps(ctx + v, _mm512_fmadd_ps(wt, _mm512_loadu_ps(values + t * V + v),
                                                      _mm512_loadu_ps(ctx + v)));
        for (; v < V; ++v) ctx[v] += w[t] * values[t * V + v];
    }
    /* the cell on [ctx; h], then feats = tanh(Wc [h_out; ctx] + bc) */
    to_bf16(ctx, V, xb);
    to_bf16(h, H, xb + V);
    for (int64_t u = 0; u < H / 16; ++u) {
        __m512 a[4];
        for (int g = 0; g < 4; ++g) a[g] = _mm512_loadu_ps(add + g * H + u * 16);
        dot16x4(a, xp, (V + H) / 2, wg + u * 4 * ((V + H) / 2) * 32);
        _mm512_storeu_ps(h_out + u * 16, cell_block(a, c + u * 16, c_out + u * 16));
    }
    to_bf16(h_out, H, xb);
    to_bf16(ctx, V, xb + H);
    gemv16(xp, (H + V) / 2, wc, D, bc, 1, feats);
}
