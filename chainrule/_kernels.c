/* Fused kernels: Adam and SGD updates, and ReLU, in one pass over memory instead of one NumPy call
 * per term.
 *
 * Why C: an Adam step in NumPy is ~12 passes over every parameter array (each ufunc reads and writes
 * the whole array); on a 784-256-256-10 network that is 0.4 ms of a 1.6 ms step, and no arrangement
 * of NumPy calls does it in fewer. Here each element is read and written once. ReLU is here because
 * NumPy's maximum and its float-times-bool product are 3-4× slower than one plain pass.
 *
 * Each kernel does exactly the arithmetic of the NumPy code it replaces (chainrule/optim/adam.py,
 * sgd.py and chainrule/ops/activations.py), in the same order and in the array's own precision, so
 * the two agree bit for bit: built with -ffp-contract=off (no fused multiply-add) and without
 * -ffast-math. The tests hold them to that. The Python code stays the reference and the fallback: a
 * kernel returns False, touching nothing, when its arrays are not all C-contiguous float32 or all
 * float64 of one size.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

/* Wider vector units where the CPU has them (chosen once, at load time), baseline SSE2 elsewhere. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define VECTORIZE __attribute__((target_clones("avx2", "default")))
#else
#define VECTORIZE
#endif

/* NumPy's maximum: NaN wins. */
#define MAXIMUM(a, b) (((a) != (a) || (a) > (b)) ? (a) : (b))

/* ---- Adam ------------------------------------------------------------------------------------
 * g' = g + weight_decay·p                       (when weight_decay ≠ 0; AdamW decays in Python)
 * m  = m + (g' − m)·(1 − β₁)
 * v  = v·β₂ + (g'·g')·(1 − β₂)
 * v̂  = max(v̂, v) with amsgrad, else v
 * p  = p − (m / (√v̂ + eps·√c₂))·step_size       where step_size = lr·√c₂/c₁
 */
#define ADAM_BODY(T, SQRT)                                                                        \
    for (Py_ssize_t i = 0; i < n; i++) {                                                          \
        T g = grad[i];                                                                            \
        if (decay) g = p[i] * weight_decay + g;                                                   \
        T mi = m[i] + (g - m[i]) * one_minus_beta1;                                               \
        T vi = v[i] * beta2 + (g * g) * one_minus_beta2;                                          \
        m[i] = mi;                                                                                \
        v[i] = vi;                                                                                \
        if (vmax) {                                                                               \
            vi = MAXIMUM(vmax[i], vi);                                                            \
            vmax[i] = vi;                                                                         \
        }                                                                                         \
        p[i] -= (mi / (SQRT(vi) + eps)) * step_size;                                              \
    }

VECTORIZE static void adam_float(Py_ssize_t n, float *restrict p, const float *restrict grad,
                                 float *restrict m, float *restrict v, float *restrict vmax,
                                 int decay, float weight_decay, float one_minus_beta1, float beta2,
                                 float one_minus_beta2, float eps, float step_size) {
    ADAM_BODY(float, sqrtf)
}

VECTORIZE static void adam_double(Py_ssize_t n, double *restrict p, const double *restrict grad,
                                  double *restrict m, double *restrict v, double *restrict vmax,
                                  int decay, double weight_decay, double one_minus_beta1,
                                  double beta2, double one_minus_beta2, double eps,
                                  double step_size) {
    ADAM_BODY(double, sqrt)
}

/* ---- SGD -------------------------------------------------------------------------------------
 * g' = g + weight_decay·p                       (when weight_decay ≠ 0)
 * b  = g'  on the first step,  else  b = b·momentum + g'·(1 − dampening)   (with momentum)
 * d  = b·momentum + g' with nesterov, else b;  d = g' without momentum
 * p  = p − d·lr
 */
#define SGD_BODY(T)                                                                               \
    for (Py_ssize_t i = 0; i < n; i++) {                                                          \
        T g = grad[i];                                                                            \
        if (decay) g = p[i] * weight_decay + g;                                                   \
        T d = g;                                                                                  \
        if (buffer) {                                                                             \
            T b;                                                                                  \
            if (first)                                                                            \
                b = g;                                                                            \
            else if (damped)                                                                      \
                b = buffer[i] * momentum + g * one_minus_dampening;                               \
            else                                                                                  \
                b = buffer[i] * momentum + g;                                                     \
            buffer[i] = b;                                                                        \
            d = nesterov ? b * momentum + g : b;                                                  \
        }                                                                                         \
        p[i] -= d * lr;                                                                           \
    }

VECTORIZE static void sgd_float(Py_ssize_t n, float *restrict p, const float *restrict grad,
                                float *restrict buffer, int decay, float weight_decay, int first,
                                int damped, float momentum, float one_minus_dampening,
                                int nesterov, float lr) {
    SGD_BODY(float)
}

VECTORIZE static void sgd_double(Py_ssize_t n, double *restrict p, const double *restrict grad,
                                 double *restrict buffer, int decay, double weight_decay,
                                 int first, int damped, double momentum,
                                 double one_minus_dampening, int nesterov, double lr) {
    SGD_BODY(double)
}

/* ---- ReLU ------------------------------------------------------------------------------------
 * forward:  a = z where z > 0 or z is NaN, else +0   (NumPy's maximum(z, 0): NaN passes, −0 → +0)
 * backward: g·1 where z > 0, else g·0                (NumPy's g * (z > 0): there Inf·0 is NaN too)
 */
#define RELU_BODY(T)                                                                              \
    for (Py_ssize_t i = 0; i < n; i++) {                                                          \
        T x = z[i];                                                                               \
        a[i] = (x <= 0) ? (T)0 : x; /* one comparison: false for NaN, so NaN passes */            \
    }
#define RELU_BACKWARD_BODY(T)                                                                     \
    for (Py_ssize_t i = 0; i < n; i++) gz[i] = g[i] * (T)(z[i] > 0); /* the mask as 1.0 or 0.0 */

VECTORIZE static void relu_float(Py_ssize_t n, const float *restrict z, float *restrict a) {
    RELU_BODY(float)
}

VECTORIZE static void relu_double(Py_ssize_t n, const double *restrict z, double *restrict a) {
    RELU_BODY(double)
}

VECTORIZE static void relu_backward_float(Py_ssize_t n, const float *restrict g,
                                          const float *restrict z, float *restrict gz) {
    RELU_BACKWARD_BODY(float)
}

VECTORIZE static void relu_backward_double(Py_ssize_t n, const double *restrict g,
                                           const double *restrict z, double *restrict gz) {
    RELU_BACKWARD_BODY(double)
}

/* ---- argument checking ---------------------------------------------------------------------- */

enum { MAX_ARRAYS = 5 };

typedef struct {
    Py_buffer views[MAX_ARRAYS];
    int count;
    char kind;        /* 'f' or 'd' */
    Py_ssize_t size;  /* elements */
} Arrays;

static void release(Arrays *arrays) {
    for (int i = 0; i < arrays->count; i++) PyBuffer_Release(&arrays->views[i]);
    arrays->count = 0;
}

