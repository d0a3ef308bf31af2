/* Max pooling over 2×2 windows with stride 2 and no padding, the pooling of most CNNs, and its
 * gradient. Registered in _kernels.c's method table beside the general max_pool2d, which takes
 * every other geometry; chainrule/ops/conv.py holds the NumPy reference and runs wherever these
 * decline.
 *
 * Why apart from the general kernel: the window tap of each maximum (0 top left, 1 top right,
 * 2 bottom left, 3 bottom right: i·2 + j, the NumPy reference's `position`) fits a byte, where the
 * general kernel writes an int64 position; and the backward writes every element of gx once (the
 * gradient or zero) where the general one zeroes gx and then scatters. On the first pooling of the
 * wide network of benchmarks/bench_conv.py (6.4 MB in) that is 2.8 MB less index written and read
 * and 6.4 MB less zeroing. The float kernels run 8 windows a vector (AVX2, chosen at run time);
 * the double kernels and CPUs without AVX2 take a branch-free scalar loop.
 *
 * The same selections as the reference, so the same bits: each window's taps are taken in scan
 * order, a tap replacing the maximum so far where it is larger or NaN (so the first maximum wins,
 * and a NaN over any number); the gradient is 0 + g at the tap (−0 becomes +0, as adding into the
 * reference's zeros does) and 0 elsewhere.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#endif

/* Takes arrays of given kinds and sizes, none sharing memory; the float type or 0 (defined in
 * _kernels.c, which describes it). */
char chainrule_take_arrays(Py_buffer *views, PyObject *const *objects, const char *kinds,
                           const char *access, const Py_ssize_t *counts, int n);

/* ---- branch-free scalar kernels (doubles; floats without AVX2) -------------------------------- */

/* `v` where `take`, else `best`, through the bits: GCC compiles a ?: on floats to a branch here,
 * which mispredicts on every other window of random data (3x slower). */
#define PICK(T, U, take, v, best)                                                                 \
    {                                                                                             \
        U bits_v, bits_best, mask = (U)0 - (U)(take);                                             \
        memcpy(&bits_v, &(v), sizeof(T));                                                         \
        memcpy(&bits_best, &(best), sizeof(T));                                                   \
        bits_best = (bits_v & mask) | (bits_best & ~mask);                                        \
        memcpy(&(best), &bits_best, sizeof(T));                                                   \
    }
#define TAKE(T, U, v, tap)                                                                        \
    {                                                                                             \
        T value = (v);                                                                            \
        int take = (value > best) | (value != value);                                             \
        PICK(T, U, take, value, best)                                                             \
        where = take ? (tap) : where;                                                             \
    }
#define POOL_SCALAR(T, U)                                                                         \
    for (Py_ssize_t r = 0; r < planes * Ho; r++) { /* output row r = p·Ho + oh */                 \
        const T *top = x + ((r / Ho) * H + 2 * (r % Ho)) * W, *bottom = top + W;                  \
        for (Py_ssize_t ow = 0; ow < Wo; ow++) {                                                  \
            T best = -INFINITY;                                                                   \
            int where = 0;                                                                        \
            TAKE(T, U, top[2 * ow], 0)                                                            \
            TAKE(T, U, top[2 * ow + 1], 1)                                                        \
            TAKE(T, U, bottom[2 * ow], 2)                                                         \
            TAKE(T, U, bottom[2 * ow + 1], 3)                                                     \
            out[r * Wo + ow] = best;                                                              \
            taps[r * Wo + ow] = (uint8_t)where;                                                   \
        }                                                                                         \
    }

static void pool_float(const float *restrict x, float *restrict out, uint8_t *restrict taps,
                       Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                       Py_ssize_t Wo) {
    POOL_SCALAR(float, uint32_t)
}

static void pool_double(const double *restrict x, double *restrict out, uint8_t *restrict taps,
                        Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                        Py_ssize_t Wo) {
    POOL_SCALAR(double, uint64_t)
}

