// Kernels of finercut-tensor's CUDA backend, compiled at run time with NVRTC.
//
// Self-contained on purpose (no #include): bf16 is handled as raw 16-bit patterns, so compiling
// needs no CUDA headers on the machine that runs it. Every row-wise kernel runs one block per row;
// reductions go through warp shuffles and a fixed tree, so results do not depend on scheduling.
// Element counts are `unsigned long long`, rows and columns `unsigned int`.

typedef unsigned short bf16_t;
typedef unsigned long long u64;

// Positive infinity (math.h's INFINITY, which NVRTC does not define without headers).
#define INF_F __int_as_float(0x7f800000)

__device__ __forceinline__ float bf16_to_f32(bf16_t b) {
    return __uint_as_float(((unsigned int)b) << 16);
}

// Round to nearest even, like the `half` crate on the host; NaN stays a (quiet) NaN.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (bf16_t)((u >> 16) | 0x40u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide reductions (blockDim.x a multiple of 32); every thread gets the result.
__device__ float block_sum(float v) {
    __shared__ float s[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) s[w] = v;
    __syncthreads();
    if (w == 0) {
        v = lane < nw ? s[lane] : 0.0f;
        v = warp_sum(v);
        if (lane == 0) s[0] = v;
    }
    __syncthreads();
    return s[0];
}

__device__ double block_sum_d(double v) {
    __shared__ double s[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) s[w] = v;
    __syncthreads();
    if (w == 0) {
        v = lane < nw ? s[lane] : 0.0;
        v = warp_sum_d(v);
        if (lane == 0) s[0] = v;
    }
    __syncthreads();
    return s[0];
}

__device__ float block_max(float v) {
    __shared__ float s[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) s[w] = v;
    __syncthreads();
    if (w == 0) {
        v = lane < nw ? s[lane] : -INF_F;
        v = warp_max(v);
        if (lane == 0) s[0] = v;
    }
    __syncthreads();
    return s[0];
}

#define GRID_STRIDE(i, n) for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; // sqrt(2 / pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

// Exact GELU with the error function (`gelu`: GPT-NeoX).
__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}

// ---- Elementwise ----------------------------------------------------------------------------

extern "C" __global__ void add_f32(float* dst, const float* src, u64 n) {
    GRID_STRIDE(i, n) dst[i] += src[i];
}

extern "C" __global__ void add_row_vector_f32(float* x, const float* v, u64 n, unsigned int cols) {
    GRID_STRIDE(i, n) x[i] += v[i % cols];
}

extern "C" __global__ void scale_f32(float* x, float s, u64 n) {
    GRID_STRIDE(i, n) x[i] *= s;
}

extern "C" __global__ void softcap_f32(float* x, float cap, u64 n) {
    GRID_STRIDE(i, n) x[i] = cap * tanhf(x[i] / cap);
}

extern "C" __global__ void gated_silu_f32(float* g, const float* u, u64 n) {
    GRID_STRIDE(i, n) g[i] = silu(g[i]) * u[i];
}

extern "C" __global__ void gated_gelu_tanh_f32(float* g, const float* u, u64 n) {
    GRID_STRIDE(i, n) g[i] = gelu_tanh(g[i]) * u[i];
}

extern "C" __global__ void gated_gelu_f32(float* g, const float* u, u64 n) {
    GRID_STRIDE(i, n) g[i] = gelu_erf(g[i]) * u[i];
}

// An activation without a gate (GPT-NeoX's MLP): 0 silu, 1 gelu_tanh, 2 exact gelu.
extern "C" __global__ void activate_f32(float* x, u64 n, int act) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        x[i] = act == 0 ? silu(v) : act == 1 ? gelu_tanh(v) : gelu_erf(v);
    }
}

extern "C" __global__ void f32_to_bf16(const float* src, bf16_t* dst, u64 n) {
    GRID_STRIDE(i, n) dst[i] = f32_to_bf16(src[i]);
}

extern "C" __global__ void bf16_to_f32(const bf16_t* src, float* dst, u64 n) {
    GRID_STRIDE(i, n) dst[i] = bf16_to_f32(src[i]);
}

// ---- Row-wise (one block per row) -------------------------------------------------------------

// out = x / sqrt(mean(x^2) + eps) * w   (or * (1 + w) for Gemma).
extern "C" __global__ void rms_norm_f32(const float* x, const float* w, float* out,
                                        unsigned int cols, float eps, int one_plus) {
    const float* xr = x + (u64)blockIdx.x * cols;
    float* orow = out + (u64)blockIdx.x * cols;
    float ss = 0.0f;
    for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) ss += xr[j] * xr[j];
    ss = block_sum(ss);
    float inv = 1.0f / sqrtf(ss / (float)cols + eps);
    for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) {
        float g = one_plus ? 1.0f + w[j] : w[j];
        orow[j] = (xr[j] * inv) * g;
    }
}

