"""Optimizer: the base class every update rule shares (parameter groups, per-parameter state,
zero_grad, step's loop, state_dict). The rules live one per file, each a pure function over arrays.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from chainrule import tracing
from chainrule.optim.flat import FlatGroup
from chainrule.tensor import Tensor

# Group keys that are not hyper-parameters of the rule but may travel with a group: schedulers
# record the learning rate they started from here, as in PyTorch.
_EXTRA_GROUP_KEYS = ("initial_lr",)


class Optimizer:
    """Holds parameter groups and per-parameter state; subclasses define the update rule.

    `params` is an iterable of Parameters, or of dicts `{"params": [...], "lr": 0.01, ...}` whose
    options override `defaults` for that group, as in PyTorch. Subclasses implement
    `_check_group` (validate and normalise hyper-parameters), `_init_state` (fresh state of one
    parameter) and `_update` (one call of their rule's pure function), and list their
    array-valued state names in `_state_arrays`.

    State has one form: `state[p]` is a dict per parameter. For a group updated as one flat
    buffer (see flat.py) its arrays are views of the flat state and its `step` a shared 0-d array.
    """

    _state_arrays: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = self._check_group(dict(defaults))
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}
        # Per group (by id of its dict): its parameters as views of one buffer, while every step
        # gives each of them a gradient; the update then runs once over the whole buffer, and
        # `state[p]` holds views of the flat state.
        self._flat: dict[int, FlatGroup] = {}
        self._scratch: dict[tuple, np.ndarray] = {}
        if isinstance(params, (Tensor, dict)) or not isinstance(params, Iterable):
            raise TypeError(
                f"{self._name}: params must be an iterable of Parameters or of dicts, got "
                f"{type(params).__name__} (pass model.parameters())"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{self._name}: params is a set, whose order changes between runs; use a list"
            )
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    # ---- parameter groups -------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own options (missing options take the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(
                f"{self._name}: a parameter group must be a dict, got {type(param_group).__name__}"
            )
        index = len(self.param_groups)
        params = param_group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{self._name}: parameter group {index} gives its params as a set, whose order "
                "changes between runs; use a list"
            )
        elif not isinstance(params, Iterable):
            raise TypeError(
                f"{self._name}: parameter group {index} needs 'params', an iterable of Parameters"
            )
        params = list(params)
        for position, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{self._name}: parameter group {index} item {position} is a "
                    f"{type(p).__name__}, not a Parameter"
                )
            if p.dtype.kind != "f" or not p.is_leaf:
                raise ValueError(
                    f"{self._name}: parameter group {index} item {position} cannot be optimized: "
                    "it must be a floating-point leaf tensor (a Parameter)"
                )
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError(
                f"{self._name}: parameter group {index} repeats a parameter (within the group or "
                "from an earlier group); each parameter may appear once"
            )
        options = {key: value for key, value in param_group.items() if key != "params"}
        self._check_keys(options, f"parameter group {index}", require_all=False)
        group = self._check_group({**self.defaults, **options})
        group["params"] = params
        self.param_groups.append(group)
        if FlatGroup.possible(params) and not any(p in self.state for p in params):
            self._flat[id(group)] = FlatGroup(params)

    def _check_keys(self, options: dict[str, Any], where: str, require_all: bool) -> None:
        unknown = sorted(set(options) - set(self.defaults) - set(_EXTRA_GROUP_KEYS))
        if unknown:
            raise ValueError(
                f"{self._name}: unknown option {unknown[0]!r} in {where}; the options are "
                f"{', '.join(sorted(self.defaults))}"
            )
        missing = sorted(set(self.defaults) - set(options)) if require_all else []
        if missing:
            raise ValueError(f"{self._name}: {where} lacks the option {missing[0]!r}")

    def _check_group(self, group: dict[str, Any]) -> dict[str, Any]:
        """Validate a group's hyper-parameters; return it with numbers as Python floats."""
        raise NotImplementedError

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """The state one parameter starts with, made on its first step."""
        raise NotImplementedError

    # ---- the update loop --------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns closure() if one is given."""
        loss = None if closure is None else closure()
        self._apply_updates()
        if tracing.active is not None:
            # A compiled step replays the whole loop (hyper-parameters read from the groups then).
            tracing.active.effect(self._apply_updates, native=self._native_updates)
        return loss

    def _apply_updates(self) -> None:
        for group in self.param_groups:
            for p, grad, state in self._with_grads(group):
                self._update(p, grad, state, group)

    def _update(
        self, p: np.ndarray, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        """Apply the rule once to `p` in place (its state updated in place or added to)."""
        raise NotImplementedError

    # The C replay interpreter runs these rules itself (mirroring the pure functions through the
    # same fused kernels); None means this optimizer has no such rule there.
    _native_rule: str | None = None

    def _native_updates(self) -> list[tuple] | None:
        """For chainrule.compile's C interpreter: per group, (rule, [(parameter, state arrays)],
        scalars, watch) where scalars() gives the group's hyper-parameters as numbers at each
        replay, or None once the state's layout no longer fits (the replay then runs in NumPy),
        and watch() is a cheap snapshot of everything scalars() reads: while it compares equal,
        scalars() would give the same numbers (the replay then skips calling it)."""
        if self._native_rule is None:
            return None
        state_mapping = self.state
        described = []
        for group in self.param_groups:
            entries = []
            for p in group["params"]:
                state = self.state.get(p)
                if state is not None:
                    entries.append((p, self._native_arrays(state, group)))
            layout = self._native_layout(group)

            def scalars(group: dict = group, layout: tuple = layout) -> tuple | None:
                if self.state is not state_mapping or self._native_layout(group) != layout:
                    return None
                return self._native_scalars(group)

            options = operator.itemgetter(*[key for key in group if key != "params"])

            def watch(group: dict = group, options: Callable = options) -> tuple:
                return (self.state is state_mapping, options(group))

            described.append((self._native_rule, entries, scalars, watch))
        return described

    def _native_arrays(self, state: dict[str, Any], group: dict[str, Any]) -> tuple:
        raise NotImplementedError

    def _native_layout(self, group: dict[str, Any]) -> tuple:
        """What decides which state arrays the rule touches (momentum on or off, amsgrad)."""
        return ()

    def _native_scalars(self, group: dict[str, Any]) -> tuple:
        raise NotImplementedError

    def _with_grads(
        self, group: dict[str, Any]
    ) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
        """(parameter array, gradient, state) for each parameter of `group` that has a gradient.

        The parameter array is updated in place (other code holds references to it); the gradient
        is never written (it may be shared).
        """
        flat = self._flat.get(id(group))
        if flat is not None:
            grad = flat.gather_grads() if flat.intact() else None
            if grad is not None:
                if flat.state is None:
                    flat.state = self._init_state(flat.data, group)
                known = len(flat.state)
                yield flat.data, grad, flat.state
                if len(flat.state) != known or flat.params[0] not in self.state:
                    flat.share_into(self.state)  # the rule added an array (SGD's momentum)
                return
            self._unflatten(group)  # a parameter without a gradient, or an array replaced
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.shape != p.data.shape:
                raise ValueError(
                    f"{self._name}: a parameter of shape {p.data.shape} has a gradient of shape "
                    f"{grad.shape}"
                )
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = self._init_state(p.data, group)
            yield p.data, grad, state

    def _scratch_like(self, array: np.ndarray) -> np.ndarray:
        """A reusable work array of `array`'s shape and dtype: large temporaries are freshly mapped
        memory on every allocation, which costs as much as the arithmetic."""
        key = (array.shape, array.dtype)
        work = self._scratch.get(key)
        if work is None:
            work = self._scratch[key] = np.empty_like(array)
        return work

    def _unflatten(self, group: dict[str, Any]) -> None:
        """Go on parameter by parameter for good. The state dicts already hold views of the flat
        state; only the shared step counter is split, since the parameters now step apart."""
        flat = self._flat.pop(id(group))
        if flat.state is not None:
            for p in flat.params:
                state = self.state[p]
                if "step" in state:
                    state["step"] = np.array(int(state["step"]))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every gradient (`.grad = None`), or set it to a fresh array of zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None if set_to_none else np.zeros_like(p.data)
        if tracing.active is not None:
            params = [p for group in self.param_groups for p in group["params"]]
            if set_to_none:
                tracing.active.forget_grads(params)
            else:
                tracing.active.effect(lambda: self.zero_grad(False))

    # ---- state dict -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters and per-parameter state, with no pickle needed to store them.

        `{"state": {index: {name: ndarray | int}}, "param_groups": [{option: value, ...,
        "params": [index, ...]}]}`; parameters are numbered across groups in order, as in PyTorch.
        Arrays are copies; tuples (Adam's betas) become lists, so the rest is plain JSON.
        """
        index_of: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            indices = []
            for p in group["params"]:
                index_of.setdefault(id(p), len(index_of))
                indices.append(index_of[id(p)])
            options = {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in group.items()
                if key != "params"
            }
            groups.append({**options, "params": indices})
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index_of[id(p)]] = {
                        name: _snapshot(name, value) for name, value in self.state[p].items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and state saved by `state_dict()` (JSON's string keys work too).

        Everything is checked (group sizes, option names and values, state names and shapes)
        before anything changes. Arrays are copied and take each parameter's dtype.
        """
        name = self._name
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(
                f"{name}.load_state_dict expects a dict with 'state' and 'param_groups'"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state has {len(saved_groups)} parameter groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        params: list[tuple[Tensor, dict[str, Any]]] = []
        new_groups = []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved.get("params", ())) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: parameter group {i} has "
                    f"{len(saved.get('params', ()))} parameters in the state but "
                    f"{len(group['params'])} here"
                )
            options = {key: value for key, value in saved.items() if key != "params"}
            self._check_keys(options, f"saved parameter group {i}", require_all=True)
            for key, default in self.defaults.items():
                if isinstance(default, tuple):
                    options[key] = tuple(options[key])
            new_group = self._check_group(options)
            new_group["params"] = group["params"]
            new_groups.append(new_group)
            params.extend((p, new_group) for p in group["params"])
        new_state = {}
        for key, saved in state_dict["state"].items():
            index = int(key)
            if not 0 <= index < len(params):
                raise ValueError(
                    f"{name}.load_state_dict: state for parameter {index}, but there are only "
                    f"{len(params)} parameters"
                )
            p, group = params[index]
            new_state[p] = self._load_parameter_state(index, p, group, saved)
        flats = [self._flat.pop(id(group), None) for group in self.param_groups]
        self.param_groups = new_groups
        self.state = new_state
        for group, flat in zip(new_groups, flats):
            if flat is None:
                continue
            saved = [new_state.get(p) for p in flat.params]
            if all(s is None for s in saved):
                flat.state = None
            elif any(s is None or set(s) != set(saved[0]) for s in saved):
                continue  # only some parameters have state: stay parameter by parameter
            else:
                flat.adopt(saved)
            self._flat[id(group)] = flat

    def _load_parameter_state(
        self, index: int, p: Tensor, group: dict[str, Any], saved: dict[str, Any]
    ) -> dict[str, Any]:
        where = f"{self._name}.load_state_dict: parameter {index}"
        allowed = set(self._state_arrays) | {"step"}
        unknown = sorted(set(saved) - allowed)
        if unknown:
            raise ValueError(
                f"{where} has unexpected state {unknown[0]!r} "
                f"(expected {', '.join(sorted(allowed))})"
            )
        missing = sorted(set(self._init_state(p.data, group)) - set(saved))
        if missing:
            raise ValueError(f"{where} lacks the state {missing[0]!r}")
        state: dict[str, Any] = {}
        for key, value in saved.items():
            if key == "step":
                state[key] = np.array(int(np.asarray(value)))
                continue
            array = np.asarray(value)
            if array.shape != p.data.shape:
                raise ValueError(
                    f"{where}: {key!r} has shape {array.shape} in the state but the parameter "
                    f"has shape {p.data.shape}"
                )
            state[key] = np.array(array, dtype=p.data.dtype)
        return state

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(key for key in group if key != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def _snapshot(name: str, value: Any) -> Any:
    """A state entry as `state_dict` gives it: arrays copied, the step counter a Python int."""
    if name == "step":
        return int(value)
    return value.copy() if isinstance(value, np.ndarray) else value