/* gx of one output row's two input rows; the column no window covers (odd W) zero. */
#define UNPOOL_ROW_SCALAR(T, U)                                                                   \
    for (Py_ssize_t ow = 0; ow < Wo; ow++) {                                                      \
        T v = (T)0 + gp[ow], zero = 0, a = zero, b = zero, c = zero, d = zero;                    \
        PICK(T, U, t[ow] == 0, v, a)                                                              \
        PICK(T, U, t[ow] == 1, v, b)                                                              \
        PICK(T, U, t[ow] == 2, v, c)                                                              \
        PICK(T, U, t[ow] == 3, v, d)                                                              \
        top[2 * ow] = a;                                                                          \
        top[2 * ow + 1] = b;                                                                      \
        bottom[2 * ow] = c;                                                                       \
        bottom[2 * ow + 1] = d;                                                                   \
    }
#define UNPOOL(T, ROW)                                                                            \
    for (Py_ssize_t p = 0; p < planes; p++) {                                                     \
        for (Py_ssize_t oh = 0; oh < Ho; oh++) {                                                  \
            T *top = gx + (p * H + 2 * oh) * W, *bottom = top + W;                                \
            const T *gp = g + (p * Ho + oh) * Wo;                                                 \
            const uint8_t *t = taps + (p * Ho + oh) * Wo;                                         \
            ROW                                                                                   \
            if (W & 1) top[W - 1] = bottom[W - 1] = 0;                                            \
        }                                                                                         \
        if (H & 1) memset(gx + (p * H + H - 1) * W, 0, (size_t)W * sizeof(T));                    \
    }

static void unpool_float(const float *restrict g, const uint8_t *restrict taps,
                         float *restrict gx, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t Ho, Py_ssize_t Wo) {
    UNPOOL(float, UNPOOL_ROW_SCALAR(float, uint32_t))
}

static void unpool_double(const double *restrict g, const uint8_t *restrict taps,
                          double *restrict gx, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t Ho, Py_ssize_t Wo) {
    UNPOOL(double, UNPOOL_ROW_SCALAR(double, uint64_t))
}

/* ---- AVX2 float kernels: 8 windows a vector ----------------------------------------------------- */
#ifdef HAVE_AVX2_PATH
/* NOTE: a row's last few windows (all 7 of the wide network's second pooling) are done 8 at a time
 * all the same, reading and writing past the row's end, where the array goes on: what is read
 * there is thrown away, and what is written lands in later rows (or in a row or column the
 * backward zeroes afterwards), which are written over when their turn comes, the rows going in
 * order. Only where the array ends too soon do they go through small buffers. (AVX2's masked
 * stores would do it in place, but they are microcoded on AMD Zen, the benchmarks' machine: 2x
 * slower in all.) */

/* How many output rows, from the first, can be done 8 windows at a time to their end: those
 * whose reads and writes of a whole last 8 (16 floats from the start of both input rows of its
 * last 8 windows, 8 outputs and 8 taps) stay inside the arrays. */
static Py_ssize_t rows_with_room(Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                                 Py_ssize_t Wo) {
    Py_ssize_t last = (Wo - 1) / 8 * 8, rows = planes * Ho;
    while (rows > 0) {
        Py_ssize_t r = rows - 1;
        Py_ssize_t bottom = ((r / Ho) * H + 2 * (r % Ho) + 1) * W + 2 * last;
        if (bottom + 16 <= planes * H * W && r * Wo + last + 8 <= planes * Ho * Wo) break;
        rows--;
    }
    return rows;
}