/* Take `object` (None allowed where `optional`) as a C-contiguous float32/float64 array matching
 * the ones taken before. Returns its data, NULL for None, or sets *ok = 0 when it does not fit. */
static void *take(Arrays *arrays, PyObject *object, int writable, int optional, int *ok) {
    if (!*ok) return NULL;
    if (object == Py_None && optional) return NULL;
    Py_buffer *view = &arrays->views[arrays->count];
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) != 0) {
        PyErr_Clear();
        *ok = 0;
        return NULL;
    }
    arrays->count++;
    const char *format = view->format ? view->format : "B";
    if (format[0] == '=' || format[0] == '<' || format[0] == '@') format++;
    char kind = (format[0] == 'f' || format[0] == 'd') && format[1] == '\0' ? format[0] : 0;
    Py_ssize_t size = kind ? view->len / view->itemsize : -1;
    if (arrays->count == 1) {
        arrays->kind = kind;
        arrays->size = size;
    }
    if (!kind || kind != arrays->kind || size != arrays->size) {
        *ok = 0;
        return NULL;
    }
    return view->buf;
}

/* Whether the arrays share no memory: the kernels' pointers are `restrict`, and an array passed
 * twice (a gradient that is the parameter itself) goes to the NumPy code instead. */
static int disjoint(const Arrays *arrays) {
    for (int i = 0; i < arrays->count; i++)
        for (int j = i + 1; j < arrays->count; j++) {
            const char *a = arrays->views[i].buf, *b = arrays->views[j].buf;
            if (a < b + arrays->views[j].len && b < a + arrays->views[i].len) return 0;
        }
    return 1;
}

static PyObject *done(Arrays *arrays, int ok) {
    release(arrays);
    return PyBool_FromLong(ok);
}

/* adam(p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq | None, weight_decay, beta1, beta2, eps,
 *      step_size) -> bool: eps is already scaled by √c₂ (see adam.py). */
static PyObject *adam(PyObject *self, PyObject *args) {
    PyObject *objects[5];
    double weight_decay, beta1, beta2, eps, step_size;
    if (!PyArg_ParseTuple(args, "OOOOOddddd", &objects[0], &objects[1], &objects[2], &objects[3],
                          &objects[4], &weight_decay, &beta1, &beta2, &eps, &step_size))
        return NULL;
    Arrays arrays = {.count = 0};
    int ok = 1;
    void *p = take(&arrays, objects[0], 1, 0, &ok);
    void *grad = take(&arrays, objects[1], 0, 0, &ok);
    void *m = take(&arrays, objects[2], 1, 0, &ok);
    void *v = take(&arrays, objects[3], 1, 0, &ok);
    void *vmax = take(&arrays, objects[4], 1, 1, &ok);
    if (!ok || !disjoint(&arrays)) return done(&arrays, 0);
    int decay = weight_decay != 0.0;
    Py_ssize_t n = arrays.size;
    /* Constants rounded to the array's precision first, as NumPy does with a Python float. */
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        adam_float(n, p, grad, m, v, vmax, decay, (float)weight_decay, (float)(1.0 - beta1),
                   (float)beta2, (float)(1.0 - beta2), (float)eps, (float)step_size);
    else
        adam_double(n, p, grad, m, v, vmax, decay, weight_decay, 1.0 - beta1, beta2, 1.0 - beta2,
                    eps, step_size);
    Py_END_ALLOW_THREADS
    return done(&arrays, 1);
}

/* sgd(p, grad, momentum_buffer | None, first_step, weight_decay, momentum, dampening, nesterov,
 *     lr) -> bool: with a buffer, first_step fills it with the gradient instead of decaying it. */
static PyObject *sgd(PyObject *self, PyObject *args) {
    PyObject *objects[3];
    int first, nesterov;
    double weight_decay, momentum, dampening, lr;
    if (!PyArg_ParseTuple(args, "OOOpddd" "pd", &objects[0], &objects[1], &objects[2], &first,
                          &weight_decay, &momentum, &dampening, &nesterov, &lr))
        return NULL;
    Arrays arrays = {.count = 0};
    int ok = 1;
    void *p = take(&arrays, objects[0], 1, 0, &ok);
    void *grad = take(&arrays, objects[1], 0, 0, &ok);
    void *buffer = take(&arrays, objects[2], 1, 1, &ok);
    if (!ok || !disjoint(&arrays)) return done(&arrays, 0);
    int decay = weight_decay != 0.0, damped = dampening != 0.0;
    Py_ssize_t n = arrays.size;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        sgd_float(n, p, grad, buffer, decay, (float)weight_decay, first, damped, (float)momentum,
                  (float)(1.0 - dampening), nesterov, (float)lr);
    else
        sgd_double(n, p, grad, buffer, decay, weight_decay, first, damped, momentum,
                   1.0 - dampening, nesterov, lr);
    Py_END_ALLOW_THREADS
    return done(&arrays, 1);
}

/* relu(z, out) -> bool: out = max(z, 0). */
static PyObject *relu(PyObject *self, PyObject *args) {
    PyObject *objects[2];
    if (!PyArg_ParseTuple(args, "OO", &objects[0], &objects[1])) return NULL;
    Arrays arrays = {.count = 0};
    int ok = 1;
    void *z = take(&arrays, objects[0], 0, 0, &ok);
    void *a = take(&arrays, objects[1], 1, 0, &ok);
    if (!ok || !disjoint(&arrays)) return done(&arrays, 0);
    Py_ssize_t n = arrays.size;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        relu_float(n, z, a);
    else
        relu_double(n, z, a);
    Py_END_ALLOW_THREADS
    return done(&arrays, 1);
}

/* relu_backward(g, z, out) -> bool: out = g · (z > 0). */
static PyObject *relu_backward(PyObject *self, PyObject *args) {
    PyObject *objects[3];
    if (!PyArg_ParseTuple(args, "OOO", &objects[0], &objects[1], &objects[2])) return NULL;
    Arrays arrays = {.count = 0};
    int ok = 1;
    void *g = take(&arrays, objects[0], 0, 0, &ok);
    void *z = take(&arrays, objects[1], 0, 0, &ok);
    void *gz = take(&arrays, objects[2], 1, 0, &ok);
    if (!ok || !disjoint(&arrays)) return done(&arrays, 0);
    Py_ssize_t n = arrays.size;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        relu_backward_float(n, g, z, gz);
    else
        relu_backward_double(n, g, z, gz);
    Py_END_ALLOW_THREADS
    return done(&arrays, 1);
}

/* ---- Taking arrays of given sizes (shared with _conv_kernels.c and _pool_kernels.c) --------- */

/* A C-contiguous buffer of `count` elements of kind 'f', 'd', 'q' (int64) or 'B' (uint8), or 0
 * with `view` released (and no error set) when `object` is anything else. */