// LayerNorm's normalisation and weight (its bias is added separately):
// out = (x - mean) / sqrt(var + eps) * w, the mean and the variance in two passes.
extern "C" __global__ void layer_norm_f32(const float* x, const float* w, float* out,
                                         unsigned int cols, float eps) {
    const float* xr = x + (u64)blockIdx.x * cols;
    float* orow = out + (u64)blockIdx.x * cols;
    float s = 0.0f;
    for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) s += xr[j];
    float mean = block_sum(s) / (float)cols;
    float ss = 0.0f;
    for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) {
        float d = xr[j] - mean;
        ss += d * d;
    }
    ss = block_sum(ss);
    float inv = 1.0f / sqrtf(ss / (float)cols + eps);
    for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) {
        orow[j] = ((xr[j] - mean) * inv) * w[j];
    }
}

// Log-sum-exp accumulated in double, as on the host.
extern "C" __global__ void log_softmax_rows_f32(float* x, unsigned int cols) {
    float* r = x + (u64)blockIdx.x * cols;
    float m = -INF_F;
    for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, r[j]);
    m = block_max(m);
    double s = 0.0;
    for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) s += (double)expf(r[j] - m);
    s = block_sum_d(s);
    float ls = (float)log(s);
    for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) r[j] = (r[j] - m) - ls;
}

extern "C" __global__ void embedding_f32(const float* table, const unsigned int* ids, float* out,
                                         unsigned int d) {
    const float* src = table + (u64)ids[blockIdx.x] * d;
    float* dst = out + (u64)blockIdx.x * d;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
}

extern "C" __global__ void embedding_bf16(const bf16_t* table, const unsigned int* ids, float* out,
                                          unsigned int d) {
    const bf16_t* src = table + (u64)ids[blockIdx.x] * d;
    float* dst = out + (u64)blockIdx.x * d;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) dst[j] = bf16_to_f32(src[j]);
}

// x[rows[i]] += scales[i] * y[i] (rows `cols` wide) for the rows i of chunk blockIdx.y (`per`
// rows), in order of i, one thread per column. The product is rounded before the add (no fused
// multiply-add), as on the host; the host runs chunks in parallel only when no row repeats.
extern "C" __global__ void add_scaled_rows_f32(float* x, const unsigned int* rows, const float* y,
                                               const float* scales, unsigned int n,
                                               unsigned int cols, unsigned int per) {
    unsigned int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    u64 i0 = (u64)blockIdx.y * per;
    u64 i1 = i0 + per < (u64)n ? i0 + per : (u64)n;
    for (u64 i = i0; i < i1; ++i) {
        float* dst = x + (u64)rows[i] * cols + j;
        *dst = __fadd_rn(*dst, __fmul_rn(scales[i], y[i * cols + j]));
    }
}

// RoPE in the Hugging Face rotate_half layout: in each head of head_dim values, the first 2*half
// rotate (all of them unless partial), element i pairing with element i + half. Row r uses table
// row index[r].
extern "C" __global__ void rope_f32(float* x, const float* cos_t, const float* sin_t,
                                    const unsigned int* index, unsigned int cols,
                                    unsigned int half, unsigned int head_dim) {
    float* r = x + (u64)blockIdx.x * cols;
    const float* c = cos_t + (u64)index[blockIdx.x] * half;
    const float* s = sin_t + (u64)index[blockIdx.x] * half;
    unsigned int pairs = cols / head_dim * half;
    for (unsigned int p = threadIdx.x; p < pairs; p += blockDim.x) {
        unsigned int head = p / half, i = p % half;
        float* a = r + head * head_dim;
        float x1 = a[i], x2 = a[i + half];
        a[i] = x1 * c[i] - x2 * s[i];
        a[i + half] = x2 * c[i] + x1 * s[i];
    }
}

// ---- Attention ----------------------------------------------------------------------------------
//
// Causal grouped-query attention, FlashAttention-style: a block takes ATT_BQ query rows of one
// (sequence, head); key/value tiles of `bk` rows are staged in shared memory, and each warp keeps
// the online-softmax state (running max, sum, output) of its rows in registers. No score matrix is
// ever stored. Query i of a sequence sits at position plen + i and sees combined key positions
// [lo, plen + i], where lo = plen + i + 1 - window with a window, else 0; positions below plen are
// the shared prefix (pk/pv), the others the sequence's own keys.

#define ATT_BQ 16
#define ATT_WARPS 4
#define ATT_ROWS (ATT_BQ / ATT_WARPS)
#define ATT_MAXD 8  // head_dim / 32 values per lane at most: head_dim <= 256