/* The 8 windows whose top-left corners are top[0], top[2], ..., top[14]. */
__attribute__((target("avx2"))) static inline void pool8(const float *top, const float *bottom,
                                                         float *out, uint8_t *taps) {
    const __m256i split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256 t0 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(top), split); /* e0..e3 | o0..o3 */
    __m256 t1 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(top + 8), split);
    __m256 b0 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(bottom), split);
    __m256 b1 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(bottom + 8), split);
    __m256 v[4] = {_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31),
                   _mm256_permute2f128_ps(b0, b1, 0x20), _mm256_permute2f128_ps(b0, b1, 0x31)};
    __m256 best = _mm256_set1_ps(-INFINITY);
    __m256i where = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        __m256 take = _mm256_or_ps(_mm256_cmp_ps(v[k], best, _CMP_GT_OQ),
                                   _mm256_cmp_ps(v[k], v[k], _CMP_UNORD_Q));
        best = _mm256_blendv_ps(best, v[k], take);
        where = _mm256_blendv_epi8(where, _mm256_set1_epi32(k), _mm256_castps_si256(take));
    }
    _mm256_storeu_ps(out, best);
    __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(where),
                                     _mm256_extracti128_si256(where, 1));
    _mm_storel_epi64((__m128i *)taps, _mm_packus_epi16(words, words));
}

__attribute__((target("avx2"))) static void pool_float_avx2(
    const float *restrict x, float *restrict out, uint8_t *restrict taps, Py_ssize_t planes,
    Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo) {
    Py_ssize_t safe_rows = rows_with_room(planes, H, W, Ho, Wo);
    for (Py_ssize_t r = 0; r < planes * Ho; r++) {
        const float *top = x + ((r / Ho) * H + 2 * (r % Ho)) * W, *bottom = top + W;
        float *o = out + r * Wo;
        uint8_t *t = taps + r * Wo;
        Py_ssize_t ow = 0;
        for (; ow < Wo && r < safe_rows; ow += 8)
            pool8(top + 2 * ow, bottom + 2 * ow, o + ow, t + ow);
        for (; ow + 8 <= Wo; ow += 8) pool8(top + 2 * ow, bottom + 2 * ow, o + ow, t + ow);
        if (ow < Wo) {
            size_t n = (size_t)(Wo - ow);
            float top_rest[16] = {0}, bottom_rest[16] = {0}, o_rest[8];
            uint8_t t_rest[8];
            memcpy(top_rest, top + 2 * ow, 2 * n * sizeof(float));
            memcpy(bottom_rest, bottom + 2 * ow, 2 * n * sizeof(float));
            pool8(top_rest, bottom_rest, o_rest, t_rest);
            memcpy(o + ow, o_rest, n * sizeof(float));
            memcpy(t + ow, t_rest, n);
        }
    }
}

/* The gradient of 8 windows: g[k] at tap taps[k] of window k, into top[0..16) and bottom[0..16). */
__attribute__((target("avx2"))) static inline void unpool8(const float *g, const uint8_t *taps,
                                                           float *top, float *bottom) {
    __m256i tap = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)taps));
    __m256 v = _mm256_add_ps(_mm256_setzero_ps(), _mm256_loadu_ps(g)), at[4];
    for (int k = 0; k < 4; k++)
        at[k] = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(tap, _mm256_set1_epi32(k))));
    for (int row = 0; row < 2; row++) { /* a0 b0 a1 b1 ... along each row */
        __m256 low = _mm256_unpacklo_ps(at[2 * row], at[2 * row + 1]);
        __m256 high = _mm256_unpackhi_ps(at[2 * row], at[2 * row + 1]);
        float *line = row ? bottom : top;
        _mm256_storeu_ps(line, _mm256_permute2f128_ps(low, high, 0x20));
        _mm256_storeu_ps(line + 8, _mm256_permute2f128_ps(low, high, 0x31));
    }
}

