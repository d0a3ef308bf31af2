"""Convolution and pooling on NCHW arrays: conv2d (conv1d through it), max and average pooling,
adaptive average pooling; each one engine op with its vector-Jacobian product directly below it.

Convolution is im2col and one matrix product per group: the windows of the padded input are
copied once into columns (C/groups·kh·kw, N·Ho·Wo) and multiplied by the weight (O/groups,
C/groups·kh·kw); the product, (O, N, Ho, Wo), is transposed to NCHW with the bias added. The
backward reuses the columns for the weight gradient and adds the columns of the input gradient
back into the image (col2im). The C kernels in `chainrule.kernels` do im2col and col2im (the
zero padding on the fly) and max pooling in one pass each; the NumPy code below is their
reference and runs wherever they decline. The columns and the other large temporaries are reused
from step to step (`_Spares`). Shapes are checked in `conv_output_shape` and `pool_output_shape`,
which name the caller (`conv2d`, or a layer such as `Conv2d(1, 16, ...)`).
"""

from __future__ import annotations

import weakref

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from chainrule import kernels

# ---- shapes and arguments ---------------------------------------------------------------------


def pair(value, what, name, minimum=1):
    """An int or a pair of ints as a pair, each at least `minimum`; else a ValueError naming it."""
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"{name}: {what} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{name}: {what} must be at least {minimum}, got {value!r}")
    return int(values[0]), int(values[1])


def conv_padding(padding, kernel, stride, dilation, name):
    """Padding as ((top, bottom), (left, right)) from an int, a pair, 'valid' or 'same'.

    'same' pads d·(k−1) in all, the odd one at the bottom / right, as PyTorch; it needs stride 1.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(f"{name}: padding must be 'valid', 'same' or ints, got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"{name}: padding='same' needs stride 1, got stride {stride}")
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return tuple((t // 2, t - t // 2) for t in totals)
    ph, pw = pair(padding, "padding", name, minimum=0)
    return (ph, ph), (pw, pw)


def _extent(kernel, dilation):
    return dilation * (kernel - 1) + 1


def conv_output_shape(x_shape, w_shape, b_shape, stride, padding, dilation, groups, name):
    """(N, O, Ho, Wo) of a convolution, or a ValueError naming `name` and the shapes involved."""
    if len(x_shape) != 4:
        raise ValueError(
            f"{name} expects input of shape (batch, channels, height, width), got shape {x_shape}"
        )
    if len(w_shape) != 4:
        raise ValueError(
            f"{name}: the weight must have shape (out_channels, in_channels/groups, kh, kw), "
            f"got {w_shape}"
        )
    n, c, h, w = x_shape
    o, c_group, kh, kw = w_shape
    if groups < 1 or o % groups:
        raise ValueError(f"{name}: {o} output channels cannot be split into {groups} groups")
    if c != c_group * groups:
        raise ValueError(
            f"{name} expects input of shape (batch, {c_group * groups}, height, width) for a "
            f"weight of shape {w_shape} with groups={groups}, got shape {x_shape}"
        )
    if b_shape is not None and tuple(b_shape) != (o,):
        raise ValueError(f"{name}: the bias must have shape ({o},), got {b_shape}")
    (pt, pb), (pl, pr) = padding
    height, width = h + pt + pb, w + pl + pr
    eh, ew = _extent(kh, dilation[0]), _extent(kw, dilation[1])
    if eh > height or ew > width:
        raise ValueError(
            f"{name}: the kernel ({kh}×{kw}, spanning {eh}×{ew} with dilation {dilation}) is "
            f"larger than the padded input ({height}×{width}: input of shape {x_shape}, padding "
            f"{padding})"
        )
    return n, o, (height - eh) // stride[0] + 1, (width - ew) // stride[1] + 1


def pool_output_shape(x_shape, kernel, stride, padding, name):
    """(N, C, Ho, Wo) of a pooling, or a ValueError naming `name` and the input's shape."""
    if len(x_shape) != 4:
        raise ValueError(
            f"{name} expects input of shape (batch, channels, height, width), got shape {x_shape}"
        )
    if 2 * padding[0] > kernel[0] or 2 * padding[1] > kernel[1]:
        raise ValueError(f"{name}: padding {padding} must be at most half the kernel size {kernel}")
    n, c, h, w = x_shape
    height, width = h + 2 * padding[0], w + 2 * padding[1]
    if kernel[0] > height or kernel[1] > width:
        raise ValueError(
            f"{name}: the kernel {kernel[0]}×{kernel[1]} is larger than the padded input "
            f"({height}×{width}: input of shape {x_shape}, padding {padding})"
        )
    return n, c, (height - kernel[0]) // stride[0] + 1, (width - kernel[1]) // stride[1] + 1


