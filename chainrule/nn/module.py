"""Module (a container of parameters and sub-modules), Parameter, and Sequential.

Sub-modules and parameters are found by looking at a module's attributes in the order they were
set, so `self.fc1 = Linear(...)` registers fc1 with no `__setattr__` hooks. Buffers (state that is
saved but not trained, like BatchNorm's running mean) are declared with `register_buffer`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from chainrule import tracing
from chainrule.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module trains: it always requires a gradient."""

    __slots__ = ()

    def __init__(self, data: Any, dtype: Any = None) -> None:
        if tracing.active is not None and tracing.tracing_here():
            raise tracing.CompileError(
                "a Parameter (or a layer) was created while chainrule.compile traced the step; a "
                "replay would reuse the first one. Build the model and optimizer before the "
                "compiled function and pass or close over them"
            )
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self) -> str:
        return "Parameter(" + super().__repr__()[len("tensor(") :]


class Module:
    """Base class for layers and networks, with PyTorch's names.

    Subclasses set parameters and sub-modules as attributes in `__init__` and define `forward`;
    `module(x)` calls `forward(x)`. Parameters are found by walking the attributes, so a network
    is ordinary Python:

    >>> import numpy as np
    >>> from chainrule import nn
    >>> class TwoLayer(nn.Module):
    ...     def __init__(self):
    ...         self.hidden = nn.Linear(2, 4, rng=0)
    ...         self.out = nn.Linear(4, 1, rng=1)
    ...
    ...     def forward(self, x):
    ...         return self.out(self.hidden(x).sigmoid())
    >>> model = TwoLayer()
    >>> [name for name, _ in model.named_parameters()]
    ['hidden.weight', 'hidden.bias', 'out.weight', 'out.bias']
    >>> model(np.zeros((3, 2), dtype=np.float32)).shape
    (3, 1)
    """

    training: bool = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module's computation; subclasses define it, and `module(x)` calls it."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ---- discovery -------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, module) pairs of the direct sub-modules, in the order they were set as attributes.

        A list or tuple of modules held in one attribute yields each as 'name.i'.
        """
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif (
                isinstance(value, (list, tuple))
                and value
                and all(isinstance(v, Module) for v in value)
            ):
                for i, child in enumerate(value):
                    yield f"{name}.{i}", child

    def children(self) -> Iterator[Module]:
        """The direct sub-modules, in the order they were set as attributes."""
        for _, child in self.named_children():
            yield child

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(name, module) pairs of this module (named `prefix`) and every module below it."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        """This module and every module below it, depth first."""
        for _, module in self.named_modules():
            yield module

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """(name, parameter) pairs, e.g. ('0.weight', ...) for the first layer of a Sequential."""
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix) if recurse else [(prefix, self)]:
            for name, value in vars(module).items():
                if isinstance(value, Parameter) and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{module_name}.{name}" if module_name else name), value

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Every trainable Parameter, each once (even if shared): what an optimizer takes."""
        for _, parameter in self.named_parameters(recurse=recurse):
            yield parameter

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """Keep `value` as state that is saved and loaded but not trained (e.g. running means)."""
        buffers = vars(self).setdefault("_buffer_names", [])
        if name not in buffers:
            buffers.append(name)
        setattr(self, name, value)

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) pairs of the buffers (`register_buffer`) here and in every module below."""
        for module_name, module in self.named_modules(prefix):
            for name in vars(module).get("_buffer_names", []):
                yield (f"{module_name}.{name}" if module_name else name), getattr(module, name)

    def num_parameters(self) -> int:
        """The number of trainable numbers: the total size of `parameters()`."""
        return sum(p.data.size for p in self.parameters())

    # ---- training state --------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode here and below; returns self.

        In training mode Dropout drops and BatchNorm1d normalises with the batch's statistics.
        """
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> Module:
        """Set evaluation mode here and below (`train(False)`); returns self.

        In evaluation mode Dropout passes inputs through; BatchNorm1d uses its running statistics.
        """
        return self.train(False)

    def zero_grad(self) -> None:
        """Clear every parameter's `.grad` (set it to None) before the next backward pass."""
        parameters = list(self.parameters())
        for parameter in parameters:
            parameter.grad = None
        if tracing.active is not None:
            tracing.active.forget_grads(parameters)

    # ---- state dict ------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of every parameter and buffer, by name."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for name, parameter in self.named_parameters():
            state[name] = parameter.data.copy()
        for name, buffer in self.named_buffers():
            state[name] = np.array(buffer, copy=True)
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy values into the parameters and buffers in place (optimizers keep their references).

        Every name, shape and dtype is checked before anything is changed.
        """
        targets = self._state_targets()
        missing = [name for name in targets if name not in state]
        unexpected = [name for name in state if name not in targets]
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict for {type(self).__name__}: missing {missing or 'nothing'}, "
                f"unexpected {unexpected or 'nothing'}"
            )
        arrays = {}
        for name, value in state.items():
            if name not in targets:
                continue
            array = np.asarray(value.data if isinstance(value, Tensor) else value)
            current = targets[name][1]
            if array.shape != current.shape:
                raise ValueError(
                    f"load_state_dict: {name} has shape {array.shape} in the state but "
                    f"{current.shape} in the model"
                )
            arrays[name] = array
        for name, array in arrays.items():
            owner, current = targets[name]
            if isinstance(owner, Parameter):
                # In place: anything holding the array (a flat gradient buffer, an optimizer)
                # sees it.
                owner.data[...] = array
            else:
                module, attribute = owner
                setattr(module, attribute, array.astype(current.dtype, copy=True))

    def _state_targets(self) -> dict[str, tuple[Any, np.ndarray]]:
        targets: dict[str, tuple[Any, np.ndarray]] = {}
        for name, parameter in self.named_parameters():
            targets[name] = (parameter, parameter.data)
        for module_name, module in self.named_modules():
            for attribute in vars(module).get("_buffer_names", []):
                name = f"{module_name}.{attribute}" if module_name else attribute
                targets[name] = ((module, attribute), np.asarray(getattr(module, attribute)))
        return targets

    # ---- dtype -----------------------------------------------------------------------------
    def to(self, dtype: Any) -> Module:
        """Convert every parameter and floating buffer to `dtype` (float32 or float64).

        Parameters stay the same objects (optimizers keep their references); their arrays change.
        """
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"Module.to expects a floating dtype, got {dtype}")
        for module in self.modules():
            module._convert(dtype)
        return self

    def _convert(self, dtype: np.dtype) -> None:
        """Convert this module's own parameters and buffers (not its children's)."""
        for value in vars(self).values():
            if isinstance(value, Parameter):
                value.data = value.data.astype(dtype)
                if value.grad is not None:
                    value.grad = value.grad.astype(dtype)
        for attribute in vars(self).get("_buffer_names", []):
            value = getattr(self, attribute)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                setattr(self, attribute, value.astype(dtype))

    def double(self) -> Module:
        """Convert parameters and floating buffers to float64 (`to(np.float64)`); returns self."""
        return self.to(np.float64)

    def float(self) -> Module:
        """Convert parameters and floating buffers to float32 (`to(np.float32)`); returns self."""
        return self.to(np.float32)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the first parameter (float32 for a module without parameters)."""
        for parameter in self.parameters():
            return parameter.dtype
        return np.dtype(np.float32)

    # ---- display ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The settings shown inside the module's repr, e.g. 'in_features=2, out_features=4'."""
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        own = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({own})"
        lines = [f"{type(self).__name__}({own}"]
        for name, child in children:
            child_text = repr(child).replace("\n", "\n  ")
            count = child.num_parameters()
            suffix = f"  # {count:,} parameters" if count and not list(child.children()) else ""
            lines.append(f"  ({name}): {child_text}{suffix}")
        lines.append(f")  # {self.num_parameters():,} parameters in all")
        return "\n".join(lines)


