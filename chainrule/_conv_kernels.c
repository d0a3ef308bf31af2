/* Convolution's copies in C: im2col (the windows of the input as columns) and its adjoint col2im,
 * each one pass, with the zero padding done on the fly (no padded copy of the input, no cropped
 * view of the gradient). Registered in _kernels.c's method table; chainrule/ops/conv.py holds the
 * NumPy reference they are tested against and runs wherever they decline.
 *
 * Why C: NumPy's im2col is a strided 6-D view copied by ascontiguousarray, whose inner loop runs
 * over kw or Wo elements at a time (1-3 ms of a 15 ms LeNet-5 step); col2im in NumPy is kh·kw
 * strided adds over a padded image. Here each is a sweep of plain row copies or row sums.
 *
 * The arithmetic is exactly the reference's: im2col copies, and col2im adds each element's terms
 * in the same order (window position by window position, from zero), so the two agree bit for bit
 * (built without FMA contraction or -ffast-math, as all of _kernels). Each returns False, touching
 * nothing, when the arrays are not C-contiguous, of one float type, of the sizes the shapes give.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* NOTE: no AVX2 clones here, unlike _kernels.c: rows are short (8-28 elements in the benchmarks)
 * and AVX2 versions measured no faster. What costs is the work per row, so each row's common case
 * (all inside, stride 1) is a loop of its own, and the zero-filling loops are guarded: GCC turns
 * them into memset calls, dearer than the copy itself for a row of 8. col2im reads kh·kw columns at
 * once, N·Ho·Wo elements apart, and waited on memory: it prefetches each row of the sample after next
 * (the wide network of benchmarks/bench_conv.py, second layer: 3.1 -> 2.7 ms). The same in im2col,
 * whose input is mostly in cache, measured slower. */

/* The geometry shared by both kernels: x (N, C, H, W) and cols (C, kh, kw, N, Ho, Wo); input row
 * h = oh·sh − pt + i·dh and column w = ow·sw − pl + j·dw, outside [0, H) × [0, W) is padding. */
typedef struct {
    Py_ssize_t N, C, H, W, kh, kw, Ho, Wo, pt, pl, sh, sw, dh, dw;
} Geometry;

/* The outputs [lo, hi) along a row whose input column ow·sw + shift lies inside [0, W). */
static void inside(const Geometry *s, Py_ssize_t shift, Py_ssize_t *lo, Py_ssize_t *hi) {
    Py_ssize_t first = shift >= 0 ? 0 : (-shift + s->sw - 1) / s->sw;
    Py_ssize_t last = s->W - 1 - shift >= 0 ? (s->W - 1 - shift) / s->sw + 1 : 0;
    if (last > s->Wo) last = s->Wo;
    if (first > last) first = last;
    *lo = first;
    *hi = last;
}

/* The outputs [top, bottom) down a column whose input row oh·sh + first lies inside [0, H). */
static void rows(const Geometry *s, Py_ssize_t first, Py_ssize_t *top, Py_ssize_t *bottom) {
    Py_ssize_t start = first >= 0 ? 0 : (-first + s->sh - 1) / s->sh;
    Py_ssize_t stop = s->H - 1 - first >= 0 ? (s->H - 1 - first) / s->sh + 1 : 0;
    if (stop > s->Ho) stop = s->Ho;
    if (start > stop) start = stop;
    *top = start;
    *bottom = stop;
}