def _pad(x, padding, value=0.0):
    (pt, pb), (pl, pr) = padding
    if not (pt or pb or pl or pr):
        return x
    n, c, h, w = x.shape
    padded = np.full((n, c, h + pt + pb, w + pl + pr), value, dtype=x.dtype)
    padded[:, :, pt : pt + h, pl : pl + w] = x
    return padded


def _crop(padded, padding, shape):
    (pt, _), (pl, _) = padding
    if padded.shape == shape:
        return padded
    return padded[:, :, pt : pt + shape[2], pl : pl + shape[3]]


def _window(start, count, step):
    """The slice of `count` positions from `start`, `step` apart."""
    return slice(start, start + step * (count - 1) + 1, step)


# ---- scratch memory (shared by the convolutions of a step) --------------------------------------


class _Spares:
    """Scratch arrays that finished convolutions gave back, by (shape, dtype), at most `limit`
    bytes of them (the least recently given dropped first).

    NOTE: a cache, not state: nothing a convolution computes depends on it. It exists because
    glibc returns large freed blocks to the system and fresh pages fault on first touch: a LeNet-5
    step (bench_conv.py) touched 12 MB of new memory every step, a third of its time.
    """

    def __init__(self, limit):
        self.limit, self.bytes, self.arrays = limit, 0, {}

    def take(self, shape, dtype):
        """An uninitialised array: a spare one of this shape and dtype, else a new one."""
        try:
            array = self.arrays[shape, np.dtype(dtype)].pop()
        except (KeyError, IndexError):
            return np.empty(shape, dtype=dtype)
        self.bytes -= array.nbytes
        return array

    def give(self, array):
        """Keep `array`, which nobody else may hold any more, for a later `take`."""
        key = (array.shape, array.dtype)
        self.arrays[key] = self.arrays.pop(key, []) + [array]  # now the most recent kind
        self.bytes += array.nbytes
        while self.bytes > self.limit and self.arrays:
            self.bytes -= sum(a.nbytes for a in self.arrays.pop(next(iter(self.arrays))))


_spares = _Spares(64 * 2**20)


# ---- convolution --------------------------------------------------------------------------------

_PER_SAMPLE_LIMIT = 2**18  # see conv2d


