"""Replay kernels: the common ops' forward and vector-Jacobian product written with preallocated
outputs (`out=`), so a replay allocates nothing and makes one NumPy call per term.

Each kernel does exactly the arithmetic of its op in `chainrule.ops` (the reference), in the same
order and precision, so a replay gives the eager step's numbers (tests/test_compile.py holds them
to that). A maker returns None for a case it does not cover (another dtype, a reduction of
'none'); the replay then calls the op's own function, so every op stays correct.

A maker gets a `Spec` and returns `(forward, backward)`: closures over the slot list `v` that
write into buffers already placed in `v` (backward is None when the walk never reaches the op).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from chainrule import kernels, ops


@dataclass
class Spec:
    ins: tuple[int, ...]  # input slots
    params: dict[str, Any]
    out: int
    g: int | None  # the incoming gradient's slot, None when the walk never reaches this op
    grads: tuple[int | None, ...]  # per input: the slot its gradient goes to, None if unused
    shapes: list  # per slot: (shape, dtype) or None
    buffer: Callable[[int], np.ndarray]  # a buffer for a slot (placed in v)

    def shape(self, slot: int) -> tuple:
        return self.shapes[slot][0]

    def dtype(self, slot: int) -> np.dtype:
        return self.shapes[slot][1]

    def one_float_dtype(self, slots: tuple[int, ...]) -> bool:
        dtypes = {self.dtype(s) for s in slots}
        return len(dtypes) == 1 and dtypes.pop() in (np.float32, np.float64)


Kernel = tuple[Callable, Callable | None]


def _linear(s: Spec) -> Kernel | None:
    if len(s.ins) not in (2, 3) or len(s.shape(s.ins[0])) != 2:
        return None
    if not s.one_float_dtype((*s.ins, s.out)):
        return None
    xs, ws = s.ins[0], s.ins[1]
    bs = s.ins[2] if len(s.ins) == 3 else None
    z = s.buffer(s.out)

    def forward(v: list) -> None:
        np.matmul(v[xs], v[ws].T, out=z)
        if bs is not None:
            np.add(z, v[bs], out=z)

    if s.g is None:
        return forward, None
    gs = s.g
    gx = s.buffer(s.grads[0]) if s.grads[0] is not None else None
    gw = s.buffer(s.grads[1]) if s.grads[1] is not None else None
    gb = s.buffer(s.grads[2]) if bs is not None and s.grads[2] is not None else None
    rows = s.shape(xs)[0]
    # ops.linalg.column_sums: a product with ones from 64 rows on, NumPy's sum below.
    ones = np.ones(rows, dtype=s.dtype(s.out)) if rows >= 64 else None

    def backward(v: list) -> None:
        g = v[gs]
        if gx is not None:
            np.matmul(g, v[ws], out=gx)
        if gw is not None:
            np.matmul(g.T, v[xs], out=gw)
        if gb is not None:
            if ones is None:
                np.add.reduce(g, axis=0, out=gb)  # g.sum(axis=0), without its wrapper
            else:
                np.matmul(ones, g, out=gb)

    return forward, backward


def _matmul(s: Spec) -> Kernel | None:
    if any(len(s.shape(i)) != 2 for i in s.ins) or not s.one_float_dtype((*s.ins, s.out)):
        return None
    a_slot, b_slot = s.ins
    out = s.buffer(s.out)

    def forward(v: list) -> None:
        np.matmul(v[a_slot], v[b_slot], out=out)

    if s.g is None:
        return forward, None
    gs = s.g
    ga = s.buffer(s.grads[0]) if s.grads[0] is not None else None
    gb = s.buffer(s.grads[1]) if s.grads[1] is not None else None

    def backward(v: list) -> None:
        if ga is not None:
            np.matmul(v[gs], v[b_slot].T, out=ga)
        if gb is not None:
            np.matmul(v[a_slot].T, v[gs], out=gb)

    return forward, backward


def _unary(forward_into: Callable, backward_into: Callable) -> Callable[[Spec], Kernel | None]:
    """A one-input activation: forward_into(z, a), backward_into(g, z, a, gz, work)."""

    def make(s: Spec) -> Kernel | None:
        if s.params or not s.one_float_dtype((s.ins[0], s.out)):
            return None
        zs = s.ins[0]
        a = s.buffer(s.out)

        def forward(v: list) -> None:
            forward_into(v[zs], a)

        if s.g is None or s.grads[0] is None:
            return forward, None
        gs = s.g
        gz = s.buffer(s.grads[0])
        work = np.empty_like(a)

        def backward(v: list) -> None:
            backward_into(v[gs], v[zs], a, gz, work)

        return forward, backward

    return make


def _relu_forward(z: np.ndarray, a: np.ndarray) -> None:
    if not kernels.relu(z, a):
        np.maximum(z, 0, out=a)


def _relu_backward(g, z, a, gz, work) -> None:
    if not kernels.relu_backward(g, z, gz):
        np.multiply(g, z > 0, out=gz)


def _sigmoid_forward(z: np.ndarray, a: np.ndarray) -> None:
    np.negative(z, out=a)
    np.logaddexp(0, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)


def _sigmoid_backward(g, z, a, gz, work) -> None:
    np.multiply(g, a, out=gz)  # g · a · (1 − a), in the reference's order
    np.subtract(1, a, out=work)
    np.multiply(gz, work, out=gz)


def _tanh_forward(z: np.ndarray, a: np.ndarray) -> None:
    np.tanh(z, out=a)


def _tanh_backward(g, z, a, gz, work) -> None:
    np.multiply(a, a, out=work)  # g · (1 − a²)
    np.subtract(1, work, out=work)
    np.multiply(g, work, out=gz)


def _binary(name: str) -> Callable[[Spec], Kernel | None]:
    """add, sub, mul of two arrays of one float dtype (broadcasting allowed: the walk's
    unbroadcast events sum the gradients back)."""
    ufunc = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[name]

    def make(s: Spec) -> Kernel | None:
        if s.params or not s.one_float_dtype((*s.ins, s.out)):
            return None
        a_slot, b_slot = s.ins
        out = s.buffer(s.out)

        def forward(v: list) -> None:
            ufunc(v[a_slot], v[b_slot], out=out)

        if s.g is None:
            return forward, None
        gs, (ga_slot, gb_slot) = s.g, s.grads
        if name == "add":
            # The reference returns g itself for both inputs; so does this.
            def backward(v: list) -> None:
                if ga_slot is not None:
                    v[ga_slot] = v[gs]
                if gb_slot is not None:
                    v[gb_slot] = v[gs]

        elif name == "sub":
            gb = s.buffer(gb_slot) if gb_slot is not None else None

            def backward(v: list) -> None:
                if ga_slot is not None:
                    v[ga_slot] = v[gs]
                if gb is not None:
                    np.negative(v[gs], out=gb)

        else:
            ga = s.buffer(ga_slot) if ga_slot is not None else None
            gb = s.buffer(gb_slot) if gb_slot is not None else None

            def backward(v: list) -> None:
                if ga is not None:
                    np.multiply(v[gs], v[b_slot], out=ga)
                if gb is not None:
                    np.multiply(v[gs], v[a_slot], out=gb)

        return forward, backward

    return make


def _reduced_scale(reduction: str, count: int) -> float | None:
    """ops.losses._reduce's gradient scale; None for 'none' (not covered here)."""
    if reduction == "mean":
        return 1.0 / max(count, 1)
    if reduction == "sum":
        return 1.0
    return None