int chainrule_take_sized(Py_buffer *view, PyObject *object, int writable, char kind,
                         Py_ssize_t count) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) != 0) {
        PyErr_Clear();
        return 0;
    }
    const char *format = view->format ? view->format : "B";
    if (format[0] == '=' || format[0] == '<' || format[0] == '@') format++;
    char got = format[1] != '\0' ? 0 : format[0];
    if ((got == 'l' || got == 'q') && view->itemsize == 8) got = 'q';
    if (got != kind || view->len != count * view->itemsize) {
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

static int overlap(const Py_buffer *a, const Py_buffer *b) {
    const char *x = a->buf, *y = b->buf;
    return x < y + b->len && y < x + a->len;
}

/* Takes objects[i] as a C-contiguous buffer of counts[i] elements into views[i], of kinds[i]: 'q'
 * int64, 'B' uint8, or '*' for the float type (float32 or float64) that the first '*' array has
 * and every other '*' array shares; writable where access[i] is 'w' ('r': read). No two of them
 * may share memory. Returns the float type ('f' or 'd'), or 0 with every view released (and no
 * error set) when they do not all fit. */
char chainrule_take_arrays(Py_buffer *views, PyObject *const *objects, const char *kinds,
                           const char *access, const Py_ssize_t *counts, int n) {
    char kind = 0;
    int taken = 0;
    for (; taken < n; taken++) {
        int writable = access[taken] == 'w';
        if (kinds[taken] != '*') {
            if (!chainrule_take_sized(&views[taken], objects[taken], writable, kinds[taken],
                                      counts[taken]))
                break;
        } else if (kind) {
            if (!chainrule_take_sized(&views[taken], objects[taken], writable, kind, counts[taken]))
                break;
        } else {
            for (const char *k = "fd"; *k && !kind; k++)
                if (chainrule_take_sized(&views[taken], objects[taken], writable, *k,
                                         counts[taken]))
                    kind = *k;
            if (!kind) break;
        }
    }
    for (int i = 0; taken == n && i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (overlap(&views[i], &views[j])) taken = n + 1;
    if (taken == n) return kind ? kind : 1;
    for (int i = 0; i < (taken < n ? taken : n); i++) PyBuffer_Release(&views[i]);
    return 0;
}

/* ---- Softmax cross-entropy over integer class targets ------------------------------------------
 * One definition for the eager op (ops/losses.py, through cross_entropy below) and the replay
 * interpreter (R_CE, R_CE_BACK). Per row: top = the row's maximum (the first NaN wins, as NumPy's
 * argmax), e = exp(z − top), sums = Σ e, and the row's loss ln(sums) − (z_c − top); the forward
 * returns 0, part done, at the first target outside [0, classes). The backward writes
 * (e / sums − onehot)·upstream, the NumPy code's operations in its order. exp and log are the C
 * library's, not NumPy's: the two agree to rounding, not bit for bit. */
#define CROSS_ENTROPY(SUFFIX, T, EXP, LOG)                                                         \
    static int ce_forward_##SUFFIX(const T *z, const int64_t *target, T *e, T *sums,             \
                                   int64_t batch, int64_t classes, T *total) {                    \
        T sum_of_rows = 0;                                                                        \
        for (int64_t i = 0; i < batch; i++) {                                                     \
            const T *row = z + i * classes;                                                       \
            T top = row[0];                                                                       \
            for (int64_t j = 1; j < classes; j++)                                                 \
                if (row[j] > top || row[j] != row[j]) {                                           \
                    top = row[j];                                                                 \
                    if (top != top) break;                                                        \
                }                                                                                 \
            T sum = 0;                                                                            \
            for (int64_t j = 0; j < classes; j++) {                                               \
                e[i * classes + j] = EXP(row[j] - top);                                           \
                sum += e[i * classes + j];                                                        \
            }                                                                                     \
            int64_t c = target[i];                                                                \
            if (c < 0 || c >= classes) return 0;                                                  \
            sums[i] = sum;                                                                        \
            sum_of_rows += LOG(sum) - (row[c] - top);                                             \
        }                                                                                         \
        *total = sum_of_rows;                                                                     \
        return 1;                                                                                 \
    }                                                                                             \
    static void ce_backward_##SUFFIX(T upstream, const T *e, const T *sums,                      \
                                     const int64_t *target, T *gz, int64_t batch,                 \
                                     int64_t classes) {                                           \
        for (int64_t i = 0; i < batch; i++)                                                       \
            for (int64_t j = 0; j < classes; j++) {                                               \
                T s = e[i * classes + j] / sums[i];                                               \
                if (j == target[i]) s = s - (T)1;                                                 \
                gz[i * classes + j] = s * upstream;                                               \
            }                                                                                     \
    }

CROSS_ENTROPY(float, float, expf, logf)
CROSS_ENTROPY(double, double, exp, log)

/* cross_entropy(z, target, e, sums, batch, classes) -> the sum over rows of the loss (a float), or
 * False, having written nothing useful, when the arrays do not fit or a target is out of range
 * (the NumPy code then runs, and names the problem). */
static PyObject *cross_entropy(PyObject *self, PyObject *args) {
    PyObject *objects[4];
    Py_ssize_t batch, classes;
    if (!PyArg_ParseTuple(args, "OOOOnn", &objects[0], &objects[1], &objects[2], &objects[3],
                          &batch, &classes))
        return NULL;
    if (batch < 1 || classes < 1) Py_RETURN_FALSE;
    Py_buffer views[4]; /* z, target, e, sums */
    Py_ssize_t counts[4] = {batch * classes, batch, batch * classes, batch};
    char kind = chainrule_take_arrays(views, objects, "*q**", "rrww", counts, 4);
    if (!kind) Py_RETURN_FALSE;
    double total = 0;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    if (kind == 'f') {
        float sum;
        ok = ce_forward_float(views[0].buf, views[1].buf, views[2].buf, views[3].buf, batch,
                              classes, &sum);
        total = sum;
    } else {
        ok = ce_forward_double(views[0].buf, views[1].buf, views[2].buf, views[3].buf, batch,
                               classes, &total);
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 4; i++) PyBuffer_Release(&views[i]);
    if (!ok) Py_RETURN_FALSE;
    return PyFloat_FromDouble(total);
}

/* cross_entropy_backward(gz, target, e, sums, batch, classes, upstream) -> bool: gz = (e / sums −
 * onehot(target))·upstream, upstream rounded to the arrays' type first. */
static PyObject *cross_entropy_backward(PyObject *self, PyObject *args) {
    PyObject *objects[4];
    Py_ssize_t batch, classes;
    double upstream;
    if (!PyArg_ParseTuple(args, "OOOOnnd", &objects[0], &objects[1], &objects[2], &objects[3],
                          &batch, &classes, &upstream))
        return NULL;
    if (batch < 1 || classes < 1) Py_RETURN_FALSE;
    Py_buffer views[4]; /* gz, target, e, sums */
    Py_ssize_t counts[4] = {batch * classes, batch, batch * classes, batch};
    char kind = chainrule_take_arrays(views, objects, "*q**", "wrrr", counts, 4);
    if (!kind) Py_RETURN_FALSE;
    Py_BEGIN_ALLOW_THREADS
    if (kind == 'f')
        ce_backward_float((float)upstream, views[2].buf, views[3].buf, views[1].buf, views[0].buf,
                          batch, classes);
    else
        ce_backward_double(upstream, views[2].buf, views[3].buf, views[1].buf, views[0].buf, batch,
                           classes);
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 4; i++) PyBuffer_Release(&views[i]);
    Py_RETURN_TRUE;
}