#define IM2COL_BODY(T)                                                                            \
    const Py_ssize_t N = s.N, C = s.C, H = s.H, W = s.W, kh = s.kh, kw = s.kw, Ho = s.Ho;         \
    const Py_ssize_t Wo = s.Wo, sh = s.sh, sw = s.sw;                                             \
    for (Py_ssize_t c = 0; c < C; c++)                                                            \
        for (Py_ssize_t i = 0; i < kh; i++)                                                       \
            for (Py_ssize_t j = 0; j < kw; j++) {                                                 \
                Py_ssize_t shift = j * s.dw - s.pl, first = i * s.dh - s.pt, lo, hi, top, bottom; \
                inside(&s, shift, &lo, &hi);                                                      \
                rows(&s, first, &top, &bottom);                                                   \
                T *column = cols + ((c * kh + i) * kw + j) * N * Ho * Wo;                         \
                for (Py_ssize_t n = 0; n < N; n++, column += Ho * Wo) {                           \
                    const T *plane = x + (n * C + c) * H * W;                                     \
                    if (top > 0)                                                                  \
                        for (Py_ssize_t k = 0; k < top * Wo; k++) column[k] = 0;                  \
                    for (Py_ssize_t oh = top; oh < bottom; oh++) {                                \
                        T *row = column + oh * Wo;                                                \
                        const T *line = plane + (first + oh * sh) * W;                            \
                        if (sw == 1 && lo == 0 && hi == Wo) {                                     \
                            for (Py_ssize_t ow = 0; ow < Wo; ow++) row[ow] = line[ow + shift];    \
                            continue;                                                             \
                        }                                                                         \
                        if (lo > 0)                                                               \
                            for (Py_ssize_t ow = 0; ow < lo; ow++) row[ow] = 0;                   \
                        for (Py_ssize_t ow = lo; ow < hi; ow++) row[ow] = line[ow * sw + shift];  \
                        if (hi < Wo)                                                              \
                            for (Py_ssize_t ow = hi; ow < Wo; ow++) row[ow] = 0;                  \
                    }                                                                             \
                    if (bottom < Ho)                                                              \
                        for (Py_ssize_t k = bottom * Wo; k < Ho * Wo; k++) column[k] = 0;         \
                }                                                                                 \
            }

static void im2col_float(const float *restrict x, float *restrict cols, Geometry s) {
    IM2COL_BODY(float)
}

static void im2col_double(const double *restrict x, double *restrict cols, Geometry s) {
    IM2COL_BODY(double)
}

/* gx[n, c, h, w] = Σ over (i, j) in scan order of cols[c, i, j, n, oh, ow] reading (h, w). */
#define COL2IM_BODY(T)                                                                            \
    const Py_ssize_t N = s.N, C = s.C, H = s.H, W = s.W, kh = s.kh, kw = s.kw, Ho = s.Ho;         \
    const Py_ssize_t Wo = s.Wo, sh = s.sh, sw = s.sw;                                             \
    for (Py_ssize_t n = 0; n < N; n++)                                                            \
        for (Py_ssize_t c = 0; c < C; c++) {                                                      \
            T *plane = gx + (n * C + c) * H * W;                                                  \
            for (Py_ssize_t k = 0; k < H * W; k++) plane[k] = 0;                                  \
            for (Py_ssize_t i = 0; i < kh; i++)                                                   \
                for (Py_ssize_t j = 0; j < kw; j++) {                                             \
                    Py_ssize_t shift = j * s.dw - s.pl, first = i * s.dh - s.pt, lo, hi, top,     \
                               bottom;                                                            \
                    inside(&s, shift, &lo, &hi);                                                  \
                    rows(&s, first, &top, &bottom);                                               \
                    const T *column = cols + (((c * kh + i) * kw + j) * N + n) * Ho * Wo;         \
                    for (Py_ssize_t oh = top; oh < bottom; oh++) {                                \
                        T *line = plane + (first + oh * sh) * W;                                  \
                        const T *source = column + oh * Wo;                                       \
                        __builtin_prefetch(source + 2 * Ho * Wo);                                 \
                        if (sw == 1 && lo == 0 && hi == Wo)                                       \
                            for (Py_ssize_t ow = 0; ow < Wo; ow++) line[ow + shift] += source[ow]; \
                        else                                                                      \
                            for (Py_ssize_t ow = lo; ow < hi; ow++)                               \
                                line[ow * sw + shift] += source[ow];                              \
                    }                                                                             \
                }                                                                                 \
        }