def im2col(x, kernel, stride, padding, dilation, out_size):
    """Windows of the input as contiguous columns (C, kh, kw, N, Ho, Wo), zero where a window
    reaches into the padding: row (c, i, j) holds what kernel tap (c, i, j) sees at every output
    position of every sample. The array is scratch (see `_Spares`)."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    n, c, h, w = x.shape
    (pt, _), (pl, _) = padding
    cols = _spares.take((c, kh, kw, n, ho, wo), x.dtype)
    if kernels.im2col(x, cols, n, c, h, w, kh, kw, ho, wo, pt, pl, sh, sw, dh, dw):
        return cols
    windows = sliding_window_view(_pad(x, padding), (_extent(kh, dh), _extent(kw, dw)), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :ho, :wo]  # (N, C, Ho, Wo, kh, kw)
    np.copyto(cols, windows.transpose(1, 4, 5, 0, 2, 3))
    return cols


def col2im(cols, x_shape, padding, stride, dilation):
    """The adjoint of im2col: each column added back where it was read from, what fell in the
    padding dropped. cols (C, kh, kw, N, Ho, Wo) -> (N, C, H, W)."""
    c, kh, kw, n, ho, wo = cols.shape
    (sh, sw), (dh, dw), ((pt, pb), (pl, pr)) = stride, dilation, padding
    h, w = x_shape[2:]
    image = np.empty(x_shape, dtype=cols.dtype)
    if kernels.col2im(cols, image, n, c, h, w, kh, kw, ho, wo, pt, pl, sh, sw, dh, dw):
        return image
    image = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = cols[:, i, j].transpose(1, 0, 2, 3)  # (N, C, Ho, Wo)
            image[:, :, _window(i * dh, ho, sh), _window(j * dw, wo, sw)] += tap
    return _crop(image, padding, x_shape)


def conv2d(
    x,
    weight,
    bias=None,
    stride=(1, 1),
    padding=((0, 0), (0, 0)),
    dilation=(1, 1),
    groups=1,
    needs=(True, True, True),
):
    """z = x ⋆ W + b (cross-correlation, as PyTorch). x (N, C, H, W), W (O, C/groups, kh, kw),
    b (O,) -> z (N, O, Ho, Wo). `padding` is ((top, bottom), (left, right)); `needs` says which of
    x, W, b want a gradient (the input batch usually does not, and its col2im is the dearest part).

    Per group, with the columns X = im2col(x) (C/groups·kh·kw, N·Ho·Wo) of the whole batch and
    g = dL/dz as (O/groups, N·Ho·Wo):
    z = W·X + b,  dL/dW = g·Xᵀ,  dL/db = Σ g,  dL/dx = col2im(Wᵀ·g).
    """
    n, o, ho, wo = conv_output_shape(
        x.shape,
        weight.shape,
        None if bias is None else bias.shape,
        stride,
        padding,
        dilation,
        groups,
        "conv2d",
    )
    c, kh, kw = x.shape[1], weight.shape[2], weight.shape[3]
    og = o // groups
    # NOTE: one large product per group, not one per sample: a stack of small products costs the
    # same on one quiet core, but OpenBLAS threads each small one, which on a busy machine made
    # a batch of them 10-30x slower. The price is a transposing copy of the output (and of g).
    # Except below OpenBLAS's threading threshold (it runs m·n·k ≤ 2^18 on one thread: 65536 times
    # its GEMM_MULTITHREAD_THRESHOLD of 4), where the neighbours cannot slow the stack down: there
    # a product per sample lands in NCHW directly, and the copies of the output and of g, the
    # dearest part of a first layer, go (the wide network's first layer of
    # benchmarks/bench_conv.py: 1.4x faster each way).
    cols = im2col(x, (kh, kw), stride, padding, dilation, (ho, wo))
    columns = cols.reshape(groups, -1, n * ho * wo)
    w3 = weight.reshape(groups, og, -1)  # (G, O/G, C/G·kh·kw)
    # (Only where the input needs no gradient: its product wants g transposed anyway.)
    per_sample = groups == 1 and not needs[0] and o * w3.shape[2] * ho * wo <= _PER_SAMPLE_LIMIT
    dtype = np.result_type(x, weight)
    out = np.empty((n, o, ho, wo), dtype=dtype)
    grouped = out.reshape(n, groups, og, ho * wo)  # a view of out
    # Which way round the product runs changes OpenBLAS's speed by up to 1.5x (measured on the
    # networks of benchmarks/bench_conv.py): rows of output pixels win for long columns.
    product = None
    if per_sample:  # (N, C·kh·kw, Ho·Wo) · per sample
        np.matmul(w3[0], columns[0].reshape(-1, n, ho * wo).transpose(1, 0, 2), out=grouped[:, 0])
        if bias is not None:
            np.add(grouped, bias.reshape(groups, og, 1), out=grouped)
    elif columns.shape[1] >= 64:
        product = _spares.take((groups, n * ho * wo, og), dtype)
        np.matmul(columns.transpose(0, 2, 1), w3.transpose(0, 2, 1), out=product)
        view = product.reshape(groups, n, ho * wo, og).transpose(1, 0, 3, 2)
    else:
        product = _spares.take((groups, og, n * ho * wo), dtype)
        np.matmul(w3, columns, out=product)
        view = product.reshape(groups, og, n, ho * wo).transpose(2, 0, 1, 3)
    if product is not None:
        if bias is None:
            np.copyto(grouped, view)
        else:  # the bias added while transposing to NCHW
            np.add(view, bias.reshape(groups, og, 1), out=grouped)
        _spares.give(product)
        del view
    x_shape = x.shape
    del x, columns, product, grouped

    def backward(g):
        gx = gw = gb = None
        if per_sample:  # no input gradient here (see above)
            g3 = g.reshape(n, o, ho * wo)
            if bias is not None and needs[2]:
                gb = g3.sum(axis=(0, 2))
            if needs[1]:  # one product per sample, (N, C·kh·kw, O), summed
                samples = cols.reshape(-1, n, ho * wo).transpose(1, 0, 2)
                gw = np.matmul(samples, g3.transpose(0, 2, 1)).sum(axis=0).T.reshape(weight.shape)
            return gx, gw, gb
        g_t = _spares.take((o, n, ho, wo), g.dtype)
        np.copyto(g_t, g.transpose(1, 0, 2, 3))
        g3 = g_t.reshape(groups, og, -1)
        if bias is not None and needs[2]:
            gb = g3.reshape(o, -1).sum(axis=1)
        if needs[1]:
            # Xᵀ-side first (columns · gᵀ, then transposed): 1-2.4x faster than g · Xᵀ here.
            gw = np.matmul(cols.reshape(groups, -1, n * ho * wo), g3.transpose(0, 2, 1))
            gw = gw.transpose(0, 2, 1).reshape(weight.shape)
        if needs[0]:
            gcols = _spares.take(
                (groups, c // groups * kh * kw, n * ho * wo), np.result_type(g, w3)
            )
            np.matmul(w3.transpose(0, 2, 1), g3, out=gcols)
            gx = col2im(gcols.reshape(c, kh, kw, n, ho, wo), x_shape, padding, stride, dilation)
            _spares.give(gcols)
        _spares.give(g_t)
        return gx, gw, gb

    if needs[1]:  # the columns, the largest buffer, kept for dL/dW until the graph lets go
        weakref.finalize(backward, _spares.give, cols).atexit = False
    else:
        _spares.give(cols)
        cols = None
    return out, backward


def conv1d(
    x,
    weight,
    bias=None,
    stride=1,
    padding=(0, 0),
    dilation=1,
    groups=1,
    needs=(True, True, True),
):
    """conv2d over a unit height: x (N, C, L), W (O, C/groups, k), b (O,) -> (N, O, Lo).
    `padding` is (left, right)."""
    if x.ndim != 3 or weight.ndim != 3:
        raise ValueError(
            f"conv1d expects input (batch, channels, length) and weight (out, in/groups, k), got "
            f"shapes {x.shape} and {weight.shape}"
        )
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(
            f"conv1d expects input of shape (batch, {weight.shape[1] * groups}, length) for a "
            f"weight of shape {weight.shape} with groups={groups}, got shape {x.shape}"
        )
    out, backward2d = conv2d(
        x[:, :, None, :],
        weight[:, :, None, :],
        bias,
        (1, stride),
        ((0, 0), tuple(padding)),
        (1, dilation),
        groups,
        needs,
    )

    def backward(g):
        gx, gw, gb = backward2d(g[:, :, None, :])
        return (
            None if gx is None else gx[:, :, 0, :],
            None if gw is None else gw[:, :, 0, :],
            gb,
        )

    return out[:, :, 0, :], backward


# ---- pooling ------------------------------------------------------------------------------------


def max_pool2d(x, kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
    """The largest value of each kh×kw window (padding never wins): (N, C, H, W) -> (N, C, Ho, Wo).

    The gradient goes to the window's maximum, the first one where several tie (NaN counts as the
    largest), as in PyTorch; where windows overlap an input gathers the gradients of each window
    it is the maximum of.
    """
    n, c, ho, wo = pool_output_shape(x.shape, kernel, stride, padding, "max_pool2d")
    h, w = x.shape[2:]
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    args = (n * c, h, w, ho, wo)
    if kernel == stride == (2, 2) and padding == (0, 0):  # the common case: a byte per window
        taps = np.empty((n, c, ho, wo), dtype=np.uint8)  # its window tap, as `position` below
        if kernels.max_pool2x2(x, out, taps, *args):

            def backward(g):
                gx = np.empty(x.shape, dtype=g.dtype)
                if kernels.max_pool2x2_backward(np.ascontiguousarray(g), taps, gx, *args):
                    return (gx,)
                return (_max_pool_scatter(g, taps, x.shape, kernel, stride, padding),)

            return out, backward
    index = np.empty((n, c, ho, wo), dtype=np.int64)
    if kernels.max_pool2d(x, out, index, *args, kh, kw, sh, sw, ph, pw):

        def backward(g):
            gx = np.empty(x.shape, dtype=g.dtype)
            if kernels.max_pool2d_backward(np.ascontiguousarray(g), index, gx, *args):
                return (gx,)
            return (_max_pool_scatter_flat(g, index, x.shape),)

        return out, backward

    # NumPy: one pass per window position, keeping the maximum so far and where it was.
    xp = _pad(x, ((ph, ph), (pw, pw)), -np.inf)
    out[...] = -np.inf
    position = np.zeros((n, c, ho, wo), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            candidate = xp[:, :, _window(i, ho, sh), _window(j, wo, sw)]
            better = (candidate > out) | np.isnan(candidate)
            np.copyto(out, candidate, where=better)
            position[better] = i * kw + j
    del xp

    def backward(g):
        return (_max_pool_scatter(g, position, x.shape, kernel, stride, padding),)

    return out, backward


def _max_pool_scatter(g, position, shape, kernel, stride, padding):
    """The gradient of max pooling from the window tap (i·kw + j) of each maximum."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, ho, wo = g.shape
    gxp = np.zeros((n, c, shape[2] + 2 * ph, shape[3] + 2 * pw), dtype=g.dtype)
    for i in range(kh):
        for j in range(kw):
            gxp[:, :, _window(i, ho, sh), _window(j, wo, sw)] += np.where(
                position == i * kw + j, g, 0
            )
    return _crop(gxp, ((ph, ph), (pw, pw)), shape)