/* ==== The replay interpreter (chainrule/compile/native.py) =====================================
 * Runs a whole recorded training step in one call: a program of int64 words, each instruction an
 * opcode and its operands (array addresses, sizes, an index into a float64 array of scalars that
 * Python refreshes before each call: learning rates are read at every replay). Built for small
 * networks, where a step is dozens of NumPy calls of ~1 µs each and little arithmetic; a larger
 * layer's matrix products go to NumPy/BLAS at a pause (R_PAUSE), the rest of the step stays here.
 *
 * Each instruction is the arithmetic of its op in chainrule/ops (the reference), agreeing with it
 * to rounding, not bit for bit: the sums of products run in another order than BLAS's. The update
 * rules call the fused kernels above, so they match sgd_update/adam_update exactly. Subnormal
 * floats are kept (no flush-to-zero): flushing would change results against NumPy; on tiny
 * networks after ~20k steps they may cost time, never correctness.
 */
enum {
    R_END = 0,
    R_LINEAR = 1,       /* x, W, b|0, z, n, in, out, Wᵀ scratch (in × out) */
    R_LINEAR_BACK = 2,  /* g, x, W, gx|0, gW|0, gb|0, n, in, out */
    R_RELU = 3,         /* z, a, count */
    R_RELU_BACK = 4,    /* g, z, gz, count */
    R_SIGMOID = 5,      /* z, a, count */
    R_SIGMOID_BACK = 6, /* g, a, gz, count */
    R_TANH = 7,         /* z, a, count */
    R_TANH_BACK = 8,    /* g, a, gz, count */
    R_ADD = 9,          /* a, b, out, count */
    R_SUB = 10,         /* a, b, out, count */
    R_MUL = 11,         /* a, b, out, count */
    R_NEG = 12,         /* a, out, count */
    R_COPY = 13,        /* a, out, count */
    R_MSE = 14,         /* p, t, diff, loss, count, mean */
    R_MSE_BACK = 15,    /* g, diff, gp|0, gt|0, count, mean */
    R_CE = 16,          /* z, target (int64), e, sums, loss, batch, classes, mean */
    R_CE_BACK = 17,     /* g, e, sums, target, gz, batch, classes, mean */
    R_SGD = 18,         /* p, grad, buffer|0, count, scalars: lr momentum dampening decay nesterov */
    R_ADAM = 19,        /* p, grad, m, v, vmax|0, step (int64), count, scalars: lr b1 b2 eps decay
                           decoupled; counts: whether to advance the step (a flat group's
                           parameters share one counter, advanced once per step) */
    R_PAUSE = 20,       /* k, then a 0 word: returns 2 + k, the caller runs its k-th NumPy action
                           (a BLAS product) and resumes at the 0 word as a program of no patches */
};

/* NumPy's logaddexp(0, x), as ops.sigmoid uses it: exact for large |x|. */
#define LOGADDEXP0(T, EXP, LOG1P, x) ((x) > 0 ? (x) + LOG1P(EXP(-(x))) : LOG1P(EXP(x)))