static void col2im_float(const float *restrict cols, float *restrict gx, Geometry s) {
    COL2IM_BODY(float)
}

static void col2im_double(const double *restrict cols, double *restrict gx, Geometry s) {
    COL2IM_BODY(double)
}

/* Takes arrays of given kinds and sizes, none sharing memory; the float type or 0 (defined in
 * _kernels.c, which describes it). */
char chainrule_take_arrays(Py_buffer *views, PyObject *const *objects, const char *kinds,
                           const char *access, const Py_ssize_t *counts, int n);

/* Parse (source, target, N, C, H, W, kh, kw, Ho, Wo, pt, pl, sh, sw, dh, dw), take both buffers
 * (source read-only, target written) and run `kernel`: 1 when it ran, 0 when the arrays do not
 * fit, -1 with an exception set when the arguments are not those. `image_first` says whether the
 * source is the image (im2col) or the columns (col2im). */
typedef void (*Kernel)(const void *, void *, Geometry);

static int run(PyObject *args, int image_first, Kernel for_float, Kernel for_double) {
    PyObject *source_object, *target_object;
    Geometry s;
    if (!PyArg_ParseTuple(args, "OOnnnnnnnnnnnnnn", &source_object, &target_object, &s.N, &s.C,
                          &s.H, &s.W, &s.kh, &s.kw, &s.Ho, &s.Wo, &s.pt, &s.pl, &s.sh, &s.sw,
                          &s.dh, &s.dw))
        return -1;
    if (s.N < 1 || s.C < 1 || s.H < 1 || s.W < 1 || s.kh < 1 || s.kw < 1 || s.Ho < 1 ||
        s.Wo < 1 || s.pt < 0 || s.pl < 0 || s.sh < 1 || s.sw < 1 || s.dh < 1 || s.dw < 1)
        return 0;
    Py_ssize_t image = s.N * s.C * s.H * s.W, columns = s.C * s.kh * s.kw * s.N * s.Ho * s.Wo;
    PyObject *objects[2] = {source_object, target_object};
    Py_buffer views[2];
    Py_ssize_t counts[2] = {image_first ? image : columns, image_first ? columns : image};
    char kind = chainrule_take_arrays(views, objects, "**", "rw", counts, 2);
    if (!kind) return 0;
    Py_BEGIN_ALLOW_THREADS
    (kind == 'f' ? for_float : for_double)(views[0].buf, views[1].buf, s);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&views[0]);
    PyBuffer_Release(&views[1]);
    return 1;
}

static void im2col_f(const void *x, void *cols, Geometry s) { im2col_float(x, cols, s); }
static void im2col_d(const void *x, void *cols, Geometry s) { im2col_double(x, cols, s); }
static void col2im_f(const void *cols, void *gx, Geometry s) { col2im_float(cols, gx, s); }
static void col2im_d(const void *cols, void *gx, Geometry s) { col2im_double(cols, gx, s); }

/* im2col(x, cols, N, C, H, W, kh, kw, Ho, Wo, pt, pl, sh, sw, dh, dw) -> bool: fills cols (C, kh,
 * kw, N, Ho, Wo) from x (N, C, H, W), zeros where a window reaches into the padding. */
PyObject *chainrule_im2col(PyObject *self, PyObject *args) {
    int ran = run(args, 1, im2col_f, im2col_d);
    return ran < 0 ? NULL : PyBool_FromLong(ran);
}

/* col2im(cols, gx, N, C, H, W, kh, kw, Ho, Wo, pt, pl, sh, sw, dh, dw) -> bool: gx (N, C, H, W)
 * = the adjoint of im2col applied to cols; what fell in the padding is dropped. */
PyObject *chainrule_col2im(PyObject *self, PyObject *args) {
    int ran = run(args, 0, col2im_f, col2im_d);
    return ran < 0 ? NULL : PyBool_FromLong(ran);
}