def _mse_loss(s: Spec) -> Kernel | None:
    reduction = s.params.get("reduction", "mean")
    p_slot, t_slot = s.ins
    if not s.one_float_dtype((p_slot, t_slot, s.out)) or s.shape(p_slot) != s.shape(t_slot):
        return None
    count = int(np.prod(s.shape(p_slot)))
    scale = _reduced_scale(reduction, count)
    if scale is None:
        return None
    out = s.buffer(s.out)
    diff = np.empty(s.shape(p_slot), s.dtype(p_slot))
    square = np.empty_like(diff)

    def forward(v: list) -> None:
        np.subtract(v[p_slot], v[t_slot], out=diff)
        np.multiply(diff, diff, out=square)
        total = np.add.reduce(square, axis=None)  # square.sum(), without its wrapper
        out[()] = total / max(count, 1) if reduction == "mean" else total

    if s.g is None:
        return forward, None
    gs, (gp_slot, gt_slot) = s.g, s.grads
    gp = s.buffer(gp_slot) if gp_slot is not None else np.empty_like(diff)
    gt = s.buffer(gt_slot) if gt_slot is not None else None

    def backward(v: list) -> None:
        np.multiply((v[gs] * scale) * 2, diff, out=gp)
        if gt is not None:
            np.negative(gp, out=gt)

    return forward, backward