#define INTERPRETER(NAME, T, EXP, LOG, LOG1P, TANH, SQRT, POW, ADAM, SGD, CE_FORWARD,             \
                    CE_BACKWARD)                                                                  \
    VECTORIZE static int NAME(const int64_t *code, const double *scalars) {                                 \
        for (;;) {                                                                                \
            const int64_t *o = code + 1;                                                          \
            switch (code[0]) {                                                                    \
            case R_END:                                                                           \
                return 1;                                                                         \
            case R_LINEAR: {                                                                      \
                const T *x = (const T *)o[0], *W = (const T *)o[1], *b = (const T *)o[2];         \
                T *z = (T *)o[3], *Wt = (T *)o[7];                                                \
                int64_t n = o[4], in = o[5], out = o[6];                                          \
                /* Wᵀ first (a small copy), so the inner loop runs over independent outputs. */  \
                for (int64_t j = 0; j < out; j++)                                                 \
                    for (int64_t k = 0; k < in; k++) Wt[k * out + j] = W[j * in + k];            \
                for (int64_t i = 0; i < n; i++) {                                                 \
                    T *row = z + i * out;                                                         \
                    for (int64_t j = 0; j < out; j++) row[j] = 0;                                 \
                    for (int64_t k = 0; k < in; k++) {                                            \
                        T xik = x[i * in + k];                                                    \
                        const T *wt = Wt + k * out;                                               \
                        for (int64_t j = 0; j < out; j++) row[j] += xik * wt[j];                  \
                    }                                                                             \
                    if (b)                                                                        \
                        for (int64_t j = 0; j < out; j++) row[j] += b[j];                         \
                }                                                                                 \
                code += 9;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_LINEAR_BACK: {                                                                 \
                const T *g = (const T *)o[0], *x = (const T *)o[1], *W = (const T *)o[2];         \
                T *gx = (T *)o[3], *gW = (T *)o[4], *gb = (T *)o[5];                              \
                int64_t n = o[6], in = o[7], out = o[8];                                          \
                /* Loops ordered so the innermost runs along contiguous memory over independent   \
                 * outputs (it vectorizes), each output still summed in order. */                \
                if (gx)                                                                           \
                    for (int64_t i = 0; i < n; i++) {                                             \
                        T *row = gx + i * in;                                                     \
                        for (int64_t k = 0; k < in; k++) row[k] = 0;                              \
                        for (int64_t j = 0; j < out; j++) {                                       \
                            T gij = g[i * out + j];                                               \
                            const T *w = W + j * in;                                              \
                            for (int64_t k = 0; k < in; k++) row[k] += gij * w[k];                \
                        }                                                                         \
                    }                                                                             \
                if (gW) {                                                                         \
                    for (int64_t e = 0; e < out * in; e++) gW[e] = 0;                             \
                    for (int64_t i = 0; i < n; i++)                                               \
                        for (int64_t j = 0; j < out; j++) {                                       \
                            T gij = g[i * out + j];                                               \
                            T *row = gW + j * in;                                                 \
                            const T *xi = x + i * in;                                             \
                            for (int64_t k = 0; k < in; k++) row[k] += gij * xi[k];               \
                        }                                                                         \
                }                                                                                 \
                if (gb)                                                                           \
                    for (int64_t j = 0; j < out; j++) {                                           \
                        T sum = 0;                                                                \
                        for (int64_t i = 0; i < n; i++) sum += g[i * out + j];                    \
                        gb[j] = sum;                                                              \
                    }                                                                             \
                code += 10;                                                                       \
                break;                                                                            \
            }                                                                                     \
            case R_RELU: {                                                                        \
                const T *z = (const T *)o[0];                                                     \
                T *a = (T *)o[1];                                                                 \
                for (int64_t i = 0; i < o[2]; i++) a[i] = (z[i] <= 0) ? (T)0 : z[i];              \
                code += 4;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_RELU_BACK: {                                                                   \
                const T *g = (const T *)o[0], *z = (const T *)o[1];                               \
                T *gz = (T *)o[2];                                                                \
                for (int64_t i = 0; i < o[3]; i++) gz[i] = g[i] * (T)(z[i] > 0);                  \
                code += 5;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_SIGMOID: {                                                                     \
                const T *z = (const T *)o[0];                                                     \
                T *a = (T *)o[1];                                                                 \
                for (int64_t i = 0; i < o[2]; i++) {                                              \
                    T m = -z[i];                                                                  \
                    a[i] = EXP(-LOGADDEXP0(T, EXP, LOG1P, m));                                    \
                }                                                                                 \
                code += 4;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_SIGMOID_BACK: {                                                                \
                const T *g = (const T *)o[0], *a = (const T *)o[1];                               \
                T *gz = (T *)o[2];                                                                \
                for (int64_t i = 0; i < o[3]; i++) gz[i] = (g[i] * a[i]) * ((T)1 - a[i]);         \
                code += 5;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_TANH: {                                                                        \
                const T *z = (const T *)o[0];                                                     \
                T *a = (T *)o[1];                                                                 \
                for (int64_t i = 0; i < o[2]; i++) a[i] = TANH(z[i]);                             \
                code += 4;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_TANH_BACK: {                                                                   \
                const T *g = (const T *)o[0], *a = (const T *)o[1];                               \
                T *gz = (T *)o[2];                                                                \
                for (int64_t i = 0; i < o[3]; i++) gz[i] = g[i] * ((T)1 - a[i] * a[i]);           \
                code += 5;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_ADD:                                                                           \
            case R_SUB:                                                                           \
            case R_MUL: {                                                                         \
                const T *a = (const T *)o[0], *b = (const T *)o[1];                               \
                T *out = (T *)o[2];                                                               \
                int64_t op = code[0];                                                             \
                for (int64_t i = 0; i < o[3]; i++)                                                \
                    out[i] = op == R_ADD ? a[i] + b[i] : op == R_SUB ? a[i] - b[i] : a[i] * b[i]; \
                code += 5;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_NEG:                                                                           \
            case R_COPY: {                                                                        \
                const T *a = (const T *)o[0];                                                     \
                T *out = (T *)o[1];                                                               \
                int neg = code[0] == R_NEG;                                                       \
                for (int64_t i = 0; i < o[2]; i++) out[i] = neg ? -a[i] : a[i];                   \
                code += 4;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_MSE: {                                                                         \
                const T *p = (const T *)o[0], *t = (const T *)o[1];                               \
                T *diff = (T *)o[2], *loss = (T *)o[3];                                           \
                int64_t count = o[4];                                                             \
                T sum = 0;                                                                        \
                for (int64_t i = 0; i < count; i++) {                                             \
                    diff[i] = p[i] - t[i];                                                        \
                    sum += diff[i] * diff[i];                                                     \
                }                                                                                 \
                *loss = o[5] ? sum / (T)(count > 1 ? count : 1) : sum;                            \
                code += 7;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_MSE_BACK: {                                                                    \
                const T *g = (const T *)o[0], *diff = (const T *)o[1];                            \
                T *gp = (T *)o[2], *gt = (T *)o[3];                                               \
                int64_t count = o[4];                                                             \
                T scale = o[5] ? (T)(1.0 / (double)(count > 1 ? count : 1)) : (T)1;               \
                T s = (g[0] * scale) * (T)2;                                                      \
                for (int64_t i = 0; i < count; i++) {                                             \
                    T d = s * diff[i];                                                            \
                    if (gp) gp[i] = d;                                                            \
                    if (gt) gt[i] = -d;                                                           \
                }                                                                                 \
                code += 7;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_CE: {                                                                          \
                int64_t batch = o[5];                                                             \
                T total;                                                                          \
                if (!CE_FORWARD((const T *)o[0], (const int64_t *)o[1], (T *)o[2], (T *)o[3],     \
                                batch, o[6], &total))                                             \
                    return 0;                                                                     \
                *(T *)o[4] = o[7] ? total / (T)(batch > 1 ? batch : 1) : total;                   \
                code += 9;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_CE_BACK: {                                                                     \
                int64_t batch = o[5];                                                             \
                T scale = o[7] ? (T)(1.0 / (double)(batch > 1 ? batch : 1)) : (T)1;               \
                CE_BACKWARD(((const T *)o[0])[0] * scale, (const T *)o[1], (const T *)o[2],       \
                            (const int64_t *)o[3], (T *)o[4], batch, o[6]);                       \
                code += 9;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_SGD: {                                                                         \
                const double *k = scalars + o[4];                                                 \
                double lr = k[0], momentum = k[1], dampening = k[2], decay = k[3];                \
                SGD(o[3], (T *)o[0], (const T *)o[1], (T *)o[2], decay != 0.0, (T)decay, 0,       \
                    dampening != 0.0, (T)momentum, (T)(1.0 - dampening), k[4] != 0.0, (T)lr);     \
                code += 6;                                                                        \
                break;                                                                            \
            }                                                                                     \
            case R_ADAM: {                                                                        \
                const double *k = scalars + o[7];                                                 \
                double lr = k[0], beta1 = k[1], beta2 = k[2], eps = k[3], decay = k[4];           \
                int64_t t = o[8] ? ++*(int64_t *)o[5] : *(int64_t *)o[5], count = o[6];           \
                T *p = (T *)o[0];                                                                 \
                if (decay != 0.0 && k[5] != 0.0) {                                                \
                    T shrink = (T)(1.0 - lr * decay);                                             \
                    for (int64_t i = 0; i < count; i++) p[i] *= shrink;                           \
                }                                                                                 \
                double coupled = k[5] != 0.0 ? 0.0 : decay;                                       \
                double root_c2 = sqrt(1.0 - pow(beta2, (double)t));                               \
                double step_size = lr * root_c2 / (1.0 - pow(beta1, (double)t));                  \
                ADAM(count, p, (const T *)o[1], (T *)o[2], (T *)o[3], (T *)o[4], coupled != 0.0,  \
                     (T)coupled, (T)(1.0 - beta1), (T)beta2, (T)(1.0 - beta2), (T)(eps * root_c2), \
                     (T)step_size);                                                               \
                code += 10;                                                                       \
                break;                                                                            \
            }                                                                                     \
            case R_PAUSE:                                                                         \
                return (int)(2 + o[0]);                                                           \
            default:                                                                              \
                return -2;                                                                        \
            }                                                                                     \
        }                                                                                         \
    }

INTERPRETER(run_float, float, expf, logf, log1pf, tanhf, sqrtf, powf, adam_float, sgd_float,
            ce_forward_float, ce_backward_float)
INTERPRETER(run_double, double, exp, log, log1p, tanh, sqrt, pow, adam_double, sgd_double,
            ce_forward_double, ce_backward_double)

/* replay(code, scalars, is_double, arguments) -> int: run a program. `code` opens with a table of
 * where each argument's address goes ([count, (argument, word)...]), so the call's arrays (a tuple
 * or list, in the traced dtypes) are read in place. Returns 1 when done; 0 if it met a bad class
 * label (the caller raises the op's error); -1, having run nothing, if an argument is not
 * C-contiguous (the caller passes contiguous copies); -2 for an unknown opcode; 2 + k at the k-th
 * pause (the caller runs its action, then resumes with replay_at at the word after the pause). */
static PyObject *replay(PyObject *self, PyObject *args) {
    Py_buffer code, scalars;
    int is_double;
    PyObject *arguments;
    if (!PyArg_ParseTuple(args, "w*y*pO", &code, &scalars, &is_double, &arguments)) return NULL;
    enum { MAX_ARGUMENTS = 16 };
    Py_buffer views[MAX_ARGUMENTS];
    PyObject *sequence = PySequence_Fast(arguments, "replay: arguments must be a sequence");
    if (!sequence) {
        PyBuffer_Release(&code);
        PyBuffer_Release(&scalars);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence), taken = 0;
    PyObject **items = PySequence_Fast_ITEMS(sequence);
    int result = count <= MAX_ARGUMENTS ? 1 : -1;
    for (; result == 1 && taken < count; taken++)
        if (PyObject_GetBuffer(items[taken], &views[taken], PyBUF_C_CONTIGUOUS) != 0) {
            PyErr_Clear();
            result = -1;
            break;
        }
    int64_t *words = code.buf;
    if (result == 1) {
        int64_t patches = words[0];
        for (int64_t i = 0; i < patches; i++) {
            int64_t argument = words[1 + 2 * i], at = words[2 + 2 * i];
            if (argument >= count) result = -1;
            else words[at] = (int64_t)(intptr_t)views[argument].buf;
        }
        if (result == 1) {
            const int64_t *start = words + 1 + 2 * patches;
            Py_BEGIN_ALLOW_THREADS
            result = is_double ? run_double(start, scalars.buf) : run_float(start, scalars.buf);
            Py_END_ALLOW_THREADS
        }
    }
    for (Py_ssize_t i = 0; i < taken; i++) PyBuffer_Release(&views[i]);
    Py_DECREF(sequence);
    PyBuffer_Release(&code);
    PyBuffer_Release(&scalars);
    return PyLong_FromLong(result);
}
/* replay_at(code_address, scalars_address, is_double, expected_address, *arguments) -> int:
 * `replay` for the compiled step's fast path, where each call counts: the program and the scalars
 * are arrays the caller keeps alive and passes by address (no buffer exported for them), the
 * arguments come one by one (no sequence built). `expected` (0: no check) describes the traced
 * arguments, [count, then per argument: ndim, itemsize, format (its bytes packed in a word), shape
 * ...]; an argument count, shape or format that differs, or an argument that is not a C-contiguous
 * buffer, returns -3 having run nothing (the caller then takes its general path). Otherwise returns
 * as `replay` does. */
static int64_t packed_format(const char *format) {
    int64_t word = 0;
    for (int i = 0; format && format[i] && i < 8; i++)
        word |= (int64_t)(unsigned char)format[i] << (8 * i);
    return word;
}

static PyObject *replay_at(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    enum { MAX_ARGUMENTS = 16 };
    if (nargs < 4) {
        PyErr_SetString(PyExc_TypeError, "replay_at: code, scalars, is_double, expected, *arguments");
        return NULL;
    }
    int64_t *words = PyLong_AsVoidPtr(args[0]);
    double *scalars = PyLong_AsVoidPtr(args[1]);
    int is_double = PyObject_IsTrue(args[2]);
    const int64_t *expected = PyLong_AsVoidPtr(args[3]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t count = nargs - 4, taken = 0;
    Py_buffer views[MAX_ARGUMENTS];
    int result = count <= MAX_ARGUMENTS ? 1 : -1;
    if (expected && expected[0] != count) result = -3;
    const int64_t *at = expected ? expected + 1 : NULL;
    int flags = expected ? PyBUF_C_CONTIGUOUS | PyBUF_FORMAT : PyBUF_C_CONTIGUOUS;
    for (; result == 1 && taken < count; taken++) {
        if (PyObject_GetBuffer(args[4 + taken], &views[taken], flags) != 0) {
            PyErr_Clear();
            result = expected ? -3 : -1;
            break;
        }
        if (expected) {
            Py_buffer *view = &views[taken];
            int64_t ndim = at[0];
            int same = view->ndim == ndim && view->itemsize == at[1] &&
                       packed_format(view->format) == at[2];
            for (int64_t d = 0; same && d < ndim; d++) same = view->shape[d] == at[3 + d];
            at += 3 + ndim;
            if (!same) {
                result = -3;
                taken++;
                break;
            }
        }
    }
    if (result == 1) {
        int64_t patches = words[0];
        for (int64_t i = 0; i < patches; i++) {
            int64_t argument = words[1 + 2 * i], word = words[2 + 2 * i];
            if (argument >= count) result = -1;
            else words[word] = (int64_t)(intptr_t)views[argument].buf;
        }
        if (result == 1) {
            const int64_t *start = words + 1 + 2 * patches;
            Py_BEGIN_ALLOW_THREADS
            result = is_double ? run_double(start, scalars) : run_float(start, scalars);
            Py_END_ALLOW_THREADS
        }
    }
    for (Py_ssize_t i = 0; i < taken; i++) PyBuffer_Release(&views[i]);
    return PyLong_FromLong(result);
}

/* replay_scan(code_address, scalars_address, is_double, expected_address, steps, arguments,
 * strides, copies) -> (status, steps run): the program `steps` times in one call, over
 * consecutive batches (an epoch's batches, or one full batch over several epochs). Step k reads
 * argument i at its buffer's start + k·strides[i] bytes (a stride of 0: the same batch each step),
 * checked against `expected` (the traced shape, format and size must fit in the buffer for every
 * step). After each step, every (source address, bytes, destination) in `copies` copies `bytes`
 * from the program's buffer at `source` to the destination's byte k·bytes: what the caller keeps of
 * each step (its loss, its output). status is 1 when all steps ran, else what the interpreter said
 * at step `steps run` (0: a bad class label); -3 when the arguments do not fit (nothing ran). */
static PyObject *replay_scan(PyObject *self, PyObject *args) {
    enum { MAX_ARGUMENTS = 16, MAX_COPIES = 16 };
    PyObject *code_object, *scalars_object, *expected_object, *arguments, *strides, *copies;
    int is_double;
    Py_ssize_t steps;
    if (!PyArg_ParseTuple(args, "OOpOnO!O!O!", &code_object, &scalars_object, &is_double,
                          &expected_object, &steps, &PyTuple_Type, &arguments, &PyTuple_Type,
                          &strides, &PyTuple_Type, &copies))
        return NULL;
    int64_t *words = PyLong_AsVoidPtr(code_object);
    double *scalars = PyLong_AsVoidPtr(scalars_object);
    const int64_t *expected = PyLong_AsVoidPtr(expected_object);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(arguments), copy_count = PyTuple_GET_SIZE(copies);
    if (!expected || count > MAX_ARGUMENTS || copy_count > MAX_COPIES ||
        PyTuple_GET_SIZE(strides) != count || expected[0] != count || steps < 1) {
        PyErr_SetString(PyExc_ValueError, "replay_scan: bad arguments");
        return NULL;
    }
    Py_buffer views[MAX_ARGUMENTS], targets[MAX_COPIES];
    Py_ssize_t step_bytes[MAX_ARGUMENTS], taken = 0, targets_taken = 0;
    char *sources[MAX_COPIES];
    Py_ssize_t sizes[MAX_COPIES];
    int result = 1;
    const int64_t *at = expected + 1;
    for (; result == 1 && taken < count; taken++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(arguments, taken), &views[taken],
                               PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
            PyErr_Clear();
            result = -3;
            break;
        }
        Py_buffer *view = &views[taken];
        int64_t ndim = at[0], bytes = at[1];
        for (int64_t d = 0; d < ndim; d++) bytes *= at[3 + d];
        Py_ssize_t stride = PyLong_AsSsize_t(PyTuple_GET_ITEM(strides, taken));
        if (stride == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            stride = -1;
        }
        int fits = view->itemsize == at[1] && packed_format(view->format) == at[2] &&
                   stride >= 0 && stride % at[1] == 0 &&
                   stride <= (view->len - bytes) / (steps > 1 ? steps - 1 : 1) &&
                   bytes <= view->len;
        at += 3 + ndim;
        step_bytes[taken] = stride;
        if (!fits) {
            result = -3;
            taken++;
            break;
        }
    }
    for (; result == 1 && targets_taken < copy_count; targets_taken++) {
        PyObject *item = PyTuple_GET_ITEM(copies, targets_taken);
        PyObject *source, *target;
        Py_ssize_t size;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "OnO", &source, &size, &target)) {
            PyErr_Clear();
            result = -3;
            break;
        }
        sources[targets_taken] = PyLong_AsVoidPtr(source);
        sizes[targets_taken] = size;
        if (PyErr_Occurred() ||
            PyObject_GetBuffer(target, &targets[targets_taken], PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)) {
            PyErr_Clear();
            result = -3;
            break;
        }
        if (size < 0 || size > targets[targets_taken].len / steps) {
            result = -3;
            targets_taken++;
            break;
        }
    }
    Py_ssize_t done = 0;
    if (result == 1) {
        int64_t patches = words[0];
        for (int64_t i = 0; i < patches; i++)
            if (words[1 + 2 * i] >= count) result = -3;
        const int64_t *start = words + 1 + 2 * patches;
        Py_BEGIN_ALLOW_THREADS
        for (; result == 1 && done < steps; done++) {
            for (int64_t i = 0; i < patches; i++) {
                int64_t argument = words[1 + 2 * i], word = words[2 + 2 * i];
                words[word] = (int64_t)(intptr_t)((char *)views[argument].buf +
                                                  done * step_bytes[argument]);
            }
            result = is_double ? run_double(start, scalars) : run_float(start, scalars);
            if (result != 1) break;
            for (Py_ssize_t c = 0; c < copy_count; c++)
                memcpy((char *)targets[c].buf + done * sizes[c], sources[c], sizes[c]);
        }
        Py_END_ALLOW_THREADS
    }
    for (Py_ssize_t i = 0; i < taken; i++) PyBuffer_Release(&views[i]);
    for (Py_ssize_t i = 0; i < targets_taken; i++) PyBuffer_Release(&targets[i]);
    return Py_BuildValue("in", result, done);
}

/* Convolution and pooling kernels: im2col and col2im in _conv_kernels.c, pooling in its section at
 * the end of this file. */
PyObject *chainrule_im2col(PyObject *self, PyObject *args);
PyObject *chainrule_col2im(PyObject *self, PyObject *args);
static PyObject *max_pool2d(PyObject *self, PyObject *args);
static PyObject *max_pool2d_backward(PyObject *self, PyObject *args);
PyObject *chainrule_max_pool2x2(PyObject *self, PyObject *args);
PyObject *chainrule_max_pool2x2_backward(PyObject *self, PyObject *args);

static PyMethodDef methods[] = {
    {"adam", adam, METH_VARARGS, "One fused Adam update in place; False if the arrays do not fit."},
    {"sgd", sgd, METH_VARARGS, "One fused SGD update in place; False if the arrays do not fit."},
    {"relu", relu, METH_VARARGS, "out = max(z, 0); False if the arrays do not fit."},
    {"relu_backward", relu_backward, METH_VARARGS, "out = g·(z > 0); False if the arrays do not fit."},
    {"cross_entropy", cross_entropy, METH_VARARGS,
     "Softmax cross-entropy's summed loss; False if the arrays or targets do not fit."},
    {"cross_entropy_backward", cross_entropy_backward, METH_VARARGS,
     "Softmax cross-entropy's gradient; False if the arrays do not fit."},
    {"replay", replay, METH_VARARGS, "Run a recorded step (see the replay interpreter section)."},
    {"replay_at", (PyCFunction)(void (*)(void))replay_at, METH_FASTCALL,
     "Run a recorded step from addresses (the compiled step's fast path)."},
    {"replay_scan", replay_scan, METH_VARARGS,
     "Run a recorded step over consecutive batches in one call (see replay_scan)."},
    {"im2col", chainrule_im2col, METH_VARARGS, "Copy windows into columns; False if they do not fit."},
    {"col2im", chainrule_col2im, METH_VARARGS, "Add columns back into an image; False if they do not fit."},
    {"max_pool2d", max_pool2d, METH_VARARGS, "Max pooling with argmax; False if the arrays do not fit."},
    {"max_pool2d_backward", max_pool2d_backward, METH_VARARGS,
     "Scatter max-pooling gradients to the argmax; False if the arrays do not fit."},
    {"max_pool2x2", chainrule_max_pool2x2, METH_VARARGS,
     "2×2 stride-2 max pooling with the window tap of each maximum; False if they do not fit."},
    {"max_pool2x2_backward", chainrule_max_pool2x2_backward, METH_VARARGS,
     "The gradient of max_pool2x2 from its taps; False if the arrays do not fit."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels", "Fused optimizer updates and ReLU (see _kernels.c).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }

/* ==== Convolution and pooling (chainrule/ops/conv.py) =========================================
 * (im2col and col2im live in _conv_kernels.c, 2×2 pooling in _pool_kernels.c.)
 * max_pool2d and its backward: the maximum and its position in one pass over each window, then the
 * gradient scattered to those positions (NumPy needs a pass per window position for each).
 *
 * col2im adds in the order of the NumPy reference (window position by window position, from zero),
 * so the two agree bit for bit; max pooling takes PyTorch's rule (the first maximum wins, NaN wins)
 * as the NumPy code does. Where pooling windows overlap, a gradient element gathers its terms in a
 * different order than in NumPy: equal to rounding. Each returns False, touching nothing, when the
 * arrays are not C-contiguous, of one float type, of the sizes the shape arguments give.
 */

/* out[p, oh, ow] = the largest x[p, h, w] in the window (NaN wins, then the first maximum), and
 * index[p, oh, ow] = h·W + w; positions in the padding are skipped. Row by row: for each window
 * position (h, j) in scan order, one branch-free pass along the output row, which vectorizes. */
#define MAX_POOL_BODY(T)                                                                          \
    for (Py_ssize_t p = 0; p < planes; p++) {                                                     \
        const T *image = x + p * H * W;                                                           \
        for (Py_ssize_t oh = 0; oh < Ho; oh++) {                                                  \
            Py_ssize_t h0 = oh * sh - ph, h1 = h0 + kh;                                           \
            if (h0 < 0) h0 = 0;                                                                   \
            if (h1 > H) h1 = H;                                                                   \
            T *best = out + (p * Ho + oh) * Wo;                                                   \
            int64_t *where = index + (p * Ho + oh) * Wo;                                          \
            for (Py_ssize_t ow = 0; ow < Wo; ow++) {                                              \
                Py_ssize_t w0 = ow * sw - pw;                                                     \
                best[ow] = -INFINITY;                                                             \
                where[ow] = h0 * W + (w0 < 0 ? 0 : w0);                                           \
            }                                                                                     \
            for (Py_ssize_t h = h0; h < h1; h++)                                                  \
                for (Py_ssize_t j = 0; j < kw; j++) {                                             \
                    /* the outputs whose column w = ow·sw − pw + j lies inside the image */       \
                    Py_ssize_t shift = j - pw, lo = 0, hi = 0;                                    \
                    if (W - 1 - shift >= 0) hi = (W - 1 - shift) / sw + 1;                        \
                    while (lo * sw + shift < 0) lo++;                                             \
                    if (hi > Wo) hi = Wo;                                                         \
                    const T *row = image + h * W + shift;                                         \
                    int64_t base = h * W + shift;                                                 \
                    for (Py_ssize_t ow = lo; ow < hi; ow++) {                                     \
                        T v = row[ow * sw];                                                       \
                        int take = (v > best[ow]) | (v != v);                                     \
                        best[ow] = take ? v : best[ow];                                           \
                        where[ow] = take ? base + ow * sw : where[ow];                             \
                    }                                                                             \
                }                                                                                 \
        }                                                                                         \
    }

VECTORIZE static void max_pool_float(const float *restrict x, float *restrict out, int64_t *restrict index,
                           Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                           Py_ssize_t Wo, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                           Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw) {
    MAX_POOL_BODY(float)
}

VECTORIZE static void max_pool_double(const double *restrict x, double *restrict out,
                            int64_t *restrict index, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t kh, Py_ssize_t kw,
                            Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw) {
    MAX_POOL_BODY(double)
}

/* max_pool2d(x, out, index, planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw) -> bool: x (planes, H,
 * W), out (planes, Ho, Wo) of x's float type, index (planes, Ho, Wo) int64. Every window must hold
 * at least one element of x (padding at most half the kernel, as PyTorch requires). */
static PyObject *max_pool2d(PyObject *self, PyObject *args) {
    PyObject *x_object, *out_object, *index_object;
    Py_ssize_t planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw;
    if (!PyArg_ParseTuple(args, "OOOnnnnnnnnnnn", &x_object, &out_object, &index_object, &planes,
                          &H, &W, &Ho, &Wo, &kh, &kw, &sh, &sw, &ph, &pw))
        return NULL;
    if (planes < 1 || H < 1 || W < 1 || Ho < 1 || Wo < 1 || kh < 1 || kw < 1 || sh < 1 ||
        sw < 1 || ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw ||
        (Ho - 1) * sh + kh > H + 2 * ph || (Wo - 1) * sw + kw > W + 2 * pw)
        Py_RETURN_FALSE;
    PyObject *objects[3] = {x_object, out_object, index_object};
    Py_buffer views[3], *x = &views[0], *out = &views[1], *index = &views[2];
    Py_ssize_t counts[3] = {planes * H * W, planes * Ho * Wo, planes * Ho * Wo};
    char kind = chainrule_take_arrays(views, objects, "**q", "rww", counts, 3);
    if (!kind) Py_RETURN_FALSE;
    Py_BEGIN_ALLOW_THREADS
    if (kind == 'f')
        max_pool_float(x->buf, out->buf, index->buf, planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw);
    else
        max_pool_double(x->buf, out->buf, index->buf, planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw);
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 3; i++) PyBuffer_Release(&views[i]);
    Py_RETURN_TRUE;
}

/* gx[p, index[p, o]] += g[p, o], gx zeroed first. */
#define MAX_POOL_BACKWARD_BODY(T)                                                                 \
    for (Py_ssize_t p = 0; p < planes; p++) {                                                     \
        T *image = gx + p * HW;                                                                   \
        const T *gp = g + p * HoWo;                                                               \
        const int64_t *ip = index + p * HoWo;                                                     \
        for (Py_ssize_t k = 0; k < HW; k++) image[k] = 0;                                         \
        for (Py_ssize_t o = 0; o < HoWo; o++) image[ip[o]] += gp[o];                              \
    }

static void max_pool_backward_float(const float *restrict g, const int64_t *restrict index,
                                    float *restrict gx, Py_ssize_t planes, Py_ssize_t HW,
                                    Py_ssize_t HoWo) {
    MAX_POOL_BACKWARD_BODY(float)
}

static void max_pool_backward_double(const double *restrict g, const int64_t *restrict index,
                                     double *restrict gx, Py_ssize_t planes, Py_ssize_t HW,
                                     Py_ssize_t HoWo) {
    MAX_POOL_BACKWARD_BODY(double)
}

/* max_pool2d_backward(g, index, gx, planes, H, W, Ho, Wo) -> bool: g (planes, Ho, Wo), index as
 * max_pool2d wrote it (each value in [0, H·W), checked before anything is written), gx (planes, H,
 * W) of g's float type. */
static PyObject *max_pool2d_backward(PyObject *self, PyObject *args) {
    PyObject *g_object, *index_object, *gx_object;
    Py_ssize_t planes, H, W, Ho, Wo;
    if (!PyArg_ParseTuple(args, "OOOnnnnn", &g_object, &index_object, &gx_object, &planes, &H, &W,
                          &Ho, &Wo))
        return NULL;
    if (planes < 1 || H < 1 || W < 1 || Ho < 1 || Wo < 1) Py_RETURN_FALSE;
    PyObject *objects[3] = {g_object, index_object, gx_object};
    Py_buffer views[3], *g = &views[0], *index = &views[1], *gx = &views[2];
    Py_ssize_t counts[3] = {planes * Ho * Wo, planes * Ho * Wo, planes * H * W};
    char kind = chainrule_take_arrays(views, objects, "*q*", "rrw", counts, 3);
    if (!kind) Py_RETURN_FALSE;
    int ok = 1;
    const int64_t *positions = index->buf;
    for (Py_ssize_t o = 0; ok && o < planes * Ho * Wo; o++)
        if (positions[o] < 0 || positions[o] >= H * W) ok = 0;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        if (kind == 'f')
            max_pool_backward_float(g->buf, index->buf, gx->buf, planes, H * W, Ho * Wo);
        else
            max_pool_backward_double(g->buf, index->buf, gx->buf, planes, H * W, Ho * Wo);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < 3; i++) PyBuffer_Release(&views[i]);
    return PyBool_FromLong(ok);
}