def _max_pool_scatter_flat(g, index, shape):
    """The gradient of max pooling from the flat positions the C kernel wrote (for a gradient the
    backward kernel declined, e.g. of another dtype)."""
    n, c, h, w = shape
    gx = np.zeros((n * c, h * w), dtype=g.dtype)
    rows = np.repeat(np.arange(n * c), index[0, 0].size)
    np.add.at(gx, (rows, index.reshape(-1)), g.reshape(-1))
    return gx.reshape(shape)


def avg_pool2d(x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), count_include_pad=True):
    """The mean of each kh×kw window of the zero-padded input. x (N, C, H, W) -> (N, C, Ho, Wo).

    With count_include_pad (PyTorch's default) every window divides by kh·kw; without it, by the
    number of its elements inside the input.
    """
    n, c, ho, wo = pool_output_shape(x.shape, kernel, stride, padding, "avg_pool2d")
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    pads = ((ph, ph), (pw, pw))
    xp = _pad(x, pads)
    total = np.zeros((n, c, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            total += xp[:, :, _window(i, ho, sh), _window(j, wo, sw)]
    if count_include_pad:
        divisor = kh * kw
    else:
        rows = _inside_counts(x.shape[2], ho, kh, sh, ph)
        columns = _inside_counts(x.shape[3], wo, kw, sw, pw)
        divisor = np.outer(rows, columns).astype(x.dtype)
    out = total / divisor
    padded_shape = xp.shape
    del xp

    def backward(g):
        share = g / divisor
        gxp = np.zeros(padded_shape, dtype=g.dtype)
        for i in range(kh):
            for j in range(kw):
                gxp[:, :, _window(i, ho, sh), _window(j, wo, sw)] += share
        return (_crop(gxp, pads, x.shape),)

    return out, backward


def _inside_counts(size, out_size, kernel, stride, pad):
    starts = np.arange(out_size) * stride - pad
    return np.minimum(starts + kernel, size) - np.maximum(starts, 0)


def adaptive_avg_pool2d(x, output_size=(1, 1)):
    """The mean over an (oh, ow) grid of windows, as PyTorch: window i along an axis of size H
    covers [⌊i·H/oh⌋, ⌈(i+1)·H/oh⌉). x (N, C, H, W) -> (N, C, oh, ow)."""
    if x.ndim != 4:
        raise ValueError(
            "adaptive_avg_pool2d expects input of shape (batch, channels, height, width), got "
            f"shape {x.shape}"
        )
    n, c, h, w = x.shape
    oh, ow = output_size
    if h % oh == 0 and w % ow == 0:  # equal windows side by side: one reshaped mean
        bh, bw = h // oh, w // ow
        out = x.reshape(n, c, oh, bh, ow, bw).mean(axis=(3, 5))

        def backward(g):
            share = (g / (bh * bw))[:, :, :, None, :, None]
            return (np.broadcast_to(share, (n, c, oh, bh, ow, bw)).reshape(x.shape),)

        return out, backward

    rows = [(i * h // oh, -(-(i + 1) * h // oh)) for i in range(oh)]
    columns = [(j * w // ow, -(-(j + 1) * w // ow)) for j in range(ow)]
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(columns):
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))

    def backward(g):
        gx = np.zeros(x.shape, dtype=g.dtype)
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(columns):
                share = g[:, :, i, j] / ((r1 - r0) * (c1 - c0))
                gx[:, :, r0:r1, c0:c1] += share[:, :, None, None]
        return (gx,)

    return out, backward
