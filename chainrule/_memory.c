/* A NumPy memory handler that keeps large freed blocks for the next array of the same size.
 *
 * Why: glibc hands large freed blocks back to the system (munmap, or trimming the heap's top), and
 * the next array of that size faults its pages in again, one 4 KiB page at a time, each zeroed by
 * the kernel. A training step allocates the same large arrays every step (activations, pooling
 * indices, gradients): on the wide network of benchmarks/bench_conv.py that was 5600 faults and
 * 10 ms of a 77 ms step. PyTorch's CUDA allocator caches for the same reason.
 *
 * Blocks of at least SMALLEST bytes, rounded up to whole pages, are kept when freed, at most
 * `limit` bytes of them (the oldest freed first out), and given to the next allocation of the same
 * rounded size; everything else goes to malloc and free as NumPy's own handler does. The contents
 * of a reused block are whatever was there (NumPy asks calloc where it needs zeros). Every block is
 * a malloc block, so realloc and free stay plain libc calls on any of them.
 *
 * The handler is used only where chainrule installs it (chainrule/memory.py: around its engine's
 * ops); arrays remember their handler, so one freed elsewhere comes back here all the same. All
 * calls come with the GIL held (NumPy allocates and frees array data only with it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#define NPY_TARGET_VERSION NPY_1_22_API_VERSION
#include <numpy/arrayobject.h>

#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define SMALLEST (256 * 1024)
#define PAGE 4096
#define SLOTS 64

typedef struct {
    void *block;
    size_t size;
} Spare;

/* The kept blocks, oldest first. */
static Spare spares[SLOTS];
static int count = 0;
static size_t kept = 0, limit = (size_t)64 << 20;

static size_t rounded(size_t size) { return (size + PAGE - 1) / PAGE * PAGE; }

static void drop_oldest(void) {
    free(spares[0].block);
    kept -= spares[0].size;
    memmove(spares, spares + 1, (size_t)(--count) * sizeof(Spare));
}

static void *fresh(size_t size) {
    void *block = malloc(size);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    /* as NumPy's own handler: transparent huge pages for blocks of 4 MiB and more */
    if (block && size >= ((size_t)1 << 22)) {
        size_t offset = PAGE - (size_t)block % PAGE;
        madvise((char *)block + offset, size - offset, MADV_HUGEPAGE);
    }
#endif
    return block;
}

static void *spare_malloc(void *ctx, size_t size) {
    (void)ctx;
    if (size < SMALLEST) return malloc(size);
    size = rounded(size);
    for (int i = count - 1; i >= 0; i--) /* the most recently freed first: warmest in cache */
        if (spares[i].size == size) {
            void *block = spares[i].block;
            kept -= size;
            memmove(spares + i, spares + i + 1, (size_t)(--count - i) * sizeof(Spare));
            return block;
        }
    return fresh(size);
}

static void *spare_calloc(void *ctx, size_t items, size_t item_size) {
    if (item_size && items > (size_t)-1 / item_size) return NULL;
    size_t size = items * item_size;
    if (size < SMALLEST) return calloc(items, item_size);
    void *block = spare_malloc(ctx, size);
    if (block) memset(block, 0, size);
    return block;
}

static void *spare_realloc(void *ctx, void *block, size_t size) {
    (void)ctx;
    return realloc(block, size);
}

/* Whether `block`, freed as `size` bytes, can serve a later request of `size` rounded up to pages:
 * a large block that malloc says holds that many (a realloc'd one may not). Where malloc cannot
 * tell, nothing is kept. */
static int keepable(void *block, size_t size) {
#if defined(__GLIBC__) && !defined(Py_GIL_DISABLED) /* the list of spares relies on the GIL */
    return size >= SMALLEST && rounded(size) <= limit && malloc_usable_size(block) >= rounded(size);
#else
    (void)block;
    (void)size;
    return 0;
#endif
}

static void spare_free(void *ctx, void *block, size_t size) {
    (void)ctx;
    if (block == NULL) return;
    if (!keepable(block, size)) {
        free(block);
        return;
    }
    size = rounded(size);
    while (count == SLOTS || kept + size > limit) drop_oldest();
    spares[count].block = block;
    spares[count].size = size;
    count++;
    kept += size;
}

static PyDataMem_Handler handler = {
    "chainrule_spares",
    1,
    {NULL, spare_malloc, spare_calloc, spare_realloc, spare_free},
};

static PyObject *capsule; /* the handler as NumPy takes it */

/* use() -> the handler that was current: makes the spares handler NumPy's current one (in this
 * thread's context). */
static PyObject *use(PyObject *self, PyObject *unused) { return PyDataMem_SetHandler(capsule); }

/* restore(previous) -> None: makes `previous` (what use() returned) current again. */
static PyObject *restore(PyObject *self, PyObject *previous) {
    PyObject *ours = PyDataMem_SetHandler(previous);
    if (ours == NULL) return NULL;
    Py_DECREF(ours);
    Py_RETURN_NONE;
}

/* release() -> int: frees every kept block; returns how many bytes that was. */
static PyObject *release(PyObject *self, PyObject *unused) {
    size_t bytes = kept;
    while (count) drop_oldest();
    return PyLong_FromSize_t(bytes);
}

/* kept_bytes() -> int: the bytes kept now. */
static PyObject *kept_bytes(PyObject *self, PyObject *unused) { return PyLong_FromSize_t(kept); }

static PyMethodDef methods[] = {
    {"use", use, METH_NOARGS, "Make the spares handler current; returns the previous handler."},
    {"restore", restore, METH_O, "Make a handler that use() returned current again."},
    {"release", release, METH_NOARGS, "Free every kept block; returns the bytes freed."},
    {"kept_bytes", kept_bytes, METH_NOARGS, "The bytes of freed blocks kept now."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_memory",
    "A NumPy memory handler that keeps large freed blocks for reuse (see _memory.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__memory(void) {
    import_array();
    capsule = PyCapsule_New(&handler, "mem_handler", NULL);
    if (capsule == NULL) return NULL;
    return PyModule_Create(&module);
}