__attribute__((target("avx2"))) static void unpool_float_avx2(
    const float *restrict g, const uint8_t *restrict taps, float *restrict gx, Py_ssize_t planes,
    Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo) {
    Py_ssize_t safe_rows = rows_with_room(planes, H, W, Ho, Wo);
#define UNPOOL_ROW_AVX2                                                                           \
    Py_ssize_t ow = 0;                                                                            \
    for (; ow < Wo && p * Ho + oh < safe_rows; ow += 8)                                           \
        unpool8(gp + ow, t + ow, top + 2 * ow, bottom + 2 * ow);                                  \
    for (; ow + 8 <= Wo; ow += 8) unpool8(gp + ow, t + ow, top + 2 * ow, bottom + 2 * ow);        \
    if (ow < Wo) {                                                                                \
        size_t n = (size_t)(Wo - ow);                                                             \
        float g_rest[8] = {0}, top_rest[16], bottom_rest[16];                                     \
        uint8_t t_rest[8] = {0};                                                                  \
        memcpy(g_rest, gp + ow, n * sizeof(float));                                               \
        memcpy(t_rest, t + ow, n);                                                                \
        unpool8(g_rest, t_rest, top_rest, bottom_rest);                                           \
        memcpy(top + 2 * ow, top_rest, 2 * n * sizeof(float));                                    \
        memcpy(bottom + 2 * ow, bottom_rest, 2 * n * sizeof(float));                              \
    }
    UNPOOL(float, UNPOOL_ROW_AVX2)
#undef UNPOOL_ROW_AVX2
}

static int avx2(void) {
    static int known = -1;
    if (known < 0) known = __builtin_cpu_supports("avx2") ? 1 : 0;
    return known;
}
#endif

/* ---- the Python functions -------------------------------------------------------------------- */

/* max_pool2x2(x, out, taps, planes, H, W, Ho, Wo) -> bool: x (planes, H, W), out (planes, Ho, Wo)
 * of x's float type, taps (planes, Ho, Wo) uint8; Ho = H // 2, Wo = W // 2.
 * max_pool2x2_backward(g, taps, gx, planes, H, W, Ho, Wo) -> bool: g (planes, Ho, Wo), taps as
 * max_pool2x2 wrote them, gx (planes, H, W) of g's float type. A tap outside 0..3 sends its
 * gradient nowhere (no check needed: a tap only selects, it never addresses memory).
 * Both False, touching nothing, where the arrays do not fit; one function runs either way. */
static PyObject *run_2x2(PyObject *args, int backward) {
    PyObject *first, *second, *third;
    Py_ssize_t planes, H, W, Ho, Wo;
    if (!PyArg_ParseTuple(args, "OOOnnnnn", &first, &second, &third, &planes, &H, &W, &Ho, &Wo))
        return NULL;
    if (planes < 1 || H < 2 || W < 2 || Ho != H / 2 || Wo != W / 2) Py_RETURN_FALSE;
    /* The image (x read, or gx written), the pooled array (out written, or g read), the taps. */
    PyObject *objects[3] = {backward ? third : first, backward ? first : second,
                            backward ? second : third};
    Py_ssize_t counts[3] = {planes * H * W, planes * Ho * Wo, planes * Ho * Wo};
    Py_buffer views[3];
    char kind = chainrule_take_arrays(views, objects, "**B", backward ? "wrr" : "rww", counts, 3);
    if (!kind) Py_RETURN_FALSE;
    void *image = views[0].buf, *pooled = views[1].buf;
    uint8_t *taps = views[2].buf;
#ifdef HAVE_AVX2_PATH
    int vector = kind == 'f' && avx2();
#else
    int vector = 0;
#endif
    Py_BEGIN_ALLOW_THREADS
    if (!backward && kind == 'd')
        pool_double(image, pooled, taps, planes, H, W, Ho, Wo);
    else if (!backward && !vector)
        pool_float(image, pooled, taps, planes, H, W, Ho, Wo);
    else if (backward && kind == 'd')
        unpool_double(pooled, taps, image, planes, H, W, Ho, Wo);
    else if (backward && !vector)
        unpool_float(pooled, taps, image, planes, H, W, Ho, Wo);
#ifdef HAVE_AVX2_PATH
    else if (!backward)
        pool_float_avx2(image, pooled, taps, planes, H, W, Ho, Wo);
    else
        unpool_float_avx2(pooled, taps, image, planes, H, W, Ho, Wo);
#endif
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 3; i++) PyBuffer_Release(&views[i]);
    Py_RETURN_TRUE;
}

PyObject *chainrule_max_pool2x2(PyObject *self, PyObject *args) { return run_2x2(args, 0); }

PyObject *chainrule_max_pool2x2_backward(PyObject *self, PyObject *args) {
    return run_2x2(args, 1);
}