def _cross_entropy(s: Spec) -> Kernel | None:
    reduction = s.params.get("reduction", "mean")
    z_slot, t_slot = s.ins
    if not s.one_float_dtype((z_slot, s.out)) or len(s.shape(z_slot)) != 2:
        return None
    if len(s.shape(t_slot)) != 1 or s.dtype(t_slot).kind not in "iu":
        return None  # class probabilities: the op's own function
    batch, classes = s.shape(z_slot)
    scale = _reduced_scale(reduction, batch)
    if scale is None or batch == 0:
        return None
    dtype = s.dtype(z_slot)
    out = s.buffer(s.out)
    rows = np.arange(batch)
    ones = np.ones(classes, dtype=dtype)
    shifted = np.empty((batch, classes), dtype)
    exp_shifted = np.empty_like(shifted)
    sums = np.empty(batch, dtype)
    per_sample = np.empty(batch, dtype)

    fused = False  # whether this call's forward ran in C (kernels.cross_entropy), as eager's

    def forward(v: list) -> None:
        nonlocal fused
        z, target = v[z_slot], v[t_slot]
        total = kernels.cross_entropy(z, target, exp_shifted, sums, batch, classes)
        fused = total is not False
        if fused:  # ops.losses._cross_entropy_fused's arithmetic
            out[()] = total
            if reduction == "mean":
                np.divide(out, batch, out=out)
            return
        low, high = np.minimum.reduce(target), np.maximum.reduce(target)
        if low < 0 or high >= classes:  # the reference's check, and its message
            ops.cross_entropy(z, target)
        np.subtract(z, z[rows, z.argmax(axis=1)][:, None], out=shifted)
        np.exp(shifted, out=exp_shifted)
        np.matmul(exp_shifted, ones, out=sums)
        np.log(sums, out=per_sample)
        np.subtract(per_sample, shifted[rows, target], out=per_sample)  # −log softmax there
        total = np.add.reduce(per_sample, axis=None)
        out[()] = total / max(batch, 1) if reduction == "mean" else total

    if s.g is None or s.grads[0] is None:
        return forward, None
    gs = s.g
    gz = s.buffer(s.grads[0])

    def backward(v: list) -> None:
        upstream = v[gs] * scale
        if fused and kernels.cross_entropy_backward(
            gz, v[t_slot], exp_shifted, sums, batch, classes, float(upstream)
        ):
            return
        np.divide(exp_shifted, sums[:, None], out=gz)
        picked = (rows, v[t_slot])
        gz[picked] = gz[picked] - 1
        np.multiply(gz, upstream, out=gz)

    return forward, backward


MAKERS: dict[Callable, Callable[[Spec], Kernel | None]] = {
    ops.linear: _linear,
    ops.matmul: _matmul,
    ops.relu: _unary(_relu_forward, _relu_backward),
    ops.sigmoid: _unary(_sigmoid_forward, _sigmoid_backward),
    ops.tanh: _unary(_tanh_forward, _tanh_backward),
    ops.add: _binary("add"),
    ops.sub: _binary("sub"),
    ops.mul: _binary("mul"),
    ops.mse_loss: _mse_loss,
    ops.cross_entropy: _cross_entropy,
}