extern "C" __global__ void attention_f32(
    const float* q, const float* k, const float* v, const float* pk, const float* pv,
    unsigned int plen, const unsigned int* seq_starts, const unsigned int* seq_lens, float* out,
    unsigned int heads, unsigned int kv_heads, unsigned int hd, float scale, unsigned int window,
    float softcap, unsigned int bk) {
    extern __shared__ float smem[];
    float* ks = smem;
    float* vs = smem + bk * hd;
    const unsigned int s = blockIdx.z, h = blockIdx.y;
    const unsigned int len = seq_lens[s], start = seq_starts[s];
    const unsigned int i0 = blockIdx.x * ATT_BQ;
    if (i0 >= len) return;
    const unsigned int i1 = min(i0 + ATT_BQ, len);
    const unsigned int kvh = h / (heads / kv_heads);
    const u64 qs = (u64)heads * hd, kvs = (u64)kv_heads * hd;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    float qr[ATT_ROWS][ATT_MAXD], o[ATT_ROWS][ATT_MAXD], m[ATT_ROWS], l[ATT_ROWS];
#pragma unroll
    for (int r = 0; r < ATT_ROWS; r++) {
        unsigned int i = i0 + warp * ATT_ROWS + r;
        m[r] = -INF_F;
        l[r] = 0.0f;
#pragma unroll
        for (int jd = 0; jd < ATT_MAXD; jd++) {
            unsigned int d = lane + 32 * jd;
            qr[r][jd] = (i < i1 && d < hd) ? q[(start + i) * qs + (u64)h * hd + d] : 0.0f;
            o[r][jd] = 0.0f;
        }
    }
    const unsigned int first = plen + i0 + 1;
    const unsigned int klo = (window != 0 && first > window) ? first - window : 0;
    const unsigned int khi = plen + i1;
    for (unsigned int t0 = klo; t0 < khi; t0 += bk) {
        const unsigned int nt = min(bk, khi - t0);
        __syncthreads();
        for (unsigned int e = threadIdx.x; e < nt * hd; e += blockDim.x) {
            unsigned int jj = e / hd, d = e % hd, j = t0 + jj;
            u64 off;
            const float *kb, *vb;
            if (j < plen) {
                off = (u64)j * kvs;
                kb = pk;
                vb = pv;
            } else {
                off = (u64)(start + j - plen) * kvs;
                kb = k;
                vb = v;
            }
            ks[e] = kb[off + (u64)kvh * hd + d];
            vs[e] = vb[off + (u64)kvh * hd + d];
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < ATT_ROWS; r++) {
            unsigned int i = i0 + warp * ATT_ROWS + r;
            if (i >= i1) continue;
            unsigned int pos = plen + i;
            unsigned int lo = (window != 0 && pos + 1 > window) ? pos + 1 - window : 0;
            for (unsigned int jj = 0; jj < nt; jj++) {
                unsigned int j = t0 + jj;
                if (j < lo || j > pos) continue;
                float part = 0.0f;
#pragma unroll
                for (int jd = 0; jd < ATT_MAXD; jd++) {
                    unsigned int d = lane + 32 * jd;
                    if (d < hd) part += qr[r][jd] * ks[jj * hd + d];
                }
                float sc = warp_sum(part) * scale;
                if (softcap > 0.0f) sc = softcap * tanhf(sc / softcap);
                float mn = fmaxf(m[r], sc);
                float corr = expf(m[r] - mn);
                float p = expf(sc - mn);
                l[r] = l[r] * corr + p;
#pragma unroll
                for (int jd = 0; jd < ATT_MAXD; jd++) {
                    unsigned int d = lane + 32 * jd;
                    if (d < hd) o[r][jd] = o[r][jd] * corr + p * vs[jj * hd + d];
                }
                m[r] = mn;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ATT_ROWS; r++) {
        unsigned int i = i0 + warp * ATT_ROWS + r;
        if (i >= i1) continue;
        float inv = 1.0f / l[r];
#pragma unroll
        for (int jd = 0; jd < ATT_MAXD; jd++) {
            unsigned int d = lane + 32 * jd;
            if (d < hd) out[(start + i) * qs + (u64)h * hd + d] = o[r][jd] * inv;
        }
    }
}

// ---- Divergences (finercut-metrics' per-row formulas, in double) ----------------------------------
//
// One block per row of pruned logits; the dense model's row, its log-sum-exp and its norm are
// given. The element formulas are those of finercut-metrics (dense.rs), term for term:
//   js:           ½ Σ big·[(1+e)(ln2 − ln(1+e)) − t·e], clamped to [0, ln 2]
//   js-reference: ½ Σ ½·big·(1+e)·(2(ln(1+e) − ln2) + t) / V, clamped below at 0
//   kl:           Σ p·((a − b) + lse_q − lse_d), clamped below at 0
//   angular:      acos(clamp(cos, 0, 1)), 0 cosine for a zero vector
//   euclidean:    Σ (a − b)²
//   ppl:          lse_q − b[target] (0 without a target)
// with lp = a − lse_d, lq = b − lse_q, t = |lq − lp|, e = exp(−t), big = exp(max(lp, lq)).

#define DIV_JS 0
#define DIV_JS_REFERENCE 1
#define DIV_KL 2
#define DIV_ANGULAR 3
#define DIV_EUCLIDEAN 4
#define DIV_PPL 5

__device__ double row_lse(const float* r, unsigned int vocab) {
    float m = -INF_F;
    int bad = 0;
    for (unsigned int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float x = r[j];
        if (isnan(x) || x == INF_F) bad = 1;
        m = fmaxf(m, x);
    }
    m = block_max(m);
    bad = __syncthreads_or(bad);
    if (bad || !isfinite(m)) return nan("");
    double md = (double)m, s = 0.0;
    for (unsigned int j = threadIdx.x; j < vocab; j += blockDim.x) s += exp((double)r[j] - md);
    s = block_sum_d(s);
    return md + log(s);
}

__device__ __forceinline__ double js_elem(double lp, double lq) {
    double t = fabs(lq - lp), e = exp(-t), l1p = log1p(e), big = exp(lq > lp ? lq : lp);
    const double ln2 = 0.69314718055994530942;
    return big * ((1.0 + e) * (ln2 - l1p) - (e == 0.0 ? 0.0 : t * e));
}

__device__ __forceinline__ double js_reference_elem(double lp, double lq) {
    double t = fabs(lq - lp), e = exp(-t), l1p = log1p(e), big = exp(lq > lp ? lq : lp);
    const double ln2 = 0.69314718055994530942;
    return 0.5 * big * (1.0 + e) * (2.0 * (l1p - ln2) + t);
}

__device__ __forceinline__ double clamp0(double x) { return x < 0.0 ? 0.0 : x; }

// out[row] = the metric's value of pruned row `row` against dense row `dense_row0 + row`.
extern "C" __global__ void divergence_rows(const float* dense, const double* dense_lse,
                                           const double* dense_norm, const float* pruned,
                                           const int* targets, double* out, unsigned int vocab,
                                           unsigned int dense_row0, int metric) {
    const unsigned int row = blockIdx.x, drow = dense_row0 + row;
    const float* b = pruned + (u64)row * vocab;
    const float* a = dense + (u64)drow * vocab;
    const double ln2 = 0.69314718055994530942;
    double value = 0.0;
    if (metric == DIV_EUCLIDEAN) {
        double acc = 0.0;
        for (unsigned int j = threadIdx.x; j < vocab; j += blockDim.x) {
            double d = (double)a[j] - (double)b[j];
            acc += d * d;
        }
        value = block_sum_d(acc);
    } else if (metric == DIV_ANGULAR) {
        double dot = 0.0, sq = 0.0;
        for (unsigned int j = threadIdx.x; j < vocab; j += blockDim.x) {
            double x = (double)a[j], y = (double)b[j];
            dot += x * y;
            sq += y * y;
        }
        dot = block_sum_d(dot);
        sq = block_sum_d(sq);
        double denom = dense_norm[drow] * sqrt(sq);
        double c = denom > 0.0 ? dot / denom : (isnan(denom) ? nan("") : 0.0);
        c = c < 0.0 ? 0.0 : (c > 1.0 ? 1.0 : c);
        value = acos(c);
    } else {
        double lse_q = row_lse(b, vocab);
        double lse_d = dense_lse[drow];
        if (metric == DIV_PPL) {
            int t = targets[drow];
            // Clamped at zero like the host's, so every row value is a valid lower-bound term.
            value = t < 0 ? 0.0 : clamp0(lse_q - (double)b[t]);
        } else {
            double acc = 0.0;
            double shift = lse_q - lse_d;
            for (unsigned int j = threadIdx.x; j < vocab; j += blockDim.x) {
                double x = (double)a[j], y = (double)b[j];
                if (metric == DIV_JS) acc += js_elem(x - lse_d, y - lse_q);
                else if (metric == DIV_JS_REFERENCE) acc += js_reference_elem(x - lse_d, y - lse_q);
                else acc += exp(x - lse_d) * ((x - y) + shift);
            }
            acc = block_sum_d(acc);
            if (metric == DIV_JS) {
                double vv = clamp0(0.5 * acc);
                value = vv > ln2 ? ln2 : vv;
            } else if (metric == DIV_JS_REFERENCE) {
                value = clamp0(0.5 * acc) / (double)vocab;
            } else {
                value = clamp0(acc);
            }
        }
    }
    if (threadIdx.x == 0) out[row] = value;
}
