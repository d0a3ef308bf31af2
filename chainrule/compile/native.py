"""The C replay: a Trace translated into a program for the interpreter in `_kernels.c`, so that a
small network's whole step (forward, backward, update) runs in one call instead of dozens of
NumPy calls.

Only a trace the interpreter covers is translated: one float dtype; linear layers (those too
large for plain loops to beat BLAS pause the program: their products run in NumPy); relu,
sigmoid, tanh; same-shape add, sub, mul; mse and cross-entropy on class indices; gradients into
leaves that zero_grad reset; Dropout's draws; SGD and Adam. Anything else (and a build without
a C compiler, or CHAINRULE_NO_KERNELS=1) leaves the trace to the NumPy replay.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from chainrule import kernels, ops
from chainrule.compile.trace import SlotRef, Trace, _converted, leaves, map_structure
from chainrule.tensor import wrap

# Opcodes, as in _kernels.c.
(
    LINEAR,
    LINEAR_BACK,
    RELU,
    RELU_BACK,
    SIGMOID,
    SIGMOID_BACK,
    TANH,
    TANH_BACK,
    ADD,
    SUB,
    MUL,
    NEG,
    COPY,
    MSE,
    MSE_BACK,
    CE,
    CE_BACK,
    SGD,
    ADAM,
    PAUSE,
) = range(1, 21)

# Multiply-adds of one linear layer above which its products go to BLAS: measured, plain loops
# win below about 32k on the machines we run on, and lose 5-20x above 1M. The program then pauses
# at the layer (PAUSE), its products run in NumPy exactly as the NumPy replay runs them, and the
# interpreter resumes: the element-wise work, the loss and the update stay one C call per stretch
# between products (a digits-sized step: ~5 calls instead of ~25 NumPy calls and the optimizer's
# Python loop).
MAX_LINEAR_WORK = 2**16

_UNARY = {
    ops.relu: (RELU, RELU_BACK),
    ops.sigmoid: (SIGMOID, SIGMOID_BACK),
    ops.tanh: (TANH, TANH_BACK),
}
_BINARY = {ops.add: ADD, ops.sub: SUB, ops.mul: MUL}


class Decline(Exception):
    """The trace holds something the interpreter does not run."""


class _Argument(int):
    """An operand that is the call's argument `self`: its address is written in by the C side at
    each call (the arrays are read in place, not copied)."""


def build(trace: Trace, views: bool = False) -> NativeProgram | None:
    """A C program for the trace, or None where the interpreter is absent or does not cover it.
    `views`: its results are its buffers themselves, not fresh Tensors."""
    if kernels.replay is None:
        return None
    try:
        return NativeProgram(trace, views)
    except Decline:
        return None


class NativeProgram:
    """One trace as an interpreter program over fixed buffers (their addresses are in the code,
    so the trace's guards, parameter arrays above all, must hold before each run)."""

    def __init__(self, trace: Trace, views: bool = False) -> None:
        self.trace = trace
        self.views = views
        dtypes = {info[1] for info in trace.shapes if info is not None and info[1].kind == "f"}
        if len(dtypes) != 1 or (dtype := dtypes.pop()) not in (np.float32, np.float64):
            raise Decline
        self.dtype = dtype
        self.is_double = dtype == np.float64
        self.buffers: dict[int, np.ndarray] = {}
        self.owned: set[int] = set()  # slots whose buffer this program allocated
        self.keep: list[np.ndarray] = []  # arrays whose addresses the code holds
        self.code: list[int] = []
        self.patches: list[int] = []  # (argument, word) pairs: where each argument's address goes
        self.prologue: list[Callable[[list], None]] = []
        self.epilogue: list[tuple] = []
        self.scalar_sources: list[tuple[int, Callable]] = []
        self.scalar_count = 0
        self.pauses: list[Callable[[Any], None]] = []  # the NumPy actions, by pause number
        self._resume_words: list[int] = []  # where each pause's resumed program starts
        self._translate()
        # After the call each leaf's .grad is what the step's last word on it says: None after
        # a zero_grad, else its gradient, which keeps the buffer unless another slot shares it.
        final: dict[int, tuple] = {}
        for action in self.epilogue:
            if action[0] == "leaf":
                _, tensor, g = action
                copy = not (g in self.owned and self._unique(g))
                final[id(tensor)] = (tensor, self.buffers[g], copy)
            else:
                for tensor in action[1]:
                    final[id(tensor)] = (tensor, None, False)
        self.final_grads = list(final.values())
        # Split by what finish() does with each, so that it tests nothing per call.
        self.handed = [(t, g) for t, g, copy in self.final_grads if g is None or not copy]
        self.copied = [(t, g) for t, g, copy in self.final_grads if g is not None and copy]
        self.code.append(0)
        patches = [len(self.patches) // 2] + self.patches
        offset = len(patches)
        patches[2::2] = [at + offset for at in patches[2::2]]
        self.program = np.array(patches + self.code, dtype=np.int64)
        self._seen: list[tuple | None] = [None] * len(self.scalar_sources)
        self.scalars = np.zeros(max(self.scalar_count, 1), dtype=np.float64)
        self.code_address = _address_of(self.program)
        word = self.program.itemsize
        self.resume = [self.code_address + (offset + at) * word for at in self._resume_words]
        self.expected = _expected([trace.shapes[slot] for slot in trace.arg_slots])
        self.expected_address = _address_of(self.expected)
        self.scalars_address = _address_of(self.scalars)
        self.output = None  # the one returned buffer, where the step returns one tensor
        if type(trace.output) is SlotRef:
            self.output = self.buffers[trace.output.slot]
        # The buffers never move, so a views result (a tensor or a tuple of them, immutable) can
        # be the same object at every call.
        self.view_result = None
        if views and isinstance(trace.output, (SlotRef, tuple)):
            self.view_result = _result(trace.output, self.buffers, True)

    # ---- buffers -----------------------------------------------------------------------------
    def _address(self, slot: int | None) -> int:
        if slot is None:
            return 0
        if slot in self.trace.arg_slots:
            return _Argument(self.trace.arg_slots.index(slot))
        return self._array(slot).__array_interface__["data"][0]

    def _array(self, slot: int) -> np.ndarray:
        array = self.buffers.get(slot)
        if array is not None:
            return array
        if slot in self.trace.arg_slots:
            raise Decline  # an argument is read in place; nothing is written into it
        if slot in self.trace.constants:
            array = self.trace.constants[slot]
            if not array.flags.c_contiguous or array.dtype != self.dtype:
                raise Decline
        else:
            shape, dtype = self.trace.shapes[slot]
            array = np.empty(shape, dtype)
            self.owned.add(slot)
        self.buffers[slot] = array
        self.keep.append(array)
        return array

    def _scratch(self, shape: tuple, dtype: Any = None) -> int:
        array = np.empty(shape, dtype or self.dtype)
        self.keep.append(array)
        return array.__array_interface__["data"][0]

    def _alias(self, slot: int, to: int) -> None:
        """Let `slot` name the same buffer as `to` (a gradient passed on unchanged)."""
        self.buffers[slot] = self._array(to)

    # ---- translation -----------------------------------------------------------------------
    def _translate(self) -> None:
        trace, events = self.trace, self.trace.events
        for slot in trace.arg_slots:
            if trace.shapes[slot][1].kind == "f" and trace.shapes[slot][1] != self.dtype:
                raise Decline
        vjp_of = {e[1]: e for e in events if e[0] == "vjp"}
        self.leaf_slot: dict[int, int] = {}
        # Leaves whose .grad is None when the program writes it: reset by a recorded zero_grad, or
        # None on entry (the guards make sure) and not yet given one.
        forgotten = {id(t) for t, was_none in trace.grad_entry if was_none}
        for index, event in enumerate(events):
            kind = event[0]
            if kind == "op":
                self._op(event, vjp_of.get(index))
            elif kind == "vjp":
                self._vjp(event, events[event[1]])
            elif kind == "sum":
                _, a, b, total = event
                self._emit(ADD, self._address(a), self._address(b), self._address(total))
                self.code.append(int(np.prod(trace.shapes[total][0])))
            elif kind == "leaf":
                _, tensor, g, _ = event
                if id(tensor) not in forgotten or id(tensor) in self.leaf_slot:
                    raise Decline  # accumulating into an existing .grad: the NumPy replay
                if tensor.data.dtype != trace.shapes[g][1]:
                    raise Decline
                self.leaf_slot[id(tensor)] = g
                self._array(g)
                self.epilogue.append(("leaf", tensor, g))
            elif kind == "forget":
                forgotten.update(id(t) for t in event[1])
                self.epilogue.append(("forget", event[1]))
            elif kind == "source":
                self._source(event)
            elif kind == "call":
                self._call(event)
            elif kind == "effect":
                self._effect(event)
            else:
                raise Decline
        self._check_output(trace.output)

    def _emit(self, *words: int) -> None:
        for word in words:
            if isinstance(word, _Argument):
                self.patches.extend((int(word), len(self.code)))
                word = 0
            self.code.append(int(word))

    def _size(self, slot: int) -> int:
        return int(np.prod(self.trace.shapes[slot][0]))

    def _op(self, event: tuple, vjp: tuple | None) -> None:
        _, op, ins, params, out, _ = event
        if any(isinstance(v, SlotRef) for v in params.values()):
            raise Decline
        shapes = self.trace.shapes
        if op is ops.linear:
            x, w = ins[0], ins[1]
            b = ins[2] if len(ins) == 3 else None
            if len(shapes[x][0]) != 2:
                raise Decline
            n, n_in = shapes[x][0]
            n_out = shapes[w][0][0]
            if n * n_in * n_out > MAX_LINEAR_WORK:
                self._linear_in_numpy(x, w, b, out)
                return
            self._emit(LINEAR, *map(self._address, (x, w, b, out)), n, n_in, n_out)
            self._emit(self._scratch((n_in, n_out)))
        elif op in _UNARY:
            if params:
                raise Decline
            self._emit(_UNARY[op][0], self._address(ins[0]), self._address(out), self._size(out))
        elif op in _BINARY:
            a, b = ins
            if not shapes[a][0] == shapes[b][0] == shapes[out][0]:
                raise Decline
            self._emit(_BINARY[op], *map(self._address, (a, b, out)), self._size(out))
        elif op is ops.mse_loss:
            reduction = params.get("reduction", "mean")
            p, t = ins
            if reduction not in ("mean", "sum") or shapes[p][0] != shapes[t][0]:
                raise Decline
            self._diff = self._scratch(shapes[p][0])
            self._emit(MSE, self._address(p), self._address(t), self._diff, self._address(out))
            self._emit(self._size(p), reduction == "mean")
        elif op is ops.cross_entropy:
            reduction = params.get("reduction", "mean")
            z, t = ins
            if reduction not in ("mean", "sum") or len(shapes[z][0]) != 2:
                raise Decline
            if shapes[t][0] != shapes[z][0][:1] or shapes[t][1] != np.int64:
                raise Decline
            batch, classes = shapes[z][0]
            self._ce = (self._scratch((batch, classes)), self._scratch((batch,)))
            self._emit(CE, self._address(z), self._address(t), *self._ce, self._address(out))
            self._emit(batch, classes, reduction == "mean")
        else:
            raise Decline

    def _vjp(self, event: tuple, op_event: tuple) -> None:
        _, _, g, outs = event
        _, op, ins, params, out, _ = op_event
        shapes = self.trace.shapes
        if op is ops.linear:
            x, w = ins[0], ins[1]
            n, n_in = shapes[x][0]
            n_out = shapes[w][0][0]
            gb = outs[2] if len(outs) == 3 else None
            if n * n_in * n_out > MAX_LINEAR_WORK:
                self._linear_back_in_numpy(g, x, w, outs[0], outs[1], gb)
                return
            targets = map(self._address, (g, x, w, outs[0], outs[1], gb))
            self._emit(LINEAR_BACK, *targets, n, n_in, n_out)
        elif op in _UNARY:
            if outs[0] is None:
                return
            saved = ins[0] if op is ops.relu else out  # relu's mask reads z; the others, a
            self._emit(_UNARY[op][1], self._address(g), self._address(saved))
            self._emit(self._address(outs[0]), self._size(outs[0]))
        elif op is ops.add or op is ops.sub:
            if outs[0] is not None:
                self._alias(outs[0], g)
            if outs[1] is not None:
                if op is ops.add:
                    self._alias(outs[1], g)
                else:
                    self._emit(NEG, self._address(g), self._address(outs[1]), self._size(g))
        elif op is ops.mul:
            a, b = ins
            for target, other in ((outs[0], b), (outs[1], a)):
                if target is not None:
                    self._emit(MUL, *map(self._address, (g, other, target)), self._size(target))
        elif op is ops.mse_loss:
            p = ins[0]
            reduction = params.get("reduction", "mean")
            self._emit(MSE_BACK, self._address(g), self._diff, *map(self._address, outs))
            self._emit(self._size(p), reduction == "mean")
        elif op is ops.cross_entropy:
            z, t = ins
            batch, classes = shapes[z][0]
            reduction = params.get("reduction", "mean")
            if outs[0] is None:
                return
            self._emit(CE_BACK, self._address(g), *self._ce, self._address(t))
            self._emit(self._address(outs[0]), batch, classes, reduction == "mean")
        else:
            raise Decline

    def _pause(self, action: Callable[[Any], None]) -> None:
        """Stop the interpreter here to run `action(arguments)` in NumPy, then go on."""
        if kernels.replay_at is None:
            raise Decline  # an extension built before replay_at cannot resume
        self._emit(PAUSE, len(self.pauses))
        self._resume_words.append(len(self.code))
        self.code.append(0)  # the resumed program's header: no argument addresses to patch
        self.pauses.append(action)

    def _reader(self, slot: int) -> Callable[[Any], np.ndarray]:
        """The array a slot holds during a call: an argument's or a buffer."""
        if slot in self.trace.arg_slots:
            position = self.trace.arg_slots.index(slot)
            return operator.itemgetter(position)
        array = self._array(slot)
        return lambda arguments: array

    def _linear_in_numpy(self, x: int, w: int, b: int | None, out: int) -> None:
        """A large layer's forward pass by BLAS: numpy_ops._linear's calls."""
        read_x, W, z = self._reader(x), self._array(w), self._array(out)
        bias = None if b is None else self._array(b)

        def forward(arguments: Any) -> None:
            np.matmul(read_x(arguments), W.T, out=z)
            if bias is not None:
                np.add(z, bias, out=z)

        self._pause(forward)

    def _linear_back_in_numpy(self, g: int, x: int, w: int, gx_slot, gw_slot, gb_slot) -> None:
        """A large layer's products of the backward pass by BLAS: numpy_ops._linear's calls."""
        grad, read_x, W = self._array(g), self._reader(x), self._array(w)
        gx, gw, gb = (None if s is None else self._array(s) for s in (gx_slot, gw_slot, gb_slot))
        rows = self.trace.shapes[x][0][0]
        # ops.linalg.column_sums: a product with ones from 64 rows on, NumPy's sum below.
        ones = np.ones(rows, dtype=self.dtype) if rows >= 64 else None

        def backward(arguments: Any) -> None:
            if gx is not None:
                np.matmul(grad, W, out=gx)
            if gw is not None:
                np.matmul(grad.T, read_x(arguments), out=gw)
            if gb is not None:
                if ones is None:
                    np.add.reduce(grad, axis=0, out=gb)
                else:
                    np.matmul(ones, grad, out=gb)

        self._pause(backward)

    def _source(self, event: tuple) -> None:
        _, make, out = event
        buffer = self._array(out)

        def draw(arguments: tuple) -> None:
            buffer[...] = make()

        self.prologue.append(draw)

    def _call(self, event: tuple) -> None:
        _, function, ins, outs = event
        if getattr(function, "func", None) is not _converted or ins[0] not in self.trace.arg_slots:
            raise Decline  # only an argument's conversion runs before the program
        position = self.trace.arg_slots.index(ins[0])
        buffer = self._array(outs[0])

        def convert(arguments: tuple) -> None:
            buffer[...] = arguments[position]

        self.prologue.append(convert)

    def _effect(self, event: tuple) -> None:
        _, _, _, native = event
        described = native() if native is not None else None
        if described is None:
            raise Decline
        for rule, entries, scalars, watch in described:
            index = self.scalar_count
            values = scalars()
            if values is None:
                raise Decline
            self.scalar_count += len(values)
            self.scalar_sources.append((index, scalars, watch))
            counters: set[int] = set()
            for tensor, arrays in entries:
                g = self.leaf_slot.get(id(tensor))
                if g is None:
                    continue  # no gradient this step: the rule skips it, as eager does
                param = tensor.data
                for array in (param, *arrays):
                    if (
                        isinstance(array, np.ndarray)
                        and array.ndim
                        and (not array.flags.c_contiguous or array.dtype != self.dtype)
                    ):
                        raise Decline
                self.keep.extend(a for a in (param, *arrays) if isinstance(a, np.ndarray))
                address = _address_of
                if rule == "sgd":
                    (buffer,) = arrays
                    self._emit(SGD, address(param), self._address(g), address(buffer))
                    self._emit(param.size, index)
                elif rule == "adam":
                    m, v, v_max, step = arrays
                    if step.dtype != np.int64:
                        raise Decline
                    first = id(step) not in counters
                    counters.add(id(step))
                    self._emit(ADAM, address(param), self._address(g), address(m), address(v))
                    self._emit(address(v_max), address(step), param.size, index, first)
                else:
                    raise Decline

    def _check_output(self, structure: Any) -> None:
        for ref in leaves(structure, SlotRef):
            self._array(ref.slot)

    # ---- running -------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Write the hyper-parameters into `scalars` where a group's options changed since the last
        call (most steps change none); False, writing nothing more, when a group's state layout
        moved (momentum switched on, say): the step then replays in NumPy."""
        seen = self._seen
        for k, (index, scalars, watch) in enumerate(self.scalar_sources):
            snapshot = watch()
            if snapshot == seen[k]:
                continue
            values = scalars()
            if values is None:
                return False
            self.scalars[index : index + len(values)] = values
            # A mutable option (an array as the learning rate) can change without a new
            # snapshot comparing unequal, so it is read again at every call.
            seen[k] = snapshot if _immutable(snapshot) else None
        return True

    def run(self, arrays: list[np.ndarray]) -> tuple[bool, Any]:
        """(True, result), or (False, None) before anything changed when a hyper-parameter's
        layout moved (momentum switched on, say): the caller then replays in NumPy."""
        if not self.refresh():
            return False, None
        for step in self.prologue:
            step(arrays)
        if kernels.replay_at is not None:
            done = kernels.replay_at(
                self.code_address, self.scalars_address, self.is_double, 0, *arrays
            )
        else:
            done = kernels.replay(self.program, self.scalars, self.is_double, arrays)
        if done != 1:
            self.rerun(done, arrays)
        return True, self.finish()

    def scan(self, arrays: tuple, strides: tuple, steps: int) -> Any:
        """`steps` runs in one call, step k reading each argument at k·stride bytes into its
        array; the results stacked (a new first axis). None, having run nothing, where the
        interpreter cannot (no replay_scan, a prologue, pauses for BLAS, a result that is no
        buffer of its own, arguments that do not fit): the caller then calls the step per batch."""
        if kernels.replay_scan is None or self.prologue or self.pauses or not self.refresh():
            return None
        slots = [ref.slot for ref in leaves(self.trace.output, SlotRef)]
        if any(slot not in self.owned for slot in slots):
            return None
        stacked, copies = {}, []
        for slot in dict.fromkeys(slots):
            buffer = self.buffers[slot]
            stacked[slot] = np.empty((steps, *buffer.shape), buffer.dtype)
            copies.append((_address_of(buffer), buffer.nbytes, stacked[slot]))
        status, done = kernels.replay_scan(
            self.code_address,
            self.scalars_address,
            self.is_double,
            self.expected_address,
            steps,
            arrays,
            strides,
            tuple(copies),
        )
        if status == -3:
            return None
        if status != 1:
            self.rerun(status, ())  # raises the interpreter's error
        self.finish()  # each leaf's .grad, as after a call
        return _result(self.trace.output, stacked, True)

    def rerun(self, done: int, arrays: Any) -> None:
        """After the interpreter declined (`done` != 1): run again with contiguous copies of the
        arguments, or raise its error."""
        if done == -1:  # an argument not C-contiguous: contiguous copies, read in place
            arrays = [np.ascontiguousarray(a) for a in arrays]
            done = kernels.replay(self.program, self.scalars, self.is_double, arrays)
        if done >= 2:  # a pause: its NumPy action, then on from the word after it
            pauses, resume, replay_at = self.pauses, self.resume, kernels.replay_at
            scalars, is_double = self.scalars_address, self.is_double
            while done >= 2:
                pauses[done - 2](arrays)
                done = replay_at(resume[done - 2], scalars, is_double, 0)
        if done != 1:
            if done == 0:
                raise ValueError("cross_entropy: a target class is outside [0, classes)")
            raise RuntimeError(f"the replay interpreter failed ({done}); please report it")

    def finish(self) -> Any:
        """Hand back each leaf's .grad and the result (fresh Tensors: copies of the buffers; or
        the buffers themselves, for `views`)."""
        for tensor, grad in self.handed:
            tensor.grad = grad
        for tensor, grad in self.copied:
            tensor.grad = grad.copy()
        if self.view_result is not None:
            return self.view_result
        if self.output is not None and not self.views:  # the usual case: one loss
            return wrap(self.output.copy())
        return _result(self.trace.output, self.buffers, self.views)

    def _unique(self, slot: int) -> bool:
        array = self.buffers[slot]
        return sum(1 for other in self.buffers.values() if other is array) == 1


def _expected(arguments: list[tuple]) -> np.ndarray:
    """The traced arguments as replay_at checks them: [count, then per argument: ndim, itemsize,
    the buffer format's bytes packed in a word, shape...]."""
    words = [len(arguments)]
    for shape, dtype in arguments:
        format_ = memoryview(np.empty(0, dtype)).format.encode()[:8]
        words += [len(shape), dtype.itemsize, int.from_bytes(format_, "little"), *shape]
    return np.array(words, dtype=np.int64)


_PLAIN = frozenset((bool, int, float, str, type(None)))


def _immutable(value: Any) -> bool:
    # Exact builtin types first: the ABC check of numbers.Number costs ~1 µs a value, and
    # scikit-learn's loop changes its weight decay twice an epoch.
    if type(value) in _PLAIN:
        return True
    if isinstance(value, tuple):
        return all(_immutable(item) for item in value)
    return isinstance(value, (numbers.Number, np.generic))


def _address_of(array: np.ndarray | None) -> int:
    return 0 if array is None else array.__array_interface__["data"][0]


def _result(structure: Any, buffers: dict, views: bool) -> Any:
    """The result: the buffers themselves (`views`), or fresh Tensors holding copies of them."""
    if views:
        return map_structure(lambda ref: buffers[ref.slot], structure, SlotRef)
    return map_structure(lambda ref: wrap(buffers[ref.slot].copy()), structure, SlotRef)