class Sequential(Module):
    """Layers applied one after another; children are named '0', '1', ... as in PyTorch.

    The input of each layer is the output of the one before; `model[i]` is layer i, `model[a:b]`
    a Sequential of those layers.

    >>> import numpy as np
    >>> from chainrule import nn
    >>> model = nn.Sequential(nn.Linear(2, 4, rng=0), nn.Sigmoid(), nn.Linear(4, 1, rng=1))
    >>> model
    Sequential(
      (0): Linear(in_features=2, out_features=4, bias=True)  # 12 parameters
      (1): Sigmoid()
      (2): Linear(in_features=4, out_features=1, bias=True)  # 5 parameters
    )  # 17 parameters in all
    >>> x = np.zeros((8, 2), dtype=np.float32)  # (batch, features)
    >>> model(x).shape  # (batch, outputs)
    (8, 1)
    """

    def __init__(self, *layers: Module) -> None:
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Module")
        self.layers = list(layers)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """('0', first layer), ('1', second layer), ...: named by position, as in PyTorch."""
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def forward(self, x: Any) -> Any:
        """Apply the layers in order: layer n's output is layer n + 1's input."""
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def append(self, layer: Module) -> Sequential:
        """Add a layer at the end (named by its position); returns self."""
        self.layers.append(layer)
        return self
